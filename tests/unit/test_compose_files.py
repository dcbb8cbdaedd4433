"""compose/: the files render under docker-compose for every profile and override, every
variable they read is documented in .env.example, and the pins agree with pyproject."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.common.registry import BASE_MODELS
from services.common.settings import DEPRECATED_ENV
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
FILES = (COMPOSE / "compose.yml", COMPOSE / "compose.gpu.yml", COMPOSE / "compose.scale.yml")
LONG_RUNNING = ("chroma", "ollama", "llamacpp", "vllm", "rag-api", "ui")
JOBS = ("trainer", "converter", "embed-tuner")

sys.path.insert(0, str(COMPOSE))
import role_requirements  # noqa: E402


def _compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yml").read_text())


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def _example() -> dict[str, str]:
    out = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_env_example_documents_every_variable() -> None:
    used = set()
    for f in FILES:
        used |= _variables(f.read_text())
    # bare keys in `environment:` are passed through from the environment / .env
    for svc in _compose()["services"].values():
        env = svc.get("environment") or {}
        used |= {k for k, v in env.items() if v is None}
    documented = set(_example())
    assert used - documented == set(), f"undocumented in .env.example: {used - documented}"
    assert "TUNESTACK_VERSION" in documented


def test_services_profiles_healthchecks_and_dependencies() -> None:
    services = _compose()["services"]
    assert set(LONG_RUNNING) | set(JOBS) | {"ollama-pull"} == set(services)
    assert services["ollama"]["profiles"] == ["ollama"]
    assert services["llamacpp"]["profiles"] == ["llamacpp"]
    assert services["vllm"]["profiles"] == ["vllm"]
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
    for name in JOBS:
        assert services[name]["profiles"] == ["jobs"]
        assert services[name]["build"]["target"] == "jobs"
        assert services[name]["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert services["rag-api"]["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert services["ui"]["depends_on"]["rag-api"]["condition"] == "service_healthy"
    # every LLM server answers as http://llm:8080 inside the network
    for name in ("ollama", "llamacpp", "vllm"):
        assert "llm" in services[name]["networks"]["default"]["aliases"]
    assert services["rag-api"]["environment"]["TUNESTACK_RAG_LLM_BASE_URL"] == "http://llm:8080/v1"


def test_services_use_the_single_setting_names() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        old = set(svc.get("environment") or {}) & set(DEPRECATED_ENV)
        assert not old, f"{name} sets deprecated {old}"
    for name in JOBS:
        env = services[name]["environment"]
        assert env["TUNESTACK_IN_JOB_CONTAINER"] == "1"
        assert (
            env["TUNESTACK_CHROMA_URL"]
            == services["rag-api"]["environment"]["TUNESTACK_CHROMA_URL"]
        )
    assert services["ui"]["environment"]["TUNESTACK_API_URL"] == "http://rag-api:8000"


def test_only_api_and_ui_follow_bind_and_images_are_required() -> None:
    text = (COMPOSE / "compose.yml").read_text()
    services = _compose()["services"]
    for name in LONG_RUNNING:
        published = ("rag-api", "ui")
        prefix = "${TUNESTACK_BIND:-127.0.0.1}:" if name in published else "127.0.0.1:"
        for port in services[name]["ports"]:
            assert port.startswith(prefix), (name, port)
    api = services["rag-api"]["environment"]
    assert api["TUNESTACK_RAG_EXPOSED_ON"] == "${TUNESTACK_BIND:-127.0.0.1}"
    assert "TUNESTACK_API_KEY" not in services["ui"]["environment"]  # people sign in
    assert "${TUNESTACK_VERSION:?" in text
    assert _example()["TUNESTACK_BIND"] == "127.0.0.1"


def test_named_volumes_hold_the_state() -> None:
    c = _compose()
    assert set(c["volumes"]) == {"home", "chroma-data", "ollama-models"}
    for name in ("llamacpp", "rag-api", *JOBS):
        assert "home:/data/tunestack" in c["services"][name]["volumes"]
    assert "chroma-data:/data" in c["services"]["chroma"]["volumes"]


def test_pins_agree_with_pyproject_and_registry() -> None:
    chroma = role_requirements.requirements("chroma")
    assert chroma == ["chromadb==1.5.9"]
    version = chroma[0].split("==")[1]
    assert _compose()["services"]["chroma"]["image"].endswith(f":{version}}}")
    assert _example()["CHROMA_IMAGE"].endswith(f":{version}")
    packages = {m.package for m in BASE_MODELS.values()}
    assert packages == {
        role_requirements.LLM_MODEL,
        role_requirements.EMBED_MODEL,
        role_requirements.MULTILINGUAL_EMBED_MODEL,
    }
    assert set(role_requirements.model_packages("jobs")) == packages


def test_role_requirements_keep_torch_out_of_the_ui() -> None:
    ui = role_requirements.requirements("ui")
    assert any(r.startswith("streamlit") for r in ui)
    assert not any(r.startswith(("torch", "sentence-transformers", "chromadb")) for r in ui)
    rag = role_requirements.requirements("rag")
    assert "torch==2.13.0" in rag and not any(r.startswith("tunestack") for r in rag)
    jobs = role_requirements.requirements("jobs")
    assert set(rag) <= set(jobs) and any(r.startswith("llama-cpp-python") for r in jobs)
    assert role_requirements.requirements("torch") == ["torch==2.13.0"]
    assert role_requirements.model_packages("ui") == []


def test_dockerfile_targets_and_non_root_user() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))
    finals_ = ("ui", "llamacpp", "rag-api", "jobs", "chroma", "redis", "haproxy")
    assert {"base", *finals_} <= targets
    finals = re.split(r"^FROM ", text, flags=re.M)
    for block in finals:
        name = block.split("\n", 1)[0].split(" AS ")[-1]
        if name in finals_:
            assert "USER tunestack" in block, name
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    # docker-compose v1 builds with the classic builder: no BuildKit-only syntax
    assert not re.search(r"^RUN\s+--mount", text, re.M)


V2_PLUGIN_DIR = ROOT / ".cache" / "docker-v2"  # infra/ci/compose_e2e.sh puts the v2 plugin here


def _compose_cmd(version: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of compose v1 or the v2 plugin, or skip when absent."""
    env = dict(os.environ)
    if version == "v1":
        exe = shutil.which("docker-compose")
        if exe is None:
            unavailable("docker-compose (v1) is not installed (.ci/run installs it)")
        return [exe], env
    for config in (env.get("DOCKER_CONFIG"), str(V2_PLUGIN_DIR)):
        trial = {**env, "DOCKER_CONFIG": config} if config else env
        if (
            shutil.which("docker")
            and (
                subprocess.run(["docker", "compose", "version"], capture_output=True, env=trial)
            ).returncode
            == 0
        ):
            return ["docker", "compose"], trial
    unavailable("the compose v2 plugin is not installed (infra/ci/test_tools.sh installs it)")


def _docker_compose() -> str:
    return _compose_cmd("v1")[0][0]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("extra", "profiles", "expect"),
    [
        ([], ["ollama"], {"chroma", "ollama", "ollama-pull", "rag-api", "ui"}),
        ([], ["llamacpp"], {"chroma", "llamacpp", "rag-api", "ui"}),
        ([], ["llamacpp", "jobs"], {"chroma", "llamacpp", "rag-api", "ui", *JOBS}),
        (
            ["compose.gpu.yml"],
            ["ollama", "jobs"],
            {"chroma", "ollama", "ollama-pull", "rag-api", "ui", *JOBS},
        ),
        (["compose.gpu.yml"], ["vllm", "jobs"], {"chroma", "vllm", "rag-api", "ui", *JOBS}),
    ],
)
def test_docker_compose_config_renders(
    version: str, extra: list[str], profiles: list[str], expect: set[str], tmp_path: Path
) -> None:
    cmd, env = _compose_cmd(version)
    argv = [*cmd, "--env-file", str(COMPOSE / ".env.example")]
    for f in ["compose.yml", *extra]:
        argv += ["-f", str(COMPOSE / f)]
    for p in profiles:
        argv += ["--profile", p]
    r = subprocess.run([*argv, "config"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert expect <= set(cfg["services"])
    if version == "v2":  # v2 leaves out services of inactive profiles; v1 lists them all
        assert set(cfg["services"]) == expect
    if extra:
        trainer = cfg["services"]["trainer"]
        devices = trainer["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"
        assert trainer["image"].endswith("-cuda")
        assert "cu128" in trainer["build"]["args"]["TORCH_INDEX_URL"]
        llm = "vllm" if "vllm" in profiles else "ollama"
        assert "deploy" in cfg["services"][llm]
        if llm == "vllm":
            vllm = cfg["services"]["vllm"]
            assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
            args = vllm["command"]
            assert args[0] == "/data/tunestack/models/llm/kb-assistant/merged", args
            assert "--served-model-name=smollm2-135m-instruct" in args
            assert "127.0.0.1" in str(vllm["ports"][0])  # never beyond loopback


def test_docker_compose_names_a_missing_required_value(tmp_path: Path) -> None:
    env = tmp_path / "empty.env"
    env.write_text("")
    r = subprocess.run(
        [_docker_compose(), "--env-file", str(env), "-f", str(COMPOSE / "compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert r.returncode != 0 and "TUNESTACK_VERSION" in r.stderr


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_scale_profile_renders_two_replicas_behind_the_balancer(
    version: str, tmp_path: Path
) -> None:
    """compose.scale.yml: 2 API replicas and 2 workers on one registry volume, Redis with
    a password and Milvus inside the network only, the balancer and the UI the only
    published ports; without a Redis password it refuses to render, naming it."""
    cmd, env = _compose_cmd(version)
    dotenv = tmp_path / "scale.env"
    dotenv.write_text(
        (COMPOSE / ".env.example").read_text() + "\nTUNESTACK_REDIS_PASSWORD=s3cret-long-pass\n"
    )
    argv = [*cmd, "--env-file", str(dotenv), "-f", str(COMPOSE / "compose.scale.yml")]
    argv += ["--profile", "train"]  # worker-train is opt-in
    r = subprocess.run([*argv, "config"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert set(services) == {
        "redis", "milvus", "llm", "api-1", "api-2", "worker-1", "worker-2", "worker-train",
        "lb", "ui",
    }  # fmt: skip
    published = {n for n, svc in services.items() if svc.get("ports")}
    assert published == {"lb", "ui"}
    for name in ("lb", "ui"):
        (port,) = services[name]["ports"]
        assert "127.0.0.1" in str(port), port  # TUNESTACK_BIND's default: loopback
    for name in ("api-1", "api-2", "worker-1", "worker-2", "worker-train"):
        e = services[name]["environment"]
        assert e["TUNESTACK_QUEUE_URL"] == "redis://:s3cret-long-pass@redis:6379/0"
        assert e["TUNESTACK_VECTOR_STORE"] == "milvus"
        assert e["TUNESTACK_MILVUS_URI"] == "http://milvus:19530"
        (vol,) = services[name]["volumes"]  # v1 writes "home:/data/tunestack:rw", v2 a dict
        assert vol.startswith("home:/data/tunestack") if isinstance(vol, str) else (
            vol["source"], vol["target"]) == ("home", "/data/tunestack")  # fmt: skip
    worker = ["python", "-m", "services.rag_api.job_worker", "jobs"]
    assert services["worker-1"]["command"] == worker
    # tune/train jobs: the jobs image (its entrypoint is the CLI), opt-in profile
    train = services["worker-train"]
    assert train["command"] == ["worker", "--queues", "train"] and train["profiles"] == ["train"]
    assert "/jobs:" in train["image"] and train["build"]["target"] == "jobs"
    assert "s3cret-long-pass" in services["redis"]["command"]
    assert services["ui"]["environment"]["TUNESTACK_API_URL"] == "http://lb:8000"
    assert services["redis"]["build"]["target"] == "redis"
    assert services["lb"]["build"]["target"] == "haproxy"
    cfg = (COMPOSE / "haproxy.cfg").read_text()
    assert "server api-1 api-1:8000 check" in cfg and "server api-2 api-2:8000 check" in cfg
    # no password, no stack
    example = str(COMPOSE / ".env.example")
    r = subprocess.run(
        [*cmd, "--env-file", example, "-f", str(COMPOSE / "compose.scale.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode != 0 and "TUNESTACK_REDIS_PASSWORD" in r.stderr
