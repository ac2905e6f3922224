"""End-to-end tests of the ASGI side (issue 7), through the real `ferricorn` command:
interface selection, the complete `http` scope, request body streaming and
`http.disconnect`, response framing/streaming/backpressure/errors, lifespan, and real
FastAPI, Starlette and Django ASGI applications.

WebSockets, pathsend/zerocopysend, Early Hints, trailers and disconnects have their own files
(test_websocket.py, test_asgi_extensions.py, test_early_hints.py, test_asgi_disconnect.py)."""

import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import base_env, free_port, recv_all

requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

RAW = "asgi_raw:app"
TIMEOUT = 10

# 2 MiB of non-repeating bytes: a truncated, duplicated or reordered upload changes the digest.
UPLOAD = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(65536))
assert len(UPLOAD) == 2 * 1024 * 1024
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()


# --------------------------------------------------------------------------- helpers

BIG_CHUNK = 64 * 1024


def big_block(i):
    """The i-th block of asgi_raw's /big response."""
    return hashlib.sha256(str(i).encode()).digest() * (BIG_CHUNK // 32)


class Resp:
    def __init__(self, status, reason, headers, body, complete, rest):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> [values]
        self.body = body
        self.complete = complete
        self.rest = rest

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    def __repr__(self):
        return f"Resp({self.status}, {self.headers}, {self.body[:200]!r}, complete={self.complete})"


def parse_response(data, head_request=False):
    """Parses one HTTP/1.x response from `data`; `rest` is what follows it (pipelining)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if head_request or status in (204, 304) or 100 <= status < 200:
        return Resp(status, reason, headers, b"", True, rest)
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        body = b""
        buf = rest
        while True:
            line, sep, after = buf.partition(b"\r\n")
            if not sep:
                return Resp(status, reason, headers, body, False, b"")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                _, sep, after = after.partition(b"\r\n")
                return Resp(status, reason, headers, body, bool(sep), after)
            if len(after) < size + 2:
                return Resp(status, reason, headers, body + after[:size], False, b"")
            body += after[:size]
            buf = after[size + 2 :]
    if "content-length" in headers:
        n = int(headers["content-length"][0])
        return Resp(status, reason, headers, rest[:n], len(rest) >= n, rest[n:])
    return Resp(status, reason, headers, rest, True, b"")


def request_bytes(method, target, headers=(), body=b"", version="HTTP/1.1", close=True):
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_request(srv, method, target, headers=(), body=b"", version="HTTP/1.1", timeout=TIMEOUT):
    data = srv.raw(request_bytes(method, target, headers, body, version), timeout=timeout)
    return parse_response(data, head_request=(method == "HEAD"))


def get_json(srv, path, **kw):
    r = requests.get(srv.url + path, timeout=TIMEOUT, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def record(srv):
    return get_json(srv, "/record")


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def cli_run(run_cli, *args, env=None, timeout=30):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", *args, env=env, timeout=timeout)
    return res, res.stdout + res.stderr


# --------------------------------------------------------------------------- 1. interface selection


@pytest.mark.parametrize(
    "app,expected",
    [("asgi_iface:coro_app", "asgi3-coroutine"), ("asgi_iface:obj_app", "asgi3-object")],
    ids=["coroutine-function", "async-callable-object"],
)
def test_interface_autodetect(start_server, app, expected):
    srv = start_server(app)
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.text == expected


@pytest.mark.parametrize(
    "flags",
    [
        ["-k", "asgi"],
        ["-k", "uvicorn.workers.UvicornWorker"],
        ["-k", "uvicorn_worker.UvicornWorker"],
        ["--interface", "asgi"],
    ],
    ids=["k-asgi", "k-uvicorn-workers", "k-uvicorn_worker", "interface-asgi"],
)
def test_interface_forced_asgi(start_server, flags):
    srv = start_server("asgi_iface:coro_app", *flags)
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "asgi3-coroutine")
    # Gunicorn's line names the class as configured.
    named = flags[1] if flags[0] == "-k" else "asgi"
    assert f"Using worker: {named}\n" in srv.log(), srv.log()


@pytest.mark.parametrize("app", ["asgi_iface:asgi2_func", "asgi_iface:asgi2_app"], ids=["function", "class"])
def test_interface_asgi2_double_callable(start_server, app):
    """ASGI 2: `app(scope)` returns the instance. The classic form is a class whose
    instances have an async `__call__(receive, send)`; uvicorn treats classes as ASGI 2."""
    srv = start_server(app, "--interface", "asgi")
    r = requests.get(srv.url + "/x", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "asgi2-http"), srv.log()
    assert "Using worker: asgi" in srv.log()


@pytest.mark.parametrize("flags", [[], ["--interface", "wsgi"]], ids=["auto", "interface-wsgi"])
def test_interface_wsgi_app(start_server, flags):
    srv = start_server("asgi_iface:wsgi_app", *flags)
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"interface": "wsgi", "version": [1, 0]}
    assert "Using worker: asgi" not in srv.log()


# --------------------------------------------------------------------------- 2. the http scope


def test_scope_keys_and_types(start_server):
    srv = start_server(RAW)
    with srv.connect() as s:
        client_port = s.getsockname()[1]
        s.sendall(
            b"GET /scope/caf%C3%A9/a%20b?x=1&y=%20z&x=2 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"X-Dup: one\r\n"
            b"X-Mixed-CASE: Value With Case\r\n"
            b"X-Dup: two\r\n"
            b"Connection: close\r\n\r\n"
        )
        resp = parse_response(recv_all(s, TIMEOUT))
    assert resp.status == 200
    sc = json.loads(resp.body)
    assert sc["type"] == "http"
    assert sc["asgi"]["version"] == "3.0"
    assert isinstance(sc["asgi"].get("spec_version", "2.0"), str)
    assert sc["http_version"] == "1.1"
    assert sc["method"] == "GET"
    assert sc["scheme"] == "http"
    assert sc["path"] == "/scope/café/a b"
    assert sc["raw_path"] == "/scope/caf%C3%A9/a%20b"
    assert sc["query_string"] == "x=1&y=%20z&x=2"
    assert sc["root_path"] == ""
    types = sc["_types"]
    assert types["raw_path"] == "bytes"
    assert types["query_string"] == "bytes"
    assert types["header_item"] in (["tuple"], ["list"])
    assert types["header_len"] == [2]
    assert types["header_name_value"] == ["bytes"]
    headers = [tuple(h) for h in sc["headers"]]
    for name, _ in headers:
        assert name == name.lower(), headers
    assert ("host", "127.0.0.1") in headers
    assert ("x-mixed-case", "Value With Case") in headers
    # Both duplicates, in the order received.
    assert [v for n, v in headers if n == "x-dup"] == ["one", "two"]
    assert sc["client"] == ["127.0.0.1", client_port]
    assert sc["server"] == ["127.0.0.1", srv.port]
    assert sc["state"]["token"] == "from-lifespan"


@pytest.mark.parametrize(
    "allow, xff, client",
    [
        (None, "9.9.9.9", ["9.9.9.9", 0]),
        (None, "1.2.3.4, 9.9.9.9, 127.0.0.1", ["9.9.9.9", 0]),
        ("*", "1.2.3.4, 9.9.9.9", ["1.2.3.4", 0]),
        ("10.0.0.1", "9.9.9.9", None),
    ],
    ids=["one", "right-most-untrusted", "all-trusted", "untrusted-peer"],
)
def test_x_forwarded_for_from_a_trusted_proxy_sets_the_client(start_server, allow, xff, client):
    """uvicorn's proxy headers, which Gunicorn's UvicornWorker turns on with
    forwarded_allow_ips (127.0.0.1 and ::1 by default)."""
    args = ["--forwarded-allow-ips", allow] if allow else []
    srv = start_server(RAW, *args)
    with srv.connect() as s:
        port = s.getsockname()[1]
        s.sendall(f"GET /scope HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n".encode())
        sc = json.loads(parse_response(recv_all(s, TIMEOUT)).body)
    assert sc["client"] == (client or ["127.0.0.1", port]), sc["client"]


def test_scope_http10_and_methods(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/scope", version="HTTP/1.0")
    assert r.status == 200
    assert json.loads(r.body)["http_version"] == "1.0"
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = raw_request(srv, method, "/scope", body=b"abc" if method in ("POST", "PUT", "PATCH") else b"")
        assert r.status == 200, (method, r)
        sc = json.loads(r.body)
        assert sc["method"] == method
        assert sc["_body"] == ("abc" if method in ("POST", "PUT", "PATCH") else "")
    # The scope template holds GET, HTTP/1.1, http and no query: the requests above left
    # it as it was.
    sc = get_json(srv, "/scope")
    assert (sc["method"], sc["http_version"], sc["scheme"], sc["query_string"]) == ("GET", "1.1", "http", "")


def test_scope_empty_query_and_plain_path(start_server):
    srv = start_server(RAW)
    sc = get_json(srv, "/scope/plain")
    assert sc["path"] == "/scope/plain"
    assert sc["raw_path"] == "/scope/plain"
    assert sc["query_string"] == ""
    sc = get_json(srv, "/scope/q?")
    assert sc["query_string"] == ""


@pytest.mark.parametrize("header_map, kept", [("drop", False), ("dangerous", True)])
def test_scope_headers_with_underscore_follow_header_map(start_server, header_map, kept):
    """As Gunicorn's ASGI worker and the WSGI environ: `X_Forwarded_For` could pass for
    `X-Forwarded-For` downstream, so it is dropped unless `--header-map dangerous`."""
    srv = start_server(RAW, "--header-map", header_map)
    sc = get_json(srv, "/scope", headers={"X_Forwarded_For": "6.6.6.6", "X-Ok": "1"})
    names = [h[0] for h in sc["headers"]]
    assert "x-ok" in names
    assert ("x_forwarded_for" in names) == kept, names


def test_scope_root_path(start_server):
    srv = start_server(RAW, "--root-path", "/api")
    sc = get_json(srv, "/scope/x%2Fy?k=v")
    assert sc["root_path"] == "/api"
    # As uvicorn does: `path` is the full path, root_path included.
    assert sc["path"] == "/api/scope/x/y"
    assert sc["raw_path"] == "/api/scope/x%2Fy"
    assert sc["query_string"] == "k=v"


# --------------------------------------------------------------------------- 3. http.request and http.disconnect


def test_request_empty_body(start_server):
    srv = start_server(RAW)
    for method, headers in (("GET", ()), ("POST", (("Content-Length", "0"),))):
        r = raw_request(srv, method, "/echo", headers=headers)
        assert r.status == 200
        out = json.loads(r.body)
        assert out["messages"] == [{"type": "http.request", "len": 0, "more_body": False}], (method, out)
        assert out["body_types"] == ["bytes"]


def test_request_small_body(start_server):
    srv = start_server(RAW)
    r = requests.post(srv.url + "/echo", data=b"hello asgi", timeout=TIMEOUT)
    out = r.json()
    assert out["body"] == "hello asgi"
    assert out["messages"][-1]["more_body"] is False
    assert all(m["type"] == "http.request" for m in out["messages"])


def test_request_large_body_streamed_in_messages(start_server):
    srv = start_server(RAW)
    with srv.connect() as s:
        s.sendall(request_bytes("POST", "/echo", body=b"")[:-2] + f"Content-Length: {len(UPLOAD)}\r\n\r\n".encode())
        # Send in pieces with pauses: the app starts before the body is all there.
        for i in range(0, len(UPLOAD), 256 * 1024):
            s.sendall(UPLOAD[i : i + 256 * 1024])
            time.sleep(0.01)
        resp = parse_response(recv_all(s, TIMEOUT))
    assert resp.status == 200
    out = json.loads(resp.body)
    assert out["length"] == len(UPLOAD)
    assert out["sha256"] == UPLOAD_SHA
    msgs = out["messages"]
    assert len(msgs) > 1, msgs
    assert all(m["more_body"] is True for m in msgs[:-1]), msgs
    assert msgs[-1]["more_body"] is False


def test_request_large_body_with_requests(start_server):
    srv = start_server(RAW)
    r = requests.post(srv.url + "/echo", data=UPLOAD, timeout=TIMEOUT)
    out = r.json()
    assert (out["length"], out["sha256"]) == (len(UPLOAD), UPLOAD_SHA)
    assert out["messages"][-1]["more_body"] is False


def test_request_chunked_upload(start_server):
    srv = start_server(RAW)
    pieces = [UPLOAD[i : i + 100_000] for i in range(0, 700_000, 100_000)]
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for p in pieces:
            s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
            time.sleep(0.01)
        s.sendall(b"0\r\n\r\n")
        resp = parse_response(recv_all(s, TIMEOUT))
    assert resp.status == 200, resp
    out = json.loads(resp.body)
    body = b"".join(pieces)
    assert out["length"] == len(body)
    assert out["sha256"] == hashlib.sha256(body).hexdigest()
    assert out["messages"][-1]["more_body"] is False
    assert all(m["more_body"] is True for m in out["messages"][:-1])


def test_receive_after_response_is_disconnect(start_server):
    srv = start_server(RAW, "-w", "1")
    r = requests.get(srv.url + "/after-response", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "done")
    rec = wait_until(lambda: record(srv).get("after_response"), 4)
    assert rec, record(srv)
    assert rec["message"] == {"type": "http.disconnect"}
    assert rec["elapsed"] < 1.0
    assert record(srv)["send_returned"] == [None, None]


def test_receive_blocks_until_response_complete_then_disconnect(start_server):
    """A receive() awaited after the body blocks; once the response is complete it
    returns http.disconnect (uvicorn sets its message event on response completion)."""
    srv = start_server(RAW, "-w", "1")
    r = requests.get(srv.url + "/receive-pending", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "done")
    rec = wait_until(lambda: record(srv).get("receive_pending"), 5)
    assert rec, record(srv)
    assert rec["blocked_before_response"] is True
    assert rec["message"] == {"type": "http.disconnect"}, rec
    assert rec["elapsed"] < 1.0, rec


def test_receive_reports_client_disconnect_before_response(start_server):
    """A long poll whose client goes away must see http.disconnect from receive()."""
    srv = start_server(RAW, "-w", "1")
    s = srv.connect()
    s.sendall(request_bytes("GET", "/wait-disconnect", close=False))
    assert wait_until(lambda: record(srv).get("wait_disconnect"), 3)
    s.close()
    t0 = time.monotonic()
    rec = wait_until(lambda: (lambda r: r if r.get("message") != "WAITING" else None)(record(srv)["wait_disconnect"]), 6)
    assert rec, f"receive() still blocked {time.monotonic() - t0:.1f}s after the client closed"
    assert rec["message"] == {"type": "http.disconnect"}, rec
    assert rec["elapsed"] < 2.0, rec


def test_a_cancelled_receive_loses_no_chunk(start_server):
    """`wait_for(receive(), t)` timing out cancels the future receive() returned; the
    chunk that arrives next must go to the next receive(), not to the cancelled one."""
    srv = start_server(RAW, "-w", "1")
    s = srv.connect()
    half = b"x" * 100_000
    s.sendall(b"POST /timed-receive HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n" + half)
    time.sleep(1.0)
    s.sendall(half)
    out = b""
    s.settimeout(10)
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    rec = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert rec["bytes"] == 200_000, rec
    assert rec["timeouts"] >= 2 and rec["last"] == "http.request", rec


def test_an_upload_cut_off_mid_body_is_a_disconnect(start_server):
    srv = start_server(RAW, "-w", "1")
    s = srv.connect()
    s.sendall(b"POST /cut-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 200_000)
    time.sleep(0.5)
    s.close()
    msgs = wait_until(lambda: record(srv).get("cut_upload"), 5)
    assert msgs, record(srv)
    assert msgs[-1][0] == "http.disconnect", msgs
    assert all(m[2] is True for m in msgs[:-1]), msgs
    assert sum(m[1] for m in msgs) == 200_000, msgs


def test_an_exception_after_the_client_left_is_still_logged(start_server):
    """uvicorn logs every exception of the app; only the server's own cancellation of a
    task whose client left (after the grace period) is not the app's error."""
    srv = start_server(RAW, "-w", "1")
    s = srv.connect()
    s.sendall(request_bytes("GET", "/raise-late", close=False))
    time.sleep(0.3)
    s.close()
    assert srv.wait_for("late-boom-after-disconnect", timeout=5), srv.log()
    assert "Exception in ASGI application" in srv.log(), srv.log()


# --------------------------------------------------------------------------- 4. responses


def test_response_content_length_from_app(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/cl")
    assert r.status == 200
    assert r.headers["content-length"] == ["20"]
    assert "transfer-encoding" not in r.headers
    assert r.header("x-app") == "raw"
    assert r.body == b"exactly-twenty-bytes"
    assert r.rest == b""


def test_response_without_content_length_is_chunked(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/nocl")
    assert r.status == 200
    assert r.header("transfer-encoding") == "chunked"
    assert "content-length" not in r.headers
    assert r.complete
    assert r.body == b"part1-part2"
    # A single body message without Content-Length: either framing is fine, not both.
    r = raw_request(srv, "GET", "/nocl-single")
    assert r.body == b"single" and r.complete
    assert ("transfer-encoding" in r.headers) != ("content-length" in r.headers), r.headers


def test_response_without_content_length_http10(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/nocl", version="HTTP/1.0")
    assert r.status == 200
    assert "chunked" not in ",".join(r.headers.get("transfer-encoding", []))
    assert r.body == b"part1-part2"


def test_response_streams_incrementally(start_server):
    srv = start_server(RAW, "-w", "1")
    with srv.connect() as s:
        t0 = time.monotonic()
        s.sendall(request_bytes("GET", "/slow-stream?delay=0.5"))
        buf = b""
        first_at = None
        s.settimeout(TIMEOUT)
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
            if first_at is None and b"chunk0;" in buf:
                first_at = time.monotonic() - t0
        total = time.monotonic() - t0
    r = parse_response(buf)
    assert r.body == b"chunk0;chunk1;chunk2;"
    assert r.complete
    assert first_at is not None and first_at < 0.4, first_at
    assert total >= 0.9, total


def test_response_backpressure_large_stream(start_server):
    """20 MiB streamed to a client that stops reading: the app's send() must block (the
    server does not buffer it all), and the whole body arrives intact once read."""
    srv = start_server(RAW, "-w", "1")
    blocks = 320
    expected = hashlib.sha256()
    for i in range(blocks):
        expected.update(big_block(i))
    total = blocks * BIG_CHUNK
    s = srv.connect(timeout=TIMEOUT)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(request_bytes("GET", f"/big?blocks={blocks}"))
        buf = b""
        while len(buf) < 256 * 1024:
            buf += s.recv(65536)
        time.sleep(1.0)  # stop reading: the server must stop the app
        progress = record(srv)["big"]
        assert progress["done"] is False, progress
        assert progress["sent"] < total * 0.75, progress
        head, _, body_start = buf.partition(b"\r\n\r\n")
        assert b"chunked" in head.lower()
        data = body_start
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            time.sleep(0.001)
    finally:
        s.close()
    r = parse_response(head + b"\r\n\r\n" + data)
    assert r.complete
    assert len(r.body) == total
    assert hashlib.sha256(r.body).hexdigest() == expected.hexdigest()
    assert record(srv)["big"]["done"] is True


def test_head_has_no_body(start_server):
    srv = start_server(RAW)
    for path in ("/cl", "/head-stream"):
        with srv.connect() as s:
            s.sendall(request_bytes("HEAD", path, close=False) + request_bytes("GET", "/cl"))
            data = recv_all(s, TIMEOUT)
        head = parse_response(data, head_request=True)
        assert head.status == 200
        if path == "/cl":
            assert head.header("content-length") == "20"
        # The next response must follow the HEAD head directly: no body bytes in between.
        assert head.rest.startswith(b"HTTP/1.1 200"), (path, data)
        nxt = parse_response(head.rest)
        assert nxt.body == b"exactly-twenty-bytes"


@pytest.mark.parametrize("code", [201, 204, 304])
def test_custom_status(start_server, code):
    srv = start_server(RAW)
    with srv.connect() as s:
        s.sendall(request_bytes("GET", f"/status/{code}", close=False) + request_bytes("GET", "/cl"))
        data = recv_all(s, TIMEOUT)
    r = parse_response(data)
    assert r.status == code
    assert r.header("x-status") == str(code)
    if code in (204, 304):
        assert "transfer-encoding" not in r.headers, r.headers
    if code == 204:
        assert "content-length" not in r.headers, r.headers  # RFC 9110 8.6
    assert r.body == b""
    # Keep-alive still in sync.
    assert r.rest.startswith(b"HTTP/1.1 200"), data
    assert parse_response(r.rest).body == b"exactly-twenty-bytes"


def test_app_server_header_replaces_the_servers(start_server):
    """As Gunicorn's ASGI worker: the app's own `server` header is sent, not ours."""
    srv = start_server(RAW)
    data = srv.raw(request_bytes("GET", "/own-server"), timeout=TIMEOUT)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"\r\nserver:") == 1 and b"\r\nserver: my-app" in head, data
    assert head.count(b"\r\ndate:") == 1, data
    plain = srv.raw(request_bytes("GET", "/cl"), timeout=TIMEOUT).split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nserver: ferricorn" in plain, plain


def test_invalid_response_header_is_500(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/bad-header")
    assert r.status == 500
    assert b"should not be seen" not in r.body
    srv.wait_for("Exception in ASGI application", timeout=5.0)


def test_exception_before_start_is_500_with_traceback(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/raise-before")
    assert r.status == 500
    assert b"boom-before-start" not in r.body
    srv.wait_for("boom-before-start", timeout=5.0)
    log = srv.log()
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: boom-before-start" in log
    # The worker survives.
    assert raw_request(srv, "GET", "/cl").status == 200


@pytest.mark.parametrize("cl", [None, "100"], ids=["chunked", "content-length"])
def test_exception_after_start_truncates(start_server, cl):
    srv = start_server(RAW)
    target = "/raise-after" + (f"?cl={cl}" if cl else "")
    with srv.connect() as s:
        s.sendall(request_bytes("GET", target, close=False))
        data = recv_all(s, TIMEOUT)  # returns when the server closes the connection
    r = parse_response(data)
    assert r.status == 200
    assert b"partial-data" in r.body
    assert not r.complete, r
    srv.wait_for("boom-after-start", timeout=5.0)
    assert raw_request(srv, "GET", "/cl").status == 200


def test_return_without_response_is_500(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/return-nothing")
    assert r.status == 500
    srv.wait_for("ASGI callable returned without starting response", timeout=5.0)


def test_body_before_start_is_500(start_server):
    srv = start_server(RAW)
    r = raw_request(srv, "GET", "/body-before-start")
    assert r.status == 500
    assert b"oops" not in r.body
    srv.wait_for("Exception in ASGI application", timeout=5.0)
    assert "http.response.start" in srv.log()
    assert raw_request(srv, "GET", "/cl").status == 200


# --------------------------------------------------------------------------- 5. lifespan


def test_lifespan_state_is_a_shallow_copy_per_request(start_server):
    srv = start_server(RAW, "-w", "1")
    st = get_json(srv, "/state")
    assert st["token"] == "from-lifespan"
    # /state adds a key to its own copy; the next request must not see it.
    st = get_json(srv, "/state")
    assert "mutated_by_request" not in st
    assert st["token"] == "from-lifespan"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_task_factory_set_by_the_app_is_used(start_server, loop):
    # Requests normally become `asyncio.Task(coro)` directly; a factory the app installed
    # (here in lifespan startup) must still make every request's task.
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    srv = start_server("asgi_lifespan:task_factory", "--asgi-loop", loop)
    for _ in range(3):
        r = raw_request(srv, "GET", "/")
        assert (r.status, r.body) == (200, b"True True")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_request_runs_in_its_own_named_task(start_server, loop):
    # Without a task factory requests become `asyncio.Task(coro)`, named
    # "ferricorn.request" before Python 3.12 (spares formatting "Task-<n>"); 3.12 names
    # them lazily, as asyncio does.
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    srv = start_server("asgi_lifespan:current_task", "--asgi-loop", loop)
    for _ in range(3):
        r = raw_request(srv, "GET", "/")
        kind, name, same = r.body.decode().split()
        assert (r.status, kind, same) == (200, "Task", "False")
        if sys.version_info < (3, 12):
            assert name == "ferricorn.request"
        else:
            assert name.startswith("Task-")


def test_lifespan_off(start_server, tmp_path):
    marker = tmp_path / "lifespan.txt"
    srv = start_server("asgi_lifespan:shutdown_marker", "--asgi-lifespan", "off", env={"ASGI_STARTUP_MARKER": str(marker)})
    assert requests.get(srv.url + "/", timeout=TIMEOUT).status_code == 200
    assert srv.stop() == 0
    assert not marker.exists(), marker.read_text()
    assert "application startup" not in srv.log() and "lifespan" not in srv.log()
    srv = start_server(RAW, "--asgi-lifespan", "off")
    assert "token" not in get_json(srv, "/state")


def test_lifespan_startup_and_shutdown_on_sigterm(start_server, tmp_path):
    marker = tmp_path / "lifespan.txt"
    srv = start_server("asgi_lifespan:shutdown_marker", "-w", "2", env={"ASGI_STARTUP_MARKER": str(marker)})
    assert requests.get(srv.url + "/", timeout=TIMEOUT).status_code == 200
    assert srv.stop(signal.SIGTERM) == 0
    lines = marker.read_text().split()
    assert lines.count("lifespan.startup") == 2, lines
    assert lines.count("lifespan.shutdown") == 2, lines
    log = srv.log()
    for line in ["Waiting for application startup.", "Application startup complete.",
                 "Waiting for application shutdown.", "Application shutdown complete."]:
        assert log.count(f"[INFO] {line}") == 2, (line, log)


def test_lifespan_shutdown_marker_raw_app(start_server, tmp_path):
    marker = tmp_path / "shutdown.txt"
    srv = start_server(RAW, "-w", "1", env={"ASGI_SHUTDOWN_MARKER": str(marker)})
    pid = get_json(srv, "/state")["started_pid"]
    assert srv.stop(signal.SIGTERM) == 0
    assert marker.read_text().strip() == f"shutdown {pid}"


@pytest.mark.parametrize(
    "app,flags,detail",
    [
        ("asgi_lifespan:startup_failed_message", [], "config missing"),
        ("asgi_lifespan:startup_raises", ["--asgi-lifespan", "on"], "database unreachable"),
        ("asgi_lifespan:no_lifespan", ["--asgi-lifespan", "on"], "unsupported scope type"),
        ("asgi_starlette:failing_app", [], "redis unreachable"),
    ],
    ids=["startup-failed-message", "raises-lifespan-on", "unsupported-lifespan-on", "starlette-auto"],
)
def test_lifespan_startup_failure_stops_server(run_cli, app, flags, detail):
    res, out = cli_run(run_cli, app, *flags)
    assert res.returncode != 0, out
    assert "Application startup failed" in out, out
    assert detail in out, out


def test_lifespan_unsupported_app_works_in_auto_mode(start_server):
    srv = start_server("asgi_lifespan:no_lifespan")
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "ok")
    log = srv.log()
    assert "Application startup failed" not in log
    # uvicorn's words for it (UvicornWorker shows them in Gunicorn's log).
    assert "[INFO] ASGI 'lifespan' protocol appears unsupported." in log, log
    assert "Application startup complete." not in log, log


# --------------------------------------------------------------------------- 6. FastAPI


FASTAPI = "asgi_fastapi:app"


@pytest.fixture
def fastapi_srv(start_server, tmp_path):
    pytest.importorskip("fastapi")
    return start_server(
        FASTAPI, "-k", "uvicorn.workers.UvicornWorker", "-w", "2", env={"ASGI_SHUTDOWN_MARKER": str(tmp_path / "fa.txt")}
    )


def test_fastapi_path_query_and_dependencies(fastapi_srv):
    url = fastapi_srv.url
    r = httpx.get(url + "/items/1", params={"q": "fruit"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"item_id": 1, "name": "apple", "q": "fruit"}
    assert httpx.get(url + "/items/2", timeout=TIMEOUT).json() == {"item_id": 2, "name": "banana", "q": None}
    r = httpx.get(url + "/items/99", timeout=TIMEOUT)
    assert (r.status_code, r.json()) == (404, {"detail": "no such item"})
    r = httpx.get(url + "/items/not-an-int", timeout=TIMEOUT)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert httpx.get(url + "/paged", params={"skip": 5}, timeout=TIMEOUT).json() == {"skip": 5, "limit": 10}
    assert "Using worker: uvicorn.workers.UvicornWorker" in fastapi_srv.log()


def test_fastapi_json_body_and_validation(fastapi_srv):
    url = fastapi_srv.url
    r = httpx.post(url + "/items", json={"name": "pear", "price": 1.5, "tags": ["a"]}, timeout=TIMEOUT)
    assert r.status_code == 201
    assert r.json() == {"created": {"name": "pear", "price": 1.5, "tags": ["a"]}, "total": 3.0}
    r = httpx.post(url + "/items", json={"name": "pear", "price": -1}, timeout=TIMEOUT)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "price"]]
    r = httpx.post(url + "/items", json={"price": 2}, timeout=TIMEOUT)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    r = httpx.post(url + "/items", content=b"{not json", headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 422


def test_fastapi_lifespan_resources(fastapi_srv, tmp_path):
    for _ in range(4):
        out = httpx.get(fastapi_srv.url + "/lifespan", timeout=TIMEOUT).json()
        assert out["resource"] == "lifespan-resource"
        assert out["started"] is True
        assert out["db_pid"] == out["pid"]
    assert fastapi_srv.stop() == 0
    lines = (tmp_path / "fa.txt").read_text().splitlines()
    assert len(lines) == 2 and all(l.startswith("fastapi shutdown") for l in lines), lines


def test_fastapi_streaming_response(fastapi_srv):
    with httpx.stream("GET", fastapi_srv.url + "/stream", params={"n": 6, "delay": 0.02}, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        lines = list(r.iter_lines())
    assert lines == [f"line {i}" for i in range(6)]


def test_fastapi_file_response(fastapi_srv, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(UPLOAD[:300_000])
    r = httpx.get(fastapi_srv.url + "/file", params={"path": str(blob)}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == UPLOAD[:300_000]
    assert r.headers["content-length"] == "300000"
    assert 'filename="download.bin"' in r.headers["content-disposition"]
    r = httpx.head(fastapi_srv.url + "/file", params={"path": str(blob)}, timeout=TIMEOUT)
    assert r.status_code in (200, 405)
    assert r.content == b""


def test_fastapi_httpx_keepalive_reuse(fastapi_srv):
    with httpx.Client(base_url=fastapi_srv.url, timeout=TIMEOUT) as client:
        seen = {(d["port"], d["pid"]) for d in (client.get("/client").json() for _ in range(6))}
        assert len(seen) == 1, seen  # one connection, one worker
        r = client.post("/items", json={"name": "x", "price": 1})
        assert r.status_code == 201
        assert {(d["port"], d["pid"]) for d in [client.get("/client").json()]} == seen


@needs_curl
def test_fastapi_curl(fastapi_srv):
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", fastapi_srv.url + "/items/2?q=curl"], capture_output=True, timeout=15
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"item_id": 2, "name": "banana", "q": "curl"}
    out = subprocess.run(
        [
            CURL, "-sS", "--max-time", "10", "-w", "\n%{http_code}",
            "-H", "Content-Type: application/json",
            "--data", '{"name": "kiwi", "price": 2.5}',
            fastapi_srv.url + "/items",
        ],
        capture_output=True,
        timeout=15,
    )
    body, _, code = out.stdout.decode().rpartition("\n")
    assert code == "201", out
    assert json.loads(body)["created"]["name"] == "kiwi"


def test_fastapi_stream_stops_when_client_goes_away(start_server):
    """Starlette's StreamingResponse relies on send() raising OSError after a disconnect
    when the server advertises spec_version >= 2.4 (and on http.disconnect otherwise):
    either way the generator must end once the client is gone."""
    pytest.importorskip("fastapi")
    srv = start_server(FASTAPI, "-w", "1")
    with srv.connect() as s:
        s.sendall(request_bytes("GET", "/endless?key=k1", close=False))
        got = b""
        while len(got) < 8000:
            got += s.recv(65536)
    status = get_json(srv, "/endless-status?key=k1")
    assert status["chunks"] > 0
    st = wait_until(lambda: get_json(srv, "/endless-status?key=k1")["closed"], 4)
    assert st, f"the stream generator kept running after the client left: {get_json(srv, '/endless-status?key=k1')}"


# --------------------------------------------------------------------------- 7. Starlette and Django


def test_starlette_routes_json_and_background_task(start_server, tmp_path):
    pytest.importorskip("starlette")
    marker = tmp_path / "bg.txt"
    srv = start_server("asgi_starlette:app", env={"ASGI_BG_MARKER": str(marker)})
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert (r.status_code, r.json()) == (200, {"hello": "starlette"})
    assert r.headers["content-type"] == "application/json"
    assert get_json(srv, "/users/zoë?q=1") == {"user": "zoë", "q": "1"}
    r = requests.post(srv.url + "/echo", data="stressed", timeout=TIMEOUT)
    assert r.text == "desserts"
    assert requests.get(srv.url + "/nope", timeout=TIMEOUT).status_code == 404
    r = requests.get(srv.url + "/background?id=42", timeout=TIMEOUT)
    assert r.json() == {"queued": True}
    assert wait_until(lambda: marker.exists() and "background ran 42" in marker.read_text(), 3)


DJANGO_APP = "asgi_django.asgi:application"


@pytest.fixture
def django_env(tmp_path):
    pytest.importorskip("django")
    env = {"DJANGO_SETTINGS_MODULE": "asgi_django.settings", "FERRICORN_DJANGO_DB": str(tmp_path / "db.sqlite3")}
    res = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        env=base_env(env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        pytest.skip(f"django migrate failed, cannot set up the admin: {res.stderr[-2000:]}")
    return env


def test_django_async_view(start_server, django_env):
    srv = start_server(DJANGO_APP, "-w", "2", env=django_env)
    out = get_json(srv, "/async/7/?q=zz")
    assert out == {
        "async": True,
        "n": 7,
        "path": "/async/7/",
        "path_info": "/async/7/",
        "method": "GET",
        "q": "zz",
        "script_name": "",
    }
    r = requests.post(srv.url + "/echo/", json={"a": [1, 2]}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"received": {"a": [1, 2]}, "content_type": "application/json"}
    assert requests.get(srv.url + "/missing/", timeout=TIMEOUT).status_code == 404


def test_django_root_path(start_server, django_env):
    srv = start_server(DJANGO_APP, "--root-path", "/mount", env=django_env)
    out = get_json(srv, "/async/")
    assert out["script_name"] == "/mount"
    assert out["path_info"] == "/async/"
    assert out["path"] == "/mount/async/"


def test_django_admin_login_page(start_server, django_env):
    srv = start_server(DJANGO_APP, "-w", "2", env=django_env)
    with requests.Session() as s:
        r = s.get(srv.url + "/admin/", allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 302
        assert r.headers["location"] == "/admin/login/?next=/admin/"
        r = s.get(srv.url + "/admin/login/", timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:2000]
        assert r.headers["content-type"].startswith("text/html")
        assert 'id="id_username"' in r.text
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
        assert m, r.text[:2000]
        # A wrong password goes through the auth backend and the sqlite database.
        r = s.post(
            srv.url + "/admin/login/",
            data={"csrfmiddlewaretoken": m.group(1), "username": "nobody", "password": "wrong", "next": "/admin/"},
            headers={"Referer": srv.url + "/admin/login/"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text[:2000]
        assert "Please enter the correct username and password" in r.text


# --------------------------------------------------------------------------- 8. concurrency


def test_concurrent_requests_overlap_on_one_worker(start_server):
    srv = start_server(RAW, "-w", "1")
    raw_request(srv, "GET", "/sleep?s=0")  # warm up

    def one(_):
        return raw_request(srv, "GET", "/sleep?s=0.2")

    t0 = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == [200] * 50
    assert all(r.body == b"slept 0.2" for r in results)
    assert elapsed < 1.2, f"50 x 0.2 s sleeps took {elapsed:.2f}s on one worker: not concurrent"


# --------------------------------------------------------------------------- 9. graceful TERM


def test_graceful_term_finishes_inflight_request(start_server, tmp_path):
    marker = tmp_path / "shutdown.txt"
    srv = start_server(RAW, "-w", "1", env={"ASGI_SHUTDOWN_MARKER": str(marker)})
    result = {}

    def slow():
        try:
            result["resp"] = raw_request(srv, "GET", "/sleep?s=1")
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    srv.send_signal(signal.SIGTERM)
    t.join(10)
    rc = srv.proc.wait(15)
    assert "error" not in result, result
    assert result["resp"].status == 200
    assert result["resp"].body == b"slept 1.0"
    assert rc == 0, srv.log()
    assert marker.read_text().startswith("shutdown ")


def test_blocked_event_loop_is_caught_by_the_worker_timeout(start_server):
    """A coroutine stuck in blocking code never yields: the loop stops beating, the
    master's --timeout aborts the worker with the stacks in the log, and a new worker
    serves (Gunicorn's asgi worker does not notice a blocked loop at all)."""
    import urllib.request

    srv = start_server("--timeout", "2", "asgi_blocking:app")
    first = urllib.request.urlopen(srv.url + "/", timeout=5).read()
    try:
        urllib.request.urlopen(srv.url + "/block", timeout=10).read()
    except Exception:  # noqa: BLE001 - a 500 or a closed connection, both fine
        pass
    srv.wait_for("WORKER TIMEOUT", timeout=15)
    srv.wait_for("asgi_blocking.py\", line 11 in app", timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            pid = urllib.request.urlopen(srv.url + "/", timeout=2).read()
            if pid != first:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError(srv.log())


def test_pathsend_serves_starlette_file_responses_from_rust(start_server, tmp_path):
    """`http.response.pathsend` is advertised; Starlette's FileResponse then hands the
    path over and the file never passes through Python."""
    import hashlib
    import urllib.request

    data = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    srv = start_server("asgi_starlette:app", env={"FERRICORN_TEST_FILE": str(f)})
    with urllib.request.urlopen(srv.url + "/file", timeout=10) as r:
        body = r.read()
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    req = urllib.request.Request(srv.url + "/file", method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == b"" and r.headers["content-length"] == str(len(data))


def test_pathsend_is_advertised_for_http_only(start_server):
    import urllib.request

    srv = start_server("asgi_raw:app")
    scope = json.loads(urllib.request.urlopen(srv.url + "/scope", timeout=5).read())
    assert scope["extensions"] == {
        "http.response.pathsend": {},
        "http.response.zerocopysend": {},
        "http.response.trailers": {},
        "http.response.early_hint": {},
    }, scope


@pytest.mark.parametrize("args", [["-k", "asgi"], ["--threads", "4"]], ids=["asgi", "wsgi-threads"])
def test_idle_keepalive_connection_closes_after_the_timeout(start_server, args):
    # The response comes from another thread after hyper's last read of the request: the
    # idle timer must still start when it is written (it never did for ASGI).
    app = RAW if args[0] == "-k" else "testapp:app"
    srv = start_server(*args, "--keep-alive", "1", app)
    with srv.connect(timeout=6) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 ")
        t0 = time.monotonic()
        s.settimeout(6)
        assert s.recv(65536) == b""
        assert time.monotonic() - t0 < 3


def test_bytes_like_bodies_are_accepted(start_server, tmp_path):
    # uvicorn and Gunicorn's asgi worker take bytearray and memoryview bodies.
    (tmp_path / "bytes_like.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': bytearray(b'ab'), 'more_body': True})\n"
        "    await send({'type': 'http.response.body', 'body': memoryview(b'cd')})\n"
    )
    srv = start_server("-k", "asgi", "--asgi-lifespan", "off", "bytes_like:app")
    raw = srv.raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200"), raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body in (b"abcd", b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"), raw


def test_unread_expect_continue_body_closes_the_connection(start_server):
    # The app answers without asking for the body: the response says close, and the
    # connection must then close (it stayed open, hyper waiting for the body).
    srv = start_server("-k", "asgi", RAW)
    with srv.connect(timeout=6) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(6)
        data = b""
        t0 = time.monotonic()
        while chunk := s.recv(65536):
            data += chunk
        assert time.monotonic() - t0 < 3, data
    assert data.startswith(b"HTTP/1.1 ") and b"connection: close" in data.lower(), data
