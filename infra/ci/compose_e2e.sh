#!/usr/bin/env bash
# `make test-compose`: the real stack under docker compose, end to end, on a machine
# that reaches no image registry (CI). Installs docker.io, docker-compose and debootstrap
# when missing, starts dockerd when none answers, builds a local base image and a
# wheelhouse, then runs the desktop installer for the llamacpp profile (builds every
# image, brings the stack up) and the e2e tests (ingest, answer with citations, a job
# container, healthchecks, restart with volumes, down -v). Stops what it started.
#
#   infra/ci/compose_e2e.sh                 the whole run (`make test-compose`)
#   infra/ci/compose_e2e.sh --images-only   only build every image the run uses, and leave
#                                           dockerd up: .ci/run starts it beside `make test`
#                                           (the builds are mostly one-core unpacking and
#                                           disk, the suite leaves most of a core idle), so
#                                           the whole run later finds every build cached
set -euo pipefail
cd "$(dirname "$0")/../.."
images_only=0
case "${1:-}" in
  "") ;;
  --images-only) images_only=1 ;;
  *) echo "usage: $0 [--images-only]" >&2; exit 2 ;;
esac

start=$SECONDS
last=$SECONDS
phase() {
  echo "=== [compose-e2e +$((SECONDS - last))s, total $((SECONDS - start))s] $*"
  last=$SECONDS
}

# Isolated from any other stack on the same machine: own project name, free ports.
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-tunestack-e2e}
read -r api chroma llm ui < <(.venv/bin/python -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export TUNESTACK_API_PORT=${TUNESTACK_API_PORT:-$api}
export TUNESTACK_CHROMA_PORT=${TUNESTACK_CHROMA_PORT:-$chroma}
export TUNESTACK_LLM_PORT=${TUNESTACK_LLM_PORT:-$llm}
export TUNESTACK_UI_PORT=${TUNESTACK_UI_PORT:-$ui}
echo "ports: api $TUNESTACK_API_PORT, chroma $TUNESTACK_CHROMA_PORT, llm $TUNESTACK_LLM_PORT, ui $TUNESTACK_UI_PORT"
export TUNESTACK_LLM_SERVER=llamacpp
export HF_HUB_OFFLINE=1
# Offline image builds: local base image, wheels from this machine, its CA bundle.
export BASE_IMAGE=${BASE_IMAGE:-tunestack/base:bookworm}
export WHEELHOUSE=.cache/wheelhouse
export EXTRA_CA_CERTS=.cache/certs

started_dockerd=0
created_env=0
cleanup() {
  local rc=$?
  phase "cleanup"
  if docker info >/dev/null 2>&1; then
    .venv/bin/tunestack down --mode docker --volumes >/dev/null 2>&1 || true
  fi
  if [ "$created_env" = 1 ]; then rm -f .env; fi
  if [ "$started_dockerd" = 1 ] && [ -f /tmp/tunestack-dockerd.pid ]; then
    kill "$(cat /tmp/tunestack-dockerd.pid)" 2>/dev/null || true
    for _ in $(seq 30); do docker info >/dev/null 2>&1 || break; sleep 1; done
    echo "stopped dockerd"
  fi
  exit "$rc"
}
trap cleanup EXIT

phase "docker host: packages"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v shellcheck >/dev/null || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
infra/ci/test_tools.sh

if [ "$images_only" = 0 ]; then
  phase "unit tests of compose files, installers and docker mode (no engine needed)"
  .venv/bin/pytest -q -p no:cacheprovider tests/unit/test_compose_files.py \
    tests/unit/test_install_scripts.py tests/unit/test_docker_mode.py
fi

phase "docker host: engine"
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/tunestack-dockerd.log 2>&1 &
  echo $! >/tmp/tunestack-dockerd.pid
  started_dockerd=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/tunestack-dockerd.log; exit 1; }
  echo "started dockerd (pid $(cat /tmp/tunestack-dockerd.pid))"
fi
# what the installer's disk check will see, and what Docker holds (CI failed there once)
echo "disk: $(df -Ph . | awk 'NR==2 {print $4}') free here; Docker:" \
  "$(docker system df --format '{{.Type}} {{.Size}} ({{.Reclaimable}} reclaimable)' | paste -sd ';' -)"

phase "base image (debootstrap + docker import)"
PYTHON=.venv/bin/python infra/ci/base_image.sh "$BASE_IMAGE"

phase "wheelhouse"
infra/ci/wheelhouse.sh "$WHEELHOUSE"
mkdir -p .cache/certs
cp /etc/ssl/certs/ca-certificates.crt .cache/certs/host-ca-bundle.crt

if [ "$images_only" = 1 ]; then
  phase "build the images (install.sh --no-up, then the scale profile's)"
  [ -f .env ] || created_env=1
  PIP_NO_INDEX=1 infra/desktop/install.sh --llm llamacpp --no-gpu --no-up
  .venv/bin/python bench/scale_out_compose.py --build-only
  started_dockerd=0 # the whole run, later, uses this engine and stops nothing it did not start
  phase "images built"
  exit 0
fi

phase "leftovers of an earlier run (its project's containers and volumes)"
# A run killed before its cleanup leaves containers and volumes of this project behind;
# the tests start from empty volumes (e.g. a first ingest reports every file "ok").
.venv/bin/tunestack down --mode docker --volumes >/dev/null 2>&1 || true

phase "install.sh --llm llamacpp (build images, up)"
# only the image builds are offline (this machine's own pip calls above use its indexes)
export PIP_NO_INDEX=1
[ -f .env ] || created_env=1
infra/desktop/install.sh --llm llamacpp --no-gpu

phase "e2e tests"
.venv/bin/pytest -m docker tests/e2e -p no:cacheprovider --durations=0 -q

phase "validate the ollama and gpu variants (docker-compose config)"
for variant in "--profile ollama" "--profile llamacpp --profile jobs" "--profile ollama --profile jobs -f compose/compose.gpu.yml"; do
  # shellcheck disable=SC2086
  docker-compose --env-file compose/.env.example -f compose/compose.yml $variant config -q
  echo "ok: $variant"
done

phase "done"
