"""The Helm chart (infra/helm/tunestack), rendered by a real helm and checked against
Kubernetes' own schemas (kubernetes-validate, strict) and a policy linter (checkov), plus
the promises the chart makes: 2+ API replicas with an HPA, a PDB and probes; non-root,
read-only pods with limits; only the API and the UI reachable; GPUs for vLLM and GPU jobs;
every TUNESTACK_ variable it sets is a real setting.

No cluster runs here: what a cluster would do with the manifests is left to one.
The tools come from infra/ci/test_tools.sh; under CI=1 a missing one fails.
"""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from tests.conftest import ROOT, unavailable

CHART = ROOT / "infra" / "helm" / "tunestack"
HELM = ROOT / ".cache" / "k8s-tools" / "helm"
K8S_VENV = ROOT / ".cache" / "k8s-venv" / "bin"
KUBE_VERSION = "1.31.0"
GPU_JOB = [
    "--set=llm.engine=vllm",
    "--set=jobs[0].name=train-kb",
    "--set=jobs[0].command={llm,train,--config,/data/tunestack/configs/kb.yaml}",
    "--set=jobs[0].gpus=2",
]
VARIANTS = {
    "llamacpp": [],
    "ollama": [
        "--set=llm.engine=ollama",
        "--set=networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.team=edge",
    ],
    "vllm-gpu-job": GPU_JOB,
    "fixed-replicas": ["--set=api.autoscaling.enabled=false", "--set=ui.enabled=false"],
    "milvus": ["--set=vectorStore.engine=milvus", "--set=vectorStore.milvus.tokenSecret=mv"],
    "multi-node-job": [
        "--set=jobs[0].name=big",
        "--set=jobs[0].command={llm,train,--config,/data/tunestack/configs/kb.yaml}",
        "--set=jobs[0].nodes=2",
        "--set=jobs[0].gpus=4",
    ],
}


def tool(path: Path) -> Path:
    if not path.is_file():
        unavailable(f"{path.relative_to(ROOT)} is missing (infra/ci/test_tools.sh installs it)")
    return path


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool(HELM)), "template", "t", str(CHART), "--namespace", "tunestack", *args],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("helm")
    files = {}
    for name, args in VARIANTS.items():
        r = helm(*args)
        assert r.returncode == 0, r.stderr
        files[name] = out / f"{name}.yaml"
        files[name].write_text(r.stdout)
    return files


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in items if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_specs(items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    kinds = ("Deployment", "StatefulSet", "Job")
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in items if d["kind"] in kinds
    ]


def test_every_manifest_passes_the_kubernetes_schemas(
    rendered: dict[str, Path], tmp_path: Path
) -> None:
    validate = str(tool(K8S_VENV / "kubernetes-validate"))
    for path in rendered.values():
        r = subprocess.run(
            [validate, "--strict", "--quiet", "-k", KUBE_VERSION, str(path)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    # the validator is not a no-op: a misspelled field in one manifest fails it
    broken = rendered["llamacpp"].read_text().replace("readinessProbe:", "readynessProbe:", 1)
    (tmp_path / "broken.yaml").write_text(broken)
    r = subprocess.run(
        [validate, "--strict", "--quiet", "-k", KUBE_VERSION, str(tmp_path / "broken.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "readynessProbe" in r.stdout + r.stderr


def test_checkov_finds_nothing(rendered: dict[str, Path]) -> None:
    checkov = str(tool(K8S_VENV / "checkov"))
    r = subprocess.run(
        [
            checkov,
            "--config-file",
            str(CHART.parent / ".checkov.yaml"),
            "-d",
            str(rendered["llamacpp"].parent),
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "Failed checks: 0" in r.stdout, r.stdout[-4000:] + r.stderr


def test_api_replicas_scale_and_survive_disruptions(rendered: dict[str, Path]) -> None:
    items = docs(rendered["llamacpp"])
    api = find(items, "Deployment", "t-api")
    assert "replicas" not in api["spec"]  # the HPA owns it
    hpa = find(items, "HorizontalPodAutoscaler", "t-api")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["name"] == "t-api"
    assert find(items, "PodDisruptionBudget", "t-api")["spec"]["minAvailable"] == 1
    (c,) = api["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    fixed = find(docs(rendered["fixed-replicas"]), "Deployment", "t-api")
    assert fixed["spec"]["replicas"] == 2
    worker = find(items, "Deployment", "t-worker")
    assert worker["spec"]["replicas"] == 2
    (w,) = worker["spec"]["template"]["spec"]["containers"]
    assert w["command"] == ["python", "-m", "services.rag_api.job_worker", "jobs"]


def test_pods_are_non_root_read_only_and_bounded(rendered: dict[str, Path]) -> None:
    for path in rendered.values():
        for name, spec in pod_specs(docs(path)):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] >= 10000, name
            assert spec["automountServiceAccountToken"] is False, name
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
                assert ":latest" not in c["image"], name
                secrets = [e for e in c.get("env", []) if e["name"] in ("TUNESTACK_API_KEY",)]
                assert all("secretKeyRef" in e["valueFrom"] for e in secrets), name


def test_only_the_api_and_the_ui_are_reachable(rendered: dict[str, Path]) -> None:
    for variant in ("llamacpp", "ollama"):
        items = docs(rendered[variant])
        services = [d for d in items if d["kind"] == "Service"]
        assert {s["spec"].get("type", "ClusterIP") for s in services} == {"ClusterIP"}
        policies = [d for d in items if d["kind"] == "NetworkPolicy"]
        deny = find(items, "NetworkPolicy", "t-default-deny")
        assert deny["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "t"}
        assert "ingress" not in deny["spec"] and "Egress" in deny["spec"]["policyTypes"]
        open_to_all = []
        for p in policies:
            for rule in p["spec"].get("ingress", []):
                sources = rule.get("from")  # none: anyone; a namespace or an IP: outside
                if not sources or any(set(s) - {"podSelector"} for s in sources):
                    open_to_all.append(p["spec"]["podSelector"]["matchLabels"])
        components = {m["app.kubernetes.io/component"] for m in open_to_all}
        assert components == {"api", "ui"}, open_to_all
        for internal in ("chroma", "redis", "llm"):
            p = find(items, "NetworkPolicy", f"t-{internal}-ingress")
            (source,) = p["spec"]["ingress"][0]["from"]
            allowed = source["podSelector"]["matchExpressions"][1]["values"]
            assert set(allowed) <= {"api", "worker", "train-worker", "job"}
        # tune/train jobs: the jobs image on the train queue, no port
        tw = find(items, "Deployment", "t-train-worker")["spec"]["template"]["spec"]
        (c,) = tw["containers"]
        assert c["args"] == ["worker", "--queues", "train"] and "/jobs:" in c["image"]
        assert "ports" not in c and "nvidia.com/gpu" not in c["resources"]["limits"]


def test_vllm_and_gpu_jobs_ask_for_gpus(rendered: dict[str, Path]) -> None:
    items = docs(rendered["vllm-gpu-job"])
    (llm,) = find(items, "Deployment", "t-llm")["spec"]["template"]["spec"]["containers"]
    assert llm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert llm["args"][0] == "/data/tunestack/models/llm/kb-assistant/merged"
    assert any(a == "--served-model-name=kb-assistant" for a in llm["args"])
    job = find(items, "Job", "t-train-kb")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["llm", "train", "--config", "/data/tunestack/configs/kb.yaml"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # a CPU engine asks for none
    assert "nvidia.com/gpu" not in str(docs(rendered["llamacpp"]))


def test_multi_node_training_is_an_indexed_job_with_launcher_variables(
    rendered: dict[str, Path],
) -> None:
    """nodes: 2 -> an Indexed Job of 2 pods, each torchrun-launched with LLaMA-Factory's
    variables: NODE_RANK from the completion index, MASTER_ADDR pod 0's stable name
    (headless Service + subdomain), one process per GPU; peers may reach each other."""
    items = docs(rendered["multi-node-job"])
    job = find(items, "Job", "t-big")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "t-big"
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NNODES"]["value"] == "2"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["MASTER_ADDR"]["value"] == "t-big-0.t-big"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["NPROC_PER_NODE"]["value"] == "4"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    svc = find(items, "Service", "t-big")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "t-big"}
    peers = find(items, "NetworkPolicy", "t-big-peers")
    assert peers["spec"]["podSelector"]["matchLabels"] == {"batch.kubernetes.io/job-name": "t-big"}
    # the variables are the ones the trainer's settings read
    assert {"NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE"} <= (
        known_variables()
    )
    # a one-node, one-GPU job stays a plain Job
    single = find(docs(rendered["vllm-gpu-job"]), "Job", "t-train-kb")["spec"]
    assert "completionMode" not in single


def test_milvus_replaces_chroma(rendered: dict[str, Path]) -> None:
    """vectorStore.engine=milvus: no Chroma in the release, every process pointed at the
    Milvus URI (token from its Secret), and egress to Milvus's port allowed."""
    items = docs(rendered["milvus"])
    assert not [d for d in items if "chroma" in d["metadata"]["name"]]
    (api,) = find(items, "Deployment", "t-api")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in api["env"]}
    assert env["TUNESTACK_VECTOR_STORE"]["value"] == "milvus"
    assert env["TUNESTACK_MILVUS_URI"]["value"].endswith(":19530")
    assert env["TUNESTACK_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "mv",
        "key": "token",
    }
    assert "TUNESTACK_CHROMA_URL" not in env
    egress = find(items, "NetworkPolicy", "t-default-deny")["spec"]["egress"]
    assert {"protocol": "TCP", "port": 19530} in [p for r in egress for p in r.get("ports", [])]
    assert find(docs(rendered["llamacpp"]), "StatefulSet", "t-chroma")


def test_refusals_name_the_fix() -> None:
    r = helm("--set=vectorStore.engine=qdrant")
    assert r.returncode != 0 and "choose chroma or milvus" in r.stderr
    r = helm("--set=llm.engine=tgi")
    assert r.returncode != 0 and "choose llamacpp, ollama or vllm" in r.stderr
    r = helm("--set=jobs[0].name=big", "--set=jobs[0].command={llm}", "--set=jobs[0].nodes=-1")
    assert r.returncode != 0 and "jobs[big].nodes must be 1 or more" in r.stderr


def known_variables() -> set[str]:
    """Every variable a settings class reads (prefix + field, or its aliases)."""
    names: set[str] = set()
    modules = [f"services.{p.parent.name}.settings" for p in ROOT.glob("services/*/settings.py")]
    for module in [*modules, "platform_cli.settings"]:
        for obj in vars(importlib.import_module(module)).values():
            if not (isinstance(obj, type) and issubclass(obj, BaseSettings)):
                continue
            prefix = obj.model_config.get("env_prefix", "")
            for field_name, info in obj.model_fields.items():
                alias = info.validation_alias
                if isinstance(alias, AliasChoices):
                    names |= {a for a in alias.choices if isinstance(a, str)}
                else:
                    names.add(f"{prefix}{field_name}".upper())
    return names


def test_every_tunestack_variable_the_chart_sets_is_a_setting(rendered: dict[str, Path]) -> None:
    known = known_variables()
    seen = set()
    for path in rendered.values():
        for _, spec in pod_specs(docs(path)):
            for c in spec["containers"]:
                seen |= {e["name"] for e in c.get("env", []) if e["name"].startswith("TUNESTACK_")}
    assert seen and not (seen - known), sorted(seen - known)
