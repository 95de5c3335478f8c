# The README's two commands: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench docs docs-site clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "panicbutton needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  echo "could not create $(VENV): install the venv module (Debian/Raspberry Pi OS: sudo apt install python3-venv)"; exit 1; }

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing panicbutton and its dependencies into $(VENV) (first run takes a minute)..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/panicbutton demo

test: $(STAMP) lint typecheck docs-site unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check panicbutton device server demo tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python -m tests.bench

docs: $(STAMP)
	$(BIN)/python -m tests.test_docs

# The documentation site into site/ (git ignores it), strictly: a broken link or include fails.
# `.venv/bin/mkdocs serve` serves it while you write.
docs-site: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
