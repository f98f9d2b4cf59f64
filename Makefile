# dotcos developer tasks. Everything runs inside .venv, created on demand from python3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
DOTCOS_INDEX_ROOT ?= ./indexes
export DOTCOS_INDEX_ROOT

.PHONY: install test test-containers docs test-docs lock run lint fuzz bench bench-full bench-install demo clean

install: $(STAMP)

# The lean install: the service, the builder, the client and the dev tools. Ray is the `ray`
# extra (make install EXTRAS=dev,ray); CI installs it for the scale-out tests. Every version
# comes from constraints.txt, the set the tests passed with (the image installs the same).
$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e ./client -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-containers: install
	bash .ci/containers/run-test.sh

# The documentation site (MkDocs, Material theme) into ./site; --strict: a broken link, a missing
# page or a stale generated reference page fails it.
docs:
	$(MAKE) install EXTRAS=$(EXTRAS),docs
	$(BIN)/python -m docsgen --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Every sh and python example of the docs and the READMEs, run against a real dotcos-serve
# (tests/docs: each page on a fresh index root and its own server).
test-docs: install
	$(BIN)/python -m pytest -q -m docs tests/docs

# Re-resolve constraints.txt from pyproject.toml (pins kept where they still fit; add
# LOCK_ARGS=--upgrade to move every package to its newest release), then run make test.
lock: install
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra dev --extra ray --extra docs --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) --output-file constraints.txt pyproject.toml

fuzz: install
	DOTCOS_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest tests/service/test_fuzz.py -q -p no:cacheprovider \
		--hypothesis-show-statistics \
		| tee bench/results/fuzz.txt

demo: install
	$(BIN)/dotcos-build demo --root "$(DOTCOS_INDEX_ROOT)"

run: demo
	$(BIN)/dotcos-serve

lint: install
	$(BIN)/ruff check index_builder service client tests bench docsgen
	$(BIN)/ruff format --check index_builder service client tests bench docsgen
	$(BIN)/mypy --strict index_builder service client/dotcos_client docsgen

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis .mypy_cache .ruff_cache

bench-install:
	$(MAKE) install EXTRAS=dev,ray,bench
	bash bench/setup.sh

bench: bench-install
	$(BIN)/python -m bench.run --dataset quick
	$(BIN)/python -m bench.item2item

bench-full: bench-install
	$(BIN)/python -m bench.run --dataset full --seconds 15
