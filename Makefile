# botbus — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CODE   := $(wildcard src services tests bench examples)

.PHONY: run test test-fast lint fmt bench clean venv train-sentiment

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/botbus up

# pytest exits 5 when it collected no test: that is a broken set-up, not a pass.
test: $(STAMP) lint
	@$(BIN)/python -m pytest -n 2 --dist loadfile -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the test set-up is broken" >&2; exit 1; fi; \
	exit $$rc

# The fast loop for development: everything but the fault, cluster and browser tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Retrain the sentiment models into services/sentiment/data/model_{en,es}.npz from the
# public sets in .sentiment-data/ (`python -m services.sentiment.datasets` lists them).
train-sentiment: $(STAMP)
	$(BIN)/pip install --quiet -e '.[train]'
	$(BIN)/python -m services.sentiment.train

clean:
	rm -rf $(VENV) .botbus .pytest_cache .mypy_cache .ruff_cache
