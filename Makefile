# Developer entry points. Everything runs in .venv, made from python3 (3.11 or newer).
#   make demo    the example shop earning points on local Points and fabric sandboxes (Redis, 2 workers, 50 orders)
#   make admin   Django admin on http://127.0.0.1:8000/admin/ over the last demo's database (demo / demo)
#   make test    the test suite (scripts/test.sh)
#   make lint    ruff
#   make docs    the settings reference regenerated from the code, then the docs site (mkdocs build --strict) in site/
#   make bench   every benchmark at full size, ~45 min on 2 cores (BENCH_ARGS=--record appends to docs/benchmarks.md)
#   make bench-quick   each benchmark at a small size (CI): fails on a correctness check, never on a timing
#   make chaos   2,000 orders while workers are killed, Redis loses its data and the platform misbehaves
#   make chaos-quick   the same with 200 orders (make test runs it after the PostgreSQL pass)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Rebuilt (pip install again) only when pyproject.toml changes.
STAMP := $(VENV)/.installed-from-pyproject
DOCS_STAMP := $(VENV)/.installed-docs-from-pyproject

.PHONY: venv demo admin test lint docs bench bench-quick chaos chaos-quick

venv: $(STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
		echo "error: $(PYTHON) not found. Install Python 3.11 or newer (or run: make PYTHON=/path/to/python3.11 ...)"; \
		exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); this project needs 3.11 or newer."; \
		echo "       Install it, or point make at one: make PYTHON=/path/to/python3.11 ..."; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[test]"
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server found on PATH: the demo and tests use it."; \
	else \
		echo "redis-server not on PATH: installing the embedded Redis fallback (fakeredis)."; \
		$(PY) -m pip install -e ".[test,embedded-redis]"; \
	fi
	@touch $@

demo: venv
	$(PY) example_project/demo.py

# The admin over the last `make demo` database. The demo's Redis, sandbox and workers are stopped by now, so
# Redis and the Points and fabric URLs point at a closed local port and the credentials are placeholders:
# nothing is ever sent to a real platform or queued in another project's Redis from here (retries stay queued).
admin: venv
	@test -f .demo/shop.sqlite3 || { echo "No demo database yet: run 'make demo' first."; exit 1; }
	@echo "Open http://127.0.0.1:8000/admin/ and log in as demo / demo (Ctrl-C stops the server)."
	DEBUG=1 DATABASE_URL="sqlite:///$(CURDIR)/.demo/shop.sqlite3" REDIS_URL=redis://127.0.0.1:9/0 \
		POINTS_API_KEY=placeholder-admin-only POINTS_BASE_URL=http://127.0.0.1:9/api/v1 \
		FABRIC_BASE_URL=http://127.0.0.1:9/fabric/api FABRIC_TOKEN_URL=http://127.0.0.1:9/fabric/token \
		FABRIC_CLIENT_ID=placeholder-admin-only FABRIC_CLIENT_SECRET=placeholder-admin-only \
		$(PY) example_project/manage.py runserver 127.0.0.1:8000

test: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check .

$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -e ".[test,docs]"
	@touch $@

# Warnings (a broken link or anchor, a missing page) fail the build. tests/test_docs.py fails first when
# docs/settings.md is stale; here it is simply regenerated.
docs: venv $(DOCS_STAMP)
	$(PY) scripts/settings_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Benchmarks need PostgreSQL (POSTGRES_URL, as for make test) and start their own Redis, sandbox and workers.
# The admin benchmark (benchmarks/admin_bench.py) keeps its 1,000,000-row database between runs: run it by itself.
bench: venv
	$(PY) benchmarks/checkout.py $(BENCH_ARGS)
	$(PY) benchmarks/throughput.py $(BENCH_ARGS)
	$(PY) benchmarks/profile_drain.py $(BENCH_ARGS)
	$(PY) benchmarks/scaleout.py $(BENCH_ARGS)
	$(PY) benchmarks/storm.py $(BENCH_ARGS)
	$(PY) benchmarks/memory.py $(BENCH_ARGS)
	$(PY) benchmarks/reconcile_bench.py $(BENCH_ARGS)
	$(PY) benchmarks/many_accounts.py $(BENCH_ARGS)

bench-quick: venv
	$(PY) benchmarks/checkout.py --orders 50 --naive 5
	$(PY) benchmarks/throughput.py --orders 40 --workers 2
	$(PY) benchmarks/profile_drain.py --earnings 50
	$(PY) benchmarks/scaleout.py --orders 10
	$(PY) benchmarks/storm.py --orders 40
	$(PY) benchmarks/memory.py --earnings 150
	$(PY) benchmarks/reconcile_bench.py --rows 20000
	$(PY) benchmarks/many_accounts.py --quick

# The chaos run (benchmarks/chaos.py): exits 1 if any order is missing, awarded twice, or two calls overlapped.
chaos: venv
	$(PY) benchmarks/chaos.py --orders 2000 $(CHAOS_ARGS)

chaos-quick: venv
	$(PY) benchmarks/chaos.py --orders 200
