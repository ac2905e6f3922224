"""End-to-end HTTP/1.x behaviour over raw sockets: keep-alive, pipelining, request and
response framing, limits and Gunicorn's request hardening (reference sections 6.1, 6.2
and 6.4). Every test starts the real server with `start_server("testapp:app", ...)`."""

import email.utils
from http import client as httpclient
import json
import socket
import time
from typing import NamedTuple

import pytest

TIMEOUT = 5.0
HELLO = b"Hello, World!\n"


# ---------------------------------------------------------------------------------------
# A tiny HTTP/1.x client that parses exactly what the server wrote.


class Resp(NamedTuple):
    status_line: str
    status: int
    headers: dict  # lower-case name -> value; repeated fields joined with ", "
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"
    header_list: list  # [(name, value)] as received
    trailers: dict


class Conn:
    """One client connection with a read buffer, so pipelined responses can be split."""

    def __init__(self, srv, timeout=TIMEOUT):
        self.sock = srv.connect(timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError(f"connection closed; unparsed buffer {self.buf[:200]!r}")
        self.buf += b

    def read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self) -> bytes:
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out, self.buf = self.buf, b""
        return out

    def response(self, method: str = "GET") -> Resp:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/"), status_line
        status = int(parts[1])
        header_list = []
        headers = {}
        for line in lines[1:]:
            assert ":" in line, f"malformed response header line {line!r}"
            name, value = line.split(":", 1)
            name, value = name.strip().lower(), value.strip()
            header_list.append((name, value))
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        trailers = {}
        te = headers.get("transfer-encoding", "").lower()
        if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
            body, framing = b"", "none"
        elif te:
            assert te == "chunked", f"unexpected transfer-encoding {te!r}"
            assert "content-length" not in headers, "both Content-Length and chunked in a response"
            body, framing = self._read_chunked(trailers), "chunked"
        elif "content-length" in headers:
            body, framing = self.read_exact(int(headers["content-length"])), "length"
        else:
            body, framing = self.read_to_eof(), "close"
        return Resp(status_line, status, headers, body, framing, header_list, trailers)

    def _read_chunked(self, trailers) -> bytes:
        body = b""
        while True:
            size_line = self.read_until(b"\r\n")[:-2]
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += self.read_exact(size)
            assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
        while True:
            line = self.read_until(b"\r\n")[:-2]
            if not line:
                return body
            k, v = line.decode("latin-1").split(":", 1)
            trailers[k.strip().lower()] = v.strip()

    def is_closed(self, timeout=2.0) -> bool:
        """True if the server closes the connection within `timeout` without sending more;
        False if it stays open and silent. Unexpected extra bytes fail the test."""
        assert not self.buf, f"unexpected bytes after the response: {self.buf[:200]!r}"
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(TIMEOUT)
        assert not b, f"unexpected bytes after the response: {b[:200]!r}"
        return True


def http(srv, raw: bytes, method: str = "GET", check_close=None):
    """Send `raw` on a fresh connection and parse one response.
    Returns (response, closed). For error responses (>= 400) closed says whether the
    server then closed the connection; for others it is None (not checked, to stay fast)."""
    with Conn(srv) as c:
        c.send(raw)
        r = c.response(method)
        closed = None
        if r.framing == "close":
            closed = True
        elif r.status >= 400 if check_close is None else check_close:
            closed = c.is_closed(timeout=1.5)
        return r, closed


def get(path="/", version="1.1", extra=b"", close=False) -> bytes:
    req = f"GET {path} HTTP/{version}\r\nHost: localhost\r\n".encode() + extra
    if close:
        req += b"Connection: close\r\n"
    return req + b"\r\n"


def post(path, body: bytes, extra=b"", version="1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def chunked_post(path, payload: bytes, extra=b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n".encode() + extra + b"\r\n" + payload


def assert_hello(r: Resp):
    assert r.status_line == "HTTP/1.1 200 OK"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "14"
    assert r.body == HELLO


def assert_still_serving(srv, pid=None):
    """A normal request on a new connection is served after a bad one (same worker)."""
    r, closed = http(srv, get("/pid", close=True), check_close=True)
    assert r.status_line == "HTTP/1.1 200 OK"
    assert closed
    if pid is not None:
        assert json.loads(r.body)["pid"] == pid, "the worker was replaced after a bad request"
    return json.loads(r.body)["pid"]


REASONS = {
    400: {"Bad Request"},
    413: {"Payload Too Large", "Content Too Large", "Request Entity Too Large"},
    414: {"URI Too Long", "Request-URI Too Long"},
    417: {"Expectation Failed"},
    431: {"Request Header Fields Too Large"},
    501: {"Not Implemented"},
}


def assert_error(r: Resp, closed: bool, status: int):
    """A complete HTTP/1.1 error response, framed by Content-Length, and the connection closed."""
    version, code, reason = r.status_line.split(" ", 2)
    assert (version, int(code)) == ("HTTP/1.1", status), f"got {r.status_line!r}, body {r.body[:300]!r}"
    assert reason in REASONS[status], r.status_line
    assert r.framing == "length", f"error response not framed by Content-Length: {r.header_list}"
    assert int(r.headers["content-length"]) == len(r.body)
    assert r.headers.get("connection", "").lower() == "close", r.header_list
    assert closed, "connection left open after an error response"


def rejected(srv, raw: bytes, status: int, pid=None):
    r, closed = http(srv, raw)
    assert_error(r, closed, status)
    assert_still_serving(srv, pid)
    return r


@pytest.fixture
def server(start_server):
    return start_server("testapp:app")


def worker_pid(srv):
    r, _ = http(srv, get("/pid"))
    return json.loads(r.body)["pid"]


# ---------------------------------------------------------------------------------------
# Keep-alive


def test_two_requests_on_one_connection(server):
    with Conn(server) as c:
        c.send(get("/", close=False))
        r1 = c.response()
        assert_hello(r1)
        assert r1.headers.get("connection", "keep-alive").lower() == "keep-alive"
        assert not c.is_closed(timeout=0.3)
        c.send(post("/echo", b"second"))
        r2 = c.response()
        assert r2.status_line == "HTTP/1.1 200 OK"
        assert r2.body == b"second"
        assert r2.headers["content-length"] == "6"


def test_http_client_reuses_the_connection(server):
    conn = httpclient.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/pid")
        r1 = conn.getresponse()
        assert r1.status == 200
        pid = json.loads(r1.read())["pid"]
        sock = conn.sock
        assert sock is not None and not r1.will_close
        conn.request("POST", "/echo", body=b"abc")
        r2 = conn.getresponse()
        assert (r2.status, r2.read()) == (200, b"abc")
        assert conn.sock is sock, "http.client had to reconnect"
        conn.request("GET", "/pid")
        assert json.loads(conn.getresponse().read())["pid"] == pid
    finally:
        conn.close()


def test_connection_close_closes_after_response(server):
    with Conn(server) as c:
        c.send(get("/", close=True))
        r = c.response()
        assert_hello(r)
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()


def test_http10_without_keepalive_closes(server):
    with Conn(server) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        r = c.response()
        assert r.status_line == "HTTP/1.0 200 OK"
        assert r.body == HELLO
        # Gunicorn says so explicitly.
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()


def test_http10_with_keepalive_stays_open(server):
    with Conn(server) as c:
        for _ in range(2):
            c.send(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
            r = c.response()
            assert r.status_line == "HTTP/1.0 200 OK"
            assert r.body == HELLO
            # An HTTP/1.0 client only keeps the connection if told so explicitly.
            assert r.headers["connection"].lower() == "keep-alive"
            assert not c.is_closed(timeout=0.3)


def test_http10_keepalive_and_close_says_close(server):
    # `close` beside `keep-alive`: the connection closes, and the response says so
    # (it promised keep-alive and then closed).
    with Conn(server) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive, close\r\n\r\n")
        r = c.response()
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()


def test_keepalive_idle_timeout(start_server):
    srv = start_server("testapp:app", "--keep-alive", "1")
    with Conn(srv) as c:
        c.send(get("/", close=False))
        assert_hello(c.response())
        t0 = time.monotonic()
        assert c.is_closed(timeout=3.0), "idle keep-alive connection not closed within 3s"
        elapsed = time.monotonic() - t0
        assert 0.7 <= elapsed <= 3.0, elapsed


def test_keepalive_request_within_window_is_served(start_server):
    srv = start_server("testapp:app", "--keep-alive", "1")
    with Conn(srv) as c:
        # Three requests spread over ~1.4s: each gap is shorter than the idle timeout,
        # so the timer restarts and the connection is never cut.
        for i in range(3):
            if i:
                time.sleep(0.7)
            c.send(post("/echo", b"req%d" % i))
            r = c.response()
            assert r.status_line == "HTTP/1.1 200 OK"
            assert r.body == b"req%d" % i
        # The idle time counts from the last response, not from an earlier one (the
        # timer is moved lazily: it fires at a stale deadline and is set again).
        t0 = time.monotonic()
        assert c.is_closed(timeout=3.0), "idle keep-alive connection not closed within 3s"
        assert 0.7 <= time.monotonic() - t0 <= 3.0


def test_keepalive_zero_closes_after_each_response(start_server):
    srv = start_server("testapp:app", "--keep-alive", "0")
    with Conn(srv) as c:
        c.send(get("/", close=False))
        r = c.response()
        assert_hello(r)
        assert r.headers.get("connection", "").lower() == "close"
        assert c.is_closed()


# ---------------------------------------------------------------------------------------
# Pipelining


def test_pipelined_requests_answered_in_order(server):
    with Conn(server) as c:
        c.send(
            get("/", close=False)
            + post("/echo", b"pipelined-body")
            + b"GET /stream?2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        r1, r2, r3 = c.response(), c.response(), c.response()
        assert_hello(r1)
        assert (r2.status_line, r2.body) == ("HTTP/1.1 200 OK", b"pipelined-body")
        assert r3.status_line == "HTTP/1.1 200 OK"
        assert r3.framing == "chunked"
        assert r3.body == b"chunk 0\nchunk 1\n"
        assert c.is_closed()


def test_pipelined_request_after_bad_one_is_not_served(server):
    with Conn(server) as c:
        c.send(b"GET * HTTP/1.1\r\nHost: localhost\r\n\r\n" + get("/", close=False))
        r = c.response()
        assert r.status == 400
        assert c.is_closed(), "a request pipelined behind a rejected one was served"


# ---------------------------------------------------------------------------------------
# Request bodies and Transfer-Encoding


def test_chunked_body_echoed(server):
    with Conn(server) as c:
        c.send(chunked_post("/echo", b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"))
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.headers["content-length"] == "12"
        assert r.body == b"hello, world"
        assert not c.is_closed(timeout=0.3)


def test_chunked_body_with_extensions(server):
    payload = b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0;last\r\n\r\n"
    r, _ = http(server, chunked_post("/echo", payload))
    assert (r.status_line, r.body) == ("HTTP/1.1 200 OK", b"hello world")


def test_chunked_body_with_trailers_keeps_connection(server):
    payload = b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other: y\r\n\r\n"
    with Conn(server) as c:
        c.send(chunked_post("/echo", payload))
        r = c.response()
        assert (r.status_line, r.body) == ("HTTP/1.1 200 OK", b"abc")
        c.send(get("/"))
        assert_hello(c.response())


def test_chunked_hex_sizes(server):
    body = bytes(range(256)) * 2  # 512 bytes = 0x200
    r, _ = http(server, chunked_post("/echo", b"1Ff\r\n" + body[:0x1FF] + b"\r\n1\r\n" + body[0x1FF:] + b"\r\n0\r\n\r\n"))
    assert r.status == 200
    assert r.body == body


@pytest.mark.parametrize("line", [b"5;", b"5;a=", b"5 ;", b"5;;a", b"5;a=b;", b"5;=b", b'5;a="b', b"5;a=b "])
def test_malformed_chunk_extension_is_400(server, line):
    # Gunicorn's CHUNK_EXT_RE: "Invalid chunk extension".
    rejected(server, chunked_post("/echo", line + b"\r\nhello\r\n0\r\n\r\n"), 400)


def test_empty_lines_before_a_request_line(server):
    # RFC 9112 2.2: one empty line before a request is skipped; Gunicorn refuses more
    # at once (400) instead of waiting for a request.
    r, _ = http(server, b"\r\n" + get("/"))
    assert_hello(r)
    t0 = time.monotonic()
    rejected(server, b"\r\n\r\n", 400)
    rejected(server, b"\r\n" * 50000, 400)
    assert time.monotonic() - t0 < 5


def test_empty_lines_after_a_pipelined_request_do_not_lose_it(server):
    # The refused bytes come after a complete request in the same segment: that request
    # is still answered.
    with Conn(server) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n\r\n\r\n")
        assert_hello(c.response())


def test_http10_keepalive_request_with_keepalive_off(start_server):
    # --keep-alive 0: the connection closes whatever the client asks, and says so.
    srv = start_server("testapp:app", "--keep-alive", "0")
    with Conn(srv) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        r = c.response()
        assert r.status_line == "HTTP/1.0 200 OK"
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()


def test_unfinished_request_line_over_the_limit_is_414_at_once(server):
    # Gunicorn's read_line answers 414 as soon as the limit is passed, without the CRLF.
    with Conn(server) as c:
        t0 = time.monotonic()
        c.send(b"GET /" + b"a" * 5000)
        r = c.response()
        assert r.status_line.startswith("HTTP/1.1 414"), r.status_line
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()
        assert time.monotonic() - t0 < 5
    assert_still_serving(server, None)


def test_invalid_chunk_size_is_400(server):
    rejected(server, chunked_post("/echo", b"zz\r\nhello\r\n0\r\n\r\n"), 400)


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"5\r\nhelloXX0\r\n\r\n", b"invalid chunk body"),  # no CRLF after the data
        (b"5 \r\nhello\r\n0\r\n\r\n", b"invalid chunked body"),  # space after the size
    ],
)
def test_broken_chunked_body_says_what_is_wrong(server, body, reason):
    # The client is still there and this request's own body is at fault: the page must
    # not say the client left or blame an earlier request.
    r = rejected(server, chunked_post("/echo", body), 400)
    assert reason in r.body.lower(), r.body
    assert b"disconnected" not in r.body and b"earlier request" not in r.body


def test_content_length_and_transfer_encoding_is_400(server):
    rejected(
        server,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        400,
    )


def test_transfer_encoding_and_content_length_is_400(server):
    rejected(
        server,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        400,
    )


def test_duplicate_content_length_is_400(server):
    rejected(server, post("/echo", b"hello", extra=b"Content-Length: 5\r\n"), 400)


def test_conflicting_content_length_is_400(server):
    rejected(server, post("/echo", b"hello", extra=b"Content-Length: 6\r\n"), 400)


@pytest.mark.parametrize("value", [b"+5", b"-1", b"5, 5", b"0x5", b" 5x"])
def test_malformed_content_length_is_400(server, value):
    raw = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + value + b"\r\n\r\nhello"
    rejected(server, raw, 400)


def test_chunked_twice_is_400(server):
    rejected(server, chunked_post("/echo", b"5\r\nhello\r\n0\r\n\r\n").replace(b"chunked", b"chunked, chunked"), 400)


def test_chunked_not_last_is_400(server):
    raw = chunked_post("/echo", b"5\r\nhello\r\n0\r\n\r\n").replace(b"chunked", b"chunked, gzip")
    rejected(server, raw, 400)


def test_unknown_transfer_coding_is_501(server):
    pid = worker_pid(server)
    raw = chunked_post("/echo", b"5\r\nhello\r\n0\r\n\r\n").replace(b"chunked", b"foo, chunked")
    rejected(server, raw, 501, pid)


def test_gzip_chunked_accepted_then_connection_closed(server):
    raw = chunked_post("/echo", b"5\r\nhello\r\n0\r\n\r\n").replace(b"chunked", b"gzip, chunked")
    with Conn(server) as c:
        c.send(raw + get("/", close=False))
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        # The body goes to the app still content-coded; only the chunking is removed.
        assert r.body == b"hello"
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed(), "connection kept open after a compressed transfer coding"


def test_transfer_encoding_on_http10_is_400(server):
    raw = b"POST /echo HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    rejected(server, raw, 400)


def test_request_without_length_has_empty_body(server):
    # Neither Content-Length nor chunked: a zero-length body, never read to EOF.
    with Conn(server) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.response()
        assert (r.status_line, r.headers["content-length"], r.body) == ("HTTP/1.1 200 OK", "0", b"")


# ---------------------------------------------------------------------------------------
# Expect


def test_expect_100_continue(server):
    with Conn(server) as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = c.read_until(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello world")
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.body == b"hello world"
        # The connection is still usable.
        c.send(get("/"))
        assert_hello(c.response())


def test_expect_100_continue_unread_body_closes_the_connection_openly(server):
    # The app answers without reading: no 100 was sent, the client still holds the body,
    # so the connection cannot carry another request. The response says so.
    with Conn(server) as c:
        c.send(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()
    # After a body that was read, the next request on the connection gets no close.
    with Conn(server) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"ok")
        r = c.response()
        assert (r.status_line, r.body) == ("HTTP/1.1 200 OK", b"ok")
        assert "close" not in r.headers.get("connection", "").lower()
        c.send(get("/", close=False))
        r = c.response()
        assert_hello(r)
        assert "close" not in r.headers.get("connection", "").lower()


def test_expect_100_continue_with_chunked_body(server):
    with Conn(server) as c:
        c.send(chunked_post("/echo", b"", extra=b"Expect: 100-continue\r\n"))
        assert c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"4\r\nabcd\r\n0\r\n\r\n")
        r = c.response()
        assert (r.status_line, r.body) == ("HTTP/1.1 200 OK", b"abcd")


def test_unsupported_expectation_is_417(server):
    rejected(server, post("/echo", b"hello", extra=b"Expect: something-else\r\n"), 417)


def test_expect_100_continue_ignored_on_http10(server):
    """RFC 9110 10.1.1: a 100-continue on HTTP/1.0 is ignored (no interim response)."""
    with Conn(server) as c:
        c.send(post("/echo", b"hello", extra=b"Expect: 100-continue\r\n", version="1.0"))
        r = c.response()
        assert (r.status_line, r.body) == ("HTTP/1.0 200 OK", b"hello")


def test_other_expectations_refused_on_http10_too(server):
    """Gunicorn answers 417 to any expectation but 100-continue, whatever the version."""
    with Conn(server) as c:
        c.send(post("/echo", b"hello", extra=b"Expect: something-else\r\n", version="1.0"))
        assert c.response().status_line.split()[1] == "417"


# ---------------------------------------------------------------------------------------
# Response framing and standard headers


def test_streamed_response_is_chunked_on_http11(server):
    with Conn(server) as c:
        c.send(get("/stream?3", close=False))
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.headers["transfer-encoding"].lower() == "chunked"
        assert "content-length" not in r.headers
        assert r.framing == "chunked"
        assert r.body == b"chunk 0\nchunk 1\nchunk 2\n"
        assert not c.is_closed(timeout=0.3)
        c.send(get("/"))
        assert_hello(c.response())


def test_streamed_response_on_http10_closes(server):
    with Conn(server) as c:
        c.send(b"GET /stream?3 HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        r = c.response()
        assert r.status_line == "HTTP/1.0 200 OK"
        assert "transfer-encoding" not in r.headers
        assert "content-length" not in r.headers
        assert r.framing == "close"
        assert r.body == b"chunk 0\nchunk 1\nchunk 2\n"
        # The body ends with the connection: the response must not promise keep-alive.
        assert r.headers["connection"].lower() == "close"
        assert c.is_closed()


def test_head_has_no_body_and_connection_stays_usable(server):
    with Conn(server) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.response("HEAD")
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.headers["content-length"] == "14"
        c.send(get("/", close=True))
        # If the HEAD response had carried body bytes they would show up here.
        assert_hello(c.response())
        assert c.is_closed()


def test_head_of_streamed_response(server):
    with Conn(server) as c:
        c.send(b"HEAD /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.response("HEAD")
        assert r.status_line == "HTTP/1.1 200 OK"
        c.send(get("/"))
        assert_hello(c.response())


def test_date_and_server_headers(server):
    for raw in (get("/"), get("/stream"), post("/echo", b"x")):
        r, _ = http(server, raw)
        assert r.status == 200
        names = [n for n, _ in r.header_list]
        assert names.count("date") == 1 and names.count("server") == 1, r.header_list
        assert r.headers["server"].startswith("ferricorn")
        parsed = email.utils.parsedate_to_datetime(r.headers["date"])
        assert r.headers["date"].endswith(" GMT")
        assert abs(parsed.timestamp() - time.time()) < 5


def test_http_client_reads_chunked_stream(server):
    conn = httpclient.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/stream?5")
        r = conn.getresponse()
        assert r.status == 200 and r.chunked
        assert r.read() == b"".join(b"chunk %d\n" % i for i in range(5))
        conn.request("GET", "/write")
        r = conn.getresponse()
        assert r.read() == b"written returned"
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# Limits (reference 6.1)


def test_request_line_over_default_limit_is_414(server):
    pid = worker_pid(server)
    path = "/" + "a" * 4100
    rejected(server, get(path), 414, pid)


def test_request_line_at_default_limit_is_served(server):
    # "GET " + target + " HTTP/1.1" == 4094 bytes exactly
    path = "/" + "a" * (4094 - len("GET  HTTP/1.1") - 1)
    r, _ = http(server, get(path))
    assert_hello(r)


def test_limit_request_line_option(start_server):
    srv = start_server("testapp:app", "--limit-request-line", "100")
    rejected(srv, get("/" + "b" * 199), 414)
    r, _ = http(srv, get("/" + "b" * 50))
    assert_hello(r)


def test_header_over_default_field_size_is_431(server):
    rejected(server, get("/", extra=b"X-Big: " + b"a" * 9000 + b"\r\n"), 431)


def test_more_than_100_headers_is_431(server):
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(100))  # + Host + Connection = 102
    rejected(server, get("/", extra=extra), 431)


def test_100_headers_are_served(server):
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(98))  # + Host + Connection = 100
    r, _ = http(server, get("/", extra=extra))
    assert_hello(r)


def test_limit_request_fields_option(start_server):
    srv = start_server("testapp:app", "--limit-request-fields", "5")
    six = b"POST /echo HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(4))
    r, closed = http(srv, six + b"Content-Length: 0\r\n\r\n")
    assert_error(r, closed, 431)
    five = b"POST /echo HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(3))
    r, _ = http(srv, five + b"Content-Length: 2\r\n\r\nok")
    assert (r.status, r.body) == (200, b"ok")


def test_limit_request_field_size_option(start_server):
    srv = start_server("testapp:app", "--limit-request-field_size", "50")
    # "X-Long: " + 52 bytes = a 60-byte header line
    r, closed = http(srv, get("/", extra=b"X-Long: " + b"v" * 52 + b"\r\n", close=False))
    assert_error(r, closed, 431)
    r, _ = http(srv, get("/", extra=b"X-Short: " + b"v" * 20 + b"\r\n"))
    assert_hello(r)


@pytest.mark.parametrize("line, status", [(48, 200), (49, 431), (50, 431)])
def test_limit_request_field_size_counts_the_line_with_its_crlf(start_server, line, status):
    # Gunicorn: len(line) + len("\r\n") > limit_request_field_size is a 431.
    srv = start_server("testapp:app", "--limit-request-field_size", "50")
    header = b"X-Long: " + b"v" * (line - 8)
    assert len(header) == line
    r, closed = http(srv, get("/", extra=header + b"\r\n", close=False))
    if status == 200:
        assert_hello(r)
    else:
        assert_error(r, closed, status)


@pytest.mark.parametrize("header, status", [
    (b"X:" + b"v" * 46, 200),  # 48 bytes, no space after the colon
    (b"X:" + b" " * 20 + b"v" * 27, 431),  # 49 bytes, mostly whitespace
])
def test_limit_request_field_size_measures_the_line_as_sent(start_server, header, status):
    srv = start_server("testapp:app", "--limit-request-field_size", "50")
    r, closed = http(srv, get("/", extra=header + b"\r\n", close=False))
    if status == 200:
        assert_hello(r)
    else:
        assert_error(r, closed, status)


def test_limit_request_body_content_length(start_server):
    srv = start_server("testapp:app", "--limit-request-body", "10")
    pid = worker_pid(srv)
    rejected(srv, post("/echo", b"x" * 20), 413, pid)
    r, _ = http(srv, post("/echo", b"y" * 10))
    assert (r.status, r.body) == (200, b"y" * 10)


def test_limit_request_body_chunked(start_server):
    srv = start_server("testapp:app", "--limit-request-body", "10")
    rejected(srv, chunked_post("/echo", b"a\r\n" + b"x" * 10 + b"\r\na\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n"), 413)
    r, _ = http(srv, chunked_post("/echo", b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n"))
    assert (r.status, r.body) == (200, b"abcdefghij")


# ---------------------------------------------------------------------------------------
# Hardened request-line and header parsing (reference 6.2)


@pytest.mark.parametrize(
    "line",
    [
        b"get / HTTP/1.1",  # lowercase method
        b"GE / HTTP/1.1",  # too short
        b"G#T / HTTP/1.1",  # '#' in the method
        b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1",  # 21 characters
        b"GET / HTTP/2.0",
        b"GET / HTTP/1.2",
        b"GET / HTTX/1.1",
        b"GET / HTTP/1.1.1",
        b"GET * HTTP/1.1",  # '*' only with OPTIONS
        b"GET example.com:443 HTTP/1.1",  # authority-form only with CONNECT
    ],
    ids=lambda b: b.decode(),
)
def test_bad_request_line_is_400(server, line):
    rejected(server, line + b"\r\nHost: localhost\r\n\r\n", 400)


def test_unconventional_but_valid_method_is_served(server):
    with Conn(server) as c:
        c.send(b"PROPFIND / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert_hello(c.response())


def test_options_asterisk_is_served(server):
    with Conn(server) as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.response()
        assert r.status_line == "HTTP/1.1 200 OK"
        assert r.body == HELLO
        assert not c.is_closed(timeout=0.3)


@pytest.mark.parametrize(
    "header",
    [
        b"X-Folded: a\r\n b",  # obs-fold
        b"X-Space : a",  # whitespace before the colon
        b"X-Nul: a\x00b",
        b"X-Cr: a\rb",  # bare CR
        b"X-Ctl: a\x01b",
        b"X-Del: a\x7fb",
        b": no-name",
        b"X(Bad): token",
        b"Host: other",  # duplicate Host
        b"Content-Type: a\r\nContent-Type: b",
    ],
    ids=["obs-fold", "space-before-colon", "nul", "bare-cr", "ctl-0x01", "del", "empty-name", "bad-name", "dup-host", "dup-content-type"],
)
def test_bad_header_is_400(server, header):
    rejected(server, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n\r\n", 400)


def test_underscore_header_dropped_from_environ(server):
    r, _ = http(server, get("/environ", extra=b"X_Foo: underscore\r\nX-Bar: dash\r\n"))
    env = json.loads(r.body)
    assert env["HTTP_X_BAR"] == "dash"
    assert "HTTP_X_FOO" not in env
    assert "underscore" not in json.dumps(env)


def test_underscore_header_cannot_spoof_dashed_header(server):
    r, _ = http(server, get("/environ", extra=b"X-Foo: real\r\nX_Foo: spoofed\r\n"))
    env = json.loads(r.body)
    assert env["HTTP_X_FOO"] == "real"


def test_duplicate_headers_joined_with_comma(server):
    r, _ = http(server, get("/environ", extra=b"X-Dup: a\r\nX-Other: o\r\nX-Dup: b\r\nx-dup: c\r\n"))
    env = json.loads(r.body)
    assert env["HTTP_X_DUP"] == "a,b,c"
    assert env["HTTP_X_OTHER"] == "o"


def test_worker_survives_a_series_of_bad_requests(server):
    pid = worker_pid(server)
    for raw in (
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: \x00\r\n\r\n",
        chunked_post("/echo", b"zz\r\n\r\n"),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
        b"GARBAGE\r\n\r\n",
    ):
        with Conn(server) as c:
            c.send(raw)
            data = c.read_to_eof()
            assert data.startswith(b"HTTP/1.1 4"), (raw, data[:200])
    assert_still_serving(server, pid)
