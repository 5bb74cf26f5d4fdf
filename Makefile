# Two commands on a fresh machine: `make run` (a live simulated session) and `make test`.
# Both create the environment in .venv on first use, from the pinned requirements.lock.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lock serve clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet -p $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install --quiet -p $(PY) --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/riskctl run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 1200 $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

serve: $(STAMP)
	$(VENV)/bin/riskctl serve

# Re-pin after changing pyproject.toml dependencies.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra test -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
