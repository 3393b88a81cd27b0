# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-phoenix test test-fast bench-synthetic bench-signing clean-venv

# requirements-pose.txt (the photo pose estimator) goes in with --no-deps: its protobuf<5 pin
# clashes with tensorboard's protobuf>=6.31.
$(STAMP): requirements.txt requirements-pose.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-pose.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m src.synthetic.demo

demo-phoenix: $(STAMP)
	$(PY) -m src.synthetic.demo_phoenix

# One pytest-xdist worker per core, each given whole test files (a module's fixtures are built
# once), in the order of their first test: the slow ones first (tests/conftest.py).
XDIST := -n auto --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) tests

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests

bench-synthetic: $(STAMP)
	$(PY) bench/synthetic_transfer.py

bench-signing: $(STAMP)
	$(PY) bench/signing_consistency.py

clean-venv:
	rm -rf $(VENV)
