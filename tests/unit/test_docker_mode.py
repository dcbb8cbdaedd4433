"""The stacks without an engine or processes: compose detection (v2 plugin, v1, neither),
mode selection, which commands run in job containers, the compose command lines, what
each stack deploys to, and the llama.cpp deploy's rollback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from platform_cli.settings import StackSettings
from platform_cli.stack import UpOptions, llamacpp_target
from platform_cli.stack import mode as stack_mode
from platform_cli.stack.compose import ComposeStack, container_status, job_mounts
from platform_cli.stack.compose_cli import ComposeCommand, detect_compose, parse_version
from platform_cli.stack.embed_server import LlamaCppEmbedTarget
from platform_cli.stack.llamacpp_target import LlamaCppTarget, served_model
from platform_cli.stack.local import LocalStack, ProcSpec
from services.common.errors import ServiceUnavailable, TunestackError
from services.converter.deploy import DeployFile, OllamaTarget
from services.converter.embedder_gguf import OllamaEmbedTarget


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come from the environment and .env: make both neutral."""
    for key in list(os.environ):
        if key.startswith(("TUNESTACK_", "COMPOSE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def fake_run(answers: dict[str, tuple[int, str]]) -> Any:
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        rc, out = answers.get(argv[0] + (" " + argv[1] if argv[0] == "docker" else ""), (1, ""))
        return subprocess.CompletedProcess(argv, rc, out, "")

    return run


def test_parse_version() -> None:
    assert parse_version("v2.29.1") == (2, 29, 1)
    assert parse_version("1.29.2") == (1, 29, 2)
    assert parse_version("docker-compose version 1.25.0, build x") == (1, 25, 0)
    assert parse_version("garbage") == ()


def test_detects_the_v2_plugin_first() -> None:
    c = detect_compose(
        which=lambda name: f"/usr/bin/{name}",
        run=fake_run({"docker compose": (0, "v2.29.1\n"), "docker-compose": (0, "1.29.2\n")}),
    )
    assert c.argv == ("docker", "compose") and c.is_v2


def test_falls_back_to_v1_when_the_plugin_is_missing() -> None:
    c = detect_compose(
        which=lambda name: f"/usr/bin/{name}",
        run=fake_run({"docker compose": (1, ""), "docker-compose": (0, "1.29.2\n")}),
    )
    assert c.argv == ("docker-compose",) and not c.is_v2 and c.version == (1, 29, 2)


def test_says_clearly_when_no_compose_exists() -> None:
    with pytest.raises(TunestackError) as e:
        detect_compose(which=lambda name: None, run=fake_run({}))
    assert "neither the v2 plugin" in e.value.message
    assert e.value.hint and "--mode local" in e.value.hint and "docker-compose" in e.value.hint


def test_refuses_a_v1_without_profiles() -> None:
    with pytest.raises(TunestackError) as e:
        detect_compose(
            which=lambda name: None if name == "docker" else "/usr/bin/docker-compose",
            run=fake_run({"docker-compose": (0, "1.25.0\n")}),
        )
    assert "too old" in e.value.message


def test_compose_args_are_the_same_for_v1_and_v2(tmp_path: Path) -> None:
    for argv in (("docker", "compose"), ("docker-compose",)):
        c = ComposeCommand(argv, (2, 0, 0), "x")
        args = c.args(
            project="p", files=[tmp_path / "a.yml"], env_file=tmp_path / ".env", profiles=["jobs"]
        )
        assert args[len(argv) :] == [
            "--project-name",
            "p",
            "--file",
            str(tmp_path / "a.yml"),
            "--env-file",
            str(tmp_path / ".env"),
            "--profile",
            "jobs",
        ]


def settings(tmp_path: Path, **kw: Any) -> StackSettings:
    return StackSettings(home=tmp_path / "home", **kw)


def test_up_mode_auto_docker_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_mode, "docker_available", lambda: (True, ""))
    assert stack_mode.resolve_up_mode("auto") == "docker"
    assert stack_mode.resolve_up_mode("local") == "local"
    monkeypatch.setattr(stack_mode, "docker_available", lambda: (False, "no Docker engine answers"))
    assert stack_mode.resolve_up_mode("auto") == "local"
    monkeypatch.setattr(stack_mode, "detect_compose", lambda: None)
    with pytest.raises(TunestackError) as e:
        stack_mode.resolve_up_mode("docker")
    assert "no Docker engine answers" in e.value.message and "--mode local" in str(e.value.hint)
    with pytest.raises(TunestackError):
        stack_mode.resolve_up_mode("swarm")


class FakeComposeStack:
    running = False

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def is_running(self) -> bool:
        return self.running


def test_active_mode_follows_the_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(tmp_path)
    monkeypatch.setattr(stack_mode, "ComposeStack", FakeComposeStack)
    monkeypatch.setattr(stack_mode, "docker_client", lambda timeout=3: object())
    monkeypatch.setattr(stack_mode, "local_running", lambda s: False)
    assert stack_mode.active_mode(s) == "local"  # nothing runs
    FakeComposeStack.running = True
    assert stack_mode.active_mode(s) == "docker"
    assert stack_mode.active_mode(s, "local") == "local"  # --mode wins
    monkeypatch.setattr(stack_mode, "local_running", lambda s: True)
    assert stack_mode.active_mode(s) == "local"  # local processes win over a compose project
    assert stack_mode.active_mode(settings(tmp_path, mode="docker")) == "docker"
    monkeypatch.setattr(stack_mode, "local_running", lambda s: False)
    monkeypatch.setattr(stack_mode, "docker_client", lambda timeout=3: None)
    assert stack_mode.active_mode(s) == "local"  # no engine
    FakeComposeStack.running = False


def test_job_commands_map_to_job_services() -> None:
    js = stack_mode.job_service
    assert js(["llm", "train", "--config", "x.yaml"]) == "trainer"
    assert js(["llm", "chat", "run1"]) == js(["llm", "eval", "run1"]) == "trainer"
    assert js(["llm", "export", "run1"]) == "converter"
    assert js(["llm", "deploy", "run1", "--to", "ollama"]) == "converter"
    assert js(["embed", "eval", "--dataset", "d.json"]) == "embed-tuner"
    assert js(["rag", "eval", "--dataset", "d.json", "-c", "x"]) == "embed-tuner"
    assert js(["ingest", "docs", "-c", "x"]) == "embed-tuner"
    assert js(["ingest", "--help"]) is None
    assert js(["ask", "q", "-c", "x"]) is None
    assert js(["status"]) is None and js([]) is None


def test_delegate_job_runs_in_the_container_only_in_docker_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []

    class Recorder:
        def __init__(self, s: StackSettings) -> None:
            pass

        def run_job(self, service: str, argv: list[str]) -> int:
            calls.append((service, argv))
            return 7

    monkeypatch.setattr(stack_mode, "ComposeStack", Recorder)
    s = settings(tmp_path)
    monkeypatch.setattr(stack_mode, "active_mode", lambda s, requested=None: "local")
    assert stack_mode.delegate_job(["ingest", "d", "-c", "x"], s) is None
    monkeypatch.setattr(stack_mode, "active_mode", lambda s, requested=None: "docker")
    assert stack_mode.delegate_job(["ask", "q", "-c", "x"], s) is None
    assert stack_mode.delegate_job(["ingest", "d", "-c", "x"], s) == 7
    assert calls == [("embed-tuner", ["ingest", "d", "-c", "x"])]


def test_job_mounts_cover_paths_outside_the_working_directory(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    (cwd / "docs").mkdir(parents=True)
    other = tmp_path / "data"
    other.mkdir()
    (other / "set.json").write_text("{}")
    (tmp_path / "out").mkdir()
    argv = ["embed", "eval", "--dataset", str(other / "set.json"), f"--json={tmp_path}/out/r.json"]
    mounts = job_mounts([*argv, "docs", str(cwd / "docs")], cwd)
    # the input file itself; for an output not written yet, its existing folder
    assert mounts == [cwd, other / "set.json", tmp_path / "out"]
    # a path above the others replaces them
    assert job_mounts(["ingest", str(tmp_path)], cwd) == [tmp_path]
    assert job_mounts(["ingest", "docs"], cwd) == [cwd]


def test_compose_stack_command_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNESTACK_VERSION", raising=False)
    compose = ComposeCommand(("docker-compose",), (1, 29, 2), "v1")
    s = settings(tmp_path, compose_project="p")
    stack = ComposeStack(s, compose, gpu=True)
    argv = stack.argv("up", "-d", profiles=["llamacpp"])
    assert argv[:3] == ["docker-compose", "--project-name", "p"]
    assert argv.count("--file") == 2 and str(s.compose_dir / "compose.gpu.yml") in argv
    assert "--env-file" not in argv  # no .env in the working directory
    assert stack.env()["TUNESTACK_VERSION"]  # the image tag defaults to our version
    (tmp_path / ".env").write_text("TUNESTACK_VERSION=9.9.9\n")
    assert "--env-file" in stack.argv("ps")
    # settings read .env when they are made: a CLI started now leaves .env's tag to compose
    stack = ComposeStack(settings(tmp_path, compose_project="p"), compose, gpu=True)
    assert "TUNESTACK_VERSION" not in stack.env()

    recorded: list[list[str]] = []
    monkeypatch.setattr(
        "platform_cli.stack.compose.subprocess.run",
        lambda cmd, **k: recorded.append(cmd) or subprocess.CompletedProcess(cmd, 0, "", ""),
    )
    assert stack.run_job("embed-tuner", ["ingest", "docs", "-c", "x"], cwd=tmp_path) == 0
    cmd = recorded[-1]
    i = cmd.index("run")
    assert cmd[i : i + 2] == ["run", "--rm"] and cmd[-5:] == [
        "embed-tuner",
        "ingest",
        "docs",
        "-c",
        "x",
    ]
    assert f"{tmp_path}:{tmp_path}" in cmd and cmd[cmd.index("--workdir") + 1] == str(tmp_path)
    assert cmd[cmd.index("--profile") + 1] == "jobs"


def test_container_status_states() -> None:
    class Container:
        name = "c"

        def __init__(self, status: str, health: str | None) -> None:
            self.status = status
            self.attrs = {"State": {"Health": {"Status": health} if health else None}}

    def st(status: str, health: str | None) -> Any:
        c = None if status == "absent" else Container(status, health)
        return container_status("rag-api", "rag-api", "http://x", c)

    assert st("running", "healthy").state == "healthy" and st("running", "healthy").healthy
    assert st("running", "starting").state == "starting"
    assert not st("running", "starting").healthy and st("running", "starting").running
    assert st("running", None).healthy  # no healthcheck: running is healthy
    assert st("exited", None).state == "exited" and not st("exited", None).healthy
    assert st("absent", None).state == "stopped" and not st("absent", None).running
    assert st("absent", None).details == {"compose_service": "rag-api", "container": None}
    assert st("running", "healthy").details["container"] == "c"


def test_stack_settings_chroma_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(tmp_path).chroma_url == "http://127.0.0.1:8001"
    monkeypatch.setenv("TUNESTACK_CHROMA_URL", "http://chroma:8000")
    assert StackSettings().chroma_url == "http://chroma:8000"


def test_client_urls_follow_the_ports_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    s = settings(tmp_path, bind="0.0.0.0", chroma_port=9001, api_port=9000, ollama_port=9434)
    assert (s.chroma_url, s.api_url) == ("http://127.0.0.1:9001", "http://127.0.0.1:9000")
    assert s.ollama_host == "http://127.0.0.1:9434"
    assert not {"chroma_url", "api_url", "ollama_host"} & s.model_fields_set
    monkeypatch.setenv("TUNESTACK_API_URL", "http://rag-api:8000")
    monkeypatch.setenv("OLLAMA_HOST", "http://ollama:8080")
    s = settings(tmp_path, api_port=9000)
    assert (s.api_url, s.ollama_host) == ("http://rag-api:8000", "http://ollama:8080")


def test_up_names_a_taken_port(tmp_path: Path) -> None:
    import socket

    class NoContainers:
        class containers:  # mimics the docker SDK client.containers
            @staticmethod
            def list(**_: Any) -> list[Any]:
                return []

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with socket.socket() as other:  # chroma on a free port: 8001 may be in use here
            other.bind(("127.0.0.1", 0))
            free = other.getsockname()[1]
        s = settings(tmp_path, api_port=port, chroma_port=free)
        stack = ComposeStack(
            s, ComposeCommand(("docker-compose",), (1, 29), "v1"), client=NoContainers()
        )
        with pytest.raises(TunestackError) as e:
            stack.check_ports(["chroma", "rag-api"])
    assert f"Port {port} for rag-api" in e.value.message
    assert "TUNESTACK_API_PORT" in str(e.value.hint)


def test_open_stack_follows_the_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(tmp_path)
    assert isinstance(stack_mode.open_stack(s, "local"), LocalStack)
    assert isinstance(stack_mode.open_stack(s, "docker"), ComposeStack)
    monkeypatch.setattr(stack_mode, "local_running", lambda s: True)
    assert stack_mode.open_stack(s).mode == "local"  # the running stack


def test_serving_targets_per_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://ollama:8080")
    local, docker = LocalStack(settings(tmp_path)), ComposeStack(settings(tmp_path))
    for stack in (local, docker):
        target = stack.serving_target("ollama", adapter=True)
        assert isinstance(target, OllamaTarget) and target.adapter
        assert target.host == "http://ollama:8080"
        with pytest.raises(TunestackError, match="use ollama or llamacpp"):
            stack.serving_target("vllm")
    assert isinstance(local.serving_target("llamacpp"), LlamaCppTarget)
    with pytest.raises(TunestackError) as e:
        docker.serving_target("llamacpp")
    assert "deploy with --to ollama" in str(e.value.hint)
    in_job = LocalStack(settings(tmp_path, in_job_container=True))
    with pytest.raises(TunestackError, match="job container"):
        in_job.serving_target("llamacpp")
    assert local.run_job("embed-tuner", ["ingest", "d"]) is None  # local: run here


def test_local_processes_use_the_single_setting_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESTACK_LLM_CTX", "1024")
    monkeypatch.setenv("TUNESTACK_LLM_THREADS", "3")
    monkeypatch.setenv("TUNESTACK_LLM_ENGINE", "llama-cpp-python")
    s = settings(tmp_path, chroma_port=9001, api_port=9000, llm_port=9080)
    stack = LocalStack(s)
    env = stack.child_env()
    assert env["TUNESTACK_CHROMA_URL"] == "http://127.0.0.1:9001"
    assert env["TUNESTACK_API_URL"] == "http://127.0.0.1:9000"
    assert env["TUNESTACK_RAG_LLM_BASE_URL"] == "http://127.0.0.1:9080/v1"
    assert env["TUNESTACK_DEFAULT_LLM"] == s.default_llm
    assert not {"TUNESTACK_RAG_CHROMA_URL", "TUNESTACK_UI_API_URL"} & set(env)
    rows = stack.status()  # nothing runs in this home
    assert [r.name for r in rows] == ["chroma", "llm", "rag-api", "ui"]
    assert {(r.state, r.healthy, r.running, r.details["pid"]) for r in rows} == {
        ("stopped", False, False, None)
    }
    assert rows[1].url == "http://127.0.0.1:9080/v1" and not stack.is_running()
    # the llama.cpp command line is services.llm_server's, on the stack's port
    argv = stack.spec("llm", tmp_path / "m.gguf", "tuned").argv
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--model"] == str(tmp_path / "m.gguf") and flags["--model_alias"] == "tuned"
    assert (flags["--port"], flags["--n_ctx"], flags["--n_threads"]) == ("9080", "1024", "3")


def test_llm_engine_auto_is_llama_server_where_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "bin" / "llama-server"
    monkeypatch.setenv("TUNESTACK_LLM_SERVER_BINARY", str(binary))
    stack = LocalStack(settings(tmp_path, llm_port=9080))
    assert stack.llm_settings.engine == "auto"
    assert stack.spec("llm", tmp_path / "m.gguf", "tuned").argv[1:3] == ["-m", "llama_cpp.server"]
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    argv = stack.spec("llm", tmp_path / "m.gguf", "tuned").argv
    assert argv[0] == str(binary) and "--parallel" in argv and "--alias" in argv


def test_local_up_refuses_docker_only_options(tmp_path: Path) -> None:
    for options in (UpOptions(llm="ollama"), UpOptions(gpu=True)):
        with pytest.raises(TunestackError, match="need docker mode"):
            LocalStack(settings(tmp_path)).up(options, lambda m: None)


class FakeServer:
    """The local stack's llama.cpp process calls, recorded; the first start fails to
    become healthy when `fail` is set."""

    def __init__(self, stack: LocalStack, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fail = fail
        monkeypatch.setattr(stack, "running_argv", lambda name: ["old", "argv"])
        monkeypatch.setattr(stack, "stop", self.stop)
        monkeypatch.setattr(stack, "start", self.start)
        monkeypatch.setattr(stack, "wait_healthy", self.wait_healthy)

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        self.events.append(("stop", name))
        return True

    def start(self, spec: ProcSpec) -> int:
        self.events.append(("start", spec.argv))
        return 1

    def wait_healthy(self, spec: ProcSpec, timeout: float) -> None:
        if self.fail and len(self.events) == 2:
            raise ServiceUnavailable("llm", "llm did not become healthy")


def test_llamacpp_deploy_rolls_back_to_the_previous_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llamacpp_target, "preflight", lambda gguf, threads: "ok")
    monkeypatch.setattr(llamacpp_target, "_verify_chat", lambda url, alias, timeout: "Hello!")
    s = settings(tmp_path)
    gguf = tmp_path / "tuned.gguf"
    gguf.write_bytes(b"gguf")
    f = DeployFile("q8_0", gguf, "0" * 64, 4, record=None)  # type: ignore[arg-type]
    entry: Any = None

    stack = LocalStack(s)
    server = FakeServer(stack, monkeypatch, fail=True)
    with pytest.raises(ServiceUnavailable):
        stack.serving_target("llamacpp").install(entry, f, "tuned", lambda m: None)
    new_argv = server.events[1][1]
    assert "--model" in new_argv and str(gguf) in new_argv and "tuned" in new_argv
    assert server.events == [
        ("stop", "llm"),
        ("start", new_argv),
        ("stop", "llm"),
        ("start", ["old", "argv"]),  # the previous server, exactly as it ran
    ]
    assert served_model(s) is None  # nothing recorded: `up` keeps serving the old model

    stack = LocalStack(s)
    server = FakeServer(stack, monkeypatch, fail=False)
    done = stack.serving_target("llamacpp").install(entry, f, "tuned", lambda m: None)
    assert (done.to, done.base_url, done.response) == ("llamacpp", s.llm_url, "Hello!")
    assert done.details == {"file": str(gguf)}
    assert served_model(s) == (gguf, "tuned")  # `tunestack up` serves it after a restart


def test_embed_targets_per_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://ollama:8080")
    local, docker = LocalStack(settings(tmp_path)), ComposeStack(settings(tmp_path))
    for stack in (local, docker):
        target = stack.embed_target("ollama")
        assert isinstance(target, OllamaEmbedTarget) and target.host == "http://ollama:8080"
        with pytest.raises(TunestackError, match="use ollama or llamacpp"):
            stack.embed_target("vllm")
    assert isinstance(local.embed_target("llamacpp"), LlamaCppEmbedTarget)
    with pytest.raises(TunestackError, match="the stack runs in docker"):
        docker.embed_target("llamacpp")
    in_job = LocalStack(settings(tmp_path, in_job_container=True))
    with pytest.raises(TunestackError, match="job container"):
        in_job.embed_target("llamacpp")


def test_vllm_needs_a_gpu(tmp_path: Path) -> None:
    stack = ComposeStack(settings(tmp_path), ComposeCommand(("docker-compose",), (1, 29), "v1"))
    with pytest.raises(TunestackError) as e:
        stack.up(UpOptions(llm="vllm"), lambda m: None)
    assert "NVIDIA GPUs only" in e.value.message and "--gpu" in str(e.value.hint)
    with pytest.raises(TunestackError) as e:
        stack.up(UpOptions(llm="tgi"), lambda m: None)
    assert "ollama, llamacpp, vllm" in str(e.value.hint)
