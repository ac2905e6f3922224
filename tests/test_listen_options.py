"""--reuse-port and --backlog reach the listening socket."""

import shutil
import socket
import subprocess

import pytest
from conftest import can_bind_ipv6


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


def _dual_stack_default():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            v6only = f.read().strip() != "0"
    except OSError:
        return False
    return not v6only and can_bind_ipv6("::")


@pytest.mark.skipif(not _dual_stack_default(), reason="no IPv6, or the system binds IPv6 sockets v6-only")
def test_bind_to_all_ipv6_addresses_takes_ipv4_clients_too(start_server):
    """Gunicorn leaves IPV6_V6ONLY at the system's default: `-b [::]:PORT` serves IPv4
    clients too (containers bind `[::]:8000` and are probed over IPv4)."""
    from conftest import free_port

    port = free_port()
    srv = start_server("-b", f"[::]:{port}", "testapp:app", bind=False, wait=False)
    srv.port = port
    srv.wait_ready()
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s:
            s.settimeout(5)
            s.connect((host, port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        assert out.startswith(b"HTTP/1.1 200"), (host, out)
