"""--asgi-disconnect-grace-period (Gunicorn 25+): when the client of an ASGI request
goes away, the app gets http.disconnect and its task is cancelled once the grace
period has passed, unless it finished by then."""

import socket
import time

import pytest

from conftest import wait_until


def marks(tmp_path, name):
    p = tmp_path / name
    return p.read_text().split("\n") if p.exists() else []


def leave(srv, path, after=0.3):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(after)
    s.close()
    return time.monotonic()


def start(start_server, tmp_path, *args):
    return start_server("--asgi-lifespan", "off", *args, "asgi_grace:app", env={"MARKS_DIR": str(tmp_path)})


@pytest.mark.parametrize("path", ["/sleep", "/wait", "/stream"])
def test_task_cancelled_after_the_grace_period(start_server, tmp_path, path):
    srv = start(start_server, tmp_path, "--asgi-disconnect-grace-period", "1")
    left = leave(srv, path)
    name = path.strip("/")
    assert wait_until(lambda: any(m.startswith("cancelled") for m in marks(tmp_path, name)), timeout=6), srv.log()
    cancelled_at = float(next(m for m in marks(tmp_path, name) if m.startswith("cancelled")).split()[1])
    # Not before the grace period, and not much after it.
    assert 0.9 <= cancelled_at - left <= 3.0, cancelled_at - left
    if path == "/wait":
        assert marks(tmp_path, name)[0].startswith("disconnect")
    if path == "/stream":
        assert marks(tmp_path, name)[0].startswith("oserror")


def test_zero_grace_cancels_at_once(start_server, tmp_path):
    srv = start(start_server, tmp_path, "--asgi-disconnect-grace-period", "0")
    left = leave(srv, "/sleep")
    assert wait_until(lambda: any(m.startswith("cancelled") for m in marks(tmp_path, "sleep")), timeout=5)
    cancelled_at = float(marks(tmp_path, "sleep")[0].split()[1])
    assert cancelled_at - left < 0.8


def test_default_grace_is_three_seconds(start_server, tmp_path):
    srv = start(start_server, tmp_path)
    left = leave(srv, "/sleep")
    assert wait_until(lambda: any(m.startswith("cancelled") for m in marks(tmp_path, "sleep")), timeout=8)
    cancelled_at = float(marks(tmp_path, "sleep")[0].split()[1])
    assert 2.8 <= cancelled_at - left <= 5.0, cancelled_at - left


def test_requests_that_complete_are_never_cancelled(start_server, tmp_path):
    srv = start(start_server, tmp_path, "--asgi-disconnect-grace-period", "0")
    for _ in range(20):
        assert srv.raw(b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"ok")
    time.sleep(0.3)
    got = marks(tmp_path, "fine")
    assert sum(m.startswith("done") for m in got) == 20 and not any(m.startswith("cancelled") for m in got)
