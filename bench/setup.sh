#!/usr/bin/env bash
# One command for the whole benchmark: bench/.venv with Gunicorn, Granian, uvicorn[standard]
# (and bjoern if it builds), a release build of this checkout (`pip install .` runs maturin
# in release mode), the pure-Rust reference (cargo build --release --example hello), then
# every scenario against every server. Extra arguments go to bench/run.py, e.g.
#   bench/setup.sh --rounds 5 --duration 10
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/run.py --setup "$@"
