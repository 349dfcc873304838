# Set-up paths install torch first: its CPU wheel is on disk here, while a bare `torch` requirement would
# pull a multi-GB CUDA build into a fresh environment.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test lint bench demo

install:
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,eval]"

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

demo: install
	hyperrep demo --out demo_output
