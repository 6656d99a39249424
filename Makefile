# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: run test test-postgres plan install clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,service,figures,distributed,ros]'
	touch $(STAMP)

install: $(STAMP)

# Main job: the service with its dashboard on 127.0.0.1:8000, SQLite in var/mase.db,
# the shipped scenarios loaded. Settings: MASE_* environment variables (README).
run: $(STAMP)
	$(VENV)/bin/mase serve

# The planning demo on the shipped maps (what `make run` did before the service).
plan: $(STAMP)
	$(VENV)/bin/mase plan --map maps/salp/salp-demo.map --robots 2
	$(VENV)/bin/mase plan --map maps/warehouse/warehouse-1.map --robots 10 --seed 1
	$(VENV)/bin/mase plan --map maps/overcooked/overcooked-1.map --robots 10 --seed 1

test: $(STAMP)
	$(PY) -m pytest -q

# Performance benchmarks (docs/PERFORMANCE.md), about 20 minutes on 2 cores;
# `$(PY) -m bench.all --quick` is a two-minute check that they all run.
bench: $(STAMP)
	$(PY) -m bench.all

# The service tests against the PostgreSQL server named by TEST_DATABASE_URL (.ci/run starts one).
test-postgres: $(STAMP)
	@test -n "$(TEST_DATABASE_URL)" || { echo "set TEST_DATABASE_URL=postgresql+psycopg://user:pass@host/db"; exit 2; }
	TEST_DATABASE_URL="$(TEST_DATABASE_URL)" $(PY) -m pytest -q -m service

clean:
	rm -rf $(VENV) .pytest_cache
