# `make test` installs every test dependency, builds, and runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test setup build lint rust-test py-test bench-smoke docs release clean

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

bench-smoke:
	$(PY) bench/run.py --smoke

docs:
	$(PY) -c "import ferricorn._ferricorn as f; print(f.settings_markdown(), end='')" > docs/settings.md

release:
	$(VENV)/bin/maturin build --release

clean:
	cargo clean
	rm -rf $(VENV)
