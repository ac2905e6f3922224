"""HTTP/2 under load with nghttp2's `h2load` (Debian package nghttp2-client; skipped when it
is missing), issue 8: `h2load -n 2000 -c 10 -m 10` against the real `ferricorn` command
over TLS with ALPN h2 and over h2c with prior knowledge, for a WSGI app (--threads 4) and
an ASGI app (tests/apps/proxy_app.py), GETs and POSTs whose body is echoed back. Every
request must succeed with a 2xx, and h2 must really have been negotiated."""

import re
import shutil
import subprocess

import httpx
import pytest

from test_tls import certs, client_ctx, tls_args  # noqa: F401 - `certs` is the session fixture

H2LOAD = shutil.which("h2load")
pytestmark = pytest.mark.skipif(H2LOAD is None, reason="h2load is not installed (Debian package nghttp2-client)")

N, CLIENTS, STREAMS = 2000, 10, 10
APPS = {"wsgi": ("proxy_app:app", "--threads", "4"), "asgi": ("proxy_app:asgi",)}


def run_h2load(url, *args, n=N, c=CLIENTS, m=STREAMS, timeout=90):
    """Runs h2load and parses its summary: a dict with requests (total, started, done,
    succeeded, failed, errored, timeout), status (2xx..5xx), protocol, data (bytes of
    response DATA), and the raw output."""
    res = subprocess.run([H2LOAD, "-n", str(n), "-c", str(c), "-m", str(m), *args, url], capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    req = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored(?:, (\d+) timeout)?", out, re.M
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    data = re.search(r"^traffic: .*, \S+ \((\d+)\) data", out, re.M)
    assert req and codes and data, f"unexpected h2load output:\n{out}"
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return {
        "requests": {k: int(v or 0) for k, v in zip(keys, req.groups())},
        "status": dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups()))),
        "protocol": proto.group(1) if proto else None,
        "data": int(data.group(1)),
        "out": out,
    }


def assert_all_ok(summary, protocol, n=N):
    out = summary["out"]
    assert summary["protocol"] == protocol, f"h2 was not negotiated:\n{out}"
    assert summary["requests"] == {"total": n, "started": n, "done": n, "succeeded": n, "failed": 0, "errored": 0, "timeout": 0}, out
    assert summary["status"] == {"2xx": n, "3xx": 0, "4xx": 0, "5xx": 0}, out


def assert_clean_log(srv):
    bad = [l for l in srv.log().splitlines() if "[ERROR]" in l or "[CRITICAL]" in l or "Traceback" in l]
    assert not bad, srv.log()[-3000:]


def start_tls(start_server, certs, kind):  # noqa: F811
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command for certificates")
    return start_server(*APPS[kind], "-w", "2", *tls_args(certs), "--http-protocols", "h2,h1")


def start_h2c(start_server, kind):
    return start_server(*APPS[kind], "-w", "2", "--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips", "127.0.0.1")


@pytest.mark.parametrize("kind", sorted(APPS))
def test_h2load_tls_alpn_h2(start_server, certs, kind):  # noqa: F811
    srv = start_tls(start_server, certs, kind)
    s = run_h2load(f"https://127.0.0.1:{srv.port}/")
    assert_all_ok(s, "h2")
    assert_clean_log(srv)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_h2load_h2c_prior_knowledge(start_server, kind):
    srv = start_h2c(start_server, kind)
    s = run_h2load(f"http://127.0.0.1:{srv.port}/")
    assert_all_ok(s, "h2c")
    assert_clean_log(srv)


@pytest.mark.parametrize("transport", ["tls", "h2c"])
@pytest.mark.parametrize("kind", sorted(APPS))
def test_h2load_post_body_echoed(start_server, certs, tmp_path, transport, kind):  # noqa: F811
    body = bytes(range(256)) * 64 + b"tail"  # 16388 bytes, more than one DATA frame
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    if transport == "tls":
        srv = start_tls(start_server, certs, kind)
        url, proto = f"https://127.0.0.1:{srv.port}/echo", "h2"
        client = httpx.Client(http1=False, http2=True, verify=client_ctx(certs, alpn=["h2"]), timeout=10)
    else:
        srv = start_h2c(start_server, kind)
        url, proto = f"http://127.0.0.1:{srv.port}/echo", "h2c"
        client = httpx.Client(http1=False, http2=True, timeout=10)
    n = N
    s = run_h2load(url, "-d", str(f), n=n)
    assert_all_ok(s, proto, n)
    # Every response carried the whole body back (h2load counts DATA bytes)...
    assert s["data"] == n * len(body), s["out"]
    # ...and it is the same body.
    with client:
        r = client.post(url, content=body)
    assert r.http_version == "HTTP/2" and r.status_code == 200 and r.content == body
    assert_clean_log(srv)
