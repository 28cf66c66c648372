# The README's commands. GNU make.
#   make demo   run the live demo (private Redis unless REDIS_URL is set)
#   make test   run the test suite (private Redis unless REDIS_URL is set)
#   make lint   ruff check + format check
#   make bench  run every bench/*.py but report.py; each prints its own figures
#   make report regenerate bench/report/ (swap report: Markdown and PNG plots)
#   make grpc-stubs  regenerate swaps/v2_grpc/ from its grpc_predict_v2.proto
#   make clean  remove .venv, run/ (demo database, Redis files), caches

VENV := .venv
PY := $(VENV)/bin/python
WITH_REDIS := $(PY) scripts/with_redis.py --
# pip, quiet: its build backend's notices (setuptools on editable installs) are not ours.
PIP := PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=
# Test processes: most tests wait on replicas, workers, daphne and Chromium, so three
# workers keep a 2-core machine busy. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 3

.PHONY: demo test lint bench report clean venv test-venv grpc-stubs

# What runs the product (make demo); the test extras come with the first make test,
# make lint or make bench.
venv: $(VENV)/.installed
test-venv: $(VENV)/.test-installed

# Rebuilt whenever pyproject.toml changes. Hotswap pins Python 3.11 (pyproject's
# requires-python); python3 is accepted only if it is 3.11.
$(VENV)/.installed: pyproject.toml
	@python=$$(command -v python3.11 || command -v python3 || true); \
	if [ -z "$$python" ]; then \
		echo "Hotswap needs Python 3.11: no python3.11 or python3 on PATH" >&2; exit 1; \
	fi; \
	if ! "$$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
		echo "Hotswap needs Python 3.11, but $$python is $$("$$python" --version 2>&1): install python3.11" >&2; \
		exit 1; \
	fi; \
	echo "creating $(VENV) with $$python"; \
	"$$python" -m venv $(VENV)
	$(PIP) --upgrade pip
	@echo "installing Hotswap and what it runs on into $(VENV) (a minute the first time)"
	$(PIP) -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	@echo "installing the test tools into $(VENV)"
	$(PIP) -e '.[test]'
	touch $@

demo: venv
	$(WITH_REDIS) $(PY) manage.py demo

test: test-venv
	mkdir -p test-output/screenshots
	@# Our own code, byte-compiled once: where the environment says PYTHONDONTWRITEBYTECODE,
	@# each of the ~100 processes the suite starts compiled it again (~0.1 s of CPU each).
	$(PY) -m compileall -q -j 0 swaps hotswap_site tests scripts > /dev/null
	$(WITH_REDIS) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: test-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# bench/peers.py is left out: it installs MLServer into a venv of its own (about 15 minutes
# the first time); run it by itself.
bench: test-venv
	@set -e; found=; \
	for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		[ "$$script" = bench/report.py ] && continue; \
		[ "$$script" = bench/peers.py ] && continue; \
		found=1; \
		echo "== $$script"; \
		$(WITH_REDIS) $(PY) "$$script"; \
	done; \
	[ -n "$$found" ] || echo "no benchmarks in bench/ yet"

# matplotlib is only for the report: installed into the venv on first use.
$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(PIP) -e '.[test,bench]'
	touch $@

report: $(VENV)/.bench-installed
	$(PY) bench/report.py

clean:
	rm -rf $(VENV) run staticfiles .pytest_cache .ruff_cache build *.egg-info test-output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The V2 gRPC protocol's messages and service (KServe's grpc_predict_v2.proto, package
# inference), generated with grpcio-tools and checked in; tests/test_grpc_stubs.py fails
# when they no longer match what this command makes.
grpc-stubs: test-venv
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
		swaps/v2_grpc/grpc_predict_v2.proto
