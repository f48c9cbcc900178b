# The two set-up commands (README): `make run` and `make test`. Each builds or refreshes the
# project's own virtualenv (.venv) from nothing, pinned by constraints.txt.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/marlscale train tune_specs/train/qmix_pursuit_small.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check platform tests
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/marlscale bench env --scaling
	$(VENV)/bin/marlscale bench train

clean:
	rm -rf $(VENV)
