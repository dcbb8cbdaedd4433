"""Remote embedders without a server: what decides their fingerprint, what a Retry-After
means, what an endpoint may look like, the vector cache, and chunk sizing without the
provider's tokenizer. (The provider paths themselves run against real servers in
tests/integration/test_embed_providers.py.)"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import numpy as np
import pytest

from services.common.embedders import estimate_tokens, normalize
from services.common.embedders.cache import VectorCache, text_key
from services.common.embedders.remote import (
    _retry_after,
    register_remote,
    remote_fingerprint,
    validate_endpoint,
)
from services.common.errors import BadInput, Conflict
from services.common.records import RemoteEndpoint
from services.common.registry import Registry

EP = RemoteEndpoint(base_url="https://api.example.com/v1", model="text-embedding-3-small")


def test_fingerprint_follows_what_decides_the_vectors_and_never_the_key() -> None:
    fp = remote_fingerprint("openai-compatible", EP)
    assert fp == remote_fingerprint("openai-compatible", EP.model_copy(update={"api_key_env": "K"}))
    assert fp == remote_fingerprint("openai-compatible", EP.model_copy(update={"max_batch": 8}))
    for change in (
        {"model": "text-embedding-3-large"},
        {"dimensions": 256},
        {"base_url": "https://other.example.com/v1"},
        {"query_prefix": "query: "},
    ):
        assert fp != remote_fingerprint("openai-compatible", EP.model_copy(update=change))
    assert fp != remote_fingerprint("ollama", EP)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after(None) is None and _retry_after("soon") is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after(when) or 0) <= 31
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_url": "ftp://x/v1"}, "not an http"),
        ({"base_url": "https://user:secret@api.example.com/v1"}, "must not carry credentials"),
        ({"model": " "}, "--model is empty"),
        ({"max_batch": 0}, "--max-batch"),
        ({"dimensions": 0}, "--dimensions"),
    ],
)
def test_endpoints_are_checked_before_anything_is_sent(change: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        validate_endpoint("openai-compatible", EP.model_copy(update=change))
    with pytest.raises(BadInput, match="Unknown provider"):
        validate_endpoint("cohere", EP)


def test_register_without_probe_records_the_variable_not_the_key(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    ep = EP.model_copy(update={"api_key_env": "OPENAI_API_KEY", "dimensions": 512})
    entry = register_remote(reg, "oai-small", "openai-compatible", ep, probe=False)
    rec = reg.embedder("oai-small").record  # get() needs no weights on disk for a remote one
    assert rec.is_remote and not rec.tunable and rec.dimension == 512
    assert rec.remote.api_key_env == "OPENAI_API_KEY" and entry.fingerprint == rec.fingerprint
    with pytest.raises(Conflict, match="already exists"):
        register_remote(reg, "oai-small", "openai-compatible", ep, probe=False)
    register_remote(reg, "oai-small", "openai-compatible", ep, probe=False, replace=True)


def test_vector_cache_round_trip_and_survives_an_unwritable_file(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "c" / "fp.sqlite")
    assert cache.get_many([text_key("fp", "a")]) == {} and len(cache) == 0
    v = np.arange(4, dtype=np.float32)
    cache.put_many({text_key("fp", "a"): v})
    got = cache.get_many([text_key("fp", "a"), text_key("fp", "b")])
    assert list(got) == [text_key("fp", "a")] and np.array_equal(got[text_key("fp", "a")], v)
    assert text_key("fp", "a") != text_key("other", "a")
    blocked = VectorCache(tmp_path / "file-not-dir" / "x.sqlite")
    (tmp_path / "file-not-dir").write_text("")
    blocked.put_many({text_key("fp", "a"): v})  # logged, not raised: the cache is optional
    assert blocked.get_many([text_key("fp", "a")]) == {}


def test_token_estimate_counts_cjk_characters_and_words() -> None:
    assert estimate_tokens("保修期多长") == 5
    assert estimate_tokens("The warranty lasts two years.") == round(6 * 1.3)
    assert estimate_tokens("") == 0


def test_normalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]]) and out.dtype == np.float32
