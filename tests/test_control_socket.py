"""The control socket (Gunicorn 25.1+'s `gunicornc` interface), driven with Gunicorn's
own client (`gunicorn.ctl.client`, and the `gunicornc` command) against the real
`ferricorn` command."""

import json
import os
import socket
import struct
import signal
import stat
import subprocess
import sys

import pytest

from conftest import children, wait_until, wait_workers

client_mod = pytest.importorskip("gunicorn.ctl.client")
ControlClient, ControlClientError = client_mod.ControlClient, client_mod.ControlClientError

APP = "testapp:app"


def ctl_server(start_server, tmp_path, *args):
    srv = start_server("--control-socket", "ctl.sock", *args, APP)
    path = tmp_path / "ctl.sock"
    srv.wait_for(f"[INFO] Control socket listening at {path}")
    return srv, path


def test_show_commands(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "2")
    kids = wait_workers(srv, 2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with ControlClient(str(path), timeout=5) as c:
        workers = c.send_command("show workers")
        assert workers["count"] == 2
        assert sorted(w["pid"] for w in workers["workers"]) == sorted(kids)
        assert [w["age"] for w in workers["workers"]] == sorted(w["age"] for w in workers["workers"])
        assert wait_until(lambda: all(w["booted"] for w in c.send_command("show workers")["workers"]), 5)
        stats = c.send_command("show stats")
        assert stats["pid"] == srv.pid and stats["workers_current"] == 2 and stats["workers_target"] == 2
        assert stats["workers_spawned"] == 2 and stats["reloads"] == 0 and stats["uptime"] >= 0
        listeners = c.send_command("show listeners")
        assert listeners["listeners"] == [
            {"address": f"http://127.0.0.1:{srv.port}", "fd": listeners["listeners"][0]["fd"], "type": "tcp"}
        ]
        config = c.send_command("show config")
        assert config["workers"] == 2 and config["bind"] == [f"127.0.0.1:{srv.port}"]
        assert config["control_socket"] == str(path)
        everything = c.send_command("show all")
        assert everything["arbiter"]["pid"] == srv.pid and everything["web_worker_count"] == 2
        assert "worker add [N]" in c.send_command("help")["commands"]
        with pytest.raises(ControlClientError, match="Unknown command: bogus"):
            c.send_command("bogus")
        with pytest.raises(ControlClientError, match="Missing show target"):
            c.send_command("show")


def test_worker_add_remove_kill(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    wait_workers(srv, 1)
    with ControlClient(str(path), timeout=5) as c:
        assert c.send_command("worker add", [2]) == {"added": 2, "previous": 1, "total": 3}
        kids = wait_workers(srv, 3)
        assert c.send_command("worker remove 5") == {"removed": 2, "previous": 3, "total": 1}
        assert wait_until(lambda: len(children(srv.pid)) == 1, 10), children(srv.pid)
        (victim,) = children(srv.pid)
        assert c.send_command(f"worker kill {victim}") == {"success": True, "killed": victim}
        assert wait_until(lambda: len(children(srv.pid)) == 1 and victim not in children(srv.pid), 10)
        assert c.send_command("worker kill 1") == {"success": False, "error": "Worker 1 not found"}
        assert c.send_command("dirty add") == {"success": False, "error": "Dirty arbiter not running"}
    assert set(kids) != set(children(srv.pid))


def test_reload_and_shutdown(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    (first,) = wait_workers(srv, 1)
    with ControlClient(str(path), timeout=5) as c:
        assert c.send_command("reload") == {"status": "reloading"}
        srv.wait_for("Hang up: Master")
        assert wait_until(lambda: children(srv.pid) and first not in children(srv.pid), 10)
        assert c.send_command("show stats")["reloads"] == 1
        assert c.send_command("shutdown") == {"status": "shutting_down", "mode": "graceful"}
    assert srv.proc.wait(timeout=15) == 0
    assert "Handling signal: term" in srv.log()
    assert not path.exists()


def test_gunicornc_command(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    wait_workers(srv, 1)
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn.ctl.cli", "-s", str(path), "-j", "-c", "show stats"],
        capture_output=True, text=True, timeout=30,
    )
    if "No module named gunicorn.ctl.cli" in out.stderr:
        pytest.skip("gunicornc not importable as a module")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] == srv.pid


def test_default_path_and_disable(start_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    srv = start_server(APP, env=env)
    default = home / ".gunicorn" / "gunicorn.ctl"
    srv.wait_for(f"Control socket listening at {default}")
    assert stat.S_IMODE(os.stat(default.parent).st_mode) == 0o700
    srv.stop(signal.SIGTERM)
    assert not default.exists()
    srv = start_server("--no-control-socket", APP, env=env)
    wait_workers(srv, 1)
    assert "Control socket" not in srv.log()
    assert not default.exists()


def test_workers_do_not_hold_the_socket(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    (kid,) = wait_workers(srv, 1)
    # /proc/net/unix names the listening socket's inode next to its path.
    with open("/proc/net/unix") as f:
        inode = next(line.split()[6] for line in f if line.rstrip().endswith(str(path)))
    fds = lambda pid: {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert f"socket:[{inode}]" in fds(srv.pid)
    assert f"socket:[{inode}]" not in fds(kid)


def test_request_then_half_close_is_answered(start_server, tmp_path):
    # socat / `nc -N` style: the request, then the write side shut at once.
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    wait_workers(srv, 1)
    body = json.dumps({"id": 3, "command": "show stats"}).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(struct.pack(">I", len(body)) + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    (length,) = struct.unpack(">I", data[:4])
    reply = json.loads(data[4 : 4 + length])
    assert reply["id"] == 3 and reply["status"] == "ok" and reply["data"]["pid"] == srv.pid


def test_bad_counts_are_refused(start_server, tmp_path):
    srv, path = ctl_server(start_server, tmp_path, "-w", "1")
    wait_workers(srv, 1)
    with ControlClient(str(path), timeout=5) as c:
        with pytest.raises(ControlClientError, match="Invalid argument"):
            c.send_command("worker add lots")
        with pytest.raises(ControlClientError, match="Missing PID"):
            c.send_command("worker kill")
        assert c.send_command("worker remove 0") == {"removed": 0, "previous": 1, "total": 1}
    assert srv.proc.poll() is None
