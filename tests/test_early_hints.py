"""103 Early Hints end to end, through the real `ferricorn` command: WSGI's
`environ["wsgi.early_hints"]` (Gunicorn 25+) and ASGI's `http.response.early_hint` /
`http.response.informational`. Raw sockets show the exact bytes: every 1xx comes before
the final response, as `HTTP/1.1 103 Early Hints\\r\\nlink: ...\\r\\n\\r\\n`; nothing is
sent on HTTP/1.0 or HTTP/2 (the request still succeeds), nor once the final response was
handed to the server, whoever calls. The apps are tests/apps/hints_wsgi.py and
tests/apps/asgi_ext.py.

The HTTP/1.1 reader and the HTTP/2 helper here are also used by
tests/test_asgi_extensions.py."""

import json
import shutil
import socket
import subprocess
import time
from typing import NamedTuple

import pytest

from conftest import TcpServer, base_env, free_port
from test_tls import certs, client_ctx, tls_args  # noqa: F401  (certs: the session fixture)

TIMEOUT = 5.0
WSGI = "hints_wsgi:app"
ASGI = "asgi_ext:app"

CSS = b"</style.css>; rel=preload; as=style"
JS = b"</app.js>; rel=preload; as=script"
HINT_CSS = b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\n\r\n"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


# --------------------------------------------------------------------------------------
# An HTTP/1.x reader that keeps the exact bytes of every response, 1xx included.


class Resp(NamedTuple):
    status: int
    head: bytes  # status line, fields and the blank line, exactly as received
    headers: list  # [(lower-case name, value)] as str
    body: bytes
    trailers: list  # [(lower-case name, value)] from a chunked body's trailer section
    framing: str  # "interim", "length", "chunked", "close" or "none"

    def header(self, name):
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None


def req(path, method="GET", version="1.1", headers=(), body=b""):
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class H1:
    """One client connection; `response()` reads one response (a 1xx is one too)."""

    def __init__(self, port=None, sock=None, timeout=TIMEOUT):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError(f"connection closed; unparsed: {self.buf[:300]!r}")
        self.buf += b

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _to_eof(self):
        while True:
            try:
                self._fill()
            except (EOFError, ConnectionResetError):
                break
        out, self.buf = self.buf, b""
        return out

    def response(self, method="GET"):
        head = self._until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), f"not a status line: {head[:200]!r}"
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            assert ":" in line and not line[:1].isspace(), f"malformed field line {line!r} in {head!r}"
            k, v = line.split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
        fields = dict(headers)
        trailers = []
        if 100 <= status < 200:
            return Resp(status, head, headers, b"", [], "interim")
        if status in (204, 304) or method == "HEAD":
            return Resp(status, head, headers, b"", [], "none")
        if "transfer-encoding" in fields:
            assert fields["transfer-encoding"].lower() == "chunked", head
            assert "content-length" not in fields, head
            body = b""
            while True:
                size = int(self._until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    break
                body += self._exact(size)
                assert self._exact(2) == b"\r\n", "chunk data not followed by CRLF"
            while True:
                line = self._until(b"\r\n")[:-2]
                if not line:
                    break
                k, v = line.decode("latin-1").split(":", 1)
                trailers.append((k.strip().lower(), v.strip()))
            return Resp(status, head, headers, body, trailers, "chunked")
        if "content-length" in fields:
            return Resp(status, head, headers, self._exact(int(fields["content-length"])), [], "length")
        return Resp(status, head, headers, self._to_eof(), [], "close")

    def exchange(self, method="GET"):
        """Reads 1xx responses up to the final one: (interim responses, final response)."""
        interim = []
        while True:
            r = self.response(method)
            if r.framing != "interim":
                return interim, r
            interim.append(r)

    def quiet(self, wait=0.5):
        """Whatever the server sends within `wait` seconds (b"" when it stays quiet)."""
        self.sock.settimeout(wait)
        try:
            data = self.buf + self.sock.recv(65536)
        except socket.timeout:
            data = self.buf
        finally:
            self.sock.settimeout(TIMEOUT)
        self.buf = b""
        return data


def raw_exchange(srv, path, version="1.1", headers=(("Connection", "close"),), method="GET"):
    """Everything the server writes for one request, until it closes."""
    with H1(srv.port) as c:
        c.send(req(path, method=method, version=version, headers=headers))
        return c._to_eof()


def one(srv, path, **kw):
    with H1(srv.port) as c:
        c.send(req(path, **kw))
        return c.exchange(kw.get("method", "GET"))


# --------------------------------------------------------------------------------------
# HTTP/2 (h2c prior knowledge, or TLS with ALPN h2) through the h2 library, which
# reports 1xx responses (InformationalResponseReceived) and trailers (TrailersReceived).


class H2Result(NamedTuple):
    informational: list
    headers: dict
    data: bytes
    trailers: dict
    reset: object
    events: list


def h2_exchange(sock, path, scheme="http", method="GET", headers=(), timeout=TIMEOUT):
    import h2.config
    import h2.connection
    import h2.events

    sock.settimeout(timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", method), (":scheme", scheme), (":path", path), (":authority", "127.0.0.1"), *headers],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    informational, resp_headers, data, trailers, reset, seen = [], None, b"", None, None, []
    done = False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            seen.append(type(ev).__name__)
            if isinstance(ev, h2.events.InformationalResponseReceived):
                informational.append(dict(ev.headers))
            elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                resp_headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == 1:
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                done = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == 1:
                reset, done = ev.error_code, True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                reset, done = ev.error_code, True
        sock.sendall(conn.data_to_send())
    return H2Result(informational, resp_headers, data, trailers, reset, seen)


def h2c(srv, path, **kw):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        return h2_exchange(s, path, **kw)


def curl_v(*args):
    res = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    return res.stdout, res.stderr


# --------------------------------------------------------------------------------------
# Servers: the plain ones are shared by the module (the apps keep no state that matters
# between tests, or reset it).


def _module_server(tmp_path_factory, *args):
    d = tmp_path_factory.mktemp("srv")
    port = free_port()
    srv = TcpServer(["-b", f"127.0.0.1:{port}", *args], d, base_env(), d / "server.log", port)
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def wsgi(tmp_path_factory):
    srv = _module_server(tmp_path_factory, "-w", "1", WSGI)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def wsgi_threads(tmp_path_factory):
    srv = _module_server(tmp_path_factory, "-w", "1", "--threads", "4", WSGI)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def asgi(tmp_path_factory):
    srv = _module_server(tmp_path_factory, "-w", "1", ASGI)
    yield srv
    srv.stop()


def record(srv):
    with H1(srv.port) as c:
        c.send(req("/record", headers=[("Connection", "close")]))
        return json.loads(c.exchange()[1].body)


# ======================================================================================
# WSGI: environ["wsgi.early_hints"]


def test_wsgi_one_hint_exact_bytes(wsgi):
    data = raw_exchange(wsgi, "/hint")
    assert data.startswith(HINT_CSS + b"HTTP/1.1 200 OK\r\n"), data
    assert data.count(b"HTTP/1.1 ") == 2, data
    assert data.endswith(b"\r\n\r\none hint"), data


def test_wsgi_several_calls_send_several_103_in_order(wsgi):
    interim, final = one(wsgi, "/hints")
    assert [r.head for r in interim] == [
        HINT_CSS,
        b"HTTP/1.1 103 Early Hints\r\nlink: " + JS + b"\r\nx-hint: second\r\n\r\n",
    ]
    assert (final.status, final.body) == (200, b"two hints")


def test_wsgi_bytes_and_str_names_and_values_stripped(wsgi):
    interim, final = one(wsgi, "/hint-forms")
    assert [r.head for r in interim] == [
        b"HTTP/1.1 103 Early Hints\r\nlink: </b.css>; rel=preload; as=style\r\nlink: </c.js>; rel=preload; as=script\r\n\r\n"
    ]
    assert (final.status, final.body) == (200, b"forms")


def test_wsgi_environ_has_the_callable_on_http11(wsgi):
    interim, final = one(wsgi, "/environ")
    env = json.loads(final.body)
    assert env == {"has": True, "callable": True, "protocol": "HTTP/1.1", "call": "ok"}
    assert [r.head for r in interim] == [HINT_CSS]


def test_wsgi_hint_after_start_response_before_the_body_is_sent(wsgi):
    """As in Gunicorn: start_response alone does not send the headers."""
    interim, final = one(wsgi, "/after-start-response")
    assert [r.head for r in interim] == [HINT_CSS]
    assert (final.status, final.body) == (200, b"after")


def test_wsgi_hint_in_generator_before_first_chunk_is_sent(wsgi):
    interim, final = one(wsgi, "/gen-before-first-chunk")
    assert [r.head for r in interim] == [HINT_CSS]
    assert (final.status, final.body) == (200, b"first;second")


@pytest.mark.parametrize("pause", ["0", "0.2"])
@pytest.mark.parametrize("srv", ["wsgi", "wsgi_threads"])
def test_wsgi_hint_after_first_chunk_does_nothing(srv, pause, request):
    """The response belongs to the server once the first chunk is out: a later call is
    silently ignored (no error, nothing written, the body intact), also right after."""
    srv = request.getfixturevalue(srv)
    data = raw_exchange(srv, f"/gen-after-first-chunk?s={pause}")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b" 103 " not in data and b"app.js" not in data, data
    with H1(srv.port) as c:
        for _ in range(5):
            c.send(req(f"/gen-after-first-chunk?s={pause}"))
            interim, final = c.exchange()
            assert interim == [], [r.head for r in interim]
            assert final.body == b"first;late:ok"
        # Nothing trails the response on the kept-alive connection.
        assert c.quiet(0.3) == b""


def test_wsgi_invalid_hints_raise_and_send_nothing(wsgi):
    interim, final = one(wsgi, "/invalid")
    out = json.loads(final.body)
    for case in ("name-space", "name-colon", "name-empty", "value-crlf", "value-lf", "value-nul",
                 "bytes-value-crlf", "not-latin1", "valid-then-invalid"):
        assert out[case] == "ValueError", (case, out)
    for case in ("not-a-pair", "not-a-list", "int-value"):
        assert out[case] in ("TypeError", "ValueError"), (case, out)
    assert out["valid"] == "ok", out
    # Only the one valid call was sent: a failed call writes nothing, not even the
    # valid header before the bad one.
    assert [r.head for r in interim] == [b"HTTP/1.1 103 Early Hints\r\nlink: " + JS + b"\r\n\r\n"]
    assert final.status == 200


def test_wsgi_invalid_hint_uncaught_is_a_500(wsgi):
    interim, final = one(wsgi, "/invalid-uncaught")
    assert interim == []
    assert final.status == 500
    wsgi.wait_for("ValueError")


def test_wsgi_hint_then_app_error_is_103_then_500(wsgi):
    interim, final = one(wsgi, "/hint-then-raise")
    assert [r.head for r in interim] == [HINT_CSS]
    assert final.status == 500
    wsgi.wait_for("the app failed after its hint")


def test_wsgi_hint_on_head_request(wsgi):
    with H1(wsgi.port) as c:
        c.send(req("/hint", method="HEAD"))
        interim, final = c.exchange("HEAD")
        assert [r.head for r in interim] == [HINT_CSS]
        assert final.status == 200 and final.header("content-length") == "8"
        c.send(req("/plain"))
        interim, final = c.exchange()
        assert interim == [] and final.body == b"plain"


@needs_curl
def test_wsgi_curl_sees_the_103(wsgi):
    out, err = curl_v(wsgi.url + "/hint")
    assert out == "one hint"
    lines = [l.strip() for l in err.splitlines() if l.startswith("<")]
    assert "< HTTP/1.1 103 Early Hints" in lines, err
    assert "< link: </style.css>; rel=preload; as=style" in lines, err
    assert lines.index("< HTTP/1.1 103 Early Hints") < lines.index("< HTTP/1.1 200 OK"), err


def test_wsgi_http10_gets_no_hint(wsgi):
    data = raw_exchange(wsgi, "/hint", version="1.0", headers=())
    assert b" 103 " not in data and b"style.css" not in data, data
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.endswith(b" 200 OK"), data
    assert data.endswith(b"one hint")
    # The callable exists and does nothing.
    data = raw_exchange(wsgi, "/environ", version="1.0", headers=())
    env = json.loads(data.partition(b"\r\n\r\n")[2])
    assert env == {"has": True, "callable": True, "protocol": "HTTP/1.0", "call": "ok"}
    assert b" 103 " not in data


@pytest.fixture(scope="module")
def wsgi_h2c(tmp_path_factory):
    srv = _module_server(tmp_path_factory, "-w", "1", "--http2-cleartext", "prior-knowledge", WSGI)
    yield srv
    srv.stop()


def test_wsgi_h2c_gets_no_hint(wsgi_h2c):
    r = h2c(wsgi_h2c, "/hints")
    assert r.reset is None, r
    assert r.informational == [], r
    assert r.headers[b":status"] == b"200" and r.data == b"two hints"
    r = h2c(wsgi_h2c, "/environ")
    assert json.loads(r.data) == {"has": True, "callable": True, "protocol": "HTTP/2.0", "call": "ok"}
    assert r.informational == []
    # The same server still sends hints to HTTP/1.1 clients.
    assert raw_exchange(wsgi_h2c, "/hint").startswith(HINT_CSS + b"HTTP/1.1 200 OK\r\n")


@needs_curl
def test_wsgi_h2c_curl_sees_no_103(wsgi_h2c):
    out, err = curl_v("--http2-prior-knowledge", wsgi_h2c.url + "/hint")
    assert out == "one hint"
    assert "< HTTP/2 200" in err, err
    assert "103" not in "\n".join(l for l in err.splitlines() if l.startswith("<")), err


@pytest.mark.parametrize("srv", ["wsgi", "wsgi_threads"])
def test_wsgi_keepalive_hints_stay_with_their_request(srv, request):
    srv = request.getfixturevalue(srv)
    seq = ["/hint", "/plain", "/hints", "/plain", "/gen-before-first-chunk", "/plain"]
    expected_hints = {"/hint": 1, "/plain": 0, "/hints": 2, "/gen-before-first-chunk": 1}
    expected_body = {"/hint": b"one hint", "/plain": b"plain", "/hints": b"two hints",
                     "/gen-before-first-chunk": b"first;second"}
    # One after the other on one connection...
    with H1(srv.port) as c:
        for path in seq:
            c.send(req(path))
            interim, final = c.exchange()
            assert len(interim) == expected_hints[path], (path, interim)
            assert (final.status, final.body) == (200, expected_body[path]), path
        assert c.quiet(0.3) == b""
    # ... and pipelined: each request's hints come after the previous response.
    with H1(srv.port) as c:
        c.send(b"".join(req(p) for p in seq))
        for path in seq:
            interim, final = c.exchange()
            assert len(interim) == expected_hints[path], (path, interim)
            assert (final.status, final.body) == (200, expected_body[path]), path
        assert c.quiet(0.3) == b""


def big_body(n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d" % i
        i += 1
    return bytes(out[:n])


@pytest.mark.parametrize("srv", ["wsgi", "wsgi_threads", "asgi"])
def test_hint_of_a_pipelined_request_waits_for_the_previous_large_response(srv, request):
    """A large response the client is slow to read, with a hinting request pipelined
    behind it: the 103 must not jump into the unflushed rest of the first response."""
    srv = request.getfixturevalue(srv)
    n = 8_000_000
    with H1(srv.port, timeout=10) as c:
        c.send(req(f"/big?n={n}") + req("/hint"))
        time.sleep(0.5)
        interim, first = c.exchange()
        assert interim == [] and len(first.body) == n
        assert first.body == big_body(n), "the first response's body was altered"
        interim, second = c.exchange()
        assert len(interim) >= 1 and all(r.head.startswith(b"HTTP/1.1 103 Early Hints\r\n") for r in interim)
        assert second.status == 200


def test_wsgi_stored_callable_of_an_earlier_request_on_the_same_connection(wsgi):
    """Request 1 keeps its `wsgi.early_hints`; request 2 on the same connection calls it.
    Request 1's response is long gone: nothing may be written, and response 2 must not
    carry request 1's hint."""
    with H1(wsgi.port) as c:
        c.send(req("/store"))
        assert c.exchange()[1].body == b"stored"
        c.send(req("/use-stored"))
        interim, final = c.exchange()
        assert final.body == b"used:ok"
        assert interim == [], [r.head for r in interim]
        assert c.quiet(0.3) == b""


def test_wsgi_stored_callable_with_own_hint_on_the_same_connection(wsgi):
    with H1(wsgi.port) as c:
        c.send(req("/store"))
        c.exchange()
        c.send(req("/use-stored-then-hint"))
        interim, final = c.exchange()
        assert final.body == b"used:ok"
        assert [r.head for r in interim] == [HINT_CSS]


def test_wsgi_stored_callable_called_from_another_connection(wsgi):
    """The stored callable's connection is idle: nothing may appear on it."""
    with H1(wsgi.port) as a:
        a.send(req("/store"))
        assert a.exchange()[1].body == b"stored"
        with H1(wsgi.port) as b:
            b.send(req("/use-stored"))
            interim, final = b.exchange()
            assert interim == [] and final.body == b"used:ok"
        assert a.quiet(0.5) == b""
        # Connection A still works normally.
        a.send(req("/plain"))
        interim, final = a.exchange()
        assert interim == [] and final.body == b"plain"


def test_wsgi_stored_callable_called_while_its_connection_serves_another_request(wsgi_threads):
    """Connection A stores its callable, then sends a slow request (which hints itself).
    While A's slow request runs, connection B calls A's old callable: A's response must
    only carry its own hint."""
    srv = wsgi_threads
    with H1(srv.port) as a:
        a.send(req("/store"))
        assert a.exchange()[1].body == b"stored"
        a.send(req("/slow?s=1.0"))
        time.sleep(0.3)
        with H1(srv.port) as b:
            b.send(req("/use-stored"))
            interim_b, final_b = b.exchange()
        interim, final = a.exchange()
        assert final.body == b"slow"
        assert [r.head for r in interim] == [HINT_CSS], [r.head for r in interim]
        assert interim_b == [] and final_b.body == b"used:ok"


def test_wsgi_callable_called_late_by_a_thread_during_the_next_request(wsgi_threads):
    """A thread of request 1 calls request 1's callable after its response, while
    request 2 runs on the same connection: nothing of it may reach the client."""
    srv = wsgi_threads
    with H1(srv.port) as c:
        c.send(req("/store-and-call-later?s=0.4"))
        assert c.exchange()[1].body == b"will call later"
        c.send(req("/slow?s=1.0"))
        interim, final = c.exchange()
        assert final.body == b"slow"
        assert [r.head for r in interim] == [HINT_CSS], [r.head for r in interim]
        c.send(req("/late-result"))
        assert c.exchange()[1].body == b"ok"


@pytest.mark.parametrize("srv", ["wsgi", "wsgi_threads"])
def test_wsgi_hint_arrives_while_the_app_still_works(srv, request):
    """The point of 103: the client gets it while the app computes the response."""
    srv = request.getfixturevalue(srv)
    with H1(srv.port) as c:
        t0 = time.monotonic()
        c.send(req("/slow?s=1.5"))
        hint = c.response()
        t_hint = time.monotonic() - t0
        final = c.response()
        t_final = time.monotonic() - t0
    assert hint.head == HINT_CSS and final.body == b"slow"
    assert t_final >= 1.4, t_final
    assert t_hint < 0.8, f"the 103 came {t_hint:.2f} s after the request, with the response ({t_final:.2f} s)"


def test_wsgi_hint_then_100_continue(wsgi_threads):
    """A hint before the app reads a body sent with Expect: 100-continue: 103, then the
    100 when the app reads, then the response."""
    srv = wsgi_threads
    body = b"x" * 1000
    with H1(srv.port) as c:
        c.send(req("/echo-hint", method="POST", headers=[("Expect", "100-continue"), ("Content-Length", "1000")]))
        first = c.response()
        assert first.head == HINT_CSS, first
        statuses = []
        c.send(body)
        while True:
            r = c.response("POST")
            statuses.append(r.status)
            if r.status >= 200:
                break
        assert statuses in ([100, 200], [200]), statuses
        assert r.body == body


# --------------------------------------------------------------------------------------
# WSGI over TLS: the 103 must go through TLS like the rest (HTTP/1.1), none on h2.


@pytest.fixture
def tls_servers(start_server, certs):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    return start_server


@pytest.mark.parametrize("app", [WSGI, ASGI])
def test_tls_http11_hint_is_encrypted_like_the_rest(tls_servers, certs, app):
    srv = tls_servers(app, "-w", "1", *tls_args(certs), "--http-protocols", "h2,h1")
    ctx = client_ctx(certs, alpn=["http/1.1"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            with H1(sock=s) as c:
                for _ in range(2):
                    c.send(req("/hint"))
                    interim, final = c.exchange()
                    assert interim and interim[0].head.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\n")
                    assert final.status == 200 and final.body in (b"one hint", b"hinted")


@pytest.mark.parametrize("app", [WSGI, ASGI])
def test_tls_h2_gets_no_hint(tls_servers, certs, app):
    srv = tls_servers(app, "-w", "1", *tls_args(certs), "--http-protocols", "h2,h1")
    ctx = client_ctx(certs, alpn=["h2"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.selected_alpn_protocol() == "h2"
            r = h2_exchange(s, "/hint", scheme="https")
    assert r.reset is None and r.informational == [], r
    assert r.headers[b":status"] == b"200" and r.data in (b"one hint", b"hinted")


# ======================================================================================
# ASGI: http.response.early_hint and http.response.informational


def test_asgi_early_hint_and_informational_exact_bytes(asgi):
    data = raw_exchange(asgi, "/hint")
    assert data.startswith(
        b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\nlink: " + JS + b"\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </c.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n"
    ), data
    assert data.endswith(b"\r\n\r\nhinted")


def test_asgi_early_hint_links_and_headers(asgi):
    interim, final = one(asgi, "/early-hint-headers")
    assert len(interim) == 1
    assert sorted(interim[0].headers) == [("link", CSS.decode()), ("x-hint", "yes")]
    assert interim[0].head.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert final.body == b"hinted"


def test_asgi_informational_102(asgi):
    interim, final = one(asgi, "/informational?status=102")
    assert [r.head for r in interim] == [b"HTTP/1.1 102 Processing\r\nx-info: 1\r\n\r\n"]
    assert final.body == b"informational:ok"


@pytest.mark.parametrize("status", [100, 101, 200, 99])
def test_asgi_informational_refuses_100_101_and_non_1xx(asgi, status):
    interim, final = one(asgi, f"/informational?status={status}")
    assert interim == [], [r.head for r in interim]
    assert final.status == 200
    assert final.body.startswith(b"informational:") and final.body != b"informational:ok", final.body


def test_asgi_invalid_hints_raise_and_send_nothing(asgi):
    interim, final = one(asgi, "/hint-invalid")
    out = json.loads(final.body)
    assert all(v != "ok" for v in out.values()), out
    assert out["link-crlf"] == "ValueError" and out["header-name"] == "ValueError", out
    assert interim == [], [r.head for r in interim]


def test_asgi_hint_after_start_is_an_error(asgi):
    interim, final = one(asgi, "/hint-after-start")
    assert interim == []
    assert final.body == b"RuntimeError,RuntimeError"


def test_asgi_hint_after_start_uncaught_is_a_500(asgi):
    interim, final = one(asgi, "/hint-after-start-uncaught")
    assert interim == []
    assert final.status == 500
    asgi.wait_for("early_hint after http.response.start")


def test_asgi_hint_after_response_is_an_error_and_writes_nothing(asgi):
    with H1(asgi.port) as c:
        c.send(req("/hint-after-response"))
        interim, final = c.exchange()
        assert interim == [] and final.body == b"done"
        time.sleep(0.3)
        c.send(req("/plain"))
        interim, final = c.exchange()
        assert interim == [] and final.body == b"plain"
        assert c.quiet(0.2) == b""
    assert record(asgi)["hint_after_response"] == "RuntimeError"


def test_asgi_stored_send_of_an_earlier_request(asgi):
    with H1(asgi.port) as c:
        c.send(req("/store-send"))
        assert c.exchange()[1].body == b"stored"
        c.send(req("/use-stored-send"))
        interim, final = c.exchange()
        assert interim == [], [r.head for r in interim]
        assert final.body == b"used:RuntimeError"


def test_asgi_late_task_hint_during_the_next_request(asgi):
    with H1(asgi.port) as c:
        c.send(req("/late-task?s=0.3"))
        assert c.exchange()[1].body == b"late task started"
        c.send(req("/hint-slow?s=0.8"))
        interim, final = c.exchange()
        assert [r.head for r in interim] == [HINT_CSS], [r.head for r in interim]
        assert final.body == b"slow"
    assert record(asgi)["late_task"] == "RuntimeError"


def test_asgi_hint_arrives_while_the_app_still_works(asgi):
    with H1(asgi.port) as c:
        t0 = time.monotonic()
        c.send(req("/hint-slow?s=1.5"))
        hint = c.response()
        t_hint = time.monotonic() - t0
        final = c.response()
        t_final = time.monotonic() - t0
    assert hint.head == HINT_CSS and final.body == b"slow"
    assert t_final >= 1.4 and t_hint < 0.8, (t_hint, t_final)


def test_asgi_keepalive_and_pipelined_hints_stay_with_their_request(asgi):
    seq = ["/hint", "/plain", "/early-hint-headers", "/plain", "/informational?status=102", "/plain"]
    hints = {"/hint": 2, "/plain": 0, "/early-hint-headers": 1, "/informational?status=102": 1}
    with H1(asgi.port) as c:
        for path in seq:
            c.send(req(path))
            interim, final = c.exchange()
            assert len(interim) == hints[path] and final.status == 200, (path, interim, final)
    with H1(asgi.port) as c:
        c.send(b"".join(req(p) for p in seq))
        for path in seq:
            interim, final = c.exchange()
            assert len(interim) == hints[path] and final.status == 200, (path, interim, final)
        assert c.quiet(0.3) == b""


def test_asgi_hint_on_head_request(asgi):
    with H1(asgi.port) as c:
        c.send(req("/hint", method="HEAD"))
        interim, final = c.exchange("HEAD")
        assert len(interim) == 2 and final.status == 200 and final.header("content-length") == "6"
        c.send(req("/plain"))
        interim, final = c.exchange()
        assert interim == [] and final.body == b"plain"


def test_asgi_http10_drops_hints(asgi):
    data = raw_exchange(asgi, "/hint", version="1.0", headers=())
    assert b" 103 " not in data and b"style.css" not in data, data
    assert data.split(b"\r\n", 1)[0].endswith(b" 200 OK") and data.endswith(b"hinted"), data
    data = raw_exchange(asgi, "/informational?status=102", version="1.0", headers=())
    assert b" 102 " not in data and data.endswith(b"informational:ok"), data


@pytest.fixture(scope="module")
def asgi_h2c(tmp_path_factory):
    srv = _module_server(tmp_path_factory, "-w", "1", "--http2-cleartext", "prior-knowledge", ASGI)
    yield srv
    srv.stop()


def test_asgi_h2c_drops_hints(asgi_h2c):
    r = h2c(asgi_h2c, "/hint")
    assert r.reset is None and r.informational == [], r
    assert r.headers[b":status"] == b"200" and r.data == b"hinted"
    r = h2c(asgi_h2c, "/informational?status=102")
    assert r.informational == [] and r.data == b"informational:ok", r
    assert raw_exchange(asgi_h2c, "/hint").startswith(b"HTTP/1.1 103 Early Hints\r\n")


@needs_curl
def test_asgi_h2c_curl_sees_no_103(asgi_h2c):
    out, err = curl_v("--http2-prior-knowledge", asgi_h2c.url + "/hint")
    assert out == "hinted"
    assert "< HTTP/2 200" in err, err
    assert "103" not in "\n".join(l for l in err.splitlines() if l.startswith("<")), err
