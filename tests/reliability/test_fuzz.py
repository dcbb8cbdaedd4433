"""Schema fuzzing of the running API (schemathesis): every operation of its OpenAPI
schema, positive and negative data, with an admin key.

Checks: no 5xx, responses match the documented schema and status codes, authentication
is enforced (a probe without the key, and with a wrong one, must be refused), and invalid
data is rejected. Heavy work is bounded by sizes, not by leaving operations out: chat
gets at most 8 new tokens, and Hypothesis keeps uploads and lists small.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import (
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import ADMIN_KEY, FUZZ_COLLECTION, FUZZ_DATASET, Api

MAX_EXAMPLES = 25
MAX_NEW_TOKENS = 8


@schemathesis.check
def error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every error answer is {error, message, hint} (readiness answers with its checks)."""
    if response.status_code >= 400 and case.operation.path != "/readyz":
        body = response.json()
        assert isinstance(body, dict) and {"error", "message", "hint"} <= set(body), body
    return True


CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    ignored_auth,
    negative_data_rejection,
    error_shape,
]
# Names that exist, offered half of the time where a request names one: random names only
# reach the 404 path; these reach retrieval, RAG answers, embeddings, reindex and eval.
KNOWN = {
    "collections": [FUZZ_COLLECTION],
    "embedders": ["all-minilm-l6-v2"],
    "chat_models": [f"rag/{FUZZ_COLLECTION}", "smollm2-135m-instruct"],
    "datasets": [f"uploads/{FUZZ_DATASET}"],
}
BINDINGS = {
    "body.collection": "collections",
    "path.name": "collections",
    "body.embedder": "embedders",
    "body.model": "chat_models",
    "body.dataset": "datasets",
    "body.models[*]": "embedders",
}
CONFIG = {
    "seed": 20260101,
    "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
    "request-timeout": 90,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "dictionaries": {name: {"values": values} for name, values in KNOWN.items()},
    "parameters": {key: {"dictionary": name, "probability": 0.5} for key, name in BINDINGS.items()},
}


@pytest.fixture(scope="session")
def api_schema(fuzz_api: Api) -> Any:
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_url(
        f"{fuzz_api.url}/openapi.json", headers=fuzz_api.headers, config=config, timeout=30
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _nodeid_compat(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's pytest plugin reads (and renames, for its report) the test
    item's `_nodeid`, which pytest 9.2 no longer sets; give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def bound_generation(case: schemathesis.Case) -> None:
    """Chat: at most MAX_NEW_TOKENS new tokens and one retrieved passage in the prompt,
    unless the value is the invalid part of a negative case (then the API refuses it
    before the LLM is asked)."""
    if case.operation.path != "/v1/chat/completions" or not isinstance(case.body, dict):
        return
    for key, most, top in (("max_tokens", MAX_NEW_TOKENS, 8192), ("top_k", 1, 50)):
        n = case.body.get(key)
        if n is None or (isinstance(n, int) and not isinstance(n, bool) and most < n <= top):
            case.body[key] = most


# (operation, positive|negative) -> status code -> count, for the summary
SEEN: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
SECONDS: defaultdict[str, float] = defaultdict(float)


@schema.parametrize()
def test_api_schema(case: schemathesis.Case) -> None:
    bound_generation(case)
    mode = case.meta.generation.mode.value if case.meta else "explicit"
    t0 = time.perf_counter()
    try:
        response = case.call_and_validate(checks=CHECKS)
    except Exception:
        SEEN[case.operation.label, mode][-1] += 1  # -1: a failed check
        raise
    finally:
        SECONDS[case.operation.label] += time.perf_counter() - t0
    SEEN[case.operation.label, mode][response.status_code] += 1


def test_fuzzed_api_still_healthy(fuzz_api: Api, figures: Callable[[str, Any], None]) -> None:
    """After the fuzzing the API still answers, its log holds no unhandled error; the
    counts go to the test output and test-artifacts/reliability/fuzz.json."""
    with fuzz_api.client() as c:
        assert c.get("/readyz").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
    assert "unhandled error" not in fuzz_api.log_text()
    assert httpx.get(f"{fuzz_api.url}/v1/whoami").status_code == 401
    ops = sorted({op for op, _ in SEEN})
    published = {f"{m.upper()} {p}" for p, item in paths.items() for m in item}
    assert set(ops) == published, f"not fuzzed: {published - set(ops)}"
    statuses: Counter[int] = sum(SEEN.values(), Counter())
    figures(
        "fuzz",
        {
            "operations": len(ops),
            "cases": sum(statuses.values()),
            "positive": sum(sum(c.values()) for (_, m), c in SEEN.items() if m == "positive"),
            "negative": sum(sum(c.values()) for (_, m), c in SEEN.items() if m == "negative"),
            "failed_checks": statuses.pop(-1, 0),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "per_operation": {
                f"{op} [{mode}]": {str(k): v for k, v in sorted(c.items())}
                for (op, mode), c in sorted(SEEN.items())
            },
            "max_examples": MAX_EXAMPLES,
            "seconds": round(sum(SECONDS.values()), 1),
            "slowest": {
                op: round(t, 1) for op, t in sorted(SECONDS.items(), key=lambda x: -x[1])[:5]
            },
        },
    )
