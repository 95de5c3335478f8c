# The README's two commands: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench soak docs docs-site clean messages screenshots pi-check

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
	$(BIN)/pytest -q -n 3 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The server as deployed for an hour at a realistic load (tests/bench/soak.py; --help).
soak: $(STAMP)
	$(BIN)/python -m tests.bench.soak

# A room unit installed from an empty card on an emulated Raspberry Pi (arm64, qemu),
# against a real server, broker and wheelhouse on loopback (root; see tests/pi/check.py).
pi-check: $(STAMP)
	$(BIN)/python -m tests.pi.check

docs: $(STAMP)
	$(BIN)/python -m tests.test_docs

# The documentation site into site/ (git ignores it), strictly: a broken link or include fails.
# `.venv/bin/mkdocs serve` serves it while you write.
docs-site: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site

# The console's texts: extract them from the templates and update the fr/nl catalogues
# (then translate the new entries in server/console/locales/*/LC_MESSAGES/console.po).
messages: $(STAMP)
	$(BIN)/pybabel extract --no-location --omit-header --no-wrap --sort-output -F babel.cfg -k N_ \
	  -o server/console/locales/console.pot .
	for lang in fr nl; do \
	  if [ -f server/console/locales/$$lang/LC_MESSAGES/console.po ]; then \
	    $(BIN)/pybabel update --omit-header --no-wrap --ignore-obsolete -N -i server/console/locales/console.pot \
	      -d server/console/locales -D console -l $$lang; \
	  else $(BIN)/pybabel init --no-wrap -i server/console/locales/console.pot -d server/console/locales -D console -l $$lang; fi; \
	done
	rm server/console/locales/console.pot

# The screenshots in docs/use/img (the console's and the phone button's), taken by their browser tests.
screenshots: $(STAMP)
	PANICBUTTON_SCREENSHOTS=1 $(BIN)/pytest -q tests/server/console tests/server/mobile/test_phone_page.py
