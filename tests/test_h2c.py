"""--http2-cleartext prior-knowledge|upgrade|both: HTTP/2 without TLS, for peers in
--forwarded-allow-ips only (as Gunicorn 27), HTTP/1.1 still served on the same port."""

import json
import subprocess

import httpx
import pytest


def curl(*args):
    res = subprocess.run(["curl", "-s", "--max-time", "5", *args], capture_output=True, text=True)
    return res.returncode, res.stdout


def test_prior_knowledge_from_a_trusted_peer(start_server):
    srv = start_server("--http2-cleartext", "prior-knowledge", "testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert (rc, out) == (0, "2 200")
    rc, out = curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert (rc, out) == (0, "1.1 200")
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        r = c.post(srv.url + "/echo", content=b"x" * 100_000)
        assert r.http_version == "HTTP/2" and r.content == b"x" * 100_000
        env = c.get(srv.url + "/environ").json()
        assert env["SERVER_PROTOCOL"] == "HTTP/2.0" and env["wsgi.url_scheme"] == "http"


def test_untrusted_peer_gets_no_h2c(start_server):
    srv = start_server("--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips", "10.0.0.1", "testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out != "2 200", out
    assert curl("-o", "/dev/null", "-w", "%{http_code}", srv.url + "/")[1] == "200"


def test_off_by_default(start_server):
    srv = start_server("testapp:app")
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out != "2 200", out


def test_both_modes(start_server):
    srv = start_server("--http2-cleartext", "both", "testapp:app")
    assert "not supported" not in srv.log()
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out == "2 200"
    rc, out = curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out == "2 200"


def upgrade_request(port, path="/environ", extra=b""):
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        + b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n" + extra + b"\r\n"
    )


def test_upgrade_answers_the_first_request_on_stream_1(start_server):
    import socket

    import h2.connection
    import h2.events

    srv = start_server("--http2-cleartext", "upgrade", "testapp:app")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(upgrade_request(srv.port, "/environ?q=1"))
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"upgrade: h2c" in head.lower()
    conn = h2.connection.H2Connection()
    conn.initiate_upgrade_connection()
    s.sendall(conn.data_to_send())
    body, status, ended = b"", None, False
    events = conn.receive_data(rest) if rest else []
    while not ended:
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                status = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
                body += ev.data
                conn.acknowledge_received_data(len(ev.data), 1)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                ended = True
        s.sendall(conn.data_to_send())
        if not ended:
            events = conn.receive_data(s.recv(65536))
    assert status == b"200"
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert env["PATH_INFO"] == "/environ" and env["QUERY_STRING"] == "q=1"
    assert env["HTTP_HOST"] == "127.0.0.1:%d" % srv.port
    assert "HTTP_UPGRADE" not in env and "HTTP_HTTP2_SETTINGS" not in env
    # The connection goes on as HTTP/2: a second stream.
    conn.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")], end_stream=True)
    s.sendall(conn.data_to_send())
    got = b""
    done = False
    while not done:
        for ev in conn.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id == 3:
                got += ev.data
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 3:
                done = True
    assert got
    s.close()


def test_upgrade_mode_does_not_serve_prior_knowledge(start_server):
    srv = start_server("--http2-cleartext", "upgrade", "testapp:app")
    rc, out = curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out == "2 200"
    rc, out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out != "2 200", out


def test_upgrade_ignored_for_untrusted_peers_and_bodies_and_when_off(start_server):
    srv = start_server("--http2-cleartext", "upgrade", "--forwarded-allow-ips", "10.0.0.1", "testapp:app")
    rc, out = curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", srv.url + "/")
    assert out == "1.1 200", out
    off = start_server("testapp:app")
    rc, out = curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", off.url + "/")
    assert out == "1.1 200", out
    on = start_server("--http2-cleartext", "upgrade", "testapp:app")
    # A request with a body is served on HTTP/1.1 (RFC 9110 lets a server ignore Upgrade).
    res = on.raw(upgrade_request(on.port, "/echo", b"Content-Length: 5\r\nConnection: close\r\n")[:-2]
                 + b"\r\nhello")
    assert res.startswith(b"HTTP/1.1 200"), res[:200]
    assert res.endswith(b"hello")


def test_upgrade_to_an_asgi_app(start_server):
    srv = start_server("--http2-cleartext", "upgrade", "asgi_raw:app")
    rc, out = curl("--http2", "-w", " %{http_version}", srv.url + "/scope")
    assert rc == 0 and out.endswith(" 2"), out
    scope = json.loads(out.rsplit(" ", 1)[0])
    assert scope["http_version"] == "2"


def test_bodiless_responses_end_the_stream_on_http2(start_server):
    # hyper's HTTP/2 server sends whatever the body holds: HEAD, 204 and 304 must end
    # the stream with their headers (a declared Content-Length stays, as on HTTP/1).
    srv = start_server("--http2-cleartext", "prior-knowledge", "wsgi_app:app")
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        r = c.head(srv.url + "/head")
        assert (r.http_version, r.status_code, r.content) == ("HTTP/2", 200, b"")
        assert r.headers["content-length"] == str(len(b"a body that HEAD must not send\n"))
        r = c.head(srv.url + "/body-shorter?mode=empty")
        assert (r.status_code, r.headers["content-length"], r.content) == (200, "10", b"")
        r = c.get(srv.url + "/status?s=304%20Not%20Modified")
        assert (r.status_code, r.content) == (304, b"")
        r = c.get(srv.url + "/no-content")
        assert (r.status_code, r.content) == (204, b"")
        # A body short of its declared length is reset, not ended as if complete.
        with pytest.raises(httpx.HTTPError):
            c.get(srv.url + "/body-shorter?mode=gen")
        assert c.get(srv.url + "/head").status_code == 200


# --------------------------------------------------------------------------- RFC 9113 request rules


def _h2_conn(srv):
    """A raw HTTP/2 connection (prior knowledge) driven by the `h2` library."""
    import socket

    import h2.config
    import h2.connection

    sock = socket.create_connection((srv.host, srv.port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None,
                                                                validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _h2_exchange(srv, headers, body=None, end_stream=True):
    """One request: (status, body bytes)."""
    import h2.events

    sock, conn = _h2_conn(srv)
    with sock:
        conn.send_headers(1, headers, end_stream=body is None and end_stream)
        if body is not None:
            for i in range(0, len(body), 16384):
                conn.send_data(1, body[i:i + 16384], end_stream=i + 16384 >= len(body))
        sock.sendall(conn.data_to_send())
        status, data = None, b""
        while True:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return status, data
            sock.sendall(conn.data_to_send())


def _req(path, *extra, method=b"GET"):
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"127.0.0.1"), (b":path", path), *extra]


@pytest.fixture
def h2_srv(start_server):
    return start_server("--http2-cleartext", "prior-knowledge", "--threads", "2", "testapp:app")


def test_body_without_content_length_reaches_the_app(h2_srv):
    # HTTP/2 needs no Content-Length (RFC 9113 §8.1): the stream's end frames the body.
    body = b"0123456789" * 3000
    status, data = _h2_exchange(h2_srv, _req(b"/echo", method=b"POST"), body=body)
    assert (status, data) == (200, body)
    # And a body-less request still gets the shared empty input.
    status, data = _h2_exchange(h2_srv, _req(b"/environ"))
    assert status == 200 and json.loads(data)["wsgi.input"] == "EmptyInput"


def test_split_cookies_are_joined_with_semicolons(h2_srv):
    crumbs = [(b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    status, data = _h2_exchange(h2_srv, _req(b"/environ", *crumbs))
    assert status == 200 and json.loads(data)["HTTP_COOKIE"] == "a=1; b=2; c=3"
    # Many crumbs are one field for limit_request_fields (Gunicorn serves this).
    status, data = _h2_exchange(h2_srv, _req(b"/environ", *[(b"cookie", b"c%d=v" % i) for i in range(300)]))
    assert status == 200 and json.loads(data)["HTTP_COOKIE"].count("; ") == 299


def test_host_must_match_authority(h2_srv):
    status, data = _h2_exchange(h2_srv, _req(b"/environ", (b"host", b"other.example")))
    assert status == 400 and b"does not match :authority" in data
    status, data = _h2_exchange(h2_srv, _req(b"/environ", (b"host", b"127.0.0.1")))
    assert status == 200


def test_padded_header_value_is_malformed(h2_srv):
    status, _ = _h2_exchange(h2_srv, _req(b"/environ", (b"x-pad", b" a")))
    assert status == 400


def test_reset_streams_do_not_run_the_app(start_server, tmp_path):
    # Streams accepted, queued for the app threads, then reset by the client: the app
    # must not run them all (the worker would be busy for 40 x 0.5 s).
    import time

    srv = start_server("--http2-cleartext", "prior-knowledge", "--threads", "1", "testapp:app")
    sock, conn = _h2_conn(srv)
    with sock:
        ids = list(range(1, 81, 2))
        for sid in ids:
            conn.send_headers(sid, _req(b"/sleep?0.5"), end_stream=True)
        sock.sendall(conn.data_to_send())
        time.sleep(0.2)
        for sid in ids:
            conn.reset_stream(sid)
        sock.sendall(conn.data_to_send())
    time.sleep(0.2)
    t0 = time.monotonic()
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        assert c.get(srv.url + "/environ").status_code == 200
    assert time.monotonic() - t0 < 3, "the reset streams still ran"


def test_a_connection_that_reads_nothing_cannot_hold_every_thread(start_server):
    # Streaming responses to an HTTP/2 client that never opens its flow-control window:
    # one connection runs at most half the threads' requests, so others are served.
    import h2.settings
    import time

    srv = start_server("--http2-cleartext", "prior-knowledge", "--threads", "4", "testapp:app")
    sock, conn = _h2_conn(srv)
    with sock:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for sid in range(1, 17, 2):
            conn.send_headers(sid, _req(b"/stream?200000"), end_stream=True)
        sock.sendall(conn.data_to_send())
        time.sleep(1)
        t0 = time.monotonic()
        with httpx.Client(timeout=10) as c:
            for _ in range(3):
                assert c.get(srv.url + "/environ").status_code == 200
        assert time.monotonic() - t0 < 3


def _h2_events_until(sock, conn, pred, timeout=5.0):
    """Reads frames until `pred(events so far)` holds; returns the events."""
    import time

    events = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline and not pred(events):
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        events += conn.receive_data(chunk)
        sock.sendall(conn.data_to_send())
    return events


def test_call_slots_are_freed_when_the_app_is_done_not_the_transfer(start_server):
    # Two slots (--threads 4). Three small responses to a client whose windows stay
    # closed: the app threads finish at once, so the third stream runs too and all three
    # heads arrive (only the bodies wait for the window).
    import h2.events
    import h2.settings

    srv = start_server("--http2-cleartext", "prior-knowledge", "--threads", "4", "testapp:app")
    sock, conn = _h2_conn(srv)
    with sock:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for sid in (1, 3, 5):
            conn.send_headers(sid, _req(b"/environ"), end_stream=True)
        sock.sendall(conn.data_to_send())
        heads = lambda evs: {e.stream_id for e in evs if isinstance(e, h2.events.ResponseReceived)}
        events = _h2_events_until(sock, conn, lambda evs: heads(evs) == {1, 3, 5})
        assert heads(events) == {1, 3, 5}, events


def test_request_deadline_counts_the_wait_for_a_call_slot(start_server):
    # One slot (--threads 2), taken by a 4 s call: the next stream of the connection gets
    # --request-deadline's 504 after 2 s instead of waiting for the slot.
    import time

    import h2.events

    srv = start_server("--http2-cleartext", "prior-knowledge", "--threads", "2", "--request-deadline", "2",
                       "testapp:app")
    sock, conn = _h2_conn(srv)
    with sock:
        conn.send_headers(1, _req(b"/sleep?4"), end_stream=True)
        conn.send_headers(3, _req(b"/environ"), end_stream=True)
        sock.sendall(conn.data_to_send())
        t0 = time.monotonic()
        status = lambda evs: [dict(e.headers)[b":status"] for e in evs
                              if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3]
        events = _h2_events_until(sock, conn, status, timeout=6)
        assert status(events) == [b"504"], events
        assert 1.5 < time.monotonic() - t0 < 3.5
