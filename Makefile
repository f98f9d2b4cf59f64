# dotcos developer tasks. Everything runs inside .venv, created on demand from python3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,ray
DOTCOS_INDEX_ROOT ?= ./indexes
export DOTCOS_INDEX_ROOT

.PHONY: install test test-containers constraints run lint fuzz bench bench-full bench-install demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-containers: install
	bash .ci/containers/run-test.sh

# The image installs exactly this set (the one `make test` passed with); refresh after changing dependencies.
constraints: install
	{ echo "# Every package the image may install, pinned to the set \`make test\` passed with."; \
	  echo "# Refresh: make constraints (after make install and make test)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^dotcos'; } > docker/constraints.txt

fuzz: install
	DOTCOS_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest tests/service/test_fuzz.py -q -p no:cacheprovider \
		--hypothesis-show-statistics \
		| tee bench/results/fuzz.txt

demo: install
	$(BIN)/dotcos-build demo --root "$(DOTCOS_INDEX_ROOT)"

run: demo
	$(BIN)/dotcos-serve

lint: install
	$(BIN)/ruff check index_builder service tests bench
	$(BIN)/ruff format --check index_builder service tests bench
	$(BIN)/mypy --strict index_builder service

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache

bench-install:
	$(MAKE) install EXTRAS=dev,ray,bench
	bash bench/setup.sh

bench: bench-install
	$(BIN)/python -m bench.run --dataset quick
	$(BIN)/python -m bench.item2item

bench-full: bench-install
	$(BIN)/python -m bench.run --dataset full --seconds 15
