"""End-to-end tests of logging: the access log compared byte for byte with Gunicorn's
(same app, same requests, same --access-logformat), the error-log format and its
lifecycle lines, --log-level, --error-logfile, --capture-output, USR1 log rotation and
the access line of a rejected (400) request.

Reference: docs/reference gunicorn.md sections 7.1-7.2 (glogging.py), 3.1 (USR1)."""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HERE, base_env, ferricorn_cmd, free_port, recv_all

# --------------------------------------------------------------------------------------
# helpers


def wait_until(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def read(path):
    try:
        return Path(path).read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def lines_of(path):
    return read(path).splitlines()


def gunicorn_cmd():
    exe = HERE.parent / ".venv" / "bin" / "gunicorn"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("gunicorn", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        pytest.skip("gunicorn is not installed")
    return [found]


class Proc:
    """A server process (ferricorn or gunicorn) on 127.0.0.1:port with stdout and stderr
    captured in two separate files."""

    def __init__(self, cmd, args, cwd, name, env=None, port=None, bind=True):
        self.port = port or free_port()
        self.out_path = Path(cwd) / f"{name}.stdout"
        self.err_path = Path(cwd) / f"{name}.stderr"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        argv = (["-b", f"127.0.0.1:{self.port}"] if bind else []) + list(args)
        self.proc = subprocess.Popen(cmd + argv, cwd=cwd, env=base_env(env), stdout=self._out, stderr=self._err)

    @property
    def pid(self):
        return self.proc.pid

    def stdout(self):
        return read(self.out_path)

    def stderr(self):
        return read(self.err_path)

    def wait_ready(self, ready_log=None, timeout=20.0):
        """Wait until the port answers and a worker has booted (its line is in `ready_log`,
        by default the process's stderr)."""
        ready_log = ready_log or self.err_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.stderr()}\n{read(ready_log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    if "Booting worker" in read(ready_log):
                        time.sleep(0.2)
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.stderr()}\n{read(ready_log)}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        return self.proc.returncode


@pytest.fixture
def procs():
    started = []

    def start(cmd, *args, cwd, name, env=None, wait=True, ready_log=None, bind=True):
        p = Proc(cmd, args, cwd, name, env=env, bind=bind)
        started.append(p)
        if wait:
            try:
                p.wait_ready(ready_log)
            except AssertionError:
                # Another build may be replacing the binary: retry once.
                p.stop(signal.SIGKILL)
                p = Proc(cmd, args, cwd, name + "-retry", env=env, bind=bind)
                started.append(p)
                p.wait_ready(ready_log)
        return p

    yield start
    for p in started:
        p.stop()


def raw_request(port, data, timeout=10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_all(s, timeout)


def get(port, path, extra=b""):
    return raw_request(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n")


def wait_lines(path, n, timeout=10.0):
    """Wait until the file holds at least n complete lines; return them."""
    wait_until(lambda: read(path).count("\n") >= n, timeout)
    return lines_of(path)


# --------------------------------------------------------------------------------------
# 1. differential access log: ferricorn vs gunicorn

AUTH = base64.b64encode(b"alice:s3cret").decode().encode()

H11 = b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"

REQUESTS = [
    ("root", b"GET /" + H11 + b"\r\n"),
    ("query", b"GET /caf%C3%A9/a%20b?q=a%20b&x=%22y%22&u=%C3%A9&empty=" + H11 + b"\r\n"),
    (
        "post",
        b"POST /echo?form=1" + H11 + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nhello=world",
    ),
    ("head", b"HEAD /" + H11 + b"\r\n"),
    ("notfound", b"GET /no/such/page.html" + H11 + b"\r\n"),
    ("referer", b"GET /from-ref" + H11 + b"Referer: http://example.com/page?a=1&b=2\r\n\r\n"),
    ("ua-quote", b"GET /ua" + H11 + b'User-Agent: curl/8.0 "quoted" agent\r\n\r\n'),
    ("basic-auth", b"GET /private" + H11 + b"Authorization: Basic " + AUTH + b"\r\n\r\n"),
    ("custom", b"GET /custom" + H11 + b"X-Custom: custom value 42\r\n\r\n"),
    ("http10", b"GET /http10?v=1 HTTP/1.0\r\n\r\n"),
    ("stream", b"GET /stream?5" + H11 + b"\r\n"),
    ("absolute-uri", b"GET http://127.0.0.1/abs/path?k=v" + H11 + b"\r\n"),
    ("encoded-slash", b"GET /a%2Fb//c/./d?%41=1" + H11 + b"\r\n"),
    ("write-callable", b"GET /write" + H11 + b"\r\n"),
    ("file-wrapper", b"GET /file" + H11 + b"\r\n"),
    ("repeated-header", b"GET /rep" + H11 + b"X-Custom: first\r\nx-CUSTOM: second\r\n\r\n"),
    ("latin1-ua", b"GET /l1" + H11 + b"User-Agent: caf\xe9 agent\r\nReferer: a\"b\r\n\r\n"),
    ("bearer-auth", b"GET /bearer" + H11 + b"Authorization: Bearer abc.def\r\n\r\n"),
    ("basic-no-colon", b"GET /nocolon" + H11 + b"Authorization: basic " + base64.b64encode(b"bob") + b"\r\n\r\n"),
    ("chunked-post", b"POST /echo" + H11 + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
]

# Responses the server makes itself after an error (Gunicorn: Worker.handle_error, which
# logs with a fresh Response and default_environ). Each carries request headers so the
# f/a/u/{..}i atoms are exercised.
ERR_HEADERS = b"User-Agent: err-agent\r\nReferer: http://ref.example/\r\nX-Custom: c1\r\nAuthorization: Basic " + AUTH + b"\r\n"
ERROR_REQUESTS = [
    ("app-exception", b"GET /error?x=1" + H11 + ERR_HEADERS + b"\r\n"),
    ("app-bad-status", b"GET /bad-status" + H11 + ERR_HEADERS + b"\r\n"),
    (
        "bad-chunk-size",
        b"POST /echo" + H11 + ERR_HEADERS + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
]

ALL_ATOMS = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s '
    "%(p)s %(T)s %(D)s %(M)s %(L)s %({x-custom}i)s %({content-type}o)s %({wsgi.url_scheme}e)s "
    "%({REMOTE_ADDR}e)s"
)

TIME_RE = re.compile(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
# %(p)s %(T)s %(D)s %(M)s %(L)s, as they sit next to each other in ALL_ATOMS.
PID_DUR_RE = re.compile(r"<\d+> \d+ \d+ \d+ \d+\.\d{6}")


def mask(line):
    line, n = TIME_RE.subn("[TIME]", line)
    assert n == 1, f"no %(t)s timestamp in {line!r}"
    line = PID_DUR_RE.sub("<PID> T D M L", line)
    return line


def run_requests(port, access_log, requests):
    """Send the requests one at a time, waiting for each access line (keeps the order)."""
    responses = []
    for i, (name, data) in enumerate(requests):
        responses.append(raw_request(port, data))
        wait_lines(access_log, i + 1, timeout=5.0)
    return responses


def compare_with_gunicorn(procs, tmp_path, fmt, requests):
    fmt_args = ["--access-logformat", fmt] if fmt else []
    f_log = tmp_path / "ferricorn-access.log"
    g_log = tmp_path / "gunicorn-access.log"
    ferri = procs(ferricorn_cmd(), "-w", "1", "--access-logfile", str(f_log), *fmt_args, "testapp:app", cwd=tmp_path, name="ferri")
    # --no-sendfile: Gunicorn's sendfile path never adds to resp.sent, so with sendfile on
    # it logs b=0 for every wsgi.file_wrapper response, whatever was sent. That is a
    # Gunicorn defect that varies with its sendfile setting; compare against the
    # documented meaning of the atom ("body bytes sent") instead.
    guni = procs(
        gunicorn_cmd(), "-w", "1", "--no-sendfile", "--access-logfile", str(g_log), *fmt_args, "testapp:app",
        cwd=tmp_path, name="guni",
    )

    f_resp = run_requests(ferri.port, f_log, requests)
    g_resp = run_requests(guni.port, g_log, requests)
    # Sanity: both servers really answered every request with the same status.
    for (name, _), fr, gr in zip(requests, f_resp, g_resp):
        assert fr.split(b" ", 2)[1:2] == gr.split(b" ", 2)[1:2], (name, fr[:200], gr[:200])

    f_lines = [mask(l) for l in lines_of(f_log)]
    g_lines = [mask(l) for l in lines_of(g_log)]
    assert len(f_lines) == len(g_lines) == len(requests), (f_lines, g_lines)
    diffs = [
        f"{name}:\n  ferricorn: {f}\n  gunicorn:  {g}"
        for (name, _), f, g in zip(requests, f_lines, g_lines)
        if f.encode() != g.encode()
    ]
    assert not diffs, "access-log lines differ from Gunicorn's:\n" + "\n".join(diffs)


@pytest.mark.parametrize("fmt", [None, ALL_ATOMS], ids=["default", "all-atoms"])
def test_access_log_matches_gunicorn(procs, tmp_path, fmt):
    compare_with_gunicorn(procs, tmp_path, fmt, REQUESTS)


# Environ entries only the app's environ holds: set by the app (middleware), or the
# server's own (SCRIPT_NAME empty, wsgi.version a tuple).
ENVIRON_ATOMS = (
    "%(h)s %(t)s %({REMOTE_USER}e)s|%({myapp.user}e)s|%({SCRIPT_NAME}e)s|%({wsgi.version}e)s|"
    "%({wsgi.multiprocess}e)s|%({PATH_INFO}e)s|%({HTTP_HOST}e)s|%({no.such.key}e)s|"
    "%({REMOTE_ADDR}e)s|%({HTTP_X_REQUEST_ID}e)s"
)


def test_access_log_environ_atoms_match_gunicorn(procs, tmp_path):
    requests = [
        ("set-environ", b"GET /set-environ" + H11 + b"\r\n"),
        ("root", b"GET /?a=1" + H11 + b"\r\n"),
    ]
    compare_with_gunicorn(procs, tmp_path, ENVIRON_ATOMS, requests)


@pytest.mark.parametrize("fmt", [None, ALL_ATOMS], ids=["default", "all-atoms"])
def test_access_log_error_responses_match_gunicorn(procs, tmp_path, fmt):
    """500 after an app error and 400 for a malformed chunked body: Gunicorn logs them
    from Worker.handle_error with a fresh Response (sent=0, no headers) and
    default_environ (no PATH_INFO, HTTP_* or wsgi.url_scheme)."""
    compare_with_gunicorn(procs, tmp_path, fmt, ERROR_REQUESTS)


# --------------------------------------------------------------------------------------
# 2. stdout access log, error-log format and lifecycle lines

ERR_LINE_RE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ")


def check_error_log_format(text):
    lines = [l for l in text.splitlines() if l.startswith("[")]
    assert lines, text
    bad = [l for l in lines if not ERR_LINE_RE.match(l)]
    assert not bad, bad
    return lines


def test_access_log_stdout_and_error_log_lifecycle(procs, tmp_path):
    srv = procs(ferricorn_cmd(), "-w", "1", "--access-logfile", "-", "testapp:app", cwd=tmp_path, name="lifecycle")
    assert b"Hello, World!" in get(srv.port, "/hello?x=1")
    assert b"Hello, World!" in get(srv.port, "/second")
    wait_until(lambda: srv.stdout().count("\n") >= 2, 5)
    out = srv.stdout().splitlines()
    assert len(out) == 2, out
    assert re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /hello\?x=1 HTTP/1\.1" 200 14 "-" "-"$', out[0]), out
    assert '"GET /second HTTP/1.1" 200 14' in out[1]
    err = srv.stderr()
    assert "GET /hello" not in err, "access lines must not go to the error log"

    booted = re.findall(r"Booting worker with pid: (\d+)", err)
    assert len(booted) == 1, err
    worker = int(booted[0])
    assert worker != srv.pid
    assert srv.stop() == 0
    err = srv.stderr()
    lines = check_error_log_format(err)
    text = "\n".join(lines)
    assert re.search(r"\[INFO\] Starting ferricorn \S+", text), text
    assert f"[{srv.pid}] [INFO] Listening at: http://127.0.0.1:{srv.port} ({srv.pid})" in text, text
    assert f"[{srv.pid}] [INFO] Using worker: sync" in text, text
    assert f"[INFO] Booting worker with pid: {worker}" in text, text
    assert f"[{srv.pid}] [INFO] Handling signal: term" in text, text
    assert f"[{worker}] [INFO] Worker exiting (pid: {worker})" in text, text
    assert f"[{srv.pid}] [INFO] Shutting down: Master" in text, text
    order = [text.index(s) for s in ("Starting ferricorn", "Listening at:", "Using worker:", "Booting worker", "Handling signal: term", "Shutting down: Master")]
    assert order == sorted(order), text


# --------------------------------------------------------------------------------------
# 3. --log-level


def test_log_level_warning_hides_info(procs, tmp_path):
    srv = procs(ferricorn_cmd(), "-w", "1", "--log-level", "warning", "log_app:app", cwd=tmp_path, name="warn", wait=False)
    # No "Booting worker" line to wait for: wait for the port to serve.
    assert wait_until(lambda: _serves(srv.port), 20), srv.stderr()
    # An app error is still logged (ERROR), the traceback follows.
    get(srv.port, "/error")
    wait_until(lambda: "[ERROR]" in srv.stderr(), 5)
    srv.stop()
    err = srv.stderr()
    lines = [l for l in err.splitlines() if l.startswith("[")]
    assert not [l for l in lines if "[INFO]" in l or "[DEBUG]" in l], err
    assert any("[ERROR]" in l for l in lines), err
    check_error_log_format(err)


def _serves(port):
    try:
        return b"Hello, World!" in get(port, "/")
    except OSError:
        return False


def test_log_level_debug_accepted(procs, tmp_path):
    srv = procs(ferricorn_cmd(), "-w", "1", "--log-level", "debug", "testapp:app", cwd=tmp_path, name="debug")
    assert b"Hello, World!" in get(srv.port, "/")
    srv.stop()
    err = srv.stderr()
    check_error_log_format(err)
    assert "[INFO] Starting ferricorn" in err
    assert "Booting worker with pid" in err


# --------------------------------------------------------------------------------------
# 4. --error-logfile and --capture-output


def test_error_logfile(procs, tmp_path):
    elog = tmp_path / "error.log"
    srv = procs(ferricorn_cmd(), "-w", "1", "--error-logfile", str(elog), "log_app:app", cwd=tmp_path, name="elog", ready_log=elog)
    assert b"pid" not in get(srv.port, "/errlog?marker1")
    wait_until(lambda: "log-app-errlog marker1" in read(elog), 5)
    srv.stop()
    text = read(elog)
    check_error_log_format(text)
    assert "Starting ferricorn" in text and "Booting worker with pid" in text and "Shutting down: Master" in text, text
    assert "log-app-errlog marker1" in text, "wsgi.errors goes to the error log"
    assert "Starting ferricorn" not in srv.stderr(), srv.stderr()


def test_capture_output(procs, tmp_path):
    elog = tmp_path / "error.log"
    srv = procs(
        ferricorn_cmd(), "-w", "1", "--capture-output", "--error-logfile", str(elog), "log_app:app",
        cwd=tmp_path, name="capture", ready_log=elog,
    )
    assert b"printed" in get(srv.port, "/print?cap1")
    assert wait_until(lambda: "log-app-stderr cap1" in read(elog) and "log-app-stdout cap1" in read(elog), 5), read(elog)
    srv.stop()
    assert "log-app-stdout cap1" not in srv.stdout()
    assert "log-app-stderr cap1" not in srv.stderr()


# --------------------------------------------------------------------------------------
# 5. USR1 log rotation


def test_usr1_reopens_logs(procs, tmp_path):
    alog, elog = tmp_path / "a.log", tmp_path / "e.log"
    srv = procs(
        ferricorn_cmd(), "-w", "2", "--access-logfile", str(alog), "--error-logfile", str(elog), "log_app:app",
        cwd=tmp_path, name="rotate", ready_log=elog,
    )
    assert wait_until(lambda: len(re.findall(r"Booting worker with pid: (\d+)", read(elog))) == 2, 10), read(elog)
    workers = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", read(elog))}

    sent = 0
    for i in range(10):
        assert b"200 OK" in get(srv.port, f"/before/{i}")
        sent += 1
    assert b"200 OK" in get(srv.port, "/errlog?before")
    sent += 1
    before = sent
    wait_lines(alog, before)

    alog.rename(tmp_path / "a.log.1")
    elog.rename(tmp_path / "e.log.1")
    os.kill(srv.pid, signal.SIGUSR1)
    time.sleep(1.0)

    after_pids = set()
    for i in range(40):
        resp = get(srv.port, f"/errlog?after{i}")
        sent += 1
        after_pids.add(int(resp.rsplit(b"\r\n\r\n", 1)[1]))
        if after_pids == workers and i >= 9:
            break
    assert after_pids == workers, f"workers replaced by USR1: {workers} -> {after_pids}"
    for pid in workers:
        os.kill(pid, 0)  # still alive
    after = sent - before

    # Only the master says it handles the signal, as in Gunicorn.
    both = read(tmp_path / "e.log.1") + read(elog)
    assert both.count("Handling signal: usr1") == 1, both
    assert wait_until(lambda: alog.exists() and read(alog).count("\n") >= after, 5), "no new a.log after USR1"
    old_access = lines_of(tmp_path / "a.log.1")
    new_access = lines_of(alog)
    assert len(old_access) == before, old_access
    assert len(new_access) == after, new_access
    assert len(old_access) + len(new_access) == sent
    assert all("after" not in l for l in old_access)
    assert all("/errlog?after" in l for l in new_access)

    wait_until(lambda: elog.exists() and read(elog).count("log-app-errlog after") >= after, 5)
    new_err, old_err = read(elog), read(tmp_path / "e.log.1")
    assert "log-app-errlog before" in old_err
    assert "log-app-errlog after" not in old_err, old_err
    for pid in workers:
        assert f"pid={pid}" in new_err, f"worker {pid} did not reopen the error log:\n{new_err}"
    assert "Booting worker" not in new_err, new_err
    srv.stop()
    # The master's shutdown lines go to the new file too.
    assert "Shutting down: Master" in read(elog)
    check_error_log_format(read(elog))


# --------------------------------------------------------------------------------------
# 6. rejected requests are logged


BAD_REQUESTS = {
    # Gunicorn 27.0.1 writes no access line for this one (handle_error gets req=None),
    # but the reference (section 6.2) says every rejection gets one.
    "lowercase-method": b"get / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    # Gunicorn writes `"POST /echo HTTP/1.1" 400 0 "-" "-"` for these two.
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "conflicting-content-length": b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_bad_request_has_access_line(procs, tmp_path, kind):
    alog = tmp_path / "access.log"
    srv = procs(ferricorn_cmd(), "-w", "1", "--access-logfile", str(alog), "testapp:app", cwd=tmp_path, name="bad")
    resp = raw_request(srv.port, BAD_REQUESTS[kind])
    assert resp.startswith(b"HTTP/1.1 400 "), resp
    lines = wait_lines(alog, 1, 3)
    assert len(lines) == 1, f"no access line for a rejected request ({kind}): {lines}"
    # The request line of a rejected request is free-form; the rest is fixed.
    assert re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] ".*" 400 \S+ "-" "-"$', lines[0]), lines
    assert wait_until(lambda: "Invalid request from ip=127.0.0.1" in srv.stderr(), 3), srv.stderr()


INVALID_REQUEST_WARNINGS = {
    # Gunicorn 27's texts after "Invalid request from ip=127.0.0.1: ".
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n": "Invalid HTTP method: 'get'",
    b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": "Request Line is too large (5014 > 4094)",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8190 + b"\r\n\r\n": "limit request headers fields size",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n": "Invalid HTTP request line",
}


@pytest.mark.parametrize("raw", list(INVALID_REQUEST_WARNINGS), ids=["method", "line", "field", "empty-lines"])
def test_invalid_request_warning_names_the_client(start_server, raw):
    # fail2ban-style filters match "Invalid request from ip=...".
    srv = start_server("testapp:app")
    resp = srv.raw(raw)
    assert resp[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 414", b"HTTP/1.1 431"), resp
    srv.wait_for(f"[WARNING] Invalid request from ip=127.0.0.1: {INVALID_REQUEST_WARNINGS[raw]}")


# Loggers changed by the app (or the config file) see ferricorn's own lines, as in
# Gunicorn, where every line goes through them.


def custom_logging_server(procs, tmp_path, mode, *args):
    env = {"LOG_CUSTOM": mode, "LOG_CUSTOM_FILE": str(tmp_path / "extra.log")}
    alog = tmp_path / "access.log"
    srv = procs(
        ferricorn_cmd(), "-w", "1", "--access-logfile", str(alog), *args, "log_custom:app",
        cwd=tmp_path, name=mode, env=env,
    )
    return srv, alog


def test_access_filter_added_by_the_app_drops_lines(procs, tmp_path):
    srv, alog = custom_logging_server(procs, tmp_path, "filter")
    for path in ["/health", "/ping", "/other"]:
        assert get(srv.port, path).startswith(b"HTTP/1.1 ")
    wait_lines(alog, 1)
    time.sleep(0.5)
    lines = lines_of(alog)
    assert all("/other" in l for l in lines) and lines, lines
    # The line itself is unchanged: Gunicorn's default format.
    assert re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /other HTTP/1\.1" \d{3} \d+ "-" "-"$', lines[0]), lines


def test_access_filter_by_the_app_after_the_config_changed_the_error_log(procs, tmp_path):
    # The config file customises gunicorn.error (the master routes it); the app then
    # filters gunicorn.access in the worker: both apply.
    conf = tmp_path / "conf.py"
    conf.write_text("import logging\nlogging.getLogger('gunicorn.error').addFilter(lambda r: True)\n")
    srv, alog = custom_logging_server(procs, tmp_path, "filter", "-c", str(conf))
    for path in ["/health", "/other"]:
        assert get(srv.port, path).startswith(b"HTTP/1.1 ")
    wait_lines(alog, 1)
    time.sleep(0.5)
    lines = lines_of(alog)
    assert lines and all("/other" in l for l in lines), lines


def test_loggers_silenced_by_the_app(procs, tmp_path):
    srv, alog = custom_logging_server(procs, tmp_path, "silence")
    get(srv.port, "/")
    raw_request(srv.port, b"GARBAGE\r\n\r\n")
    time.sleep(1.0)
    assert lines_of(alog) == []
    srv.stop()
    # gunicorn.error at ERROR: no warning about the bad request, no "Worker exiting".
    assert "Invalid request" not in srv.stderr() and "Worker exiting" not in srv.stderr(), srv.stderr()


def test_formatter_set_by_the_app_on_the_error_log(procs, tmp_path):
    srv, _ = custom_logging_server(procs, tmp_path, "formatter")
    raw_request(srv.port, b"GARBAGE\r\n\r\n")
    assert wait_until(lambda: "CUSTOMFMT WARNING Invalid request from ip=127.0.0.1" in srv.stderr(), 5), srv.stderr()


def test_handler_added_by_the_app_gets_every_line(procs, tmp_path):
    srv, alog = custom_logging_server(procs, tmp_path, "handler")
    get(srv.port, "/x?y=1")
    extra = tmp_path / "extra.log"
    assert wait_until(lambda: 'EXTRA gunicorn.access INFO 127.0.0.1 - - [' in read(extra), 5), read(extra)
    assert '"GET /x?y=1 HTTP/1.1"' in read(extra)
    # ferricorn's own access log still has the line too (its handler stays).
    assert len(wait_lines(alog, 1)) == 1


def test_empty_basic_auth_user_is_a_dash(procs, tmp_path):
    alog = tmp_path / "access.log"
    srv = procs(ferricorn_cmd(), "-w", "1", "--access-logfile", str(alog), "testapp:app", cwd=tmp_path, name="auth")
    auth = base64.b64encode(b":secret")
    raw_request(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic " + auth + b"\r\n\r\n")
    line = wait_lines(alog, 1)[0]
    assert line.startswith("127.0.0.1 - - ["), line


@pytest.mark.parametrize("level", ["warn", "bogus"])
def test_unknown_log_level_means_info_as_in_gunicorn(start_server, level):
    # Gunicorn's Logger: LOG_LEVELS.get(loglevel.lower(), logging.INFO).
    srv = start_server("testapp:app", "--log-level", level)
    srv.wait_for("Booting worker")
    assert "[INFO] Booting worker" in srv.log(), srv.log()


def test_log_level_in_capitals(start_server):
    srv = start_server("testapp:app", "--log-level", "DEBUG")
    srv.wait_for("Booting worker")
    assert "[DEBUG]" in srv.log(), srv.log()
