# The two commands of the README's quick start, and the tools behind them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench clean ohif

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast,codecs,web]'
	touch $(STAMP)

## make serve: DICOM on 127.0.0.1:11112 (AE DICOMNET) and the web page + DICOMweb on
## http://127.0.0.1:8042 (/dicom-web), one archive in ./dicom-store; OHIF at /viewer once
## `make ohif` has run (more options: make serve SERVE_ARGS="--port 11113 --allow-ae CT1")
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/dicomnet serve $(if $(wildcard $(OHIF_STAMP)),--viewer ohif) $(SERVE_ARGS)

## make ohif: the prebuilt OHIF viewer (npm's @ohif/app, its dist folder only) into ohif/dist,
## git-ignored, for `dicomnet serve --viewer ohif`; fetched once (the stamp names the version)
OHIF_VERSION ?= 3.13.2
OHIF_DIR ?= ohif
OHIF_STAMP := $(OHIF_DIR)/.ohif-$(OHIF_VERSION).stamp
ohif: $(OHIF_STAMP)

$(OHIF_STAMP):
	rm -rf $(OHIF_DIR)/dist $(OHIF_DIR)/package $(OHIF_DIR)/.ohif-*.stamp
	mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent --pack-destination . @ohif/app@$(OHIF_VERSION) >/dev/null
	tar -xzf $(OHIF_DIR)/ohif-app-$(OHIF_VERSION).tgz -C $(OHIF_DIR) package/dist package/LICENSE
	mv $(OHIF_DIR)/package/dist $(OHIF_DIR)/dist
	mv $(OHIF_DIR)/package/LICENSE $(OHIF_DIR)/dist/LICENSE.ohif
	rm -rf $(OHIF_DIR)/package $(OHIF_DIR)/ohif-app-$(OHIF_VERSION).tgz
	touch $@

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(OHIF_DIR)
