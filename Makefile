# The two set-up commands are `make demo` and `make test`; everything else supports them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DAGSTER_HOME_DIR := $(CURDIR)/.dagster_home

.PHONY: demo test dev lint lock bench services dagster-home workers clean \
	sensor-start sensor-stop schedule-start schedule-stop

$(BIN)/activate:
	PYTHON="$(PYTHON)" scripts/bootstrap.sh "$(VENV)"

# Every target installs the versions in requirements.lock (the set CI passed with); a dependency
# not in the lock yet installs unpinned until `make lock` is run.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements.lock -e '.[test,dev]'
	touch $@

# Refresh requirements.lock (and its runtime part, deploy/constraints.txt): resolve the tested
# set afresh in a throw-away venv and pin every version it installed. Commit both files.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	PYTHON="$(PYTHON)" scripts/bootstrap.sh "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install --quiet --upgrade pip && \
	"$$tmp/venv/bin/pip" install --quiet "$(CURDIR)[test,dev]" && \
	"$$tmp/venv/bin/python" scripts/lock_deploy_deps.py

# dagster dev ignores ./dagster.yaml once DAGSTER_HOME is set, so the home holds a link to it.
# Only the demo and the UI use it; the tests make their own temporary instances.
SWITCHES := sensor-start sensor-stop schedule-start schedule-stop
demo dev dagster-home workers $(SWITCHES): export DAGSTER_HOME := $(DAGSTER_HOME_DIR)
workers: export IOTSWARM_EXECUTOR := celery

dagster-home:
	mkdir -p "$(DAGSTER_HOME)"
	ln -sf "$(CURDIR)/dagster.yaml" "$(DAGSTER_HOME)/dagster.yaml"

services:
	scripts/services.sh

demo: $(VENV)/.installed dagster-home
	$(BIN)/python -m iotswarm_pipelines.demo

# The sensors read the sample database, so a UI started before any demo gets one first.
# dagster dev runs from the instance's folder (it warns about a dagster.yaml in any other current
# folder, which is expected here: the home links to it), with the data folder made absolute.
# Its "superseded, use 'dg dev'" warning is silenced: dg dev needs the dg project layout and
# dagster-dg-cli, and dagster dev is supported throughout 1.x. DEV_ARGS: e.g. -p 3001.
dev: $(VENV)/.installed dagster-home
	[ -f .demo/cosmos.sqlite ] || [ -n "$$IOTSWARM_DATA_DIR" ] || $(BIN)/cosmos-sample
	cd "$(DAGSTER_HOME)" && IOTSWARM_DATA_DIR="$${IOTSWARM_DATA_DIR:-$(CURDIR)/.demo}" \
	  PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	  $(BIN)/dagster dev -w "$(CURDIR)/workspace.yaml" $(DEV_ARGS)

# Switch a sensor or schedule of the instance `make dev` shows, with or without the UI running:
#   make sensor-stop NAME=cosmos_new_rows_level1_soilmet_30min
#   make schedule-start NAME=cosmos_every_level1_soilmet_30min
# NAME in any case, or the table alone (LEVEL1_SOILMET_30MIN); an unknown one lists the valid names.
$(SWITCHES): $(VENV)/.installed dagster-home
	@[ -n "$(NAME)" ] || { echo "name the $(firstword $(subst -, ,$@)): make $@ NAME=..."; exit 2; }
	@name=$$($(BIN)/python -m iotswarm_pipelines.automation_names \
	  $(firstword $(subst -, ,$@)) "$(NAME)") || exit 2; \
	echo "$(BIN)/dagster $(subst -, ,$@) $$name -w workspace.yaml"; \
	$(BIN)/dagster $(subst -, ,$@) "$$name" -w workspace.yaml

# Celery workers for IOTSWARM_EXECUTOR=celery (docs/scaling-out.md): WORKERS workers of
# CONCURRENCY processes each, on the queue and broker of the IOTSWARM_CELERY_* variables (local
# Redis by default). Each shard holds one process for the swarm's whole duration. Ctrl-C stops them.
WORKERS ?= 2
CONCURRENCY ?= 4
workers: $(VENV)/.installed dagster-home
	trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	for i in $$(seq 1 $(WORKERS)); do \
	  $(BIN)/celery -A iotswarm_pipelines.celery_worker worker -n "w$$i@%h" \
	    -Q "$${IOTSWARM_CELERY_QUEUE:-dagster}" --concurrency $(CONCURRENCY) \
	    --prefetch-multiplier=1 -l INFO & \
	done; wait

test: $(VENV)/.installed services
	ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true; \
	$(BIN)/python -m pytest; rc=$$?; [ $$rc -eq 5 ] && { echo "no tests collected"; exit 1; }; exit $$rc

# Style and types: ruff, then mypy (strict on the rule modules; see [tool.mypy] in pyproject.toml).
lint: $(VENV)/.installed
	$(BIN)/ruff check iotswarm_pipelines iotswarm_tests benchmarks
	$(BIN)/ruff format --check iotswarm_pipelines iotswarm_tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf .demo .dagster_home
