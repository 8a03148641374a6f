# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-imagenet
	$(BIN)/unreid demo

# Everything, as CI runs it.
test: $(VENV)/.installed-all
	$(BIN)/python -m pytest -q -n 2

# All but the end-to-end training runs (marked slow): a quick check while editing.
test-fast: $(VENV)/.installed-all
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint: $(VENV)/.installed-all
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-all
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache runs
