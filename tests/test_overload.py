"""Load shedding (--max-queued), connection refusal past --worker-connections, and
--request-deadline: deliberate, fast answers instead of unbounded waits."""

import socket
import threading
import time

from conftest import recv_all


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
