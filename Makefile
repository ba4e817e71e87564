# Techport platform. `make run` starts everything on embedded defaults; `make test` installs and tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else installed once with pip (a fresh machine has Python and pip, not uv).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
RUN := $(UV) run --frozen

.PHONY: help uv install kafka-jars run test test-fast bench lint format schemas clean

help:
	@echo "make run      start the whole platform (local Kafka, SMTP sink, services) until Ctrl-C"
	@echo "make test     install everything (venv, dependencies, Kafka jars) and run the suite"
	@echo "make bench    run the benchmarks"
	@echo "make lint     ruff and mypy"
	@echo "make schemas  regenerate docs/schemas/ from the event models"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

.venv/.installed: uv.lock pyproject.toml shared/pyproject.toml cli/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages
	@touch $@

install: uv .venv/.installed

kafka-jars: install
	$(RUN) python -m techport_shared.devinfra jars

run: install kafka-jars
	$(RUN) techport run

test: install kafka-jars
	$(RUN) pytest

test-fast: install
	$(RUN) pytest -m "not kafka and not postgres"

bench: install kafka-jars
	$(RUN) python -m benchmarks

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

schemas: install
	$(RUN) python -m techport_shared.schemas docs/schemas

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
