# roxd: the two commands are `make run` and `make test`; both set up what is missing first.
SHELL := /bin/sh
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/.state
PYTEST_ARGS ?= --durations=30

.PHONY: setup run test lint bench apps-bench detection-bench clean packages

setup:
	@scripts/setup.sh

# roxd in the foreground with the shipped default config and rules; events on stdout.
run: setup
	$(PY) -m roxd --config config/roxd.toml --print-events

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# benchmarks (docs/performance.md): JSON under bench/results/, a table on stdout
bench:
	@ROXD_SETUP_BENCH=1 scripts/setup.sh
	$(PY) -m bench $(BENCH_ARGS)

# application benchmarks only (docs/performance.md "Application benchmarks"): nginx/wrk,
# redis-benchmark, pgbench and make -j2 under none, roxd, roxd-baselines, auditd, bpftrace;
# APPS_ARGS="--app-reps 5 --app-seconds 30" for longer runs, "--quick" for a smoke run
apps-bench:
	@ROXD_SETUP_BENCH=1 scripts/setup.sh
	$(PY) -m bench --phases apps $(APPS_ARGS)

# detection coverage (docs/detection.md): Atomic Red Team's Linux tests against the shipped rules,
# then the benign suite when present; JSON under bench/results/, tables on stdout
detection-bench: setup
	$(PY) -m bench.detection $(DETECTION_ARGS)
	if [ -d bench/benign ]; then $(PY) -m bench.benign; fi

lint: setup
	$(VENV)/bin/ruff check roxd tests

# .deb and .rpm into dist/ (docs/packaging.md)
packages: setup
	scripts/build-packages.sh $(CURDIR)/dist

clean:
	rm -rf $(STATE) dist .pytest_cache .ruff_cache
