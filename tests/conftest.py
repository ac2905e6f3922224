"""End-to-end fixtures: start the real `ferricorn` command on a free loopback port and
stop it by PID."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
APPS = HERE / "apps"


_HANDED_OUT = set()


def can_bind_ipv6(host):
    """Whether this machine has IPv6 and lets a socket bind `host` (`::1`, `::`)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def free_port():
    """A free loopback port, never one handed out before in this test run: the kernel may
    give a just-closed port again, and two servers of one test (started after both ports
    were picked) once got the same one; the second then answered from the first."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def ferricorn_cmd():
    exe = shutil.which("ferricorn", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "ferricorn"]


def split_response(raw):
    """Raw bytes of one response -> (status code, body bytes)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def output(res):
    """stdout and stderr of a finished command, together."""
    return (res.stdout or "") + (res.stderr or "")


def startup_error(run_cli, *args, setting):
    """Runs ferricorn with a bad configuration and checks the one-line error it must stop
    with (naming `setting`); returns that line and the whole output."""
    try:
        res = run_cli("-b", f"127.0.0.1:{free_port()}", *args, "testapp:app", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started instead of refusing the configuration")
    out = (res.stdout or "") + (res.stderr or "")
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    assert "Booting worker" not in out, out
    errors = [l for l in out.splitlines() if l.startswith("Error")]
    assert len(errors) == 1, out
    assert setting in errors[0].lower().replace("-", "_"), f"the error line does not name {setting}:\n{out}"
    return errors[0], out


class Server:
    def __init__(self, args, cwd, env, log_path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(ferricorn_cmd() + list(args), cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        if not self._log.closed:
            self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def wait_for(self, text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in log:\n{self.log()}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class TcpServer(Server):
    def __init__(self, args, cwd, env, log_path, port):
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(args, cwd, env, log_path)

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ferricorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    # The master binds before the workers boot: wait for one to serve.
                    if "Booting worker" in self.log():
                        time.sleep(0.15)
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log()}")

    def connect(self, timeout=5.0):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s

    def raw(self, data, timeout=5.0, read_until_close=True):
        """Send raw bytes and return everything the server answers until it closes."""
        with self.connect(timeout) as s:
            s.sendall(data)
            return recv_all(s, timeout) if read_until_close else s.recv(65536)


def recv_all(sock, timeout=5.0):
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    except socket.timeout:
        pass
    return b"".join(chunks)


# Servers' default control socket goes here, not to the developer's ~/.gunicorn.
_RUNTIME_DIR = tempfile.mkdtemp(prefix="ferricorn-tests-run-")


def base_env(extra=None):
    env = dict(os.environ)
    env["XDG_RUNTIME_DIR"] = _RUNTIME_DIR
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(HERE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PORT", None)
    env.pop("WEB_CONCURRENCY", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    env.pop("FERRICORN_CMD_ARGS", None)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


# Process-table helpers shared by the process-management tests.

# The parameters of the hooks `hook_log_config` can record.
_HOOK_PARAMS = {
    "worker_int": "worker",
    "worker_abort": "worker",
    "worker_exit": "server, worker",
}


def hook_log_config(path, log, *hooks):
    """Writes a config file at `path` whose `hooks` each append `NAME PID` (the process
    running the hook) to `log`; returns `path`. Read the lines with `hook_log_lines`."""
    lines = ["import os", ""]
    for name in hooks:
        lines += [
            f"def {name}({_HOOK_PARAMS[name]}):",
            f"    with open({str(log)!r}, 'a') as f:",
            f"        f.write('{name} %d\\n' % os.getpid())",
            "",
        ]
    Path(path).write_text("\n".join(lines))
    return path


def hook_log_lines(log):
    """The `NAME PID` lines written so far by a `hook_log_config` config."""
    return Path(log).read_text().splitlines() if Path(log).exists() else []


def wait_until(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def proc_stat(pid):
    """(state, ppid) of a process from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data.rsplit(")", 1)[1].split()
    return rest[0], int(rest[1])


def children(pid):
    """Live (non-zombie) children of `pid`, from the process table."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[1] == pid and st[0] != "Z":
            out.append(int(d))
    return sorted(out)


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def wait_workers(srv, n, timeout=15.0):
    """Waits until the master has exactly `n` live children; returns them."""
    wait_until(lambda: len(children(srv.pid)) == n, timeout)
    kids = children(srv.pid)
    assert len(kids) == n, f"expected {n} workers, have {kids}\n{srv.log()}"
    return kids


@pytest.fixture
def start_server(tmp_path):
    """start_server("testapp:app", "-w", "2", ...) -> a running TcpServer on a free port."""
    servers = []

    def start(*args, env=None, cwd=None, bind=True, wait=True):
        port = free_port()
        argv = list(args)
        if bind:
            argv = ["-b", f"127.0.0.1:{port}"] + argv
        srv = TcpServer(argv, cwd or tmp_path, base_env(env), tmp_path / f"server-{len(servers)}.log", port)
        servers.append(srv)
        if wait:
            srv.wait_ready()
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def run_cli(tmp_path):
    """Runs ferricorn to completion (for start-up errors, --version, --check-config)."""

    def run(*args, env=None, cwd=None, timeout=30):
        return subprocess.run(
            ferricorn_cmd() + list(args), cwd=cwd or tmp_path, env=base_env(env), capture_output=True, text=True, timeout=timeout
        )

    return run
