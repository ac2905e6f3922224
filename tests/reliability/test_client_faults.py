"""3. Client faults: a client that goes away during its headers, during its upload,
during a large streamed response; a half-closed socket (SHUT_WR after a full request:
the response must still arrive); an RST (SO_LINGER 0) in the middle of a request.

After each: the worker that served them is the same process (no crash), it serves a
counted load whole, its file descriptors come back to where they were (no leaked
connection), and the app side saw what it should (an upload cut short is an error for
the app, not a silently short body; a streamed response nobody reads any more is
closed, not produced to the end)."""

import json
import re
import socket
import struct
import time

import pytest

from conftest import children, wait_until, wait_workers

from .conftest import dur
from .loadclient import Load, fd_count, fetch, payload

_DEATHS = re.compile(r"WORKER TIMEOUT|exited with code|was sent SIG|panicked")

THREADS = pytest.mark.parametrize("threads", [1, 4], ids=["threads1", "threads4"])


def _server(rel_server, threads, *extra):
    srv = rel_server("-w", "1", "--threads", str(threads), "-t", "10", *extra)
    (pid,) = wait_workers(srv, 1)
    fetch(srv.port, "/pid")
    time.sleep(0.2)
    return srv, pid, fd_count(pid)


def _stats(port):
    r = fetch(port, "/stats")
    assert r.status == 200, r.status
    return json.loads(r.body)


def _uploads_settled(port, timeout=5.0):
    """Every /upload call that started has finished (the app is not stuck reading)."""
    return wait_until(lambda: (lambda st: st["uploads_started"] == len(st["uploads"]))(_stats(port)), timeout)


def _rst(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _connect(port, timeout=10.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _assert_healthy(srv, pid, fd_base, report, what):
    """Same worker, a counted load served whole by it, fds back to the baseline, no
    worker death in the log."""
    assert srv.proc.poll() is None, srv.log()[-3000:]
    assert children(srv.pid) == [pid], f"the worker changed: {pid} -> {children(srv.pid)}\n{srv.log()[-3000:]}"
    load = Load(srv.port, threads=2, total=100, duration=30, name="after").start().wait()
    load.check_accounting()
    assert load.failed == 0 and load.ok == 100, load.details()
    assert set(load.pids) == {pid}, dict(load.pids)
    # Connections the faults left behind must be closed (keep-alive is 2 s).
    fds = wait_until(lambda: (lambda n: n if n is not None and n <= fd_base + 1 else None)(fd_count(pid)), 6)
    now = fd_count(pid)
    log = srv.log()
    deaths = [l for l in log.splitlines() if _DEATHS.search(l)]
    report(f"{what}; after: {load.summary()} worker fds {fd_base} -> {now}")
    assert fds is not None, f"worker fds {fd_base} before the faults, {now} 6 s after: connections leaked"
    assert deaths == [], deaths


# --------------------------------------------------------------------------------------


@THREADS
def test_disconnect_during_headers(rel_server, report, threads):
    srv, pid, fd0 = _server(rel_server, threads)
    n = dur(40, 400)
    partial = b"GET /r?id=h&n=10 HTTP/1.1\r\nHost: reliability.test\r\nX-Partial: abc"
    for i in range(n):
        s = _connect(srv.port)
        s.sendall(partial[: 10 + i % (len(partial) - 10)])
        time.sleep(0.002)
        _rst(s) if i % 2 else s.close()
    time.sleep(0.3)
    _assert_healthy(srv, pid, fd0, report, f"{n} connections closed (FIN or RST) mid-headers")


@THREADS
def test_disconnect_during_upload(rel_server, report, threads):
    """Streamed uploads (4 MiB announced, 256 KiB sent) and pre-buffered ones (50 KB
    announced, 20 KB sent), the client closing (FIN) or resetting (RST)."""
    srv, pid, fd0 = _server(rel_server, threads)
    n = dur(6, 60)
    for i in range(n):
        size, sent = (4 << 20, 256 << 10) if i % 2 == 0 else (50_000, 20_000)
        s = _connect(srv.port)
        s.sendall(
            f"POST /upload HTTP/1.1\r\nHost: reliability.test\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        s.sendall(b"u" * sent)
        time.sleep(0.1)
        _rst(s) if (i // 2) % 2 else s.close()
    # The streamed uploads that reached the app must have finished reading (with an
    # error) promptly, not after --timeout (10 s).
    t0 = time.monotonic()
    done = _uploads_settled(srv.port)
    stats = _stats(srv.port)
    outcomes = [u["outcome"] for u in stats["uploads"]]
    report_line = (
        f"{n} uploads cut short; {stats['uploads_started']} reached the app, which saw: {sorted(set(outcomes))} "
        f"(settled after {time.monotonic() - t0:.1f}s)"
    )
    assert done, f"the app is still reading dead uploads 5 s later: started {stats['uploads_started']}, {stats['uploads']}"
    assert stats["uploads_started"] >= 1, "no streamed upload reached the app: the test did not test it"
    assert all(u["want"] == 4 << 20 for u in stats["uploads"]), f"a pre-buffered upload cut short reached the app: {stats['uploads']}"
    silent = [u for u in stats["uploads"] if u["outcome"] in ("short", "complete")]
    assert not silent, (
        f"wsgi.input returned a short body without an error for an upload the client abandoned: {silent}"
    )
    _assert_healthy(srv, pid, fd0, report, report_line)


@THREADS
def test_disconnect_during_large_streamed_response(rel_server, report, threads):
    """GET a 1 GiB generator response, read 512 KiB, close or reset. The generator must
    be closed (its `finally` runs) soon, having produced a little more than what the
    server buffers, not the whole body."""
    srv, pid, fd0 = _server(rel_server, threads)
    n = dur(6, 40)
    for i in range(n):
        s = _connect(srv.port)
        s.sendall(b"GET /big?bytes=1073741824 HTTP/1.1\r\nHost: reliability.test\r\n\r\n")
        got = 0
        while got < 512 << 10:
            b = s.recv(65536)
            assert b, "the server closed the big response early"
            got += len(b)
        _rst(s) if i % 2 else s.close()
    done = wait_until(lambda: (lambda st: st if st["big_closed"] >= n else None)(_stats(srv.port)), 5)
    stats = _stats(srv.port)
    sent_mib = [round(x / 1048576, 1) for x in stats["big_sent"]]
    line = f"{n} big responses abandoned; generators closed {stats['big_closed']}/{stats['big_started']}, MiB produced each: {sent_mib}"
    assert done, f"generators not closed 5 s after the clients left: {stats}"
    assert max(stats["big_sent"]) < 64 << 20, f"the app kept producing for a gone client: {sent_mib} MiB"
    _assert_healthy(srv, pid, fd0, report, line)


@THREADS
@pytest.mark.parametrize("route", ["fast", "slow", "post", "stream"])
def test_half_closed_client_gets_its_response(rel_server, report, threads, route):
    """The client sends a whole request then shutdown(SHUT_WR): it still reads the
    whole response (HTTP/1.1 allows a client to half-close; curl and many proxies do)."""
    srv, pid, fd0 = _server(rel_server, threads)
    n = dur(5, 50)
    results = []
    for i in range(n):
        rid = f"hc{i}"
        if route == "fast":
            req, want = f"GET /r?id={rid}&n=100 HTTP/1.1\r\nHost: t\r\n\r\n".encode(), payload(rid, 100)
        elif route == "slow":
            req, want = b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n", b"slept"
        elif route == "post":
            data = b"p" * 100_000  # streamed to the app (over the 64 KiB pre-buffer)
            req = f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
            want = b"100000"
        else:
            req, want = f"GET /r?id={rid}&n=300000&stream=1 HTTP/1.1\r\nHost: t\r\n\r\n".encode(), payload(rid, 300000)
        s = _connect(srv.port)
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        raw = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                raw += b
        except (socket.timeout, ConnectionResetError) as e:
            raw += f"<{type(e).__name__}>".encode()
        s.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            from .test_app_faults import _parse_chunked

            body, complete = _parse_chunked(body)
            body = body if complete else body + b"<incomplete chunked>"
        ok = head.startswith(b"HTTP/1.1 200") and body == want
        results.append("ok" if ok else f"{raw[:120]!r}...({len(raw)} bytes)")
    bad = [r for r in results if r != "ok"]
    time.sleep(0.5)
    line = f"{route}: {n - len(bad)}/{n} half-closed requests answered" + (f"; first bad: {bad[0]}" if bad else "")
    try:
        _assert_healthy(srv, pid, fd0, report, line)
    finally:
        assert not bad, f"half-closed client got no (whole) response: {bad[:3]}\n{srv.log()[-2000:]}"


@THREADS
def test_rst_mid_request(rel_server, report, threads):
    """RST in the middle of a streamed upload (each must end the app's read with an
    error within 3 s), then RST while the app works on a request (a 0.3 s call that
    then writes to a dead socket): the worker goes on."""
    srv, pid, fd0 = _server(rel_server, threads)
    n = dur(3, 30)
    settle = []
    for i in range(n):
        s = _connect(srv.port)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n" + b"r" * (300 << 10))
        time.sleep(0.1)
        _rst(s)
        t0 = time.monotonic()
        done = _uploads_settled(srv.port, 3)
        settle.append(time.monotonic() - t0)
        st = _stats(srv.port)
        assert done, f"the app is still reading a reset upload 3 s later: started {st['uploads_started']}, {st['uploads']}"
    stats = _stats(srv.port)
    assert stats["uploads_started"] == n, f"only {stats['uploads_started']} of {n} reset uploads reached the app"
    silent = [u for u in stats["uploads"] if u["outcome"] in ("short", "complete")]
    assert not silent, f"wsgi.input returned a short body without an error for a reset upload: {silent}"
    before = stats["requests"]
    for i in range(n):
        s = _connect(srv.port)
        s.sendall(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.1)
        _rst(s)
    # The worker runs the calls of clients that are gone (as Gunicorn does); wait until
    # it is idle: only our own /stats polls are counted any more.
    seen, quiet, t0 = None, 0, time.monotonic()
    while quiet < 3 and time.monotonic() - t0 < 30:
        cur = _stats(srv.port)["requests"]
        quiet = quiet + 1 if seen is not None and cur == seen + 1 else 0
        seen = cur
        time.sleep(0.2)
    ran = seen - before - 3 - 1  # minus our /stats polls
    line = (
        f"{n} uploads reset mid-body (app saw {sorted({u['outcome'] for u in stats['uploads']})}, read ended within "
        f"{max(settle):.2f}s); {n} requests reset during a 0.3 s call ({ran} of those calls still ran, idle after "
        f"{time.monotonic() - t0:.1f}s)"
    )
    _assert_healthy(srv, pid, fd0, report, line)
