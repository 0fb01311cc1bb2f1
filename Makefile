# The two commands of the README: `make demo` and `make test`. Everything else is a step of
# those. Each step says what it does; the first run builds the control plane (about 13 min on 2 cores).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv binaries lint unit integration down clean

demo: venv binaries  ## bring up the local platform and run the main job on it
	@$(PY) -m provisioner.demo

test: venv binaries lint  ## the whole suite: lint, types, layering, unit and integration tiers
	@echo "==> pytest (unit + integration against a real control plane and S3)"
	@$(VENV)/bin/pytest

venv: $(STAMP)
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing Python dependencies (about 1 min)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@# PYTHONWARNINGS: silences setuptools' generic notice about editable installs
	@PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[hub,dev]'
	@touch $@

binaries: venv  ## build etcd, kube-apiserver, kube-controller-manager, kubectl (cached by version)
	@echo "==> control-plane binaries (built once from their Go modules, then cached)"
	@$(PY) -m provisioner.devcluster.binaries

lint: venv
	@echo "==> ruff, mypy --strict (provisioner, hub_config), import-linter (layering)"
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy provisioner hub_config
	@$(VENV)/bin/lint-imports

unit: venv
	@$(VENV)/bin/pytest tests/unit

integration: venv binaries
	@$(VENV)/bin/pytest tests/integration

down: venv  ## stop the platform that `make demo` left running
	@$(VENV)/bin/tre dev down

clean: down
	rm -rf $(VENV)
