# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create or reuse .venv, install the project and provision what the run needs.
#
#   TORCH_SPEC   torch requirement installed when .venv has no torch yet. The default pin resolves
#                to the CPU wheel on this project's CI disk and to PyPI's CUDA wheel elsewhere;
#                GPU users with another CUDA can set e.g. TORCH_SPEC="torch --index-url ...".
#   VENV_FLAGS   extra `python -m venv` flags, e.g. --system-site-packages to reuse a system torch.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.tritongpt-installed
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test test-slow install assets lint clean help inspect baseline

help:
	@echo "make demo   - the main job: prepare Shakespeare, train a char GPT, val loss, loss curve, sample"
	@echo "make test   - lint + the test suite (kernels on the Triton interpreter without a GPU) + the speed gate"
	@echo "make inspect  - compile-only report of every kernel variant for sm_80/sm_89/sm_90a + traffic"
	@echo "make baseline - rewrite bench/baselines/triton-<version>.json from the current kernels"

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(STAMP)

assets: install
	$(VENV)/bin/tritongpt assets

demo: assets
	$(VENV)/bin/tritongpt demo

lint: install
	$(VENV)/bin/ruff check .

test: assets lint
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider -m "not slow"
	$(VENV)/bin/tritongpt inspect --quick --targets sm_80,sm_90a --traffic --check --quiet

# The slow tests too: every kernel variant compiled for sm_80 and sm_90a (minutes, cached).
test-slow: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider -m slow

# Every variant on every target, with the traffic table: what the committed baseline records.
inspect: install
	$(VENV)/bin/tritongpt inspect --traffic --check

baseline: install
	$(VENV)/bin/tritongpt inspect --traffic --write-baseline

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
