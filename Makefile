# streamtap — build, demo and test entry points. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGINS := noop sentiment translate alerts analytics hostile versioned
BIN := target/release/streamtap

.PHONY: all wasm-target plugins build demo test e2e drill lint promtool fmt bench venv clean

all: build plugins

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

plugins: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(PLUGINS))

build:
	$(CARGO) build --release -p streamtap

# Builds everything and runs the embedded pipeline end to end, then shows what was stored
# and writes the report (data/demo-report.html and .png).
demo: plugins build
	rm -f data/demo.db data/demo.db-wal data/demo.db-shm data/demo-report.html data/demo-report.png
	$(BIN) run pipelines/demo.toml --no-reload
	@echo
	@echo "== the 8 newest stored messages (streamtap query pipelines/demo.toml --format table --limit 8) =="
	$(BIN) query pipelines/demo.toml --format table --limit 8
	@echo
	@echo "== report: per-channel volume, sentiment, languages and alerts (streamtap report) =="
	$(BIN) report pipelines/demo.toml --out data/demo-report.html
	$(BIN) report pipelines/demo.toml --out data/demo-report.png
	@echo "open $(CURDIR)/data/demo-report.html (or data/demo-report.png)"

# The whole suite: formatting, lints, unit and integration tests. Release profile, so the
# wasm plugins and the tests share compiled dependencies; the tests build the binary they
# run themselves (a separate `cargo build -p streamtap` would resolve other features and
# compile wasmtime a second time). The alert and MongoDB tests start moto_server and
# secantusd-py from .venv/.
test: plugins lint promtool venv
	$(CARGO) test --release --workspace

# The whole system on 127.0.0.1 (host/tests/e2e.rs): mock Twitch with 2,000 channels and a
# live HLS stream, two collectors, tansu, two processors with every plugin, SecantusDB,
# moto SNS/SQS and Prometheus, a burst and two hot reloads midway. `make test` runs it too.
e2e: plugins venv
	$(CARGO) test --release -p streamtap --test e2e -- --nocapture

# The fault drill on the same deployment (host/tests/drill.rs): processor kill -9, broker,
# MongoDB and SNS outages, Twitch RECONNECT and cut connections, a poison record, a trapping
# plugin; prints lost / duplicates / recovery time per fault. `make test` runs it too.
drill: plugins venv
	$(CARGO) test --release -p streamtap --test drill -- --nocapture

# The Prometheus scrape config and alerting rules, with the rules' unit tests.
promtool:
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/streamtap.rules.yml
	promtool test rules deploy/prometheus/rules/streamtap.rules.test.yml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Every benchmark in host/benches/, one after another, and their results written into
# docs/PERFORMANCE.md (scripts/bench_report.py); the sentiment one times the reference
# Python VADER from .venv/, the recorder one runs ffmpeg and streamlink (.venv/), the kafka
# one tansu, secantusdb and kcat.
bench: plugins venv
	python3 scripts/bench_report.py

# Python for development tools (the reference vaderSentiment the sentiment bench compares
# with) in .venv/. The stamp makes a second run a no-op, and a change to the pins reinstalls.
venv: .venv/.installed

.venv/.installed: scripts/requirements-dev.txt
	python3 -m venv .venv
	.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-dev.txt
	touch $@

clean:
	$(CARGO) clean
