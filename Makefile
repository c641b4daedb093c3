# Two set-up commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv and
# install from constraints.txt (torch pinned to the CPU build on this disk); a rerun with nothing
# changed skips the install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m routed_rl.demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not expensive"

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) -m pytest -q -m expensive
	$(PY) benchmarks/oversight_quality.py
	$(VENV)/bin/routed-rl sweep standard --out benchmarks/runs/standard
	$(VENV)/bin/routed-rl report benchmarks/runs/standard

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy routed_rl envs agents

clean:
	rm -rf $(VENV) build *.egg-info
