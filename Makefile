# Two commands on a fresh machine: `make sync` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# The demo tenant's app secret; a real integration names its own variable in data/integrations.yaml.
export ENTRA_DEMO_CLIENT_SECRET ?= demo-client-secret
# The demo Workday's Integration System User password (the demo tenant's built-in one).
export ENTRA_DEMO_WORKDAY_PASSWORD ?= demo-isu-password

.PHONY: setup sync test test-quick bench bench-quick reliability ui emulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster-instance.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster-instance.yaml $(DAGSTER_HOME)/dagster.yaml

setup: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

# The demo tenant is stopped afterwards; runs from the UI start it again when they need it.
sync: setup
	@$(BIN)/python -m entra_pipeline sync; status=$$?; \
	$(BIN)/python -m entra_pipeline demo-tenant stop >/dev/null; exit $$status

test: setup
	$(BIN)/python -m pytest

# Under a minute: the unit tests, and one real sync of the test tenant end to end.
test-quick: setup
	$(BIN)/python -m pytest -q tests/unit tests/e2e/test_sync.py::test_every_asset_materializes_and_checks_report_the_demo_problems \
		tests/e2e/test_sync.py::test_contacts_are_exactly_the_directory_users_that_qualify

# Full and incremental syncs of 10k, 100k and 1M users against their floor, a latency-bound run and
# the Workday report; writes docs/benchmarks.md (about 20 minutes on 2 cores; `--sizes`, `--runs` to choose).
bench: setup
	$(BIN)/python -m entra_pipeline.measure.bench

# 10k users only, no Workday report, docs/benchmarks.md left as it is: a couple of minutes.
bench-quick: setup
	$(BIN)/python -m entra_pipeline.measure.bench --sizes 10k --latency-size none --no-workday --no-doc

# Seeded fault runs and SIGKILL runs compared with a clean run, kill-then-sync on a persistent Dagster instance, and
# the hostile-network series; writes docs/reliability.md (not part of `make test`).
reliability: setup
	$(BIN)/python -m entra_pipeline.measure.reliability

ui: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev

emulator: setup
	$(BIN)/python -m entra_pipeline.emulator serve --state-dir data/.demo-tenant/standalone

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data/*.duckdb data/.demo-tenant
