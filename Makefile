# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: run test plan install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,service,figures]'
	touch $(STAMP)

install: $(STAMP)

# Main job. Until the service lands (issue 4) this runs the planning demo on the shipped maps.
run: $(STAMP)
	$(VENV)/bin/mase plan --map maps/salp/salp-demo.map --robots 2
	$(VENV)/bin/mase plan --map maps/warehouse/warehouse-1.map --robots 10 --seed 1
	$(VENV)/bin/mase plan --map maps/overcooked/overcooked-1.map --robots 10 --seed 1

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
