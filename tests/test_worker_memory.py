"""--max-worker-memory: a worker over the limit is retired gracefully and replaced."""

import time
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def test_worker_over_memory_limit_is_replaced(start_server):
    srv = start_server("mem_app:app", "--max-worker-memory", "100")
    _, first_pid = get(srv.url + "/")
    for _ in range(3):
        status, _ = get(srv.url + "/grow")
        assert status == 200
    deadline = time.monotonic() + 10
    new_pid = first_pid
    while time.monotonic() < deadline and new_pid == first_pid:
        time.sleep(0.3)
        try:
            _, new_pid = get(srv.url + "/")
        except OSError:
            pass
    assert new_pid != first_pid, srv.log()
    assert "over --max-worker-memory 100 MiB" in srv.log()
    assert f"Worker exiting (pid: {first_pid})" in srv.log()


def test_worker_under_memory_limit_is_kept(start_server):
    srv = start_server("mem_app:app", "--max-worker-memory", "500")
    _, first_pid = get(srv.url + "/")
    get(srv.url + "/grow")
    time.sleep(2.5)
    assert get(srv.url + "/")[1] == first_pid
    assert "max-worker-memory" not in srv.log()
