# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SERVE_STAMP := $(VENV)/.installed-serve

.PHONY: demo serve test browser venv clean gpu-job-rehearsal

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

$(SERVE_STAMP): $(STAMP)
	$(PIP) install -q -e ".[serve]"
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musicssl key --probabilities src/musicssl/data/examples/

# the local web page and API (http://127.0.0.1:8000/); the demo's environment plus the serve extra
serve: $(SERVE_STAMP)
	$(VENV)/bin/musicssl serve

# tests/test_serve_browser.py drives Debian's chromium + chromedriver: installed here when
# running as root with apt-get; otherwise that one test is skipped and says why
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -q chromium chromium-driver || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; } >/dev/null \
	    || echo "note: could not install chromium; the browser test will be skipped"; \
	else echo "note: chromium/chromedriver missing and no root apt-get; the browser test will be skipped"; fi

test: $(TEST_STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

# The packed GPU job (docs/training.md "GPU slots") rehearsed on this CPU: synthetic caches ->
# pack -> run.sh (two slots, the second resuming the first's state) -> both models loaded by the CLI.
gpu-job-rehearsal: $(TEST_STAMP)
	$(PY) tests/gpu_job_rehearsal.py --minutes 0.75 --resume

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
