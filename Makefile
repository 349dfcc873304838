# Set-up paths install torch first: its CPU wheel is on disk here, while a bare `torch` requirement would
# pull a multi-GB CUDA build into a fresh environment.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test lint bench demo

install:
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,eval]"

# One pytest worker per core (pytest-xdist), each test file whole on one worker so that its module fixtures are
# built once: on 2 cores the suite takes about half the time of one process.
test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q -n auto --dist loadfile

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

demo: install
	hyperrep demo --out demo_output
