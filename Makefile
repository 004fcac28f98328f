# Every target creates the virtualenv itself, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check connector tests bench
	$(BIN)/ruff format --check connector tests bench
	$(BIN)/mypy

# One worker per core: the suite takes about 3 minutes on one core, half that on two.
test: lint
	$(BIN)/python -m pytest -q -n auto

demo: $(STAMP)
	$(BIN)/connector demo

# The five benchmarks of issue 10 (figures written into BENCHMARKS.md), then a deeper run of the
# sync state machines (150 examples per target and variant): the long runs belong here, not in
# `make test`. About 15 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python -m bench
	MACHINE_EXAMPLES=150 $(BIN)/python -m pytest -q -n auto -p no:cacheprovider tests/test_sync_machine.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
