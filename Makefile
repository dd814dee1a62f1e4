# Docker-free twin of the Astro CLI workflow. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
# make test's pytest-xdist workers, each with throwaway servers of its own: the suite mostly waits
# (servers starting, schedulers, retries), so more workers than cores (docs/testing.md).
TEST_WORKERS ?= 3
# Bytecode is compiled once at install: imports (and DAG parsing) stay fast even where
# PYTHONDONTWRITEBYTECODE is set.

# Python 3.12 (the Astro Runtime's), else any 3.11+. Override with `make PYTHON=/path/to/python3`.
PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 \
                          /usr/bin/python3.12 python3.13 python3.11 python3; do \
                   "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v "$$p"; break; }; \
                 done)

.PHONY: help install run test dag airflow strava-token bench bench-executors lint parse-check offline-env lock parse-times clean credentials docker-env

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	@test -n "$(PYTHON)" || { echo "ERROR: no Python 3.11+ found; install one or pass PYTHON=/path/to/python3" >&2; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Re-sync only when the lock changed since the last sync.
$(VENV)/.synced: requirements-dev.lock | $(UV)
	$(UV) pip sync --compile-bytecode --python $(PY) requirements-dev.lock
	@touch $@

# The demand model's interpreter (include/demand_forecast.run_model): numpy, scikit-learn, holidays and no
# pandas, so training stays in its memory budget (docs/demand-forecast.md#cost). Same Python as .venv.
MODEL_VENV := .venv-model
$(MODEL_VENV)/.synced: requirements-model.txt | $(UV)
	test -x $(MODEL_VENV)/bin/python || $(UV) venv --quiet --python "$$($(PY) -c 'import sys; print(sys._base_executable)')" $(MODEL_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(MODEL_VENV)/bin/python requirements-model.txt
	@touch $@

install: $(VENV)/.synced $(MODEL_VENV)/.synced  ## create/update .venv (requirements-dev.lock) and .venv-model (requirements-model.txt), pinned

run: install  ## start the whole local stack (Airflow + Postgres, Redis, S3); OFFLINE=1 uses API stand-ins; EXECUTOR=celery [WORKERS=2]
	DEVSTACK_EXECUTOR="$(EXECUTOR)" DEVSTACK_WORKERS="$(WORKERS)" $(PY) -m devstack run $(if $(filter 1 true yes,$(OFFLINE)),--offline)

test: install lint parse-check  ## lint, astro parse check, then the whole suite against throwaway real servers
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# What `astro dev parse` runs, in its own interpreter: it stubs connections, variables and
# os.getenv process-wide, which must not leak into the end-to-end tests.
parse-check: install  ## the .astro DAG integrity test (= astro dev parse) without Docker
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	AIRFLOW_HOME="$$tmp" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	PYTHONPATH="$(CURDIR)" $(PY) -m pytest -p no:cacheprovider -q .astro/test_dag_integrity_default.py

dag: install  ## run one DAG once and print its task states (= astro run): DAG=<id> [DATE=2021-02-02] [CONF='{..}'] [OFFLINE=1]
	@test -n "$(DAG)" || { echo "usage: make dag DAG=<dag_id> [DATE=2021-02-02T06:00] [CONF='{\"month\": \"2021-03\"}'] [OFFLINE=1]" >&2; exit 2; }
	$(PY) -m devstack.run_dag "$(DAG)" $(if $(DATE),--date "$(DATE)") $(if $(CONF),--conf '$(CONF)') $(if $(filter 1 true yes,$(OFFLINE)),--offline)

airflow: install  ## the Airflow CLI against the running `make run` stack, e.g. make airflow CMD="dags list"
	$(PY) -m devstack airflow $(CMD)

credentials: install  ## the local stack's logins and generated passwords (kept in .local/secrets, mode 600)
	@$(PY) -m devstack credentials

strava-token: install  ## first Strava token into Redis: CODE=<authorization code> or TOKEN_FILE=<json> (OFFLINE=1 too)
	$(PY) -m devstack exec $(if $(filter 1 true yes,$(OFFLINE)),--offline) -- $(PY) -m include.strava_token \
	    $(if $(CODE),--code "$(CODE)") $(if $(TOKEN_FILE),--token-file "$(TOKEN_FILE)")

bench-executors: install  ## the same batch of runs on LocalExecutor, Celery x1 and Celery x2: wall times and ratios
	$(PY) -m devstack.bench_executors

bench: install  ## NYC taxi load benchmark on the TLC publisher's parquet month vs raw COPY, pgpq, ADBC [MONTH=2025-09 ROWS=4251015]; SOURCE=csv: the course mirror's CSV (ROWS=2000000)
	$(PY) -m devstack.bench_nyc_taxi --source $(or $(SOURCE),parquet) $(if $(MONTH),--month $(MONTH)) $(if $(ROWS),--rows $(ROWS))

lint:  install ## ruff (AIR rules), hadolint on the Dockerfile, compose + GitHub workflow schemas - all offline
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.override.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

docker-env: install  ## generate the passwords of `astro dev start`'s warehouse, Redis and S3 (.local/docker, mode 600)
	$(PY) -m devstack docker-env

offline-env: install  ## rewrite .env.offline (astro dev start --env .env.offline) from .env and airflow_settings.yaml
	$(PY) -m devstack offline-env

# The Runtime's own versions (runtime-constraints.txt) hold while resolving. A Runtime freeze file
# (RUNTIME_FREEZE=..., by default the one `astro dev start --standalone` caches for the Dockerfile's tag)
# first rewrites runtime-constraints.txt with its exact Airflow and provider versions.
RUNTIME_TAG    := $(lastword $(subst :, ,$(firstword $(shell sed -n 's/^FROM  *//p' Dockerfile))))
RUNTIME_FREEZE ?= $(wildcard .astro/standalone/freeze-$(RUNTIME_TAG).txt)

lock: | $(UV)  ## re-resolve requirements*.txt into requirements-dev.lock within the Runtime's versions [RUNTIME_FREEZE=file]
	$(if $(RUNTIME_FREEZE),$(PY) -m devstack.runtime_pins from-freeze "$(RUNTIME_FREEZE)")
	$(UV) pip compile requirements.txt requirements-dev.txt --constraints runtime-constraints.txt \
	    --universal --python-version 3.11 --no-header -o requirements-dev.lock \
	  || { echo "ERROR: no resolution within runtime-constraints.txt (what Astro Runtime $(RUNTIME_TAG) ships):" \
	            "a requirement above needs a newer Airflow or provider - pin an older release of it" >&2; exit 1; }
	$(PY) -m devstack.runtime_pins check

parse-times: install  ## how long each DAG file takes to parse (target < 100 ms each, < 1 s all)
	$(PY) -m devstack.parse_times

clean:  ## delete the local stack's state (.local/): databases, objects, logs
	rm -rf .local
