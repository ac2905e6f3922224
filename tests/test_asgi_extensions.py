"""ASGI response extensions end to end, through the real `ferricorn` command:
`scope["extensions"]`, `http.response.trailers` (HTTP/1.1 chunked trailers when the
client sent `TE: trailers` and the `Trailer` header names them; HTTP/2 trailers HEADERS
frames, seen with the h2 library) and `http.response.zerocopysend` (whole files,
offset/count/current position, mixing with `http.response.body`, HEAD, 5 MB).
Early hints are in tests/test_early_hints.py. The app is tests/apps/asgi_ext.py, run
with one worker so /record sees what the app recorded."""

import hashlib
import json
import os
import socket
import time

import httpx
import pytest

from test_early_hints import H1, _module_server, h2c, record, req

TIMEOUT = 10.0
APP = "asgi_ext:app"
TE = [("TE", "trailers")]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = _module_server(tmp_path_factory, "-w", "1", "--http2-cleartext", "prior-knowledge", APP)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("zc")
    small = os.urandom(100_000)
    big = os.urandom(5 * 1024 * 1024 + 123)
    (d / "small.bin").write_bytes(small)
    (d / "big.bin").write_bytes(big)
    return {"dir": d, "small": small, "big": big, "small_path": str(d / "small.bin"), "big_path": str(d / "big.bin")}


def get(srv, path, method="GET", headers=(), version="1.1"):
    """One request on a fresh connection: (1xx responses, final response)."""
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req(path, method=method, headers=headers, version=version))
        return c.exchange(method)


def raw(srv, path, headers=(), method="GET"):
    """Everything the server writes for one request (Connection: close)."""
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req(path, method=method, headers=[*headers, ("Connection", "close")]))
        return c._to_eof()


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ======================================================================================
# scope["extensions"]

BASE_EXTENSIONS = {"http.response.pathsend": {}, "http.response.zerocopysend": {}, "http.response.trailers": {}}


def test_extensions_on_http11(srv):
    _, r = get(srv, "/extensions")
    out = json.loads(r.body)
    assert out["http_version"] == "1.1"
    assert out["extensions"] == {**BASE_EXTENSIONS, "http.response.early_hint": {}}


def test_extensions_on_http10_have_no_early_hint(srv):
    _, r = get(srv, "/extensions", version="1.0")
    out = json.loads(r.body)
    assert out["http_version"] == "1.0"
    assert out["extensions"] == BASE_EXTENSIONS


def test_extensions_on_h2c_have_no_early_hint(srv):
    r = h2c(srv, "/extensions")
    out = json.loads(r.data)
    assert out["http_version"] == "2"
    assert out["extensions"] == BASE_EXTENSIONS


# ======================================================================================
# trailers over HTTP/1.1


def test_trailers_with_te_exact_bytes(srv):
    data = raw(srv, "/trailers", headers=TE)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"\r\ntransfer-encoding: chunked" in head and b"content-length" not in head.lower(), head
    assert b"\r\ntrailer: x-checksum, x-count" in head, head
    # The chunks carry the body; the last chunk is followed by the trailer section.
    assert body.endswith(b"0\r\nx-checksum: abc123\r\nx-count: 2\r\n\r\n"), body


def test_trailers_with_te_parsed(srv):
    _, r = get(srv, "/trailers", headers=TE)
    assert (r.status, r.framing, r.body) == (200, "chunked", b"hello world")
    assert r.trailers == [("x-checksum", "abc123"), ("x-count", "2")]
    assert record(srv)["trailers_done"] is True


def test_trailers_without_te_are_not_sent_and_body_is_intact(srv):
    data = raw(srv, "/trailers")
    assert data.endswith(b"\r\n0\r\n\r\n"), data
    assert b"x-checksum: abc123" not in data
    _, r = get(srv, "/trailers")
    assert (r.status, r.framing, r.body, r.trailers) == (200, "chunked", b"hello world", [])


@pytest.mark.parametrize("te,sent", [("Trailers", True), ("deflate, trailers", True), ("trailers, deflate;q=0.5", True), ("gzip", False)])
def test_trailers_te_header_forms(srv, te, sent):
    _, r = get(srv, "/trailers", headers=[("TE", te)])
    assert r.body == b"hello world"
    assert r.trailers == ([("x-checksum", "abc123"), ("x-count", "2")] if sent else [])


def test_trailers_with_app_content_length_are_not_sent_on_http11(srv):
    """A body the app framed with Content-Length is not chunked: no trailer section, the
    body intact, the connection reusable."""
    with H1(srv.port, timeout=TIMEOUT) as c:
        for path in ("/trailers-cl", "/plain", "/trailers-cl"):
            c.send(req(path, headers=TE))
            interim, r = c.exchange()
            assert r.framing == "length" and r.trailers == []
            assert r.body == (b"plain" if path == "/plain" else b"framed!")
        assert c.quiet(0.3) == b""


def test_trailers_on_http10_body_intact(srv):
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req("/trailers", version="1.0", headers=TE))
        data = c._to_eof()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n"), data
    assert b"chunked" not in head.lower()
    assert body == b"hello world"


def test_trailers_keep_alive(srv):
    """Chunked responses with and without trailers, then a plain one, on one connection."""
    with H1(srv.port, timeout=TIMEOUT) as c:
        for headers, expect in [(TE, [("x-checksum", "abc123"), ("x-count", "2")]), ((), []), (TE, [("x-checksum", "abc123"), ("x-count", "2")])]:
            c.send(req("/trailers", headers=headers))
            interim, r = c.exchange()
            assert interim == [] and r.body == b"hello world" and r.trailers == expect
        c.send(req("/plain"))
        assert c.exchange()[1].body == b"plain"
        assert c.quiet(0.3) == b""


def test_trailers_in_several_messages_accumulate(srv):
    _, r = get(srv, "/trailers-multi", headers=TE)
    assert r.body == b"multi"
    assert r.trailers == [("x-a", "1"), ("x-b", "2"), ("x-c", "3")]


def test_forbidden_trailer_fields_are_dropped(srv):
    _, r = get(srv, "/trailers-forbidden", headers=TE)
    assert r.body == b"forbidden"
    assert r.trailers == [("x-ok", "yes")], r.trailers


def test_connection_specific_trailer_fields_are_dropped(srv):
    _, r = get(srv, "/trailers-connection", headers=TE)
    assert r.body == b"connection"
    assert r.trailers == [("x-ok", "yes")], r.trailers


def test_trailers_not_named_in_the_trailer_header(srv):
    """hyper's rule: on HTTP/1.1 only the fields the Trailer header names are sent."""
    _, r = get(srv, "/trailers-undeclared", headers=TE)
    assert r.body == b"undeclared"
    assert r.trailers == [("x-a", "1")], r.trailers
    _, r = get(srv, "/trailers-no-trailer-header", headers=TE)
    assert (r.body, r.trailers) == (b"no trailer header", [])


def test_trailers_after_a_large_streamed_body(srv):
    _, r = get(srv, "/trailers-big?n=40", headers=TE)
    block = bytes(range(256)) * 256
    assert len(r.body) == 40 * len(block) and r.body == block * 40
    assert r.trailers == [("x-total", str(40 * len(block)))]


def test_trailers_with_an_empty_body(srv):
    _, r = get(srv, "/trailers-empty-body", headers=TE)
    assert (r.status, r.body, r.trailers) == (200, b"", [("x-only", "1")])


def test_trailers_after_zerocopysend(srv, files):
    _, r = get(srv, "/trailers-zerocopy?path=" + files["small_path"], headers=TE)
    assert r.body == files["small"]
    assert r.trailers == [("x-a", "zc")]


def test_trailers_head_request(srv):
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req("/trailers", method="HEAD", headers=TE))
        interim, r = c.exchange("HEAD")
        assert r.status == 200 and r.body == b""
        # Nothing of the body or the trailers follows: the next response parses.
        c.send(req("/plain"))
        assert c.exchange()[1].body == b"plain"


# ------------------------------------------------------------------ errors


def test_trailers_without_trailers_flag_is_an_error(srv):
    _, r = get(srv, "/trailers-without-flag", headers=TE)
    assert (r.status, r.framing, r.body, r.trailers) == (200, "length", b"body", [])
    assert record(srv)["trailers_without_flag"] == "RuntimeError"


def test_trailers_before_the_last_body_is_an_error_the_app_may_recover(srv):
    _, r = get(srv, "/trailers-before-last-body", headers=TE)
    assert r.body == b"part1;early:RuntimeError"
    assert r.trailers == [("x-a", "1")]


def test_trailers_before_the_last_body_uncaught_truncates_the_response(srv):
    data = raw(srv, "/trailers-before-last-body-uncaught", headers=TE)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"part1;" in body
    # Cut short: no last chunk, and the server closed the connection.
    assert not body.endswith(b"0\r\n\r\n"), body
    assert b"unreachable" not in body
    srv.wait_for("http.response.trailers needs trailers=True")


def test_trailers_before_any_body_uncaught_is_a_500(srv):
    _, r = get(srv, "/trailers-before-body-uncaught", headers=TE)
    assert r.status == 500


def test_trailers_promised_but_never_sent_truncates_the_response(srv):
    """trailers=True, the last body, and the app returns: the response is incomplete."""
    data = raw(srv, "/trailers-never-sent", headers=TE)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"no trailers follow" in body
    assert not body.endswith(b"0\r\n\r\n"), body
    srv.wait_for("returned without completing response")


def test_trailers_twice_and_body_after_trailers_are_errors(srv):
    _, r = get(srv, "/trailers-twice", headers=TE)
    assert (r.body, r.trailers) == (b"twice", [("x-a", "1")])
    assert record(srv)["trailers_twice"] == {"trailers": "RuntimeError", "body": "RuntimeError"}


def test_body_after_the_last_body_is_an_error(srv):
    _, r = get(srv, "/trailers-body-after-last", headers=TE)
    assert r.body == b"last"
    assert r.trailers == [("x-a", "RuntimeError")]


def test_invalid_trailer_value_is_a_value_error(srv):
    _, r = get(srv, "/trailers-invalid", headers=TE)
    assert r.body == b"invalid"
    assert r.trailers == [("x-a", "ValueError")]


# ======================================================================================
# trailers over HTTP/2 (h2c prior knowledge)


def test_h2_trailers_frame(srv):
    r = h2c(srv, "/trailers")
    assert r.reset is None, r
    assert r.headers[b":status"] == b"200"
    assert r.data == b"hello world"
    assert r.trailers == {b"x-checksum": b"abc123", b"x-count": b"2"}, r
    assert "TrailersReceived" in r.events
    # The trailers end the stream: TrailersReceived comes with (before) StreamEnded.
    assert r.events.index("TrailersReceived") < r.events.index("StreamEnded")


def test_h2_trailers_sent_even_when_undeclared(srv):
    r = h2c(srv, "/trailers-no-trailer-header")
    assert r.data == b"no trailer header" and r.trailers == {b"x-a": b"1"}, r


def test_h2_trailers_with_empty_body_and_with_content_length(srv):
    r = h2c(srv, "/trailers-empty-body")
    assert r.reset is None and r.data == b"" and r.trailers == {b"x-only": b"1"}, r
    r = h2c(srv, "/trailers-cl")
    assert r.reset is None and r.data == b"framed!" and r.trailers == {b"x-a": b"1"}, r


def test_h2_multiple_trailer_messages(srv):
    r = h2c(srv, "/trailers-multi")
    assert r.data == b"multi"
    assert r.trailers == {b"x-a": b"1", b"x-b": b"2", b"x-c": b"3"}


def test_h2_forbidden_trailer_fields_are_dropped(srv):
    r = h2c(srv, "/trailers-forbidden")
    assert r.reset is None and r.data == b"forbidden", r
    assert r.trailers == {b"x-ok": b"yes"}, r


def test_h2_connection_specific_trailer_fields_are_dropped(srv):
    """HTTP/2 has no connection-specific fields; a trailers block with one is malformed
    (RFC 9113 8.2.2). The server must drop them, not fail the stream."""
    r = h2c(srv, "/trailers-connection")
    assert r.reset is None and r.data == b"connection", r
    assert r.trailers == {b"x-ok": b"yes"}, r


def test_h2_large_body_then_trailers(srv):
    r = h2c(srv, "/trailers-big?n=40")
    assert r.data == bytes(range(256)) * 256 * 40
    assert r.trailers == {b"x-total": str(40 * 65536).encode()}


def test_h2_trailers_body_with_httpx(srv):
    with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as c:
        r = c.get(srv.url + "/trailers")
        assert r.http_version == "HTTP/2" and r.status_code == 200 and r.content == b"hello world"
        r = c.get(srv.url + "/trailers-big?n=10")
        assert r.content == bytes(range(256)) * 256 * 10


def test_h2_trailers_errors(srv):
    r = h2c(srv, "/trailers-before-body-uncaught")
    assert r.headers[b":status"] == b"500"
    r = h2c(srv, "/trailers-before-last-body-uncaught")
    # Started, then cut short: the stream is reset, no trailers.
    assert r.reset is not None and r.trailers is None, r


# ======================================================================================
# zerocopysend


def zc(srv, files, which="small", method="GET", **params):
    path = files[f"{which}_path"]
    qs = "&".join(f"{k}={v}" for k, v in {"path": path, **params}.items())
    return get(srv, "/zc?" + qs, method=method)[1]


def test_zerocopysend_whole_file(srv, files):
    r = zc(srv, files)
    assert r.status == 200 and r.framing == "length"
    assert r.header("content-length") == str(len(files["small"]))
    assert r.body == files["small"]
    assert record(srv)["zc_closed"] is True


@pytest.mark.parametrize(
    "params,lo,hi",
    [
        ({"offset": 1000}, 1000, None),
        ({"count": 500}, 0, 500),
        ({"offset": 1000, "count": 500}, 1000, 1500),
        ({"offset": 0, "count": 0}, 0, 0),
        ({"seek": 2000}, 2000, None),  # default offset: the file's current position
        ({"seek": 2000, "count": 10}, 2000, 2010),
        ({"seek": 2000, "offset": 5}, 5, None),  # an explicit offset wins
        ({"offset": 99_990, "count": 1000}, 99_990, None),  # clamped at EOF
        ({"count": 10_000_000}, 0, None),
        ({"offset": 200_000}, 100_000, None),  # past EOF: empty
        ({"seek": 200_000}, 100_000, None),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_zerocopysend_offset_count_position(srv, files, params, lo, hi):
    r = zc(srv, files, **params)
    expected = files["small"][lo:hi]
    assert r.status == 200
    assert r.header("content-length") == str(len(expected)), r.headers
    assert len(r.body) == len(expected) and r.body == expected


def test_zerocopysend_keeps_app_content_length(srv, files):
    r = zc(srv, files, count=100, cl=100)
    assert r.headers.count(("content-length", "100")) == 1 and r.body == files["small"][:100]


def test_zerocopysend_file_closed_and_deleted_right_after_send(srv, files):
    p = files["dir"] / "doomed.bin"
    data = os.urandom(300_000)
    p.write_bytes(data)
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req(f"/zc?path={p}&unlink=1"))
        r = c.exchange()[1]
    assert r.body == data
    # The app unlinks after its send() returned, which may be after the client has
    # read everything: give it a moment.
    deadline = time.monotonic() + 5
    while p.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not p.exists()


def test_zerocopysend_head(srv, files):
    with H1(srv.port, timeout=TIMEOUT) as c:
        c.send(req(f"/zc?path={files['small_path']}&offset=100", method="HEAD"))
        _, r = c.exchange("HEAD")
        assert r.status == 200
        assert r.header("content-length") == str(len(files["small"]) - 100), r.headers
        # No body bytes follow: the next response on the connection parses.
        c.send(req("/plain"))
        assert c.exchange()[1].body == b"plain"
        assert c.quiet(0.2) == b""


def test_zerocopysend_mixed_with_body_messages(srv, files):
    _, r = get(srv, "/zc-mixed?path=" + files["small_path"])
    d = files["small"]
    assert r.framing == "chunked"
    assert r.body == b"<head>" + d[0:10] + b"<mid>" + d[10:15] + d[20:]


def test_zerocopysend_more_body_then_body(srv, files):
    _, r = get(srv, "/zc-then-body?path=" + files["small_path"])
    assert r.body == files["small"] + b"<tail>"


def test_zerocopysend_errors(srv, files):
    _, r = get(srv, "/zc-errors?path=" + files["small_path"])
    out = json.loads(r.body)
    assert r.status == 200
    assert all(v != "ok" for v in out.values()), out
    _, r = get(srv, "/zc-before-start?path=" + files["small_path"])
    assert r.body == b"after:RuntimeError"


def test_zerocopysend_5mb_whole(srv, files):
    r = zc(srv, files, which="big")
    assert r.header("content-length") == str(len(files["big"]))
    assert len(r.body) == len(files["big"]) and sha(r.body) == sha(files["big"])


def test_zerocopysend_5mb_in_1mb_messages(srv, files):
    _, r = get(srv, "/zc-chunks?path=" + files["big_path"])
    assert r.header("content-length") == str(len(files["big"]))
    assert sha(r.body) == sha(files["big"])


def test_zerocopysend_5mb_offset_over_keepalive(srv, files):
    with H1(srv.port, timeout=TIMEOUT) as c:
        for off in (0, 4_000_000, 1):
            c.send(req(f"/zc?path={files['big_path']}&offset={off}"))
            r = c.exchange()[1]
            assert sha(r.body) == sha(files["big"][off:]), off


def test_zerocopysend_over_h2c(srv, files):
    with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as c:
        r = c.get(srv.url + f"/zc?path={files['big_path']}&offset=7")
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert r.headers["content-length"] == str(len(files["big"]) - 7)
        assert sha(r.content) == sha(files["big"][7:])
        r = c.get(srv.url + "/zc-mixed?path=" + files["small_path"])
        d = files["small"]
        assert r.content == b"<head>" + d[0:10] + b"<mid>" + d[10:15] + d[20:]
