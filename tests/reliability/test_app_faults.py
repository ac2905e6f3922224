"""2. Application faults (tests/reliability/apps/rel_app.py): an endless loop, a leak
recycled by --max-requests, a close() that raises, a generator that raises mid-body,
os._exit(1), a segfault. Each test checks what the client got, what the log says, and
that the server keeps serving (counted requests, zero failures) afterwards."""

import re
import socket
import time

import pytest

from conftest import alive, children, wait_until, wait_workers

from .conftest import dur
from .loadclient import (
    Load,
    NoResponse,
    Truncated,
    add_kind,
    fetch,
    rss_kib,
    unjustified_failures,
    worker_pid,
)

_DEATHS = re.compile(r"WORKER TIMEOUT|exited with code|was sent SIG|panicked")


def _deaths(log):
    return [l for l in log.splitlines() if _DEATHS.search(l)]


def _counted_ok(port, total=60, expect_pids=None, name="after"):
    """A short counted load that must be served whole."""
    load = Load(port, threads=2, total=total, duration=30, name=name).start().wait()
    load.check_accounting()
    assert load.failed == 0 and load.ok == total, load.details()
    if expect_pids is not None:
        assert set(load.pids) <= set(expect_pids), (dict(load.pids), expect_pids)
    return load


# --------------------------------------------------------------------------------------
# an endless loop in the app


@pytest.mark.parametrize("threads", [1, 4], ids=["threads1-inline", "threads4"])
def test_infinite_loop_times_out_and_worker_is_replaced(rel_server, report, threads):
    srv = rel_server("-w", "1", "-t", "2", "--threads", str(threads))
    (first,) = wait_workers(srv, 1)
    t0 = time.monotonic()
    outcome = None
    try:
        r = fetch(srv.port, "/loop", timeout=15)
        outcome = f"status {r.status}"
        assert r.status == 500, f"the endless loop was answered {r.status}: {r.body[:300]!r}"
    except (NoResponse, Truncated) as e:
        outcome = f"closed ({e})"
    except socket.timeout:
        outcome = "no answer in 15 s"
    elapsed = time.monotonic() - t0
    assert outcome != "no answer in 15 s", srv.log()[-3000:]
    srv.wait_for(f"WORKER TIMEOUT (pid:{first})", 5)
    # The stuck call's Python stack, with the function and the file.
    srv.wait_for("rel_busy_loop_forever", 5)
    log = srv.log()
    assert "rel_app.py" in log, log[-3000:]
    new = wait_until(lambda: (lambda k: k if len(k) == 1 and k[0] != first else None)(children(srv.pid)), 10)
    assert new, f"worker {first} not replaced: {children(srv.pid)}\n{log[-3000:]}"
    assert worker_pid(srv.port) == new[0]
    load = _counted_ok(srv.port, expect_pids=new)
    report(f"client got: {outcome} after {elapsed:.2f}s; worker {first} -> {new[0]}; after: {load.summary()}")
    assert elapsed < 2 + 1 + 2 + 1.5, f"the answer came {elapsed:.1f}s after the request (timeout 2 s)"
    assert not alive(first)


# --------------------------------------------------------------------------------------
# memory growth, recycled by --max-requests


GROW_CONNS = 2
# --max-requests 10, plus at most one request in flight on each other client connection
# when a worker reaches the limit (the rule of test_max_requests_50_recycling).
GROW_MAX_BLOCKS = 10 + GROW_CONNS - 1
GROW_SEEN = []


def _grow(rid, n):
    def ok(body):
        """'<pid> <leaked blocks, at most 10 + connections - 1> <rss KiB>'"""
        m = re.fullmatch(rb"(\d+) (\d+) (\d+)", body)
        if m:
            GROW_SEEN.append(int(m.group(2)))
        return bool(m) and 1 <= int(m.group(2)) <= GROW_MAX_BLOCKS

    return b"GET /grow?mb=4 HTTP/1.1\r\nHost: reliability.test\r\n\r\n", ok


add_kind("grow", _grow)


def test_memory_growth_recycled_by_max_requests(rel_server, report):
    """Every request leaks 4 MiB; --max-requests 10 bounds a worker's growth to about
    40 MiB, and no request fails while workers are recycled."""
    srv = rel_server("-w", "1", "--max-requests", "10")
    (first,) = wait_workers(srv, 1)
    base = rss_kib(first)
    total = dur(100, 1000)
    samples = []
    GROW_SEEN.clear()
    load = Load(srv.port, threads=GROW_CONNS, kinds=("grow",), total=total, duration=dur(60, 300), name="grow").start()
    while any(t.is_alive() for t in load._threads):
        for k in children(srv.pid):
            v = rss_kib(k)
            if v:
                samples.append(v)
        time.sleep(0.05)
    load.wait()
    load.check_accounting()
    log = srv.log()
    recycles = log.count("Autorestarting worker")
    peak = max(samples) if samples else 0
    report(
        f"{load.summary()} recycles={recycles} most-blocks-in-one-worker={max(GROW_SEEN, default=0)} base-rss={base / 1024:.1f}MiB peak-rss={peak / 1024:.1f}MiB "
        f"(bound {(base + GROW_MAX_BLOCKS * 4096 + 20480) / 1024:.0f}MiB)"
    )
    assert load.failed == 0, load.details() + "\n" + log[-3000:]
    assert load.ok == total
    # A worker serves 10 to GROW_MAX_BLOCKS requests (those in flight when it reaches the limit).
    assert recycles >= total // GROW_MAX_BLOCKS - 2, recycles
    assert peak <= base + GROW_MAX_BLOCKS * 4096 + 20480, f"a worker grew to {peak} KiB (base {base} KiB)"
    assert _deaths(log) == [], _deaths(log)


# --------------------------------------------------------------------------------------
# close() raises


def test_close_raising_is_logged_response_complete(rel_server, report):
    srv = rel_server("-w", "1")
    (first,) = wait_workers(srv, 1)
    n = dur(30, 300)
    load = Load(srv.port, threads=2, kinds=("close-raises",), total=n, duration=60, name="close").start().wait()
    load.check_accounting()
    time.sleep(0.3)
    log = srv.log()
    logged = log.count("rel_close_boom")
    report(f"{load.summary()} errors-logged={logged}")
    assert load.failed == 0 and load.ok == n, load.details() + "\n" + log[-3000:]
    assert logged >= n, f"only {logged} of {n} close() exceptions logged\n{log[-3000:]}"
    assert "Traceback" in log
    assert children(srv.pid) == [first], "the worker changed"
    _counted_ok(srv.port, expect_pids=[first])
    assert _deaths(srv.log()) == [], _deaths(srv.log())


# --------------------------------------------------------------------------------------
# a generator that raises mid-body


def _raw_exchange(port, target, timeout=5.0):
    """Sends GET target (keep-alive), reads until the server closes or `timeout`.
    -> (bytes, closed_by_server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: reliability.test\r\n\r\n".encode())
    data, closed = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = "reset"
                break
            if not b:
                closed = "fin"
                break
            data += b
    finally:
        s.close()
    return data, closed


def _parse_chunked(body):
    """-> (decoded bytes, complete: saw the 0-size last chunk)."""
    out, i = b"", 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            return out, False
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return out, True
        out += body[j + 2 : j + 2 + size]
        if len(body) < j + 2 + size + 2:
            return out, False
        i = j + 2 + size + 2


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_generator_raising_mid_body_truncates_cleanly(rel_server, report, framing):
    srv = rel_server("-w", "1")
    (first,) = wait_workers(srv, 1)
    target = "/gen-raises?chunks=3&size=1000" + ("&cl=1" if framing == "content-length" else "")
    expected_prefix = b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    outcomes = []
    for _ in range(dur(5, 50)):
        raw, closed = _raw_exchange(srv.port, target)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:300]
        assert closed, f"the connection stayed open after a broken body ({len(raw)} bytes so far): the client would wait forever"
        if framing == "chunked":
            assert b"transfer-encoding: chunked" in head.lower(), head
            got, complete = _parse_chunked(body)
            assert not complete, f"a body cut short by an exception ends with the last chunk: looks complete\n{raw[-200:]!r}"
        else:
            assert b"content-length: 6000" in head.lower(), head
            got, complete = body, len(body) >= 6000
            assert not complete, "a body cut short has all of its Content-Length"
        assert expected_prefix.startswith(got), f"the bytes before the error are wrong: {got[:100]!r}"
        outcomes.append((len(got), closed))
    time.sleep(0.3)
    log = srv.log()
    assert log.count("rel_gen_boom") >= len(outcomes), log[-3000:]
    assert children(srv.pid) == [first], f"the worker changed\n{log[-3000:]}"
    load = _counted_ok(srv.port, expect_pids=[first])
    report(f"{len(outcomes)} broken bodies, (bytes delivered, close) = {sorted(set(outcomes))}; after: {load.summary()}")
    assert _deaths(srv.log()) == [], _deaths(srv.log())


# --------------------------------------------------------------------------------------
# the worker process dies: os._exit(1), segfault


@pytest.mark.parametrize("route", ["exit", "segv"])
def test_worker_dies_in_app_is_replaced_others_fine(rel_server, report, route):
    srv = rel_server("-w", "2")
    first = wait_workers(srv, 2)
    threads = 4
    load = Load(srv.port, threads=threads, duration=60, retry_stale=False, name=route).start()
    deaths, outcomes = [], []
    try:
        for _ in range(dur(2, 20)):
            time.sleep(0.5)
            before = children(srv.pid)
            t = load.now()
            try:
                r = fetch(srv.port, f"/{route}", timeout=10)
                outcomes.append(f"status {r.status}")
            except (NoResponse, Truncated) as e:
                outcomes.append(f"closed: {e}")
            dead = wait_until(lambda: [p for p in before if not alive(p)], 5)
            assert dead, f"no worker died after /{route}: {before} -> {children(srv.pid)}"
            deaths += [(t, p) for p in dead]
            wait_workers(srv, 2, timeout=15)
        time.sleep(1.0)
    finally:
        load.stop()
    load.check_accounting()
    log = srv.log()
    unjustified = unjustified_failures(load, deaths)
    report(f"{load.summary()} deaths={len(deaths)} unjustified={len(unjustified)} /{route} answers={sorted(set(outcomes))}")
    assert all(not o.startswith("status 200") for o in outcomes), outcomes
    for _, pid in deaths:
        want = f"Worker (pid:{pid}) exited with code 1" if route == "exit" else f"Worker (pid:{pid}) was sent SIGSEGV"
        assert want in log, f"{want!r} not in the log\n{log[-3000:]}"
    assert unjustified == [], "requests lost on workers that did not die:\n" + load.details()
    assert load.failed <= len(deaths) * threads, load.details()
    assert load.ok > 100, load.details()
    assert len(children(srv.pid)) == 2 and srv.proc.poll() is None
    survivors = set(first) - {p for _, p in deaths}
    _counted_ok(srv.port)
    for p in survivors:
        assert alive(p), f"worker {p} died too"
