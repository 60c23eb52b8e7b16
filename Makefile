# make demo: install everything (venv, Python deps, Gremlin Server, ElasticMQ) and run the embedded demo.
# make test: install the same way and run the test suite (tests start the services they need).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench services-up services-down clean

$(STAMP): pyproject.toml scripts/ensure-system-deps.sh src/identigraph/etl/cloud_jars.py
	bash scripts/ensure-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/identigraph services install
	$(BIN)/python -m identigraph.etl.cloud_jars  # hadoop-aws + AWS SDK bundle + spark-hadoop-cloud (~613 MiB) into ~/.m2, once
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/identigraph demo

test: install
	$(BIN)/python -m pytest

# lint: ruff (lint, import order, public docstrings) over the code and tests, mypy over src/, and no import
# cycle or cross-package private import in src/
lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/python scripts/check_imports.py

bench: install
	$(BIN)/python bench/upsert.py
	$(BIN)/python bench/etl.py
	$(BIN)/python bench/etl.py --incremental
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/labels.py
	$(BIN)/python bench/model.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/tune.py

services-up: install
	$(BIN)/identigraph services up

services-down: install
	$(BIN)/identigraph services down

clean:
	-$(BIN)/identigraph services down
	rm -rf $(VENV) var
