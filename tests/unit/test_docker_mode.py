"""Docker mode without an engine: compose detection (v2 plugin, v1, neither), mode
selection, which commands run in job containers, and the compose command lines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from platform_cli import stack_mode
from platform_cli.compose_cli import ComposeCommand, detect_compose, parse_version
from platform_cli.docker_stack import ContainerStatus, DockerStack, job_mounts
from platform_cli.settings import StackSettings
from services.common.errors import TunestackError


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


class FakeDockerStack:
    running = False

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def is_running(self) -> bool:
        return self.running


def test_active_mode_follows_the_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(tmp_path)
    monkeypatch.setattr(stack_mode, "DockerStack", FakeDockerStack)
    monkeypatch.setattr(stack_mode, "docker_client", lambda timeout=3: object())
    monkeypatch.setattr(stack_mode, "local_running", lambda s: False)
    assert stack_mode.active_mode(s) == "local"  # nothing runs
    FakeDockerStack.running = True
    assert stack_mode.active_mode(s) == "docker"
    assert stack_mode.active_mode(s, "local") == "local"  # --mode wins
    monkeypatch.setattr(stack_mode, "local_running", lambda s: True)
    assert stack_mode.active_mode(s) == "local"  # local processes win over a compose project
    assert stack_mode.active_mode(settings(tmp_path, mode="docker")) == "docker"
    monkeypatch.setattr(stack_mode, "local_running", lambda s: False)
    monkeypatch.setattr(stack_mode, "docker_client", lambda timeout=3: None)
    assert stack_mode.active_mode(s) == "local"  # no engine
    FakeDockerStack.running = False


def test_job_commands_map_to_job_services() -> None:
    js = stack_mode.job_service
    assert js(["llm", "train", "--config", "x.yaml"]) == "trainer"
    assert js(["llm", "chat", "run1"]) == js(["llm", "eval", "run1"]) == "trainer"
    assert js(["llm", "export", "run1"]) == "converter"
    assert js(["llm", "deploy", "run1", "--to", "ollama"]) == "converter"
    assert js(["embed", "eval", "--dataset", "d.json"]) == "embed-tuner"
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

    monkeypatch.setattr(stack_mode, "DockerStack", Recorder)
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


def test_docker_stack_command_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNESTACK_VERSION", raising=False)
    s = settings(tmp_path, compose_project="p")
    stack = DockerStack(s, ComposeCommand(("docker-compose",), (1, 29, 2), "v1"), gpu=True)
    argv = stack.argv("up", "-d", profiles=["llamacpp"])
    assert argv[:3] == ["docker-compose", "--project-name", "p"]
    assert argv.count("--file") == 2 and str(s.compose_dir / "compose.gpu.yml") in argv
    assert "--env-file" not in argv  # no .env in the working directory
    assert stack.env()["TUNESTACK_VERSION"]  # the image tag defaults to our version
    (tmp_path / ".env").write_text("TUNESTACK_VERSION=9.9.9\n")
    assert "--env-file" in stack.argv("ps")
    assert "TUNESTACK_VERSION" not in stack.env()  # .env's value is left to compose

    recorded: list[list[str]] = []
    monkeypatch.setattr(
        "platform_cli.docker_stack.subprocess.run",
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
    def st(status: str, health: str | None) -> ContainerStatus:
        return ContainerStatus("rag-api", "rag-api", "http://x", "c", status, health)

    assert st("running", "healthy").state == "healthy" and st("running", "healthy").healthy
    assert st("running", "starting").state == "starting"
    assert st("exited", None).state == "exited" and not st("exited", None).healthy
    assert st("absent", None).state == "stopped"


def test_stack_settings_chroma_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(tmp_path).chroma_url == "http://127.0.0.1:8001"
    monkeypatch.setenv("TUNESTACK_CHROMA_URL", "http://chroma:8000")
    assert StackSettings().chroma_url == "http://chroma:8000"


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
        stack = DockerStack(
            s, ComposeCommand(("docker-compose",), (1, 29), "v1"), client=NoContainers()
        )
        with pytest.raises(TunestackError) as e:
            stack.check_ports(["chroma", "rag-api"])
    assert f"Port {port} for rag-api" in e.value.message
    assert "TUNESTACK_API_PORT" in str(e.value.hint)
