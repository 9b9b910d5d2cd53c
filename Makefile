# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# pytest workers for `make test` (pytest-xdist; each loads its own models: about 2 GB apiece).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: install install-dev demo test test-fast services services-stop lint bench clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/install.sh
	scripts/install.sh --dev
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Sync the example handbook into the embedded index and answer a question from it with the
## offline demo model (SmolLM2-135M-Instruct, shipped in a PyPI wheel), with its sources.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/expertbot sync examples/knowledge
	HF_HUB_OFFLINE=1 EXPERTBOT_MODEL__BASE=demo $(BIN)/expertbot ask "How do I reset my password?"

## Lint, type-check and run every test: SQLite and PostgreSQL, LanceDB and a live Weaviate
## (scripts/with-services.sh starts both servers; Weaviate is built with Go on first use).
test: install-dev
	$(BIN)/ruff check base bot knowledge training tests bench scripts
	$(BIN)/ruff format --check base bot knowledge training tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 scripts/with-services.sh $(PYTEST)

## The inner loop: every test but those marked slow (real training, the demo model), no lint.
test-fast: install-dev
	HF_HUB_OFFLINE=1 scripts/with-services.sh $(PYTEST) -q -m "not slow"

## Start PostgreSQL and Weaviate and print their addresses: eval "$$(make -s services)".
services:
	@scripts/postgres.sh start
	@scripts/weaviate.sh start

services-stop:
	@scripts/weaviate.sh stop
	@scripts/postgres.sh stop

lint: install-dev
	$(BIN)/ruff check --fix base bot knowledge training tests bench scripts
	$(BIN)/ruff format base bot knowledge training tests bench scripts

bench: install-dev
	$(PY) bench/retrieval.py
	$(PY) bench/corpora.py
	$(PY) bench/tune_retrieval.py
	$(PY) bench/reranking.py
	$(PY) bench/search_latency.py
	scripts/with-services.sh $(PY) bench/index_backends.py
	$(PY) bench/abstention.py
	$(PY) bench/answering.py
	$(PY) bench/slack_ack.py
	$(PY) bench/teams_latency.py
	$(PY) bench/cpu_dtype.py
	$(PY) bench/train_throughput.py
	$(PY) bench/learning_loop.py

clean:
	rm -rf $(VENV) .expertbot .bench .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
