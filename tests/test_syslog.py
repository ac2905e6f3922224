"""--log-syslog: error and access lines reach a real syslog listener in the bytes Python's
SysLogHandler writes for Gunicorn (`<PRI>gunicorn.PREFIX.error: [PID] message\\0`)."""

import re
import signal
import socket
import threading
import time
import urllib.request

import pytest

from conftest import free_port


class Listener:
    """Collects messages from a UDP, TCP or UNIX datagram syslog socket."""

    def __init__(self, kind, path=None):
        self.messages = []
        self.kind = kind
        if kind == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.addr = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        elif kind == "tcp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(8)
            self.addr = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            self.addr = f"unix://{path}"
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        buf = b""
        conns = []
        while not self.stop:
            if self.kind == "tcp":
                try:
                    c, _ = self.sock.accept()
                    c.settimeout(0.05)
                    conns.append(c)
                except socket.timeout:
                    pass
                for c in conns:
                    try:
                        buf += c.recv(65536)
                    except socket.timeout:
                        pass
                *done, buf = buf.split(b"\0")
                self.messages += [m + b"\0" for m in done]
            else:
                try:
                    self.messages.append(self.sock.recv(65536))
                except socket.timeout:
                    pass

    def wait_for(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.messages):
                if text.encode() in m:
                    return m
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in {self.messages!r}")

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(request, tmp_path):
    made = []

    def make(kind):
        lst = Listener(kind, tmp_path / "log.sock")
        made.append(lst)
        return lst

    yield make
    for lst in made:
        lst.close()


LINE = re.compile(rb"^<(\d+)>gunicorn\.([\w.]+)\.(error|access): \[(\d+)\] (.*)\x00$", re.S)


def test_udp_error_and_access_lines(start_server, listener):
    lst = listener("udp")
    srv = start_server("--log-syslog", "--log-syslog-to", lst.addr, "--log-syslog-facility", "local3", "testapp:app")
    urllib.request.urlopen(srv.url + "/?x=1", timeout=5).read()
    m = LINE.match(lst.wait_for("Listening at: "))
    assert m, lst.messages
    pri, prefix, kind, pid = int(m[1]), m[2], m[3], int(m[4])
    # local3 (19) * 8 + info (6)
    assert (pri, prefix, kind, pid) == (19 * 8 + 6, b"testapp.app", b"error", srv.pid)
    access = LINE.match(lst.wait_for('"GET /?x=1 HTTP/1.1" 200'))
    assert access and access[3] == b"access" and int(access[1]) == 19 * 8 + 6
    srv.send_signal(signal.SIGTERM)
    lst.wait_for("Shutting down: Master")
    # The error log still gets every line too.
    assert "Listening at:" in srv.log()


def test_prefix_and_disabled_access_redirect(start_server, listener):
    lst = listener("udp")
    srv = start_server(
        "--log-syslog", "--log-syslog-to", lst.addr, "--log-syslog-prefix", "my:site",
        "--disable-redirect-access-to-syslog", "testapp:app",
    )
    urllib.request.urlopen(srv.url + "/", timeout=5).read()
    m = LINE.match(lst.wait_for("Booting worker"))
    assert m[2] == b"my.site" and int(m[1]) == 1 * 8 + 6
    time.sleep(0.5)
    assert not any(b".access:" in x for x in lst.messages), lst.messages


def test_warning_priority_over_tcp(start_server, listener):
    lst = listener("tcp")
    srv = start_server("--log-syslog", "--log-syslog-to", lst.addr, "testapp:app")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        s.recv(4096)
    m = LINE.match(lst.wait_for("Invalid request from ip=127.0.0.1"))
    assert m and int(m[1]) == 1 * 8 + 4  # user.warning


def test_unix_datagram_socket(start_server, listener):
    lst = listener("unix")
    start_server("--log-syslog", "--log-syslog-to", lst.addr, "testapp:app")
    assert LINE.match(lst.wait_for("Using worker: sync"))


@pytest.mark.parametrize(
    "args, setting",
    [
        (["--log-syslog-to", "udp://127.0.0.1:notaport"], "syslog_addr"),
        (["--log-syslog-to", "syslog.example:514"], "syslog_addr"),
        (["--log-syslog-facility", "nosuch"], "syslog_facility"),
    ],
)
def test_bad_syslog_settings_fail_at_start_up(run_cli, args, setting):
    res = run_cli("--log-syslog", *args, "--check-config", "testapp:app")
    assert res.returncode != 0
    assert f"Invalid value for {setting}" in res.stderr.strip().splitlines()[-1], res.stderr
