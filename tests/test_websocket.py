"""End-to-end tests of WebSockets (issue 7) through the real `ferricorn` command and real
clients: the `websockets` library for most, a raw socket for the handshake bytes.

Covers the RFC 6455 opening handshake (101, Upgrade/Connection, Sec-WebSocket-Accept,
subprotocol), the ASGI `websocket` scope and message rules (connect, accept with a
subprotocol, text/binary send and receive, close codes and reasons, disconnect with the
client's code, 403 when the app closes before accepting, 500 when it fails before
accepting (uvicorn's answer), 1011 when it fails after, 1000 when it returns), `--websocket-max-message-size` (1009), keep-alive and
ping/pong, FastAPI and Starlette endpoints under the uvicorn worker class, concurrency,
HTTP alongside websockets, and a graceful stop with an open websocket."""

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

import pytest


requests = pytest.importorskip("requests")
websockets = pytest.importorskip("websockets")

from websockets.asyncio.client import connect as aconnect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect as sconnect  # noqa: E402

RAW = "ws_raw:app"
FASTAPI = "ws_frameworks:app"
STARLETTE = "ws_frameworks:starlette_app"
TIMEOUT = 10
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------- helpers


def ws_url(srv, path):
    return f"ws://{srv.host}:{srv.port}{path}"


def connect(srv, path, **kw):
    """A sync `websockets` client: no proxy, no client keepalive pings (so idleness is
    real), no size limit on what the server sends. Use it with `with`."""
    opts = dict(proxy=None, open_timeout=TIMEOUT, close_timeout=5, ping_interval=None, max_size=None)
    opts.update(kw)
    return sconnect(ws_url(srv, path), **opts)


def aconnect_(srv, path, **kw):
    opts = dict(proxy=None, open_timeout=TIMEOUT, close_timeout=5, ping_interval=None, max_size=None)
    opts.update(kw)
    return aconnect(ws_url(srv, path), **opts)


def closed_by_server(ws, timeout=TIMEOUT):
    """Waits for the server to close; returns the close frame the client received (None
    when the connection ended without one)."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    return info.value.rcvd


def record(srv):
    r = requests.get(srv.url + "/record", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def handshake_status(srv, path):
    """Opens a websocket that the server must refuse; returns the HTTP status and body."""
    with pytest.raises(InvalidStatus) as info:
        with connect(srv, path):
            pass
    resp = info.value.response
    return resp.status_code, resp.body


def read_head(sock, timeout=TIMEOUT):
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], headers, rest


def recv_exact(sock, n, buf):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf[:n], buf[n:]


def read_frame(sock, buf):
    """One frame from the server: (fin, opcode, masked, payload, rest)."""
    hdr, buf = recv_exact(sock, 2, buf)
    fin, opcode = hdr[0] >> 7, hdr[0] & 0x0F
    masked, n = hdr[1] >> 7, hdr[1] & 0x7F
    if n == 126:
        ext, buf = recv_exact(sock, 2, buf)
        n = struct.unpack("!H", ext)[0]
    elif n == 127:
        ext, buf = recv_exact(sock, 8, buf)
        n = struct.unpack("!Q", ext)[0]
    mask = b""
    if masked:
        mask, buf = recv_exact(sock, 4, buf)
    payload, buf = recv_exact(sock, n, buf)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, masked, payload, buf


def client_frame(opcode, payload):
    """A masked client frame (RFC 6455 §5.3: clients must mask)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
def raw_srv(start_server):
    """A single-worker server running the raw websocket app (one per test, so a wedged
    worker fails only the test that wedged it)."""
    return start_server(RAW, "-w", "1")


# --------------------------------------------------------------------------- 1. handshake and scope


def test_handshake_raw_bytes(raw_srv):
    # The sample key of RFC 6455 §1.3, and the accept value computed per §4.2.2.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    req = (
        "GET /scope?raw=1 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{raw_srv.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: x-unknown, chat.v2\r\n"
        "\r\n"
    ).encode()
    with raw_srv.connect(TIMEOUT) as s:
        s.sendall(req)
        status, headers, rest = read_head(s)
        assert status.startswith("HTTP/1.1 101"), (status, headers)
        assert [v.lower() for v in headers["upgrade"]] == ["websocket"], headers
        assert "upgrade" in [t.strip().lower() for v in headers["connection"] for t in v.split(",")], headers
        assert headers["sec-websocket-accept"] == [expected], headers
        assert headers["sec-websocket-protocol"] == ["chat.v2"], headers
        # No permessage-deflate or other extension was asked for, so none is answered.
        assert "sec-websocket-extensions" not in headers, headers

        # The app's first message: one unmasked text frame (§5.1: servers never mask).
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert (fin, opcode, masked) == (1, 0x1, 0)
        info = json.loads(payload)
        assert info["_chosen"] == "chat.v2"
        assert info["subprotocols"] == ["x-unknown", "chat.v2"]

        # A masked text frame is echoed.
        s.sendall(client_frame(0x1, "hi raw".encode()))
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert (fin, opcode, masked, payload) == (1, 0x1, 0, b"hi raw")

        # Close handshake: the server answers our close frame with one of its own.
        s.sendall(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x8 and masked == 0
        assert struct.unpack("!H", payload[:2])[0] == 1000


def test_websocket_scope_keys(raw_srv):
    with connect(raw_srv, "/scope?a=1&b=two", subprotocols=["x-unknown", "chat.v1", "chat.v2"],
                 additional_headers={"X-Custom": "yes"}) as ws:
        assert ws.subprotocol == "chat.v1"
        info = json.loads(ws.recv(timeout=TIMEOUT))
    assert info["type"] == "websocket"
    assert info["scheme"] == "ws"
    assert info["path"] == "/scope"
    assert info["raw_path"] == "/scope"
    assert info["query_string"] == "a=1&b=two"
    assert info["root_path"] == ""
    assert "method" not in info
    assert info["http_version"] in ("1.1", "1.0")
    assert info["asgi"]["version"] == "3.0"
    assert info["subprotocols"] == ["x-unknown", "chat.v1", "chat.v2"]
    assert info["_first"] == {"type": "websocket.connect"}
    assert info["_chosen"] == "chat.v1"
    types = info["_types"]
    assert (types["query_string"], types["raw_path"], types["subprotocols"]) == ("bytes", "bytes", "list"), types
    assert types["header_item"] in (["tuple"], ["list"]) and types["header_name_value"] == ["bytes"], types
    headers = {}
    for k, v in info["headers"]:
        headers.setdefault(k, []).append(v)
    assert all(k == k.lower() for k in headers)
    assert headers["x-custom"] == ["yes"]
    assert headers["upgrade"][0].lower() == "websocket"
    assert "sec-websocket-key" in headers
    assert headers["sec-websocket-protocol"] == ["x-unknown, chat.v1, chat.v2"]
    host, port = info["client"]
    assert host == "127.0.0.1" and isinstance(port, int)
    assert info["server"] == ["127.0.0.1", raw_srv.port]


def test_no_subprotocol_when_none_offered(raw_srv):
    with connect(raw_srv, "/scope") as ws:
        assert ws.subprotocol is None
        info = json.loads(ws.recv(timeout=TIMEOUT))
    assert info["subprotocols"] == []
    assert info["_chosen"] is None


def test_accept_with_headers(raw_srv):
    with connect(raw_srv, "/accept-headers") as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["x-ws-app"] == "hello"
        assert ws.response.headers["set-cookie"] == "a=1"
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT) == "x"


# --------------------------------------------------------------------------- 1. messages


def test_text_and_binary_echo(raw_srv):
    with connect(raw_srv, "/echo?key=tb") as ws:
        ws.send("héllo wörld ✓")
        assert ws.recv(timeout=TIMEOUT) == "héllo wörld ✓"
        ws.send(b"\x00\x01\xffbinary")
        got = ws.recv(timeout=TIMEOUT)
        assert isinstance(got, bytes) and got == b"\x00\x01\xffbinary"
        ws.send("")
        assert ws.recv(timeout=TIMEOUT) == ""
        ws.send(b"")
        assert ws.recv(timeout=TIMEOUT) == b""


def test_connect_is_the_first_message_even_after_an_early_accept(raw_srv):
    """ASGI: websocket.connect is what the first receive() returns, also for an app
    that accepts before it receives (uvicorn delivers it the same way)."""
    with connect(raw_srv, "/accept-first") as ws:
        assert ws.recv(timeout=TIMEOUT) == "websocket.connect"
        ws.send("after")
        assert ws.recv(timeout=TIMEOUT) == "after"


def test_a_cancelled_receive_loses_no_message(raw_srv):
    with connect(raw_srv, "/timed-receive") as ws:
        time.sleep(0.6)  # after the app's receive() timed out, before it asks again
        ws.send("m1")
        time.sleep(1.0)
        ws.send("m2")
        assert ws.recv(timeout=TIMEOUT) == "timeout m1"


def test_send_waits_for_a_client_that_does_not_read(raw_srv):
    """uvicorn's backpressure: past ~1 MiB queued, the app's send() waits for the client;
    a subscriber that reads nothing cannot make the worker buffer 64 MiB."""
    s = socket.create_connection(("127.0.0.1", raw_srv.port), timeout=TIMEOUT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        assert read_head(s)[0].startswith("HTTP/1.1 101")
        time.sleep(2.0)
        sent = record(raw_srv)["flood_sent"]
        # 1 MiB queued plus what the kernel's socket buffers hold.
        assert 0 < sent < 300, sent
    finally:
        s.close()
    end = wait_until(lambda: record(raw_srv).get("flood_end"), 10)
    assert end and end != "all sent", record(raw_srv)


def test_many_round_trips(raw_srv):
    with connect(raw_srv, "/echo?key=many") as ws:
        for i in range(1000):
            if i % 2:
                ws.send(f"msg-{i}")
                assert ws.recv(timeout=TIMEOUT) == f"msg-{i}"
            else:
                data = i.to_bytes(4, "big") * 8
                ws.send(data)
                assert ws.recv(timeout=TIMEOUT) == data


def test_pipelined_messages_in_both_directions(raw_srv):
    # The server sends 1000 messages unprompted while the client sends 1000 without
    # waiting; order is kept in both directions.
    with connect(raw_srv, "/burst?n=1000") as ws:
        for i in range(1000):
            ws.send(f"cli-{i}")
        got = [ws.recv(timeout=5) for _ in range(2000)]
    srv_msgs = [m for m in got if m.startswith("srv-")]
    cli_msgs = [m for m in got if m.startswith("cli-")]
    assert srv_msgs == [f"srv-{i}" for i in range(1000)]
    assert cli_msgs == [f"cli-{i}" for i in range(1000)]


def test_large_message_default_limit(raw_srv):
    big = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)
    assert len(big) == 1024 * 1024
    with connect(raw_srv, "/echo?key=big") as ws:
        ws.send(big)
        got = ws.recv(timeout=TIMEOUT)
        assert len(got) == len(big) and got == big
        text = "ä" * (512 * 1024)  # 1 MiB of UTF-8
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text


# --------------------------------------------------------------------------- 1. closing


def test_server_close_with_code_and_reason(raw_srv):
    with connect(raw_srv, "/close?code=4001&reason=going-away-now") as ws:
        ws.send("please close")
        rcvd = closed_by_server(ws)
    assert rcvd is not None
    assert rcvd.code == 4001
    assert rcvd.reason == "going-away-now"


def test_client_close_reaches_app_as_disconnect(raw_srv):
    with connect(raw_srv, "/echo?key=client_close") as ws:
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT) == "x"
        ws.close(code=4321, reason="client says bye")
        # The server completed the close handshake with the same code.
        assert ws.close_code == 4321
    msg = wait_until(lambda: record(raw_srv).get("client_close"))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == 4321, msg
    assert msg["reason"] == "client says bye", msg


def test_client_close_without_code_is_1005(raw_srv):
    # A close frame with no status code: the app's websocket.disconnect has code 1005
    # (ASGI spec), and the server's answering close frame carries no code either (§5.5.1).
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        "GET /echo?key=close_nocode HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()
    with raw_srv.connect(TIMEOUT) as s:
        s.sendall(req)
        status, headers, rest = read_head(s)
        assert status.startswith("HTTP/1.1 101"), status
        s.sendall(client_frame(0x8, b""))
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x8
    msg = wait_until(lambda: record(raw_srv).get("close_nocode"))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == 1005, msg
    assert msg["reason"] == "", msg


def _raw_session(srv, key):
    """A raw-socket WebSocket session on /echo?key=KEY: (socket, bytes read past the 101)."""
    ws_key = base64.b64encode(os.urandom(16)).decode()
    s = srv.connect(TIMEOUT)
    s.sendall(
        (
            f"GET /echo?key={key} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status, _, rest = read_head(s)
    assert status.startswith("HTTP/1.1 101"), status
    return s, rest


@pytest.mark.parametrize(
    "key, frame, code",
    [
        # A text message that is not UTF-8: 1007 (RFC 6455 §7.4.1), as uvicorn answers.
        ("bad_utf8", client_frame(0x1, b"ok \xff\xfe"), 1007),
        # A reserved opcode: a protocol error, 1002.
        ("bad_opcode", client_frame(0x3, b"x"), 1002),
    ],
)
def test_broken_message_gets_its_close_code(raw_srv, key, frame, code):
    s, rest = _raw_session(raw_srv, key)
    with s:
        s.sendall(frame)
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x8 and not masked, (opcode, payload)
        assert struct.unpack("!H", payload[:2])[0] == code, payload
    msg = wait_until(lambda: record(raw_srv).get(key))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == code, msg


def test_keepalive_pings_and_their_timeout(start_server):
    # uvicorn's keepalive: a ping after each interval, counted from the last pong; a ping
    # left unanswered closes the session with 1011, and the app hears 1011.
    srv = start_server(RAW, "-w", "1", "--websocket-ping-interval", "1", "--websocket-ping-timeout", "1")
    s, rest = _raw_session(srv, "keepalive")
    with s:
        t0 = time.monotonic()
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x9, opcode
        assert 0.5 < time.monotonic() - t0 < 3
        s.sendall(client_frame(0xA, payload))
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x9, opcode
        # No pong this time.
        t1 = time.monotonic()
        fin, opcode, masked, payload, rest = read_frame(s, rest)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011, (opcode, payload)
        assert 0.5 < time.monotonic() - t1 < 3
    msg = wait_until(lambda: record(srv).get("keepalive"))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == 1011, msg


def test_keepalive_keeps_an_answering_client(start_server):
    srv = start_server(RAW, "-w", "1", "--websocket-ping-interval", "1", "--websocket-ping-timeout", "1")
    # The websockets client answers pings itself (its own pings off).
    with connect(srv, "/echo?key=answering", ping_interval=None) as ws:
        time.sleep(3.5)
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


def test_client_drops_connection_is_1006(raw_srv):
    with connect(raw_srv, "/echo?key=dropped") as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        # Gone without a close frame.
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
    msg = wait_until(lambda: record(raw_srv).get("dropped"))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == 1006, msg


def test_close_before_accept_is_403(raw_srv):
    status, _ = handshake_status(raw_srv, "/deny")
    assert status == 403
    assert record(raw_srv)["deny_first"] == {"type": "websocket.connect"}


def test_denial_response_extension(raw_srv):
    status, body = handshake_status(raw_srv, "/deny-response")
    assert (status, body) == (401, b"no token")
    assert record(raw_srv)["deny_ext"] is True


def test_raise_before_accept_is_500_with_traceback(raw_srv):
    # uvicorn (send_500_response) and Gunicorn's asgi worker answer 500: the app failed,
    # it did not refuse.
    status, _ = handshake_status(raw_srv, "/raise-before")
    assert status == 500
    assert wait_until(lambda: "ws-boom-before-accept" in raw_srv.log()), raw_srv.log()
    log = raw_srv.log()
    assert "Traceback" in log and "RuntimeError: ws-boom-before-accept" in log


def test_raise_after_accept_is_1011(raw_srv):
    with connect(raw_srv, "/raise-after") as ws:
        ws.send("trigger")
        rcvd = closed_by_server(ws)
    assert rcvd is not None and rcvd.code == 1011, rcvd
    assert wait_until(lambda: "RuntimeError: ws-boom-after-accept" in raw_srv.log()), raw_srv.log()


def test_return_after_accept_is_1000(raw_srv):
    with connect(raw_srv, "/return-after") as ws:
        ws.send("trigger")
        rcvd = closed_by_server(ws)
    assert rcvd is not None and rcvd.code == 1000, rcvd


def test_server_still_serves_after_errors(raw_srv):
    # The failures above must not have hurt the worker.
    with connect(raw_srv, "/echo?key=after_errors") as ws:
        ws.send("still alive")
        assert ws.recv(timeout=TIMEOUT) == "still alive"


# --------------------------------------------------------------------------- 2. max message size


def test_max_message_size(start_server):
    srv = start_server(RAW, "-w", "1", "--websocket-max-message-size", "1000")
    with connect(srv, "/echo?key=small") as ws:
        ws.send("a" * 900)
        assert ws.recv(timeout=TIMEOUT) == "a" * 900
        ws.send(b"b" * 1000)
        assert ws.recv(timeout=TIMEOUT) == b"b" * 1000
    with connect(srv, "/echo?key=too_big") as ws:
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT) == "ok"
        ws.send(b"x" * 2000)
        rcvd = closed_by_server(ws)
    assert rcvd is not None and rcvd.code == 1009, rcvd
    msg = wait_until(lambda: record(srv).get("too_big"))
    assert msg["type"] == "websocket.disconnect" and msg["code"] == 1009, msg


def test_max_message_size_fragmented(start_server):
    # The limit is on the message, not the frame: 3 fragments of 500 bytes -> 1009.
    srv = start_server(RAW, "-w", "1", "--websocket-max-message-size", "1000")
    with connect(srv, "/echo?key=frag") as ws:
        ws.send(iter([b"y" * 300, b"y" * 300, b"y" * 300]))
        assert ws.recv(timeout=TIMEOUT) == b"y" * 900
        try:
            ws.send(iter([b"z" * 500, b"z" * 500, b"z" * 500]))
        except ConnectionClosed as e:
            # Under load the server's 1009 can arrive while the fragments still go out.
            rcvd = e.rcvd
        else:
            rcvd = closed_by_server(ws)
    assert rcvd is not None and rcvd.code == 1009, rcvd


# --------------------------------------------------------------------------- 3. keep-alive, ping


def test_keepalive_does_not_close_idle_websocket(start_server):
    srv = start_server(RAW, "-w", "1", "--keep-alive", "1")
    with connect(srv, "/echo?key=idle_ka") as ws:
        time.sleep(3)
        ws.send("still there?")
        assert ws.recv(timeout=TIMEOUT) == "still there?"


def test_ping_is_answered(raw_srv):
    async def main():
        async with aconnect_(raw_srv, "/echo?key=ping") as ws:
            for i in range(3):
                waiter = await ws.ping(f"ping-{i}".encode())
                latency = await asyncio.wait_for(waiter, 5)
                assert latency >= 0
            await ws.send("after pings")
            assert await asyncio.wait_for(ws.recv(), 5) == "after pings"

    asyncio.run(main())


def test_ping_sync_client(raw_srv):
    with connect(raw_srv, "/echo?key=ping_sync") as ws:
        assert ws.ping(b"sync").wait(5)


# --------------------------------------------------------------------------- 4. frameworks


@pytest.mark.parametrize("app", [FASTAPI, STARLETTE])
def test_framework_websocket_endpoints(start_server, tmp_path, app):
    marker = tmp_path / "ws_marker.txt"
    srv = start_server(app, "-k", "uvicorn.workers.UvicornWorker", "-w", "2", env={"WS_MARKER": str(marker)})
    pids = set()
    for n in range(4):
        if app == FASTAPI:
            with connect(srv, f"/ws/lobby?name=u{n}") as ws:
                for i in range(3):
                    ws.send(f"hello {i}")
                    got = json.loads(ws.recv(timeout=TIMEOUT))
                    assert got["room"] == "lobby" and got["name"] == f"u{n}" and got["echo"] == f"hello {i}"
                    pids.add(got["pid"])
                ws.close(code=4000 + n if n else 1000)
        else:
            with connect(srv, "/ws") as ws:
                assert ws.recv(timeout=TIMEOUT) == "welcome"
                ws.send("shout")
                assert ws.recv(timeout=TIMEOUT) == "SHOUT"
                ws.close(code=4000 + n)
    kind = "fastapi" if app == FASTAPI else "starlette"
    codes = [1000, 4001, 4002, 4003] if app == FASTAPI else [4000, 4001, 4002, 4003]
    expected = sorted(f"{kind} disconnect {c}" for c in codes)
    got = wait_until(lambda: marker.exists() and len(marker.read_text().splitlines()) >= 4 and sorted(marker.read_text().splitlines()))
    assert got == expected, got
    # Plain HTTP still works on the same server.
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200


def test_fastapi_unknown_websocket_route_is_403(start_server):
    srv = start_server(FASTAPI, "-k", "uvicorn.workers.UvicornWorker", "-w", "1")
    status, _ = handshake_status(srv, "/nope")
    assert status == 403


# --------------------------------------------------------------------------- 5. concurrency


def test_concurrent_websockets_one_worker(start_server):
    srv = start_server(RAW, "-w", "1")

    async def client(n):
        async with aconnect_(srv, f"/echo?key=c{n}") as ws:
            for i in range(20):
                msg = f"{n}:{i}"
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == msg
        return n

    async def main():
        return await asyncio.gather(*(client(n) for n in range(50)))

    t0 = time.monotonic()
    done = asyncio.run(main())
    assert sorted(done) == list(range(50))
    assert time.monotonic() - t0 < 30


def test_concurrent_pipelined_websockets_keep_worker_alive(start_server):
    """20 clients on one worker, each sending 40 bursts of 100 messages without waiting
    and then reading the 100 echoes. Every message comes back in order, and afterwards
    the worker still answers HTTP (a lost wake-up of the worker's event loop would leave
    the whole worker, HTTP included, stuck)."""
    srv = start_server(RAW, "-w", "1")

    async def client(k):
        async with aconnect_(srv, f"/echo?key=p{k}", max_queue=None) as ws:
            for _ in range(40):
                for i in range(100):
                    await ws.send(f"{k}-{i}")
                for i in range(100):
                    assert await asyncio.wait_for(ws.recv(), 5) == f"{k}-{i}"
        return k

    async def main():
        return await asyncio.gather(*(client(k) for k in range(20)))

    try:
        done, err = asyncio.run(main()), None
    except (Exception, asyncio.CancelledError) as exc:
        done, err = None, exc
    try:
        alive = requests.get(srv.url + "/plain", timeout=3).status_code
    except requests.RequestException as exc:
        alive = type(exc).__name__
    assert err is None and alive == 200, f"echoes: {err!r}; plain HTTP afterwards: {alive}"
    assert sorted(done) == list(range(20))


# --------------------------------------------------------------------------- 6. HTTP alongside


def test_http_works_while_websockets_open(raw_srv):
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(raw_srv, f"/echo?key=side{n}")) for n in range(5)]
        for ws in socks:
            ws.send("open")
            assert ws.recv(timeout=TIMEOUT) == "open"
        with requests.Session() as s:
            for _ in range(20):
                r = s.get(raw_srv.url + "/plain?x=1", timeout=TIMEOUT)
                assert r.status_code == 200
                assert r.json()["type"] == "http"
        for n, ws in enumerate(socks):
            ws.send(f"still {n}")
            assert ws.recv(timeout=TIMEOUT) == f"still {n}"


def test_post_with_upgrade_is_plain_http(raw_srv):
    # Only GET can open a websocket (RFC 6455 §4.1).
    r = requests.post(
        raw_srv.url + "/plain",
        data=b"body",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and r.json()["type"] == "http", r.text


# --------------------------------------------------------------------------- 7. graceful stop


def test_graceful_stop_with_open_websocket(start_server):
    """The master exits within the graceful timeout and the client sees the connection end
    (any close code, or none; the one seen is written to stderr)."""
    srv = start_server(RAW, "-w", "1", "--graceful-timeout", "3")
    with connect(srv, "/idle", close_timeout=2) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        seen_closed = time.monotonic() - t0
    try:
        srv.proc.wait(10)
    except Exception:
        pass
    exited = time.monotonic() - t0
    rcvd = info.value.rcvd
    code = rcvd.code if rcvd is not None else None
    sys.stderr.write(f"\ngraceful stop: client saw close code {code} after {seen_closed:.2f}s; master exited after {exited:.2f}s\n")
    assert srv.proc.returncode is not None, "master did not exit"
    assert exited < 3 + 2.5, exited
    assert seen_closed < 3 + 2.5, seen_closed


def test_graceful_stop_closes_websocket_properly(start_server, tmp_path):
    """Issue 7: a graceful stop lets open websockets "close properly": the server starts
    the closing handshake with a close frame (RFC 6455 §7.4.1: 1001 "going away"; uvicorn
    sends 1012 "service restart") rather than dropping the TCP connection, and the app's
    pending receive() gets websocket.disconnect before the worker exits."""
    marker = tmp_path / "idle.txt"
    srv = start_server(RAW, "-w", "1", "--graceful-timeout", "3", env={"WS_IDLE_MARKER": str(marker)})
    with connect(srv, "/idle", close_timeout=2) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        srv.send_signal(signal.SIGTERM)
        rcvd = closed_by_server(ws)
    srv.proc.wait(10)
    assert rcvd is not None, "connection dropped without a close frame (client sees 1006)"
    assert rcvd.code in (1001, 1012), rcvd
    lines = marker.read_text().splitlines() if marker.exists() else []
    assert lines, "the app never received websocket.disconnect"
    msg = json.loads(lines[0])
    assert msg["type"] == "websocket.disconnect" and isinstance(msg["code"], int), msg


@pytest.mark.parametrize(
    "extra, status",
    [
        (b"Sec-WebSocket-Version: 13\r\n", 400),  # no key
        (b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n", 400),  # not 16 bytes
        (b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 426),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 426),  # no version
    ],
    ids=["no-key", "bad-key", "version-8", "no-version"],
)
def test_invalid_handshake_is_refused(raw_srv, extra, status):
    # RFC 6455 4.2.2, as Gunicorn's and uvicorn's ASGI workers answer: the app does not
    # get these as plain HTTP requests.
    with socket.create_connection(("127.0.0.1", raw_srv.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra + b"\r\n")
        status_line, headers, _ = read_head(s)
    assert status_line.split()[1] == str(status), status_line
    if status == 426:
        assert headers.get("sec-websocket-version") == ["13"], headers
