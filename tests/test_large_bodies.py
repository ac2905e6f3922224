"""Large bodies are handed to the socket from the app's own bytes objects (no copy):
every byte must arrive intact, on keep-alive connections, whether the object is shared
by all requests or new per request, and the objects must be released afterwards."""

import http.client
import sys

import pytest

from conftest import APPS, children, wait_until

sys.path.insert(0, str(APPS))
from big_bodies import SHARED, fresh  # noqa: E402

MIB = 1024 * 1024


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fetch_all(srv, paths):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        for path, expected in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (path, resp.status)
            assert len(body) == len(expected) and body == expected, (path, len(body))
    finally:
        conn.close()


@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("route", ["/list", "/write", "/gen"])
def test_wsgi_large_bodies_arrive_intact(start_server, route, threads):
    srv = start_server("--threads", threads, "big_bodies:app")
    fetch_all(srv, [(f"{route}/shared", SHARED), (f"{route}?1", fresh(1)), (f"{route}/shared", SHARED), (f"{route}?2", fresh(2))])


@pytest.mark.parametrize("route", ["/body", "/stream"])
def test_asgi_large_bodies_arrive_intact(start_server, route):
    srv = start_server("--interface", "asgi", "big_bodies:asgi")
    fetch_all(srv, [(f"{route}/shared", SHARED), (f"{route}?1", fresh(1)), (f"{route}/shared", SHARED), (f"{route}?7", fresh(7))])


@pytest.mark.parametrize("app", ["big_bodies:app", "big_bodies:asgi"])
def test_large_bodies_are_released(start_server, app):
    """200 responses of a new 1 MiB object each: if the objects were kept, the worker
    would grow by ~200 MiB."""
    srv = start_server("--interface", "asgi" if app.endswith("asgi") else "wsgi", app)
    route = "/body" if app.endswith("asgi") else "/list"
    worker = wait_until(lambda: children(srv.pid))[0]
    fetch_all(srv, [(f"{route}?{i}", fresh(i)) for i in range(20)])
    before = rss_kib(worker)
    fetch_all(srv, [(f"{route}?{i}", fresh(i)) for i in range(200)])
    grown = rss_kib(worker) - before
    assert grown < 64 * 1024, f"worker RSS grew by {grown} KiB over 200 x 1 MiB responses"
