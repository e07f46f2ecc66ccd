# dcm2tfrec developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-base

.DEFAULT_GOAL := help
.PHONY: help install demo test lint bench wheel clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP)

# the demo needs only what convert needs: no TensorFlow, no test or lint tools
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(DEMO_STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev extras

demo: $(DEMO_STAMP) ## Generate the built-in demo dataset in demo/, convert it, print the summary
	rm -rf demo
	$(PY) -c "from pathlib import Path; from dcm2tfrec.testing import make_demo; print('demo labels:', make_demo(Path('demo')))"
	$(VENV)/bin/dcm2tfrec convert --labels demo/labels.csv --images demo/images --out demo/out \
		--size 256 --records-per-shard 10; code=$$?; \
		if [ $$code -ne 0 ] && [ $$code -ne 3 ]; then exit $$code; fi; \
		if [ $$code -eq 3 ]; then echo "(exit 3 is expected: the demo CSV lists one missing file on purpose, see demo/out/errors.csv)"; fi
	@echo
	@echo "Next steps (the CLI is in .venv: run '. .venv/bin/activate' first, or 'pip install .' anywhere):"
	@echo "  dcm2tfrec inspect demo/out --head 3              # what is inside, checked record by record"
	@echo "  dcm2tfrec inspect demo/out --grid demo/grid.png  # a contact sheet of the images"
	@echo "  pip install '.[tf-cpu]'                          # then, in Python:"
	@echo "    import dcm2tfrec"
	@echo "    images, targets = next(iter(dcm2tfrec.make_dataset('demo/out', batch_size=8)))"
	@echo "    print(images.shape, targets.numpy())"

test: $(STAMP) ## Run the test suite
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check dcm2tfrec tests scripts
	$(VENV)/bin/ruff format --check dcm2tfrec tests scripts
	$(VENV)/bin/mypy

bench: $(STAMP) ## Benchmark against the tutorial baseline (scripts/bench.py)
	$(PY) scripts/bench.py

wheel: $(DEMO_STAMP) ## Build dist/dcm2tfrec-*.whl (pip install it anywhere: the CLI comes with it)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/*.whl

clean: ## Remove the virtual environment, demo output and caches
	rm -rf $(VENV) demo dist build .pytest_cache .mypy_cache .ruff_cache *.egg-info
