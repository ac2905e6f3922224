# `make test` installs every test dependency, builds, and runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test setup build lint rust-test py-test bench-smoke docs release clean fuzz-smoke fuzz

test: setup build lint rust-test py-test bench-smoke

setup:
	VENV=$(VENV) scripts/setup-test-env.sh

# Debug build, installed editable into the virtualenv.
build:
	$(VENV)/bin/maturin develop -q

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings

rust-test:
	cargo test --workspace --exclude ferricorn-py -q

py-test:
	$(PY) -m pytest -q -p no:cacheprovider --timeout=120 tests

# The fuzz corpus replayed through the fuzz targets on stable (also part of rust-test).
fuzz-smoke:
	cargo test -p ferricorn-server --test fuzz_corpus -q

# Real fuzzing (docs/fuzzing.md): FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 600
fuzz:
	cargo install -q cargo-fuzz
	cd fuzz && for t in request_head framing proxy_header settings; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

bench-smoke:
	$(PY) bench/run.py --smoke

docs:
	$(PY) -c "import ferricorn._ferricorn as f; print(f.settings_markdown(), end='')" > docs/settings.md

release:
	$(VENV)/bin/maturin build --release

clean:
	cargo clean
	rm -rf $(VENV)

# Reliability suite (tests/reliability, see README "Reliability suite"): counted load
# under signals, app and client faults, slowloris, idle connections. Short mode takes
# about two minutes; the long one (RELIABILITY_LONG=1) about ten.
.PHONY: reliability reliability-long
reliability:
	$(PY) -m pytest -q -p no:cacheprovider --timeout=300 tests/reliability

reliability-long:
	RELIABILITY_LONG=1 $(PY) -m pytest -q -p no:cacheprovider --timeout=1200 tests/reliability
