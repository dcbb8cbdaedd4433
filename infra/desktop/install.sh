#!/usr/bin/env bash
# Tunestack desktop install (Linux, macOS): check the machine, write .env, build or pull
# the images, start the stack with docker compose and print the UI address.
# Idempotent: run it again to update images and restart what changed; an existing .env
# is kept (only keys it lacks are added, and those named by flags are updated).
#
#   infra/desktop/install.sh [--llm ollama|llamacpp] [--gpu|--no-gpu] [--no-build]
#                            [--no-up] [--dry-run] [-h|--help]
#
#   --llm       LLM server: ollama (default; pulls its model once, needs internet) or
#               llamacpp (serves the bundled model: works offline)
#   --gpu       use NVIDIA GPUs (default: when nvidia-smi and the container toolkit exist)
#   --no-build  do not build our images (use what is there or pull TUNESTACK_IMAGE_PREFIX/*)
#   --no-up     prepare everything but do not start the stack
#   --dry-run   print the checks and the plan; change nothing
#
# Build settings (BASE_IMAGE, PIP_INDEX_URL, EXTRA_CA_CERTS, WHEELHOUSE, ...) come from
# .env or the environment; compose/.env.example documents each.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

llm=""
gpu=auto
build=1
start=1
dry=0
min_ram_gb=8
# a first install builds the images (~15 GB with their build stages) and keeps models and
# indexes; once our images are here, a rebuild replaces their layers and needs much less
min_disk_gb=20
min_update_disk_gb=8

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --llm) llm=${2:-}; shift 2 ;;
    --llm=*) llm=${1#--llm=}; shift ;;
    --gpu) gpu=yes; shift ;;
    --no-gpu) gpu=no; shift ;;
    --no-build) build=0; shift ;;
    --no-up) start=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$llm" in "" | ollama | llamacpp) ;; *) echo "--llm must be ollama or llamacpp" >&2; exit 2 ;; esac

problems=0
say() { printf '%s\n' "$*"; }
ok() { printf '  [ok]      %s\n' "$*"; }
note() { printf '  [note]    %s\n' "$*"; }
bad() { printf '  [problem] %s\n' "$*"; problems=$((problems + 1)); }
# the value of KEY in .env (empty when absent)
env_get() { { grep "^$1=" .env 2>/dev/null || true; } | tail -n1 | cut -d= -f2-; }
# run a command, or print it under --dry-run
run() {
  if [ "$dry" = 1 ]; then
    printf '  would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# ---- checks ------------------------------------------------------------------------------
say "Checking this machine"
os=$(uname -s)

compose=()
if ! command -v docker >/dev/null 2>&1; then
  bad "docker is not installed: install Docker Desktop (macOS/Windows) or Docker Engine (Linux)"
elif ! docker info >/dev/null 2>&1; then
  bad "the Docker engine does not answer: start Docker Desktop, or 'sudo systemctl start docker' (and add yourself to the docker group)"
else
  ok "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
  ok "compose v2 plugin $(docker compose version --short 2>/dev/null)"
elif command -v docker-compose >/dev/null 2>&1; then
  v=$(docker-compose version --short 2>/dev/null || echo 0)
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  if [ "${major:-0}" -gt 1 ] || { [ "${major:-0}" -eq 1 ] && [ "${minor:-0}" -ge 28 ]; }; then
    compose=(docker-compose)
    ok "docker-compose $v (v1)"
  else
    bad "docker-compose $v is too old (profiles need >= 1.28): install the compose v2 plugin"
  fi
else
  bad "docker compose is not installed: install Docker's compose plugin (docker-compose-plugin) or docker-compose >= 1.28"
fi

if [ "$os" = Darwin ]; then
  ram_kb=$(($(sysctl -n hw.memsize) / 1024))
else
  ram_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
fi
ram_gb=$((ram_kb / 1024 / 1024))
if [ "$ram_gb" -ge "$min_ram_gb" ]; then ok "RAM ${ram_gb} GB"; else
  note "RAM ${ram_gb} GB (< ${min_ram_gb} GB: the stack runs, training will be slow or fail)"
fi
disk_gb=$(($(df -Pk "$repo" | awk 'NR==2 {print $4}') / 1024 / 1024))
image_prefix=${TUNESTACK_IMAGE_PREFIX:-$(env_get TUNESTACK_IMAGE_PREFIX)}
image_tag=${TUNESTACK_VERSION:-$(env_get TUNESTACK_VERSION)}
if docker image inspect "${image_prefix:-tunestack}/rag-api:${image_tag:-0.1.0}" >/dev/null 2>&1; then
  need_gb=$min_update_disk_gb
  need_what="updating the images already here"
else
  need_gb=$min_disk_gb
  need_what="a first build of the images, models and indexes"
fi
if [ "$disk_gb" -ge "$need_gb" ]; then ok "disk ${disk_gb} GB free (${need_what} needs >= ${need_gb} GB)"; else
  bad "disk: only ${disk_gb} GB free at $repo (${need_what} needs >= ${need_gb} GB): free space, e.g. 'docker image prune' (untagged images of earlier builds) and 'docker builder prune' (build cache)"
fi

have_gpu=no
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  if docker info 2>/dev/null | grep -qi nvidia || command -v nvidia-ctk >/dev/null 2>&1; then
    have_gpu=yes
    ok "NVIDIA GPU and container toolkit: $(nvidia-smi -L | head -n1)"
  else
    note "NVIDIA GPU found but not the NVIDIA Container Toolkit: install it to use the GPU in containers"
  fi
else
  note "no NVIDIA GPU: everything runs on the CPU"
fi
if [ "$gpu" = auto ]; then gpu=$have_gpu; fi
if [ "$gpu" = yes ] && [ "$have_gpu" = no ]; then
  bad "--gpu asked for, but no NVIDIA GPU with the container toolkit is usable"
fi

py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$cand
    break
  fi
done
if [ -x .venv/bin/tunestack ]; then ok "tunestack CLI in .venv"
elif [ -n "$py" ]; then ok "Python 3.11 for the tunestack CLI ($py)"
else bad "Python 3.11 is needed for the tunestack CLI (python.org, Homebrew, or apt-get install python3.11-venv)"
fi

if [ "$problems" -gt 0 ]; then
  say "$problems problem(s) above; fix them and run this script again."
  [ "$dry" = 1 ] || exit 1
fi

# ---- .env --------------------------------------------------------------------------------
say "Settings (.env)"
# set KEY=VALUE in .env: replace the line if the key exists, else append
set_env() {
  local key=$1 value=$2
  if grep -q "^${key}=" .env 2>/dev/null; then
    if [ "$(grep "^${key}=" .env | tail -n1)" = "${key}=${value}" ]; then return 0; fi
    run sed -i.bak "s|^${key}=.*|${key}=${value}|" .env
    run rm -f .env.bak
  else
    if [ "$dry" = 1 ]; then say "  would add ${key}=${value} to .env"; else printf '%s=%s\n' "$key" "$value" >>.env; fi
  fi
}
# add KEY=VALUE only when .env does not have the key yet
default_env() { grep -q "^$1=" .env 2>/dev/null || set_env "$1" "$2"; }

if [ -f .env ]; then ok ".env exists (kept)"; else
  run cp compose/.env.example .env
fi
if [ "$os" = Linux ] && [ "$(id -u)" != 0 ]; then default_env TUNESTACK_UID "$(id -u)"; fi
if [ -n "$llm" ]; then set_env TUNESTACK_LLM_SERVER "$llm"; else default_env TUNESTACK_LLM_SERVER ollama; fi
# a variable set in the environment wins over .env, as in compose
llm=${llm:-${TUNESTACK_LLM_SERVER:-$(env_get TUNESTACK_LLM_SERVER)}}
llm=${llm:-ollama}

# ---- CLI ---------------------------------------------------------------------------------
tunestack=.venv/bin/tunestack
if [ ! -x "$tunestack" ]; then
  say "Installing the tunestack CLI into .venv (core only: the services run in containers)"
  run "${py:-python3}" -m venv .venv
  run .venv/bin/pip install -q -e .
fi

# ---- images ------------------------------------------------------------------------------
say "Images"
project=${COMPOSE_PROJECT_NAME:-$(env_get COMPOSE_PROJECT_NAME)}
compose_cmd=("${compose[@]}" --project-name "${project:-tunestack}" --file compose/compose.yml)
if [ "$gpu" = yes ]; then compose_cmd+=(--file compose/compose.gpu.yml); fi
if [ -f .env ]; then compose_cmd+=(--env-file .env); fi
tag=${TUNESTACK_VERSION:-$(env_get TUNESTACK_VERSION)}
export TUNESTACK_VERSION=${tag:-0.1.0}

chroma_image=${CHROMA_IMAGE:-$(env_get CHROMA_IMAGE)}
chroma_image=${chroma_image:-chromadb/chroma:1.5.9}
if docker image inspect "$chroma_image" >/dev/null 2>&1; then ok "chroma image $chroma_image"
elif [ "$dry" = 1 ]; then say "  would pull $chroma_image (or build it from the chromadb package)"
elif docker pull "$chroma_image"; then ok "pulled $chroma_image"
else
  # Same server, same port and /data volume, from the chromadb package (compose/Dockerfile)
  prefix=${TUNESTACK_IMAGE_PREFIX:-$(env_get TUNESTACK_IMAGE_PREFIX)}
  local_image="${prefix:-tunestack}/chroma:${chroma_image##*:}"
  note "cannot pull $chroma_image: building $local_image from the chromadb package instead"
  args=()
  for key in BASE_IMAGE PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_NO_INDEX WHEELHOUSE EXTRA_CA_CERTS TUNESTACK_UID; do
    value=${!key:-$(env_get "$key")}
    name=$key
    [ "$key" = TUNESTACK_UID ] && name=APP_UID
    if [ -n "$value" ]; then args+=(--build-arg "$name=$value"); fi
  done
  run docker build -f compose/Dockerfile --target chroma -t "$local_image" "${args[@]}" .
  set_env CHROMA_IMAGE "$local_image"
  export CHROMA_IMAGE=$local_image
fi

if [ "$llm" = ollama ]; then
  ollama_image=${OLLAMA_IMAGE:-$(env_get OLLAMA_IMAGE)}
  ollama_image=${ollama_image:-ollama/ollama:0.16.3}
  if docker image inspect "$ollama_image" >/dev/null 2>&1; then ok "ollama image $ollama_image"
  elif ! run docker pull "$ollama_image"; then
    say "Cannot pull $ollama_image. Without Docker Hub, use the llama.cpp server: $0 --llm llamacpp"
    exit 1
  fi
fi

if [ "$build" = 1 ]; then
  # one build per image; the three job services share one image, built once
  images=(ui rag-api embed-tuner)
  if [ "$llm" = llamacpp ]; then images=(llamacpp "${images[@]}"); fi
  run "${compose_cmd[@]}" --profile "$llm" --profile jobs build "${images[@]}"
fi

# ---- start -------------------------------------------------------------------------------
if [ "$start" = 1 ]; then
  say "Starting the stack"
  up=("$tunestack" up --mode docker --llm "$llm")
  if [ "$gpu" = yes ]; then up+=(--gpu); fi
  run "${up[@]}"
  bind=${TUNESTACK_BIND:-$(env_get TUNESTACK_BIND)}
  [ "$bind" = 0.0.0.0 ] && bind=127.0.0.1
  port=${TUNESTACK_UI_PORT:-$(env_get TUNESTACK_UI_PORT)}
  [ "$dry" = 1 ] && say "(dry run: nothing was changed)"
  say "Tunestack is ready: open http://${bind:-127.0.0.1}:${port:-8501}"
  say "  (status: $tunestack status   stop: $tunestack down)"
else
  say "Prepared; start with: $tunestack up --mode docker --llm $llm"
fi
