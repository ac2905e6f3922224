"""Requests after a body the server never read (a static file, an unread upload) are
framed by the same rules as the first: a body that broke a framing rule ends the
connection, so nothing smuggled behind it reaches the app."""

import socket

from conftest import recv_all


def exchange(srv, data):
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(data)
        return recv_all(s, 3)


def test_smuggled_request_behind_a_static_response_is_not_served(start_server, tmp_path):
    d = tmp_path / "static"
    d.mkdir()
    (d / "a.css").write_text("body{}")
    srv = start_server("--static-map", f"/static={d}", "testapp:app")
    out = exchange(
        srv,
        b"GET /static/a.css HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 \r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    # Gunicorn refuses the whole request (its body breaks the chunk-size rule); either way
    # there is one answer, then the connection is closed: the smuggled POST and the GET
    # behind it never reach the app.
    assert out.startswith(b"HTTP/1.1 400") or out.startswith(b"HTTP/1.1 200"), out
    assert b"REQUEST_METHOD" not in out, out
    assert out.count(b"HTTP/1.1 ") == 1, out


def test_upgrade_header_alone_keeps_the_connection_usable(start_server):
    """curl offers `Upgrade: h2c` on plain requests; a server that does not switch just
    answers, and the next request on the connection is served normally."""
    srv = start_server("testapp:app")
    out = exchange(
        srv,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200") == 2, out


def test_smuggled_request_behind_an_unread_expect_body_is_not_served(start_server):
    """The app answers without reading an `Expect: 100-continue` body; hyper discards the
    body, and a violation inside it still ends the connection."""
    srv = start_server("testapp:app")
    out = exchange(
        srv,
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\n\r\n"
        b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert b"REQUEST_METHOD" not in out, out


def test_zero_padded_content_length_cannot_hide_a_smuggled_head(start_server):
    """A Content-Length padded past what the framing scanner keeps of a line: the first
    request is served with its real length; what follows is not trusted, so the
    duplicate-Content-Length request behind it is refused, as Gunicorn refuses it."""
    srv = start_server("testapp:app")
    out = exchange(
        srv,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 1100 + b"18\r\n\r\n"
        b"GET / HTTP/1.1\r\n\r\n"
        b"POST /environ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert out.startswith(b"HTTP/1.1 200"), out
    assert b"GET / HTTP/1.1\r\n\r\n" in out, out  # the echoed body
    assert b"REQUEST_METHOD" not in out, out
    assert out.count(b"HTTP/1.1 400") == 1, out


def test_non_ascii_far_into_the_request_line_is_refused(start_server):
    srv = start_server("testapp:app")
    out = exchange(srv, b"GET /" + b"a" * 1100 + "é".encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out


def test_a_fragment_counts_toward_limit_request_line(start_server):
    """Gunicorn measures the raw request line; the URI hyper hands over has no fragment."""
    srv = start_server("--limit-request-line", "100", "testapp:app")
    out = exchange(srv, b"GET /#" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414"), out
    assert b"Request Line is too large (215 &gt; 100)" in out or b"Request Line is too large (215 > 100)" in out, out
    ok = exchange(srv, b"GET /#" + b"a" * 80 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok


def test_an_unfinished_request_line_past_the_limit_names_both_lengths(start_server):
    """Gunicorn's read_line refuses a line without its end as soon as it is past the
    limit, with the bytes read so far and the limit in the reason."""
    srv = start_server("--limit-request-line", "100", "testapp:app")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET /" + b"a" * 300)
        out = recv_all(s, 3)
    assert out.startswith(b"HTTP/1.1 414"), out
    assert b"Request Line is too large (305 &gt; 100)" in out or b"Request Line is too large (305 > 100)" in out, out
    assert srv.wait_for("Request Line is too large (305 > 100)", timeout=5)


def test_a_bare_lf_before_the_request_line_is_refused(start_server):
    """RFC 9112 2.2 lets a server skip a CRLF before a request line; Gunicorn skips
    nothing else."""
    srv = start_server("testapp:app")
    out = exchange(srv, b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    ok = exchange(srv, b"\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok


def test_a_bare_lf_in_an_unfinished_head_is_refused_at_once(start_server):
    """Gunicorn answers a bare LF as soon as it reads it; a head that never ends must not
    wait for the head timeout."""
    import time

    srv = start_server("testapp:app")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\n")
        out = recv_all(s, 3)
    assert out.startswith(b"HTTP/1.1 400"), out
    assert time.monotonic() - t0 < 2.5, out
    assert srv.wait_for("bare LF as line terminator", timeout=5)


def test_an_app_framing_its_response_two_ways_gets_a_500_and_the_connection_stays_in_step(start_server):
    """Two different Content-Length headers from the app: sending one and the body cut to
    the other would make the next response on the connection part of this one."""
    srv = start_server("testapp:app")
    out = exchange(
        srv,
        b"GET /lengths?5,3 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /lengths?5,5 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /lengths?+5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    first, rest = out.split(b"</html>\n", 1)
    assert first.startswith(b"HTTP/1.1 500"), out
    # The 500 closes the connection (as Gunicorn's error page does).
    assert rest == b"", out
    assert srv.wait_for("conflicting Content-Length headers (5 and 3)", timeout=5)
    same = exchange(srv, b"GET /lengths?5,5 HTTP/1.1\r\nHost: x\r\n\r\nGET /lengths?+5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert same.lower().count(b"content-length: 5\r\n") == 2, same
    assert same.count(b"HTTP/1.1 200") == 2 and same.count(b"hello") == 2, same


def test_a_small_body_that_stops_arriving_is_answered_408_at_the_timeout(start_server):
    """The front end reads bodies up to 64 KiB before calling the app; a client that
    stops sending must not hold its connection (and its --worker-connections slot)."""
    import time

    srv = start_server("--timeout", "2", "testapp:app")
    for head in (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ):
        with socket.create_connection((srv.host, srv.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(head)
            out = recv_all(s, 8)
            elapsed = time.monotonic() - t0
        assert out.startswith(b"HTTP/1.1 408"), out
        assert 1.5 < elapsed < 5, elapsed
