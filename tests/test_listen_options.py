"""--reuse-port and --backlog reach the listening socket."""

import shutil
import socket
import subprocess

import pytest


def bind_with_reuseport(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_reuse_port_sets_so_reuseport(start_server):
    srv = start_server("--reuse-port", "testapp:app")
    # Binding beside a listener only works when both sockets carry SO_REUSEPORT.
    assert bind_with_reuseport(srv.port)


def test_without_reuse_port_the_address_is_exclusive(start_server):
    srv = start_server("testapp:app")
    assert not bind_with_reuseport(srv.port)


@pytest.mark.skipif(not shutil.which("ss"), reason="ss (iproute2) not installed")
def test_backlog_reaches_listen(start_server):
    srv = start_server("--backlog", "37", "testapp:app")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{srv.port}"], capture_output=True, text=True).stdout
    # For a listening socket, ss reports the listen() backlog as Send-Q.
    send_q = [line.split()[2] for line in out.splitlines() if line.strip()]
    assert send_q == ["37"], out
