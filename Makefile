# The two commands of the README's quick start, and the tools behind them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast,codecs,web]'
	touch $(STAMP)

## make serve: a storage node on 127.0.0.1:11112 (AE DICOMNET) writing into ./dicom-store
## (more options: make serve SERVE_ARGS="--port 11113 --allow-ae CT1"; see dicomnet serve --help)
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/dicomnet serve $(SERVE_ARGS)

## make test: ruff, mypy and the whole pytest suite
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests examples $(wildcard bench)
	$(BIN)/ruff format --check src tests examples $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

## make bench: dicomnet against DCMTK and pynetdicom (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
