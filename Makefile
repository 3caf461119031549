# The two commands a new user needs: `make run` and `make test`.
# Both create the virtual environment on first use (Python >= 3.11 required).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint fmt stress demo screenshots bench clean

# The packaging tools' output (setuptools' "Editable installation" banner, pip's notices) goes to
# $(VENV)/install.log and is shown only when the installation fails.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tracetui needs Python >= 3.11"'
	@echo "Setting up $(VENV) (first run only)..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if ! { $(BIN)/python -m pip install --quiet --upgrade pip && \
	        $(BIN)/python -m pip install --quiet -e '.[test]'; } > $(VENV)/install.log 2>&1; then \
	    cat $(VENV)/install.log; echo "Installing into $(VENV) failed (the log above is in $(VENV)/install.log)."; \
	    exit 1; \
	fi
	@touch $(STAMP)

run: $(STAMP)
	@$(BIN)/tracetui serve

# The static checks first: formatting, lints, types, the import layers. Each names what fails; `make fmt` fixes the first two.
CHECKED := tracetui tests benchmarks scripts

# Two test processes (pytest-xdist): most tests wait on sockets, subprocesses and timers, so two
# workers finish sooner even on 2 cores. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	@$(BIN)/ruff format --check $(CHECKED) || { echo "Formatting differs: run 'make fmt'."; exit 1; }
	@$(BIN)/ruff check $(CHECKED) || { echo "Lint errors above ('make fmt' fixes the ones marked [*])."; exit 1; }
	@$(BIN)/mypy tracetui || { echo "Type errors above (configuration: [tool.mypy] in pyproject.toml)."; exit 1; }
	@$(BIN)/lint-imports --no-cache > $(VENV)/lint-imports.log 2>&1 || { cat $(VENV)/lint-imports.log; \
	    echo "An import crosses the layers (README 'Layout'; contracts: [tool.importlinter] in pyproject.toml)."; exit 1; }

# Apply the formatter and the lint fixes ruff can make safely.
fmt: $(STAMP)
	$(BIN)/ruff format $(CHECKED)
	$(BIN)/ruff check --fix $(CHECKED)

# The slow tests: sustained floods and hostile clients (several minutes; `make test` skips them).
stress: $(STAMP)
	$(BIN)/python -m pytest -m slow

demo: $(STAMP)
	@$(BIN)/tracetui demo

screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
