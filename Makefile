# flx — every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/flx anatomy
	$(BIN)/flx bench losses --sizes 1e5,1e6

lint: $(STAMP)
	$(BIN)/ruff check flx tests
	$(BIN)/ruff format --check flx tests

bench: $(STAMP)
	$(BIN)/flx bench losses

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
