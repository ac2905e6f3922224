"""Load shedding (--max-queued), connection refusal past --worker-connections, and
--request-deadline: deliberate, fast answers instead of unbounded waits."""

import socket
import threading
import time

from conftest import recv_all, wait_until


def get(srv, path, timeout=10):
    """One request on its own connection: (status, headers dict, body, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = recv_all(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body, time.monotonic() - t0


def concurrently(n, fn):
    results = [None] * n

    def run(i):
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for i, t in enumerate(threads):
        t.start()
        time.sleep(0.05)  # a stable arrival order
    for t in threads:
        t.join(30)
    return results


def test_max_queued_sheds_with_503_and_retry_after(start_server):
    srv = start_server("--threads", "1", "--max-queued", "1", "testapp:app")
    results = concurrently(5, lambda: get(srv, "/sleep?0.8"))
    statuses = sorted(r[0] for r in results)
    # One running, one queued, three shed at once.
    assert statuses == [200, 200, 503, 503, 503], results
    for status, headers, body, took in results:
        if status == 503:
            assert headers.get("retry-after") == "1", headers
            assert took < 0.5, took
            assert b"Service Unavailable" in body
    # Places are freed when responses end: the worker serves normally again.
    assert get(srv, "/")[0] == 200


def test_without_max_queued_requests_wait_as_in_gunicorn(start_server):
    srv = start_server("--threads", "1", "testapp:app")
    results = concurrently(3, lambda: get(srv, "/sleep?0.3"))
    assert [r[0] for r in results] == [200, 200, 200]


def test_connections_past_worker_connections_get_503(start_server):
    srv = start_server("--worker-connections", "2", "--max-queued", "4", "--keep-alive", "30", "testapp:app")
    held = []
    for _ in range(2):
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(s)
    status, headers, body, took = get(srv, "/")
    assert status == 503 and headers.get("retry-after") == "1", (status, headers)
    assert headers.get("connection") == "close"
    for s in held:
        s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if get(srv, "/")[0] == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("slots were not freed")


def test_request_deadline_answers_504(start_server):
    srv = start_server("--threads", "1", "--request-deadline", "1", "testapp:app")
    status, headers, body, took = get(srv, "/sleep?3")
    assert status == 504, (status, body)
    assert 0.9 < took < 2.5, took
    srv.wait_for("Request deadline exceeded: GET /sleep")
    # The worker is not replaced for it, and serves again once the call has returned
    # (until then its one thread is busy, so requests would meet the deadline too).
    time.sleep(2.2)
    assert get(srv, "/", timeout=10)[0] == 200
    assert get(srv, "/sleep?0.1")[0] == 200


def _worker_rss_kib(master_pid):
    from conftest import children

    total = 0
    for pid in children(master_pid):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def test_many_large_unfinished_heads_are_bounded_in_memory(start_server):
    """Gunicorn's limits allow ~800 KiB heads (100 fields of 8190 bytes). 200 clients
    sending such heads and never finishing them would make the parser hold ~155 MB; the
    worker holds at most 64 MiB of large heads and refuses the rest with 431, keeps
    serving, and takes large heads again once those clients are gone."""
    srv = start_server("testapp:app")
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: " % i + b"v" * 8000 + b"\r\n" for i in range(98))
    before = _worker_rss_kib(srv.pid)
    conns = []
    try:
        for _ in range(200):
            s = socket.create_connection((srv.host, srv.port), timeout=5)
            s.sendall(head)
            conns.append(s)
        time.sleep(1.0)
        during = _worker_rss_kib(srv.pid)
        import select

        refused, waiting = 0, list(conns)
        deadline = time.monotonic() + 3
        while waiting and time.monotonic() < deadline:
            readable, _, _ = select.select(waiting, [], [], 0.5)
            for s in readable:
                waiting.remove(s)
                refused += s.recv(64).startswith(b"HTTP/1.1 431")
        assert refused >= 50, refused  # 200 x 726 KiB against 64 MiB: ~107 once all are read
        # 64 MiB of heads past 64 KiB each (~75 MB in all); ~155 MB without the bound.
        assert during - before < 110 * 1024, (before, during)
        with socket.create_connection((srv.host, srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_all(s, 5).startswith(b"HTTP/1.1 200")
    finally:
        for s in conns:
            s.close()

    def large_head_served():
        with socket.create_connection((srv.host, srv.port), timeout=5) as s:
            s.sendall(head + b"Connection: close\r\n\r\n")
            return recv_all(s, 5).startswith(b"HTTP/1.1 200")

    # The budget comes back as the server notices each closed connection.
    assert wait_until(large_head_served, 10), srv.log()
    assert srv.wait_for("too many large request heads at once", timeout=5)
