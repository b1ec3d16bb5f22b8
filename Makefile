# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv clean gpu-job-rehearsal

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: this machine carries a CPU wheel of 2.13.0 (a plain
# `torch` would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musicssl key --probabilities src/musicssl/data/examples/

test: $(TEST_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# The packed GPU job (docs/training.md "GPU slots") rehearsed on this CPU: synthetic caches ->
# pack -> run.sh (two slots, the second resuming the first's state) -> both models loaded by the CLI.
gpu-job-rehearsal: $(TEST_STAMP)
	$(PY) tests/gpu_job_rehearsal.py --minutes 0.75 --resume

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
