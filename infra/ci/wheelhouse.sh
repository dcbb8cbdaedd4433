#!/usr/bin/env bash
# Fill a local wheelhouse with every wheel our images install, for offline image builds:
# the Dockerfile then installs with `--no-index --find-links` (build args WHEELHOUSE and
# PIP_NO_INDEX=1) and no container ever needs a package index. Wheels come from this
# machine's pip configuration (its indexes, find-links and CA bundle), so the CPU torch
# wheel and the llama-cpp-python wheel built by `make setup` (.cache/wheels) are reused,
# never downloaded again or rebuilt. Skips the work when the inputs have not changed.
#
#   infra/ci/wheelhouse.sh [DIR]          (default .cache/wheelhouse, inside the build context)
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-.cache/wheelhouse}
# PIP_NO_INDEX=1 is meant for the image builds that use this wheelhouse, not for filling it
unset PIP_NO_INDEX
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3.11
roles=(ui llm rag jobs chroma)

mkdir -p "$out"
# llama.cpp's llama-server from `make llama-server` (the same pinned source), so the
# llamacpp image need not build it again
if [ -x .cache/llama-server/bin/llama-server ]; then
  install -D .cache/llama-server/bin/llama-server "$out/bin/llama-server"
fi
stamp="$out/.inputs.sha256"
digest=$(cat pyproject.toml constraints.txt compose/role_requirements.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  echo "wheelhouse $out is up to date ($(find "$out" -name '*.whl' | wc -l) wheels)"
  exit 0
fi

reqs=$(mktemp)
models=$(mktemp)
trap 'rm -f "$reqs" "$models"' EXIT
for role in "${roles[@]}"; do
  "$py" compose/role_requirements.py "$role" >>"$reqs"
  "$py" compose/role_requirements.py "$role" --models >>"$models"
done
sort -u -o "$reqs" "$reqs"
sort -u -o "$models" "$models"
sed -i '/^$/d' "$models"

# (pip names every configured file:// index that lacks a project: noise, filtered out)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
wheel=("$py" -m pip wheel --wheel-dir "$out" -c constraints.txt --find-links .cache/wheels -r "$reqs")
if ! quiet "${wheel[@]}" -q; then
  echo "pip wheel failed; again with pip's explanation:" >&2
  quiet "${wheel[@]}" 2>&1 | grep -v -E '^(Collecting|Processing|Saved|  Using|File was already|Looking in)' | tail -40 >&2
  exit 1
fi
quiet "$py" -m pip wheel -q --no-deps --wheel-dir "$out" -r "$models"
echo "$digest" >"$stamp"
echo "wheelhouse $out: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)"
