#!/usr/bin/env bash
# Installs everything the test suite needs on a clean machine: Debian packages (curl, wrk,
# nginx, haproxy, h2load from nghttp2-client), a virtualenv with the Python test
# dependencies, and the Rust components.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need_apt=()
for pair in curl:curl wrk:wrk nginx:nginx ss:iproute2 openssl:openssl systemd-socket-activate:systemd \
        haproxy:haproxy h2load:nghttp2-client; do
    tool=${pair%%:*} pkg=${pair##*:}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${need_apt[*]} with apt-get"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "warning: ${need_apt[*]} not installed and apt-get unavailable; those tests will be skipped" >&2
    fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -r requirements-test.txt
rustup component add clippy rustfmt >/dev/null 2>&1 || true
