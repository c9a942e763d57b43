PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo tutorial bench docs clean

# .venv with one extra installed: .venv/.test, .venv/.bench, .venv/.demo
$(VENV)/.%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$*]"
	touch $@

test: $(VENV)/.test
	$(VENV)/bin/ruff check jrnn tests bench examples
	KERAS_BACKEND=jax $(PY) -m pytest -q -n 2

# Quick presets of the benchmarks (under 10 minutes on 2 cores); results in bench/results/.
bench: $(VENV)/.bench
	KERAS_BACKEND=jax $(PY) bench/scan_vs_unroll.py --quick
	KERAS_BACKEND=jax $(PY) bench/peers.py --quick
	$(PY) bench/checkpoint.py

# The main job: train a jrnn classifier on sequential digits (under a minute on 2 cores).
demo: $(VENV)/.demo
	$(PY) examples/digits.py

# The API reference, built from the docstrings into docs/api (not committed).
docs: $(VENV)/.docs
	$(VENV)/bin/pdoc jrnn -o docs/api --docformat google

tutorial: $(VENV)/.test
	$(PY) examples/tutorial.py

clean:
	rm -rf $(VENV) build *.egg-info
