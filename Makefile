PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo clean

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: $(VENV)/.test
	$(VENV)/bin/ruff check jrnn tests bench examples
	KERAS_BACKEND=jax $(PY) -m pytest -q -n 2

demo: $(VENV)/.test
	$(PY) examples/tutorial.py

clean:
	rm -rf $(VENV) build *.egg-info
