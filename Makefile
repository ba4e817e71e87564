# Techport platform. `make run` starts everything on embedded defaults; `make test` installs and tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else installed once with pip (a fresh machine has Python and pip, not uv).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
RUN := $(UV) run --frozen

# Images: the names docker-compose.yml and deploy/k8s use (tests check they agree).
IMAGE_REGISTRY ?= ghcr.io/techport-ijmond
IMAGE_TAG ?= 0.1.0
SERVICES := members matching notifications gateway

# Offline validation tools for the deployment, pinned, built from the Go module proxy into .tools/.
TOOLS := $(CURDIR)/.tools

# Bytecode caches, kept in .tools/pycache rather than beside the sources. Services start dozens of times in the
# suite (and each in `make run`); without caches every start compiles every module it imports, about 2 s of
# CPU a service on this machine, and an environment with PYTHONDONTWRITEBYTECODE set would never keep them.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(TOOLS)/pycache
KUSTOMIZE_VERSION := v5.8.0
COMPOSE_GO_VERSION := v2.16.2
# The operators' CRDs, for validating our custom resources (Strimzi publishes no Go module; its required
# fields are checked by the tests themselves).
CRD_MODULES := github.com/kedacore/keda/v2@v2.18.0:config/crd/bases \
	github.com/cloudnative-pg/cloudnative-pg@v1.27.0:config/crd/bases \
	github.com/prometheus-operator/prometheus-operator@v0.85.0:example/prometheus-operator-crd

.PHONY: help uv install kafka-jars deploy-tools run test test-fast bench lint format schemas images up down clean

help:
	@echo "make run      start the whole platform (local Kafka, SMTP sink, services) until Ctrl-C"
	@echo "make test     install everything (venv, dependencies, Kafka jars) and run the suite"
	@echo "make bench    run the benchmarks"
	@echo "make images   build the container images (needs Docker)"
	@echo "make up/down  the whole platform in docker compose (needs Docker)"
	@echo "make lint     ruff and mypy"
	@echo "make schemas  regenerate docs/schemas/ from the event models"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

.venv/.installed: uv.lock pyproject.toml shared/pyproject.toml cli/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages
	@touch $@

install: uv .venv/.installed

kafka-jars: install
	$(RUN) python -m techport_dev jars

# kustomize renders deploy/k8s; the Compose specification's JSON schema comes with compose-go's module.
deploy-tools: $(TOOLS)/bin/kustomize $(TOOLS)/compose-spec.json $(TOOLS)/crds/.fetched

$(TOOLS)/bin/kustomize:
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(TOOLS)/compose-spec.json:
	@mkdir -p $(TOOLS)
	dir=$$(GOFLAGS=-mod=mod go mod download -json github.com/compose-spec/compose-go/v2@$(COMPOSE_GO_VERSION) \
	  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') && install -m 0644 "$$dir/schema/compose-spec.json" $@

$(TOOLS)/crds/.fetched: Makefile
	@mkdir -p $(TOOLS)/crds
	for entry in $(CRD_MODULES); do \
	  module=$${entry%%:*}; folder=$${entry#*:}; \
	  dir=$$(GOFLAGS=-mod=mod go mod download -json $$module \
	    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') || exit 1; \
	  install -m 0644 "$$dir/$$folder"/*.yaml $(TOOLS)/crds/ || exit 1; \
	done
	@touch $@

run: install kafka-jars
	$(RUN) techport run

# Three workers (pytest-xdist), a module per worker at a time: much of the suite waits on brokers, outages
# and timers, so on two cores three workers take about half the time of one (measured: ~850 s -> 457 s).
# TEST_WORKERS=0 runs it in one process. The slowest tests are listed at the end, to keep the time in view.
TEST_WORKERS ?= 3
test: install kafka-jars deploy-tools
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadscope --durations=15

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

images:
	for service in $(SERVICES); do \
	  docker build --target service --build-arg SERVICE=$$service -t $(IMAGE_REGISTRY)/$$service:$(IMAGE_TAG) . || exit 1; \
	done
	docker build --target cli --build-arg SERVICE=cli -t $(IMAGE_REGISTRY)/cli:$(IMAGE_TAG) .

up:
	TECHPORT_TAG=$(IMAGE_TAG) docker compose up --build --detach --wait

down:
	docker compose down

clean:
	rm -rf .venv .tools var .pytest_cache .mypy_cache .ruff_cache
