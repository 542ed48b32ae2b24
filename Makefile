# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create or reuse .venv, install the project and provision what the run needs.
#
#   TORCH_SPEC   torch requirement installed when .venv has no torch yet. The default pin resolves
#                to the CPU wheel on this project's CI disk and to PyPI's CUDA wheel elsewhere;
#                GPU users with another CUDA can set e.g. TORCH_SPEC="torch --index-url ...".
#   TRITON_SPEC  Triton installed when torch brings none (a CPU torch); a CUDA torch keeps the Triton
#                it pins. The default is the tested version (CI runs the kernels on its interpreter).
#   VENV_FLAGS   extra `python -m venv` flags, e.g. --system-site-packages to reuse a system torch.
#
# Installs are reproducible: every other dependency is held at the tested versions in constraints.txt
# (`make lock` refreshes it). `make test-latest` runs a fast subset against the newest releases instead,
# and `make test-triton-oldest` the kernel tests and the quick static gate on the oldest supported Triton.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.9.0
TRITON_OLDEST ?= triton==3.3.1
VENV_FLAGS ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.tritongpt-installed
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CONSTRAINTS := constraints.txt
# Triton wheels exist for Linux x86_64 only (pyproject's marker says the same).
HAS_TRITON_WHEELS = $(1) -c "import platform, sys; sys.exit(platform.system() != 'Linux' or platform.machine() != 'x86_64')"

.PHONY: demo demo-finetune test test-slow test-latest test-triton-oldest install assets lint lock clean help inspect baseline bench-gpu

help:
	@echo "make demo   - the main job: prepare Shakespeare, train a char GPT, val loss, loss curve, sample"
	@echo "make demo-finetune - both fine-tuning jobs (classify, instruct) on the fixtures, from tiny pretrained models"
	@echo "make test   - lint + the test suite (kernels on the Triton interpreter without a GPU) + the speed gate"
	@echo "make inspect  - compile-only report of every kernel variant for sm_80/sm_89/sm_90a + traffic"
	@echo "make baseline - rewrite bench/baselines/triton-<version>.json from the current kernels"
	@echo "make bench-gpu - on a GPU: kernel sweeps, training and generation benchmarks, REPORT.md in BENCH_OUT"

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

# install-into VENV_PYTHON TRITON: torch from TORCH_SPEC (if missing), Triton from TRITON only where torch
# brought none, then the project with the test extra held at the tested versions.
define install-into
	@$(1) -c "import torch" 2>/dev/null || $(1) -m pip install -q "$(TORCH_SPEC)"
	@$(1) -c "import triton" 2>/dev/null || ! $(call HAS_TRITON_WHEELS,$(1)) || $(1) -m pip install -q "$(2)"
	$(1) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
endef

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(call install-into,$(PY),$(TRITON_SPEC))
	@touch $@

install: $(STAMP)

assets: install
	$(VENV)/bin/tritongpt assets

demo: assets
	$(VENV)/bin/tritongpt demo

demo-finetune: assets
	$(VENV)/bin/tritongpt demo --finetune

lint: install
	$(VENV)/bin/ruff check .

test: assets lint
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider -m "not slow"
	$(VENV)/bin/tritongpt inspect --quick --targets sm_80,sm_90a,sm_100a --traffic --check --quiet

# Newest releases of every dependency but torch (held at TORCH_SPEC), in a fresh venv: a fast subset
# (imports from the repository root, Hugging Face parity, a CLI smoke run) shows upstream breakage.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv $(VENV_FLAGS) .venv-latest
	.venv-latest/bin/python -m pip install -q "$(TORCH_SPEC)"
	.venv-latest/bin/python -c "import torch; print('torch==' + torch.__version__)" > .venv-latest/torch-pin.txt
	.venv-latest/bin/python -m pip install -q -c .venv-latest/torch-pin.txt --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pip list --format=freeze 2>/dev/null | grep -i -E '^(torch|triton|transformers|kernels|numpy)=='
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider -m latest

# The oldest supported Triton (what torch 2.7 pins) in its own venv: the kernel tests on its interpreter
# and the quick static gate with its compiler.
test-triton-oldest:
	rm -rf .venv-triton-oldest
	$(PYTHON) -m venv $(VENV_FLAGS) .venv-triton-oldest
	$(call install-into,.venv-triton-oldest/bin/python,$(TRITON_OLDEST))
	@# A CUDA torch brings the Triton it pins: put the oldest one in its place, and refuse to run on another.
	.venv-triton-oldest/bin/python -m pip install -q --no-deps "$(TRITON_OLDEST)"
	.venv-triton-oldest/bin/python -c "import sys, triton; want = '$(TRITON_OLDEST)'.split('==')[-1]; \
	  print('triton', triton.__version__); sys.exit(triton.__version__ != want)"
	.venv-triton-oldest/bin/python -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider -m "kernel and not slow"
	.venv-triton-oldest/bin/tritongpt inspect --quick --targets sm_80,sm_90a --check --quiet

# Refresh constraints.txt: resolve the newest releases in a scratch venv and record them (torch and the
# Triton/CUDA packages it pins stay under TORCH_SPEC/TRITON_SPEC, so GPU users keep their torch's).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q "$(TORCH_SPEC)"
	.venv-lock/bin/python -m pip install -q -e ".[test]"
	{ echo "# Tested versions: 'make install' holds every dependency here (make lock refreshes this file)."; \
	  echo "# torch, triton and the nvidia-* CUDA packages follow TORCH_SPEC/TRITON_SPEC (Makefile)."; \
	  .venv-lock/bin/python -m pip list --format=freeze --exclude-editable 2>/dev/null \
	    | grep -v -i -E '^(torch|triton|tritongpt|pip|setuptools|wheel|cuda-[a-z0-9-]+)==' \
	    | grep -v -i -E '^nvidia-' ; \
	  .venv-lock/bin/python -m pip list --format=freeze 2>/dev/null | grep -i -E '^nvidia-ml-py==' ; \
	} > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf .venv-lock

# The slow tests too: every kernel variant compiled for sm_80 and sm_90a (minutes, cached).
test-slow: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider -m slow

# Every variant on every target, with the traffic table: what the committed baseline records.
inspect: install
	$(VENV)/bin/tritongpt inspect --traffic --check

baseline: install
	$(VENV)/bin/tritongpt inspect --traffic --write-baseline

# On a GPU only (no CI job runs it; without a GPU it exits 2 at once): every benchmark into BENCH_OUT, with
# the plots and REPORT.md. BENCH_FLAGS=--quick for the short run, --dry-run for the plan.
BENCH_OUT   ?= bench/results
BENCH_FLAGS ?=
bench-gpu: install
	$(VENV)/bin/tritongpt bench all --out $(BENCH_OUT) $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) .venv-latest .venv-triton-oldest .venv-lock *.egg-info .pytest_cache .ruff_cache .hypothesis
