"""End-to-end tests of the WSGI (PEP 3333) bridge against tests/apps/wsgi_app.py.

Every test starts the real `ferricorn` command and talks to it over loopback with
http.client or raw sockets.
"""

import gzip
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid

import pytest

from conftest import recv_all

APP = "wsgi_app:app"


# -- helpers ---------------------------------------------------------------------------


def request(srv, path, method="GET", body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, r.headers, data
    finally:
        conn.close()


def get_json(srv, path, **kw):
    status, headers, data = request(srv, path, **kw)
    assert status == 200, (status, data, srv.log())
    return json.loads(data)


def environ_of(srv, path="/environ", **kw):
    return get_json(srv, path, **kw)


def split_response(raw):
    """Raw bytes of one response -> (status line, [(name, value)], body bytes)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {raw[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers, body


def header_values(headers, name):
    return [v for k, v in headers if k == name.lower()]


def dechunk(body):
    """Decode a chunked body -> (data, saw the final 0-size chunk and its CRLF)."""
    out = bytearray()
    i = 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            return bytes(out), False
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out), body[j + 2 : j + 4] == b"\r\n"
        if len(body) < j + 2 + size + 2:
            out += body[j + 2 : j + 2 + size]
            return bytes(out), False
        out += body[j + 2 : j + 2 + size]
        i = j + 2 + size + 2


def raw_get(srv, path, method="GET", extra=b"", version=b"HTTP/1.1"):
    req = method.encode() + b" " + path.encode() + b" " + version + b"\r\nHost: test\r\nConnection: close\r\n" + extra + b"\r\n"
    return srv.raw(req)


def token():
    return uuid.uuid4().hex[:12]


def wait_log(srv, text, timeout=5.0):
    srv.wait_for(text, timeout)


# -- environ ---------------------------------------------------------------------------

REQUIRED_STR_KEYS = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "RAW_URI",
    "REQUEST_URI",
]


def test_environ_required_keys_and_types(start_server):
    srv = start_server(APP, "-w", "1")
    with srv.connect() as s:
        client_port = s.getsockname()[1]
        body = b"hello"
        s.sendall(
            b"POST /environ?a=1&b=two HTTP/1.1\r\nHost: example.test:1234\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nX-Custom-Header: custom value\r\n"
            b"Accept: text/html\r\nAccept: application/json\r\n\r\n" + body
        )
        raw = recv_all(s)
    status, _, data = split_response(raw)
    assert status.startswith("HTTP/1.1 200"), raw
    env = json.loads(data)
    types, values = env["types"], env["values"]
    assert env["environ_is_dict"] is True
    for key in REQUIRED_STR_KEYS + ["CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_HOST", "HTTP_X_CUSTOM_HEADER"]:
        assert types.get(key) == "str", (key, types.get(key))
    # Every CGI-style key (no dot) is a native str.
    for key, t in types.items():
        if "." not in key:
            assert t == "str", (key, t)
    assert values["REQUEST_METHOD"] == "POST"
    assert values["SCRIPT_NAME"] == ""
    assert values["PATH_INFO"] == "/environ"
    assert values["QUERY_STRING"] == "a=1&b=two"
    assert values["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert values["CONTENT_LENGTH"] == "5"
    assert values["SERVER_NAME"] == "127.0.0.1"
    assert values["SERVER_PORT"] == str(srv.port)
    assert values["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert values["REMOTE_ADDR"] == "127.0.0.1"
    assert values["REMOTE_PORT"] == str(client_port)
    assert values["RAW_URI"] == "/environ?a=1&b=two"
    assert values["REQUEST_URI"] == "/environ?a=1&b=two"
    assert values["HTTP_HOST"] == "example.test:1234"
    assert values["HTTP_X_CUSTOM_HEADER"] == "custom value"
    # Repeated headers are joined with a comma.
    assert values["HTTP_ACCEPT"].replace(" ", "") == "text/html,application/json"
    # CONTENT_* are not duplicated as HTTP_*.
    assert "HTTP_CONTENT_TYPE" not in types and "HTTP_CONTENT_LENGTH" not in types

    assert env["version_repr"] == "(1, 0)"
    assert types["wsgi.version"] == "tuple"
    assert values["wsgi.url_scheme"] == "http"
    assert all(env["input_methods"].values()), env["input_methods"]
    assert all(env["errors_methods"].values()), env["errors_methods"]
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        assert types[key] == "bool", (key, types[key])
    assert values["wsgi.multithread"] is False
    assert values["wsgi.multiprocess"] is False
    assert values["wsgi.run_once"] is False
    assert values["wsgi.input_terminated"] is True
    assert env["file_wrapper_callable"] is True
    assert values["SERVER_SOFTWARE"].startswith("ferricorn")




def test_environ_host_and_remote_port_follow_each_request(start_server):
    """A keep-alive connection's HTTP_HOST and REMOTE_PORT are kept as Python strings
    between its requests: a changed Host is seen, and each connection has its own port."""
    srv = start_server(APP, "-w", "1", "--threads", "1")
    conns = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10) for _ in range(2)]
    try:
        for c in conns:
            c.connect()
        for host in ["a.test", "b.test:8080", "a.test", "a.test"]:
            for c in conns:
                c.request("GET", "/environ", headers={"Host": host})
                values = json.loads(c.getresponse().read())["values"]
                assert values["HTTP_HOST"] == host, values
                assert values["REMOTE_PORT"] == str(c.sock.getsockname()[1]), values
    finally:
        for c in conns:
            c.close()

def test_environ_server_port_is_each_listeners_own(start_server):
    """SERVER_NAME/SERVER_PORT come from the listener a request arrived on, whichever
    served the one before, and what an app does to its environ stays in that environ."""
    from conftest import free_port

    other = free_port()
    srv = start_server(APP, "-w", "1", "--threads", "1", "-b", f"127.0.0.1:{other}")
    for _ in range(3):
        for port in (srv.port, other):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/mutate-environ" if port == other else "/environ?x=1")
                r = conn.getresponse()
                env = json.loads(r.read())
            finally:
                conn.close()
            values = env["values"]
            if port == other:
                assert values["SERVER_NAME"] == "mutated"
                assert values["SERVER_PORT"] == str(other), values
                assert values["app.extra"] == "kept by the app"
            else:
                assert values["SERVER_NAME"] == "127.0.0.1", values
                assert values["SERVER_PORT"] == str(srv.port), values
                assert values["QUERY_STRING"] == "x=1", values
                assert "app.extra" not in values, values
    # The mutating request itself saw its own listener's port.
    conn = http.client.HTTPConnection("127.0.0.1", other, timeout=10)
    conn.request("GET", "/environ")
    values = json.loads(conn.getresponse().read())["values"]
    conn.close()
    assert (values["SERVER_NAME"], values["SERVER_PORT"], values["QUERY_STRING"]) == ("127.0.0.1", str(other), "")
    assert "app.extra" not in values

def test_environ_get_without_body_and_http10(start_server):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/environ", version=b"HTTP/1.0")
    status, _, data = split_response(raw)
    assert status.startswith("HTTP/1."), status
    env = json.loads(data)
    values = env["values"]
    assert values["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert values["REQUEST_METHOD"] == "GET"
    assert values["QUERY_STRING"] == ""
    # PEP 3333: CONTENT_TYPE / CONTENT_LENGTH may be empty or absent when there is no body.
    assert values.get("CONTENT_LENGTH", "") in ("", "0")
    assert values.get("CONTENT_TYPE", "") == ""


def test_environ_methods_and_usual_values_per_request(start_server):
    # The environ template holds GET, HTTP/1.1, http and an empty QUERY_STRING; each
    # request sees its own values, and the ones before do not leak into the next.
    srv = start_server(APP, "-w", "1")
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "POST", "GET"):
        values = get_json(srv, "/environ?m=" + method, method=method, body=b"x" if method != "GET" else None)["values"]
        assert (values["REQUEST_METHOD"], values["QUERY_STRING"]) == (method, "m=" + method)
    values = environ_of(srv)["values"]
    assert (values["REQUEST_METHOD"], values["QUERY_STRING"], values["SERVER_PROTOCOL"], values["wsgi.url_scheme"]) == (
        "GET", "", "HTTP/1.1", "http")


def test_environ_headers_with_underscore_dropped(start_server):
    srv = start_server(APP, "-w", "1")
    env = environ_of(srv, headers={"X_Forwarded_For": "6.6.6.6", "X-Ok": "1"})
    assert env["values"]["HTTP_X_OK"] == "1"
    assert "HTTP_X_FORWARDED_FOR" not in env["values"]


def test_environ_path_info_latin1_and_raw_uri(start_server):
    srv = start_server(APP, "-w", "1")
    env = environ_of(srv, "/caf%C3%A9/a%2Fb%20c?q=%C3%A9&x=%2F")
    values = env["values"]
    # PATH_INFO: percent-decoded, each byte one code point (a latin-1 "WSGI string").
    assert values["PATH_INFO"] == "/caf\u00c3\u00a9/a/b c"
    assert values["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b c"
    # The query is left as sent, without the '?'.
    assert values["QUERY_STRING"] == "q=%C3%A9&x=%2F"
    assert values["RAW_URI"] == "/caf%C3%A9/a%2Fb%20c?q=%C3%A9&x=%2F"
    assert values["REQUEST_URI"] == values["RAW_URI"]


def test_environ_multithread_with_threads(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "4")
    assert environ_of(srv)["values"]["wsgi.multithread"] is True


def test_first_requests_arriving_together_on_app_threads(start_server):
    """A worker's first requests, arriving at once, build their environs side by side on
    the app threads. The first build fills caches (Python strings made once, one environ
    template per local address) and may release the GIL while doing so; a thread that
    then waits for a cache's lock while holding the GIL froze the whole worker (both
    waited for each other; found by h2load). A race, so each round is a fresh worker:
    before the fix, 2 of 5 runs of this test froze."""
    for _ in range(16):
        srv = start_server(APP, "-w", "1", "--threads", "16")
        barrier = threading.Barrier(32)
        results = []

        def one():
            barrier.wait()
            try:
                results.append(request(srv, "/environ", timeout=8)[0])
            except OSError as e:
                results.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert results == [200] * 32, (results, srv.log()[-2000:])
        srv.stop()


def test_environ_multiprocess_with_two_workers(start_server):
    srv = start_server(APP, "-w", "2")
    values = environ_of(srv)["values"]
    assert values["wsgi.multiprocess"] is True
    assert values["wsgi.multithread"] is False


def test_root_path_is_asgi_only(start_server):
    """Gunicorn 27 puts --root-path in ASGI scopes only; a WSGI app's mount point comes
    from the SCRIPT_NAME environment variable."""
    srv = start_server(APP, "-w", "1", "--root-path", "/app")
    # Outside the prefix, and not stripped: the app sees the path as sent.
    values = environ_of(srv, "/environ")["values"]
    assert (values["SCRIPT_NAME"], values["PATH_INFO"]) == ("", "/environ")


def test_script_name(start_server):
    srv = start_server(APP, "-w", "1", env={"SCRIPT_NAME": "/app"})
    values = environ_of(srv, "/app/environ?x=1")["values"]
    assert values["SCRIPT_NAME"] == "/app"
    assert values["PATH_INFO"] == "/environ"
    assert values["RAW_URI"] == "/app/environ?x=1"
    assert values["QUERY_STRING"] == "x=1"
    # The mount point itself: PATH_INFO is empty.
    values = environ_of(srv, "/app")["values"]
    assert values["SCRIPT_NAME"] == "/app"
    assert values["PATH_INFO"] == ""
    # Outside the mount point: a 500, and the app is not called.
    status, _, _ = request(srv, "/other/environ")
    assert status == 500
    # The worker still serves.
    assert environ_of(srv, "/app/environ")["values"]["PATH_INFO"] == "/environ"


# -- wsgi.input ------------------------------------------------------------------------

LINES_BODY = b"first line\nsecond\n\nfourth line is a bit longer\nno newline at the end"
LINES = ["first line\n", "second\n", "\n", "fourth line is a bit longer\n", "no newline at the end"]


def test_input_read_all_then_empty(start_server):
    srv = start_server(APP, "-w", "1")
    body = os.urandom(100_000)
    out = get_json(srv, "/input/read", method="POST", body=body)
    assert out == {"len": len(body), "sha": hashlib.sha256(body).hexdigest(), "again": ""}


def test_input_read_n_in_a_loop(start_server):
    srv = start_server(APP, "-w", "1")
    body = b"0123456789" * 5 + b"abc"
    out = get_json(srv, "/input/readn?n=7", method="POST", body=body)
    assert out["body"] == body.decode()
    assert out["sizes"] == [7] * 7 + [4]


def test_input_read_negative_size_reads_all(start_server):
    srv = start_server(APP, "-w", "1")
    body = b"x" * 100_000
    out = get_json(srv, "/input/readn?n=-1", method="POST", body=body)
    assert out["sizes"] == [len(body)]


def test_input_read_n_waits_for_slow_body(start_server):
    """read(n) returns n bytes even when they arrive in several TCP segments."""
    srv = start_server(APP, "-w", "1")
    with srv.connect() as s:
        s.sendall(b"POST /input/readn?n=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 20\r\n\r\n0123")
        time.sleep(0.2)
        s.sendall(b"456789")
        time.sleep(0.2)
        s.sendall(b"abcdefghij")
        raw = recv_all(s)
    out = json.loads(split_response(raw)[2])
    assert out["body"] == "0123456789abcdefghij"
    assert out["sizes"] == [10, 10]


def test_input_readline(start_server):
    srv = start_server(APP, "-w", "1")
    assert get_json(srv, "/input/readline", method="POST", body=LINES_BODY) == LINES


def test_input_readline_with_size(start_server):
    srv = start_server(APP, "-w", "1")
    out = get_json(srv, "/input/readline?n=5", method="POST", body=b"abcdefghijkl\nxy\n\nz")
    assert out == ["abcde", "fghij", "kl\n", "xy\n", "\n", "z"]


def test_input_readlines(start_server):
    srv = start_server(APP, "-w", "1")
    assert get_json(srv, "/input/readlines", method="POST", body=LINES_BODY) == LINES


def test_input_iteration(start_server):
    srv = start_server(APP, "-w", "1")
    assert get_json(srv, "/input/iter", method="POST", body=LINES_BODY) == LINES


def test_input_read_past_end(start_server):
    srv = start_server(APP, "-w", "1")
    out = get_json(srv, "/input/past-end", method="POST", body=b"exact body")
    assert out["body"] == "exact body"
    assert out["tail"] == repr([b"", b"", b"", [], []])


def test_input_empty_body(start_server):
    srv = start_server(APP, "-w", "1")
    out = get_json(srv, "/input/read")
    assert out["len"] == 0 and out["again"] == ""
    assert get_json(srv, "/input/readlines", method="POST", body=b"") == []
    # Requests without a body share one empty stream: reading it leaves nothing behind.
    for _ in range(3):
        assert get_json(srv, "/input/read")["len"] == 0
        assert get_json(srv, "/input/readlines") == []
        assert get_json(srv, "/input/read", method="POST", body=b"abc")["len"] == 3
    assert get_json(srv, "/input/past-end") == {"body": "", "tail": "[b'', b'', b'', [], []]"}
    assert get_json(srv, "/input/iter") == []


def test_input_empty_body_read_on_threads_at_once(start_server):
    """Requests without a body share one empty stream. While one request is inside
    read() (here: waiting on its size's __index__, the GIL released), another's read of
    the same stream must work (a shared mutable stream failed with 'Already borrowed')."""
    srv = start_server(APP, "-w", "1", "--threads", "2")
    slow = {}
    t = threading.Thread(target=lambda: slow.update(out=get_json(srv, "/input/slow-size?wait=0.6")))
    t.start()
    time.sleep(0.2)
    assert get_json(srv, "/input/read")["len"] == 0
    assert get_json(srv, "/input/readlines") == []
    t.join(10)
    assert slow["out"]["len"] == 0


def test_input_large_body_echo(start_server):
    srv = start_server(APP, "-w", "1")
    body = os.urandom(5 * 1024 * 1024)
    status, headers, data = request(srv, "/echo", method="POST", body=body, timeout=30)
    assert status == 200
    assert int(headers["Content-Length"]) == len(body)
    assert data == body
    out = get_json(srv, "/input/sha", method="POST", body=body, timeout=30)
    assert out == {"len": len(body), "sha": hashlib.sha256(body).hexdigest()}


def test_input_large_body_streamed_echo(start_server):
    """The app reads 64 KiB and yields it back while the client is still sending."""
    srv = start_server(APP, "-w", "1")
    body = os.urandom(5 * 1024 * 1024)
    s = srv.connect(timeout=30)
    try:
        s.sendall(b"POST /echo-stream HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        sender = threading.Thread(target=s.sendall, args=(body,), daemon=True)
        sender.start()
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200
        data = resp.read()
        sender.join(10)
    finally:
        s.close()
    assert len(data) == len(body)
    assert data == body


def test_input_chunked_body(start_server):
    srv = start_server(APP, "-w", "1")
    chunks = [b"first li", b"ne\nsec", b"ond\n", b"\nfourth line is a bit longer\nno newline ", b"at the end"]
    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = srv.raw(b"POST /input/readline HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + payload)
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200"), raw
    if header_values(headers, "transfer-encoding"):
        body, _ = dechunk(body)
    assert json.loads(body) == LINES


def test_input_chunked_body_read_all(start_server):
    srv = start_server(APP, "-w", "1")
    data = os.urandom(300_000)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    # An iterable body without a length makes http.client send it chunked.
    conn.request("POST", "/input/read", body=(data[i : i + 70_000] for i in range(0, len(data), 70_000)))
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    assert r.status == 200
    assert out == {"len": len(data), "sha": hashlib.sha256(data).hexdigest(), "again": ""}
    env = environ_of(srv, method="POST", body=(c for c in [b"ab", b"cd"]))
    assert env["values"].get("CONTENT_LENGTH", "") == ""
    assert env["values"]["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_input_unread_body_does_not_poison_keepalive(start_server):
    """The app ignores the body; a body that looks like a request must never be served as one."""
    srv = start_server(APP, "-w", "1")
    smuggled = b"GET /raise?token=smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    with srv.connect() as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        s.sendall(b"GET /environ?second=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = recv_all(s, timeout=3)
    assert raw.startswith(b"HTTP/1.1 200"), raw
    assert b'"ignored": true' in raw
    assert b"500 Internal Server Error" not in raw
    # Either the connection was closed after the first answer, or the second was served.
    if raw.count(b"HTTP/1.1 ") > 1:
        assert b"second=1" in raw
    time.sleep(0.2)
    assert "smuggled" not in srv.log()


def test_input_unread_large_body(start_server):
    srv = start_server(APP, "-w", "1")
    body = b"z" * (3 * 1024 * 1024)
    s = srv.connect(timeout=10)
    try:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))

        def send():
            try:
                s.sendall(body)
            except OSError:
                pass

        t = threading.Thread(target=send, daemon=True)
        t.start()
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200
        assert json.loads(resp.read())["ignored"] is True
    finally:
        s.close()
    # The server is fine afterwards.
    assert get_json(srv, "/input/read", method="POST", body=b"abc")["len"] == 3


# -- wsgiref.validate ------------------------------------------------------------------


def test_validator_accepts_the_server(start_server):
    srv = start_server("wsgi_app:validated", "-w", "1")
    status, headers, data = request(srv, "/")
    assert (status, data) == (200, b"Hello from wsgi_app\n")
    env = environ_of(srv, "/environ?x=1", headers={"X-A": "b"})
    assert env["values"]["QUERY_STRING"] == "x=1"
    body = os.urandom(200_000)
    status, headers, data = request(srv, "/echo", method="POST", body=body)
    assert status == 200 and data == body
    status, headers, data = request(srv, "/gen?n=50")
    assert status == 200
    assert data == b"".join(f"chunk {i}\n".encode() for i in range(50))
    status, headers, data = request(srv, "/write")
    assert (status, data) == (200, b"first second third fourth")
    assert get_json(srv, "/input/readlines", method="POST", body=LINES_BODY) == LINES
    assert get_json(srv, "/input/iter", method="POST", body=LINES_BODY) == LINES
    t = token()
    status, _, data = request(srv, f"/closeable?token={t}")
    assert (status, data) == (200, b"one two three")
    wait_log(srv, f"CLOSED {t}")
    status, _, data = request(srv, "/head", method="HEAD")
    assert status == 200 and data == b""
    time.sleep(0.3)
    log = srv.log()
    assert "AssertionError" not in log, log
    assert "WSGIWarning" not in log, log
    assert "Warning" not in log, log
    assert "garbage collected without being closed" not in log, log
    assert "Error handling request" not in log, log


# -- start_response --------------------------------------------------------------------


def test_start_response_twice_without_exc_info_raises(start_server):
    srv = start_server(APP, "-w", "1")
    status, _, data = request(srv, "/sr/twice")
    assert status == 200
    assert data.startswith(b"raised "), data
    assert data == b"raised AssertionError"


def test_start_response_exc_info_before_headers_replaces_status(start_server):
    srv = start_server(APP, "-w", "1")
    status, headers, data = request(srv, "/sr/exc-before")
    assert status == 500
    assert data == b"error body from the app"
    assert headers["X-Second"] == "yes"
    assert headers["X-First"] is None


def test_start_response_exc_info_after_headers_reraises(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    raw = raw_get(srv, f"/sr/exc-after?token={t}")
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200"), raw
    assert header_values(headers, "transfer-encoding") == ["chunked"]
    data, terminated = dechunk(body)
    assert data == b"first chunk\n"
    assert not terminated, "a response cut short by an error must not end with the chunked terminator"
    assert b"must not be sent" not in raw
    wait_log(srv, f"too late {t}")
    # The worker keeps serving.
    assert request(srv, "/")[0] == 200


# -- write() ---------------------------------------------------------------------------


def test_write_callable_comes_first(start_server):
    srv = start_server(APP, "-w", "1")
    status, _, data = request(srv, "/write")
    assert (status, data) == (200, b"first second third fourth")
    status, _, data = request(srv, "/write-gen")
    assert (status, data) == (200, b"written gen1 gen2")


# -- iterables and close() -------------------------------------------------------------


def test_generator_response_is_chunked(start_server):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/gen?n=20")
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200")
    assert header_values(headers, "transfer-encoding") == ["chunked"]
    data, terminated = dechunk(body)
    assert terminated
    assert data == b"".join(f"chunk {i}\n".encode() for i in range(20))


def test_generator_response_to_http10_is_not_chunked(start_server):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/gen?n=5", version=b"HTTP/1.0")
    status, headers, body = split_response(raw)
    assert " 200 " in status
    assert header_values(headers, "transfer-encoding") == []
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(5))


def test_close_called_after_normal_response(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    status, _, data = request(srv, f"/closeable?token={t}")
    assert (status, data) == (200, b"one two three")
    wait_log(srv, f"CLOSED {t}")
    assert srv.log().count(f"CLOSED {t}") == 1


def test_close_called_when_app_raises_mid_iteration(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    raw = raw_get(srv, f"/closeable?token={t}&mode=raise")
    # The response is cut short: never the later chunks, never a proper end.
    assert b"two" not in raw and b"three" not in raw
    if raw:
        status, headers, body = split_response(raw)
        assert status.startswith("HTTP/1.1 200")
        assert not dechunk(body)[1]
    wait_log(srv, f"CLOSED {t}")
    assert f"iteration failure {t}" in srv.log()
    assert request(srv, "/")[0] == 200


def test_yielded_block_is_sent_before_a_mid_iteration_error(start_server):
    """PEP 3333: a yielded block must be transmitted (not delayed). The app yields b"one "
    and raises at once; the client must still get the 200 head and that block, then a
    truncated chunked body (no terminator), as Gunicorn does."""
    srv = start_server(APP, "-w", "1")
    results = []
    for _ in range(6):
        raw = raw_get(srv, f"/closeable?token={token()}&mode=raise")
        results.append(raw)
    for raw in results:
        assert raw.startswith(b"HTTP/1.1 200"), results
        status, headers, body = split_response(raw)
        data, terminated = dechunk(body)
        assert data == b"one " and not terminated, raw


def test_close_called_when_app_raises_before_first_chunk(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    status, _, data = request(srv, f"/closeable?token={t}&mode=raise-first")
    assert status == 500
    assert b"one" not in data
    wait_log(srv, f"CLOSED {t}")


def test_close_called_when_client_disconnects(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    s = srv.connect()
    s.sendall(f"GET /closeable?token={t}&mode=forever HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    s.close()
    wait_log(srv, f"CLOSED {t}", timeout=5)
    assert f"GAVE UP {t}" not in srv.log()
    assert request(srv, "/")[0] == 200


def test_close_called_on_list_subclass(start_server):
    """PEP 3333: any returned iterable with close() gets it called -- list subclasses too."""
    srv = start_server(APP, "-w", "1")
    t = token()
    status, _, data = request(srv, f"/closing-list?token={t}")
    assert (status, data) == (200, b"list body")
    wait_log(srv, f"CLOSED {t}", timeout=3)


# -- application errors ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/yield-str", "/list-str"])
def test_str_body_is_500(start_server, path):
    srv = start_server(APP, "-w", "1")
    status, _, data = request(srv, path)
    assert status == 500
    assert b"text, not bytes" not in data
    assert request(srv, "/")[0] == 200


@pytest.mark.parametrize("bad", ["OK", "20 OK", "2000 OK", "abc OK", "200\r\nX: y"])
def test_invalid_status_is_500(start_server, bad):
    from urllib.parse import quote

    srv = start_server(APP, "-w", "1")
    status, headers, data = request(srv, "/bad-status?s=" + quote(bad))
    assert status == 500
    assert b"never sent" not in data
    assert headers.get("X") is None


def test_header_value_with_crlf_is_500(start_server):
    srv = start_server(APP, "-w", "1")
    # Repeated: header names and values the app passes as the same objects are parsed
    # once and cached; a refused one must be refused every time.
    for _ in range(3):
        raw = raw_get(srv, "/bad-header-value")
        assert raw.startswith(b"HTTP/1.1 500"), raw
        assert b"X-Injected" not in raw
        assert b"x-injected" not in raw.lower()
        assert b"never sent" not in raw


def test_header_name_with_space_is_500(start_server):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/bad-header-name")
    assert raw.startswith(b"HTTP/1.1 500"), raw
    assert b"X Bad" not in raw
    assert b"never sent" not in raw


def test_app_exception_is_500_logged_and_worker_survives(start_server):
    srv = start_server(APP, "-w", "1")
    assert request(srv, "/")[0] == 200
    t = token()
    status, _, data = request(srv, f"/raise?token={t}")
    assert status == 500
    assert t.encode() not in data, "the traceback must not be sent to the client"
    wait_log(srv, f"boom from the app {t}")
    log = srv.log()
    assert "Traceback" in log
    assert "RuntimeError" in log
    # Gunicorn 27's line: "Error handling request METHOD URI".
    assert f"[ERROR] Error handling request GET /raise?token={t}\n" in log, log
    for _ in range(3):
        assert request(srv, "/")[0] == 200


def test_no_start_response_is_500(start_server):
    srv = start_server(APP, "-w", "1")
    status, _, data = request(srv, "/no-start-response")
    assert status == 500
    assert b"forgot" not in data


# -- framing ---------------------------------------------------------------------------


def test_hop_by_hop_headers_from_app_are_dropped(start_server):
    srv = start_server(APP, "-w", "1")
    for _ in range(2):  # the second time from the header cache: the same policy applies
        raw = raw_get(srv, "/hop-by-hop")
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200"), raw
    # The app's own Server and Date replace the server's (Gunicorn's ASGI worker does the
    # same; its WSGI worker sends both, twice).
    assert header_values(headers, "server") == ["EvilServer/1.0"]
    assert header_values(headers, "date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]
    assert header_values(headers, "transfer-encoding") == []
    assert header_values(headers, "keep-alive") == []
    assert header_values(headers, "upgrade") == []
    assert len(header_values(headers, "connection")) <= 1
    assert header_values(headers, "x-kept") == ["yes"]
    assert header_values(headers, "content-length") == ["8"]
    assert body == b"hop body"


@pytest.mark.parametrize("mode", ["list", "gen"])
def test_content_length_smaller_than_body_is_enforced(start_server, mode):
    srv = start_server(APP, "-w", "1")
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.request("GET", f"/short-cl?mode={mode}")
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Length") == "4"
        assert r.read() == b"0123"
        # No stray bytes on the connection: the next response parses (or the server closed).
        try:
            conn.request("GET", "/")
            r2 = conn.getresponse()
            assert r2.status == 200 and r2.read() == b"Hello from wsgi_app\n"
        except (http.client.RemoteDisconnected, ConnectionError):
            pass
    finally:
        conn.close()
    raw = raw_get(srv, f"/short-cl?mode={mode}")
    assert split_response(raw)[2] == b"0123"


@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("mode", ["list", "gen", "empty"])
def test_body_shorter_than_its_length_is_sent_and_the_connection_closed(start_server, mode, threads):
    # Gunicorn sends the bytes the app gave and closes: the client sees a short body,
    # never the next response's bytes read as the rest of this one.
    srv = start_server(APP, "-w", "1", "--threads", threads)
    expected = b"" if mode == "empty" else b"hello"
    for _ in range(3):
        with srv.connect() as s:
            s.sendall(
                f"GET /body-shorter?mode={mode} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            raw = recv_all(s, timeout=5)
        status, headers, body = split_response(raw)
        assert status == "HTTP/1.1 200 OK", raw
        assert header_values(headers, "content-length") == ["10"]
        assert body == expected, raw
    # A HEAD answer declares the length without a body, and keeps the connection.
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.request("HEAD", "/body-shorter?mode=empty")
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Length") == "10" and r.read() == b""
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"Hello from wsgi_app\n"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "status, line",
    [
        ("201 Cr\u00e9\u00e9", b"HTTP/1.1 201 Cr\xe9\xe9"),  # a native string: latin-1
        ("599", b"HTTP/1.1 599 "),  # no reason and none known: empty, as RFC 9112 writes it
        ("299 Custom", b"HTTP/1.1 299 Custom"),
        ("404", b"HTTP/1.1 404 Not Found"),
    ],
)
def test_status_line_as_the_app_gave_it(start_server, status, line):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/status?s=" + urllib.parse.quote(status))
    assert raw.split(b"\r\n")[0] == line, raw
    status_line, headers, body = split_response(raw)
    assert body == b"status body"
    # Whitespace around a header value is not part of it (Gunicorn strips it).
    assert b"\r\nx-padded: padded\r\n" in raw.lower(), raw


def test_status_outside_latin1_is_refused(start_server):
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, "/status?s=" + urllib.parse.quote("200 \u20ac"))
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    srv.wait_for("invalid status")


def test_non_ascii_request_line_is_refused(start_server):
    # Gunicorn: "Invalid HTTP request line"; the environ's RAW_URI could not be latin-1
    # text for these bytes.
    srv = start_server(APP, "-w", "1")
    raw = srv.raw(b"GET /p\xe2\x82\xac?q=\xe2\x82\xac HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 "), raw
    assert b"Invalid HTTP request line" in raw
    # Escaped, the same target is served.
    env = environ_of(srv, "/environ/p%E2%82%AC?q=%E2%82%AC")
    assert env["values"]["PATH_INFO"] == "/environ/p\u00e2\u0082\u00ac"
    assert env["values"]["RAW_URI"] == "/environ/p%E2%82%AC?q=%E2%82%AC"


def test_secure_scheme_header_value_compares_exactly(start_server):
    # Gunicorn compares the value as written: `HTTPS` is not `https`.
    srv = start_server(APP, "-w", "1")
    scheme = lambda v: environ_of(srv, headers={"X-Forwarded-Proto": v})["values"]["wsgi.url_scheme"]
    assert scheme("https") == "https"
    assert scheme("HTTPS") == "http"


def test_options_asterisk_path_info(start_server):
    srv = start_server(APP, "-w", "1")
    raw = srv.raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    env = json.loads(split_response(raw)[2])
    assert env["values"]["PATH_INFO"] == "*" and env["values"]["RAW_URI"] == "*"


def test_header_pairs_given_as_lists(start_server):
    srv = start_server(APP, "-w", "1")
    for _ in range(2):
        raw = raw_get(srv, "/list-pairs")
        status, headers, body = split_response(raw)
        assert status.startswith("HTTP/1.1 200"), raw
        assert header_values(headers, "x-pair") == ["list"] and body == b"ok"


def test_no_content_response_declares_no_length(start_server):
    # RFC 9110 8.6, and Gunicorn: a 204 carries no Content-Length, whatever the app said.
    srv = start_server(APP, "-w", "1")
    with srv.connect() as s:
        s.sendall(b"GET /no-content HTTP/1.1\r\nHost: t\r\n\r\n")
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = recv_all(s)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204"), raw
    assert b"content-length" not in first.lower() and b"x-kept: yes" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"Hello from wsgi_app\n"), rest


def test_declared_content_length_is_read_per_response(start_server):
    # A Content-Length is remembered by its text between responses: each response must
    # still get its own value, its own limit on the body, and its own error.
    srv = start_server(APP, "-w", "1")
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        for n, cl, status, want in [
            (5, "5", 200, b"xxxxx"),
            (12, "12", 200, b"x" * 12),
            (5, "5", 200, b"xxxxx"),
            (10, "4", 200, b"xxxx"),
            (10, "4", 200, b"xxxx"),
            (3, "3", 200, b"xxx"),
            (3, "abc", 500, None),
            (3, "-3", 500, None),
            (10, "4", 200, b"xxxx"),
        ]:
            conn.request("GET", f"/declared-length?n={n}&cl={cl}")
            r = conn.getresponse()
            body = r.read()
            assert r.status == status, (n, cl, r.status)
            if want is not None:
                assert r.getheader("Content-Length") == cl
                assert body == want
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["list", "gen"])
def test_head_sends_no_body(start_server, mode):
    srv = start_server(APP, "-w", "1")
    with srv.connect() as s:
        s.sendall(f"HEAD /head?mode={mode} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = recv_all(s)
    first, sep, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), raw
    assert b"must not send" not in raw
    # Whatever follows the HEAD response's head must be the next response.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]
    assert rest.endswith(b"Hello from wsgi_app\n")
    if mode == "list":
        assert b"content-length: 31" in first.lower()


# -- wsgi.file_wrapper -----------------------------------------------------------------


@pytest.mark.parametrize("cl", ["1", "0"])
def test_file_wrapper(start_server, tmp_path, cl):
    data = os.urandom(700_001)
    (tmp_path / "data.bin").write_bytes(data)
    srv = start_server(APP, "-w", "1")
    raw = raw_get(srv, f"/file?name=data.bin&cl={cl}")
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 200")
    if cl == "1":
        assert header_values(headers, "content-length") == [str(len(data))]
        assert header_values(headers, "transfer-encoding") == []
    else:
        assert header_values(headers, "transfer-encoding") == ["chunked"]
        body, terminated = dechunk(body)
        assert terminated
    assert body == data


def test_file_wrapper_from_current_offset(start_server, tmp_path):
    data = os.urandom(50_000)
    (tmp_path / "data.bin").write_bytes(data)
    srv = start_server(APP, "-w", "1")
    status, headers, body = request(srv, "/file?name=data.bin&cl=1&offset=1000")
    assert status == 200
    assert body == data[1000:]
    status, headers, body = request(srv, "/file?name=data.bin&cl=0&offset=49000&blksize=100")
    assert status == 200
    assert body == data[49000:]


@pytest.mark.parametrize("cl", ["1", "0"])
def test_file_wrapper_without_fileno(start_server, cl):
    srv = start_server(APP, "-w", "1")
    t = token()
    status, headers, body = request(srv, f"/bytesio?n=300&cl={cl}&token={t}")
    assert status == 200
    assert body == bytes(range(256)) * 300
    # The wrapper's close() closes the file-like object.
    wait_log(srv, f"CLOSED {t}", timeout=3)


def test_file_wrapper_over_a_pipe_reads_it(start_server):
    # PEP 3333: an object the fast path cannot use is still iterated over read().
    srv = start_server(APP, "-w", "1")
    for _ in range(2):
        status, headers, body = request(srv, "/pipe-file")
        assert status == 200, srv.log()
        assert body == b"".join(f"pipe-chunk-{i};".encode() for i in range(5))


def test_file_wrapper_over_a_gzip_file_sends_what_read_gives(start_server, tmp_path):
    data = b"the uncompressed text\n" * 5000
    with gzip.open(tmp_path / "data.gz", "wb") as f:
        f.write(data)
    srv = start_server(APP, "-w", "1")
    status, headers, body = request(srv, "/gzip-file?name=data.gz")
    assert status == 200
    assert body == data


# -- wsgi.errors -----------------------------------------------------------------------


def test_wsgi_errors_reach_the_log(start_server):
    srv = start_server(APP, "-w", "1")
    t = token()
    assert get_json(srv, f"/errors?token={t}") == {"ok": True, "surface": [False, True, False, False, False, True]}
    wait_log(srv, f"errors-write {t}")
    wait_log(srv, f"errors-line1 {t}")
    wait_log(srv, f"errors-line2 {t}")


def test_threads_1_writes_each_response_as_its_app_returns(start_server):
    """With --threads 1 the apps of requests that arrive together run one after another
    on the I/O thread, in one batch; each response must still go out when its app
    returns, not when the whole batch has run."""
    srv = start_server("arb_app:app", "-w", "1", "--threads", "1")
    n, nap = 6, 0.15
    socks = [socket.create_connection((srv.host, srv.port), timeout=10) for _ in range(n)]
    arrived = [None] * n

    def wait_answer(i):
        data = b""
        while b"slept" not in data:
            chunk = socks[i].recv(4096)
            if not chunk:
                break
            data += chunk
        arrived[i] = time.monotonic() if b"slept" in data else None

    readers = [threading.Thread(target=wait_answer, args=(i,)) for i in range(n)]
    for t in readers:
        t.start()
    t0 = time.monotonic()
    for s in socks:
        s.sendall(f"GET /sleep?{nap} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    for t in readers:
        t.join(15)
    for s in socks:
        s.close()
    assert all(a is not None for a in arrived), (arrived, srv.log())
    times = sorted(a - t0 for a in arrived)
    # One call at a time (Gunicorn's sync semantics): the last answer needs every nap.
    assert times[-1] >= n * nap * 0.9, times
    # The first answer came after its own nap, not after the others'.
    assert times[0] < 3 * nap, times
    assert times[n // 2] < times[-1] - nap, times


def test_writes_past_the_declared_length_or_on_head_are_dropped_quietly(start_server):
    """Once hyper has the whole body (its Content-Length, or none for HEAD) it lets the
    body go; later write() calls must not fail as if the client had left (they raised
    OSError on app threads), and the bytes past the length are dropped as Gunicorn's
    write() drops them."""
    import http.client

    srv = start_server("--threads", "4", "testapp:app")
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    for i in range(40):
        method = "HEAD" if i % 2 else "GET"
        conn.request(method, "/capped-writes")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (method, r.status, body)
        assert body == (b"" if method == "HEAD" else b"AB"), (method, body)
    conn.close()
    log = srv.log()
    assert "Error handling request" not in log and "client disconnected" not in log, log
