"""End-to-end tests of the `ferricorn` command: version/help, application loading, import
paths, binding, settings errors, config files and precedence, hooks, process management
and signals, and thread/slow-client behaviour. Every test runs the real command.

Reference: Gunicorn's behaviour (docs/reference sections 1, 3, 5 and 6.7)."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    TcpServer,
    alive,
    base_env,
    can_bind_ipv6,
    children,
    ferricorn_cmd,
    free_port,
    output,
    proc_stat,
    recv_all,
    split_response,
    wait_until,
    wait_workers,
)

# --------------------------------------------------------------------------------------
# helpers


def get(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def get_json(url, timeout=10.0):
    status, body = get(url, timeout)
    assert status == 200
    return json.loads(body)


def http_over(sock, path="/", timeout=10.0):
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return recv_all(sock, timeout)


def error_line(text, *needles):
    """The first line of `text` that contains every needle (case-insensitive)."""
    for line in text.splitlines():
        if all(n.lower() in line.lower() for n in needles):
            return line
    return None


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def launch(tmp_path):
    """launch(args, port=..., env=..., cwd=...) -> TcpServer, without adding -b; the caller
    says which port to probe. Stops every server at the end."""
    servers = []

    def start(*args, port=None, env=None, cwd=None, wait=True, host="127.0.0.1", pass_fds=()):
        port = port or free_port()
        log = tmp_path / f"launch-{len(servers)}.log"
        if pass_fds:
            srv = _FdServer(list(args), cwd or tmp_path, base_env(env), log, port, pass_fds)
        else:
            srv = TcpServer(list(args), cwd or tmp_path, base_env(env), log, port)
        srv.host = host
        servers.append(srv)
        if wait:
            srv.wait_ready()
        return srv

    yield start
    for s in servers:
        s.stop()


class _FdServer(TcpServer):
    """A TcpServer whose process inherits some descriptors (for fd://N)."""

    def __init__(self, args, cwd, env, log_path, port, pass_fds):
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ferricorn_cmd() + list(args), cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )


# --------------------------------------------------------------------------------------
# --version, --help, python -m


def test_version(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0, output(res)
    assert re.search(r"ferricorn.*\d+\.\d+\.\d+", output(res)), output(res)


def test_help_lists_main_options(run_cli):
    res = run_cli("--help")
    assert res.returncode == 0, output(res)
    for flag in ("--bind", "--workers", "--threads", "--keep-alive", "--limit-request-line"):
        assert flag in res.stdout, f"{flag} missing from --help:\n{res.stdout}"


def test_python_dash_m_version(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ferricorn", "--version"], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, output(res)
    assert re.search(r"\d+\.\d+\.\d+", output(res))


def test_python_dash_m_serves(tmp_path):
    port = free_port()
    log = tmp_path / "m.log"
    srv = TcpServer.__new__(TcpServer)
    srv.port, srv.host, srv.url, srv.log_path = port, "127.0.0.1", f"http://127.0.0.1:{port}", log
    srv._log = open(log, "wb")
    srv.proc = subprocess.Popen(
        [sys.executable, "-m", "ferricorn", "-b", f"127.0.0.1:{port}", "testapp:app"],
        cwd=tmp_path,
        env=base_env(),
        stdout=srv._log,
        stderr=subprocess.STDOUT,
    )
    try:
        srv.wait_ready()
        assert get(srv.url + "/") == (200, b"Hello, World!\n")
    finally:
        assert srv.stop() == 0


# --------------------------------------------------------------------------------------
# application loading


def test_module_colon_callable(start_server):
    srv = start_server("cli_apps:env_app")
    assert get_json(srv.url + "/?PATH")["value"]


def test_module_alone_prefers_application(start_server):
    srv = start_server("cli_apps")
    assert get(srv.url + "/") == (200, b"application")


def test_module_alone_falls_back_to_app(start_server):
    srv = start_server("cli_apponly")
    assert get(srv.url + "/") == (200, b"only app")


def test_package_module_callable(start_server):
    srv = start_server("cli_pkg.wsgi:handler")
    assert get(srv.url + "/") == (200, b"from cli_pkg.wsgi")


def test_factory_without_arguments(start_server):
    srv = start_server("cli_apps:create_app()")
    assert json.loads(get(srv.url + "/")[1]) == {"args": [], "kwargs": {}}


def test_factory_with_literal_arguments(start_server):
    srv = start_server("cli_apps:create_app('x', debug=True)")
    assert json.loads(get(srv.url + "/")[1]) == {"args": ["x"], "kwargs": {"debug": True}}


def test_factory_with_non_literal_argument_is_refused(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_apps:create_app(os.getcwd())")
    assert res.returncode == 4, output(res)
    assert "literal" in output(res).lower() or "parse" in output(res).lower(), output(res)


def test_missing_module_exits_3(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_no_such_module_xyz:app")
    out = output(res)
    assert res.returncode == 3, out
    assert "ModuleNotFoundError" in out, out
    assert "cli_no_such_module_xyz" in out, out


def test_boot_failure_ends_like_gunicorn(run_cli):
    # Gunicorn's reap_workers and halt(): the exit line with its period, then
    # "Shutting down: Master" and the reason, both at ERROR.
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_no_such_module_xyz:app")
    out = output(res)
    assert res.returncode == 3, out
    assert re.search(r"\[ERROR\] Worker \(pid:\d+\) exited with code 3\.\n", out), out
    down = out.index("[ERROR] Shutting down: Master")
    assert out.index("[ERROR] Reason: Worker failed to boot.") > down, out


def test_worker_class_is_logged_as_configured(start_server):
    srv = start_server("testapp:app", "-k", "gthread")
    assert "Using worker: gthread" in srv.log(), srv.log()
    srv = start_server("testapp:app", "-k", "sync", "--threads", "2")
    assert "Using worker: gthread" in srv.log(), srv.log()


def test_module_raising_at_import_exits_3_with_traceback(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_import_error:app")
    out = output(res)
    assert res.returncode == 3, out
    assert "Traceback" in out, out
    assert "ZeroDivisionError" in out, out
    assert "cli_import_error" in out, out


def test_missing_attribute_exits_4(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_apps:no_such_attr")
    out = output(res)
    assert res.returncode == 4, out
    assert "no_such_attr" in out, out
    # Gunicorn prints the reason bare (no ERROR line), then its `finally` logs the exit.
    assert "Exception in worker process" not in out, out
    assert re.search(r"\[INFO\] Worker exiting \(pid: \d+\)", out), out


def test_import_failure_logs_worker_exiting(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_import_error:app")
    out = output(res)
    assert res.returncode == 3, out
    assert out.index("[ERROR] Exception in worker process") < out.index("[INFO] Worker exiting (pid: "), out


def test_module_without_application_or_app_exits_4(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_noapp")
    out = output(res)
    assert res.returncode == 4, out
    assert "application" in out, out


def test_non_callable_attribute_exits_4(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_apps:not_callable")
    out = output(res)
    assert res.returncode == 4, out
    assert "callable" in out.lower(), out


def test_none_attribute_exits_4(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_apps:returns_none")
    assert res.returncode == 4, output(res)


def test_factory_that_raises_exits_4(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "cli_apps:failing_factory()")
    out = output(res)
    assert res.returncode == 4, out
    assert "factory exploded on purpose" in out, out
    assert "Traceback" in out, out


def test_no_app_module(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}")
    assert res.returncode == 1, output(res)
    assert "No application module specified" in output(res), output(res)


# --------------------------------------------------------------------------------------
# import paths, environment, --check-config, --print-config


def test_config_file_is_found_from_the_start_directory_not_chdir(run_cli, tmp_path):
    # Gunicorn loads the config file before applying --chdir: the default
    # ./gunicorn.conf.py and a relative -c path are the start directory's.
    start, target = tmp_path / "start", tmp_path / "target"
    write(target / "gunicorn.conf.py", "workers = 2\n")
    write(target / "good.py", "workers = 3\n")
    write(start / "mine.py", "workers = 4\n")
    res = run_cli("--chdir", str(target), "--print-config", "testapp:app", cwd=start)
    assert re.search(r"^workers\s*=\s*1$", output(res), re.M), output(res)
    res = run_cli("--chdir", str(target), "-c", "mine.py", "--print-config", "testapp:app", cwd=start)
    assert re.search(r"^workers\s*=\s*4$", output(res), re.M), output(res)
    res = run_cli("--chdir", str(target), "-c", "good.py", "--print-config", "testapp:app", cwd=start)
    assert res.returncode != 0 and "good.py" in output(res), output(res)


def test_chdir_makes_module_importable(start_server, tmp_path):
    d = tmp_path / "project"
    write(
        d / "cli_chdir_app.py",
        """
        import os
        def app(environ, start_response):
            body = ("chdir " + os.getcwd()).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = start_server("--chdir", str(d), "cli_chdir_app:app", cwd=elsewhere)
    status, body = get(srv.url + "/")
    assert status == 200
    assert body == f"chdir {d}".encode()


def test_pythonpath_two_dirs(start_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(
        a / "cli_pp_main.py",
        """
        import cli_pp_helper
        def app(environ, start_response):
            body = cli_pp_helper.TEXT.encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        """,
    )
    write(b / "cli_pp_helper.py", "TEXT = 'helper from b'\n")
    srv = start_server("--pythonpath", f"{a},{b}", "cli_pp_main:app")
    assert get(srv.url + "/") == (200, b"helper from b")


def test_pythonpath_last_entry_is_searched_first(start_server, tmp_path):
    # Gunicorn inserts each entry at the front in turn.
    a, b = tmp_path / "pa", tmp_path / "pb"
    write(a / "cli_pp_order.py", "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'a']\n")
    write(b / "cli_pp_order.py", "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'b']\n")
    srv = start_server("--pythonpath", f"{a},{b}", "cli_pp_order:app")
    assert get(srv.url + "/") == (200, b"b")


def test_raw_env_visible_in_app(start_server):
    srv = start_server("-e", "CLI_TEST_KEY=some value=with equals", "-e", "CLI_OTHER=2", "cli_apps:env_app")
    assert get_json(srv.url + "/?CLI_TEST_KEY")["value"] == "some value=with equals"
    assert get_json(srv.url + "/?CLI_OTHER")["value"] == "2"


def test_check_config_good_app(run_cli):
    res = run_cli("--check-config", "testapp:app")
    assert res.returncode == 0, output(res)


@pytest.mark.parametrize(
    "args, text",
    [
        (["--user", "no_such_user_xyz"], "no_such_user_xyz"),
        (["--group", "no_such_group_xyz"], "no_such_group_xyz"),
        (["--http-protocols", "h3"], "h3"),
    ],
)
def test_check_config_fails_what_start_up_would(run_cli, args, text):
    res = run_cli("--check-config", *args, "testapp:app")
    assert res.returncode == 1, output(res)
    assert text in output(res)


def test_check_config_bad_app(run_cli):
    # Gunicorn: "exit 0 on success or 1 with the traceback".
    res = run_cli("--check-config", "cli_no_such_module_xyz:app")
    assert res.returncode == 1, output(res)
    assert "cli_no_such_module_xyz" in output(res)
    assert "ModuleNotFoundError" in output(res)
    res = run_cli("--check-config", "cli_apps:no_such_attr")
    assert res.returncode == 1, output(res)
    assert "no_such_attr" in output(res)
    # Gunicorn's heading for it.
    assert "\nError while loading the application:\n" in res.stderr, res.stderr


def test_missing_config_file_in_gunicorns_words(run_cli):
    res = run_cli("-c", "no_such.conf.py", "testapp:app")
    assert res.returncode == 1, output(res)
    assert "Error: 'no_such.conf.py' doesn't exist" in res.stderr, res.stderr


def test_print_config(run_cli):
    res = run_cli("--print-config", "-w", "3", "testapp:app")
    assert res.returncode == 0, output(res)
    assert re.search(r"^workers\s*=\s*3\s*$", res.stdout, re.M), res.stdout
    assert re.search(r"^threads\s*=\s*1\s*$", res.stdout, re.M), res.stdout
    assert re.search(r"^bind\s*=", res.stdout, re.M), res.stdout


def test_ferricorn_conf_wins_and_is_printed(run_cli, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 5\n")
    (tmp_path / "ferricorn.conf.py").write_text("workers = 8\n")
    res = run_cli("--print-config", "testapp:app")
    assert res.returncode == 0, output(res)
    assert re.search(r"^workers\s*=\s*8\s*$", res.stdout, re.M), res.stdout
    assert re.search(r"^config\s*=\s*\./ferricorn\.conf\.py\s*$", res.stdout, re.M), res.stdout


# --------------------------------------------------------------------------------------
# binding


def test_port_env_binds_all_interfaces(launch):
    port = free_port()
    srv = launch("testapp:app", port=port, env={"PORT": str(port)})
    assert get(srv.url + "/")[0] == 200
    assert f"0.0.0.0:{port}" in srv.log(), srv.log()


def test_two_binds(launch):
    p1, p2 = free_port(), free_port()
    srv = launch("-b", f"127.0.0.1:{p1}", "-b", f"127.0.0.1:{p2}", "testapp:app", port=p1)
    assert get(f"http://127.0.0.1:{p1}/")[0] == 200
    assert get(f"http://127.0.0.1:{p2}/")[0] == 200
    log = srv.log()
    # Gunicorn: one line, the listeners comma-separated.
    assert f"Listening at: http://127.0.0.1:{p1},http://127.0.0.1:{p2} (" in log, log


def test_unix_socket_with_umask(tmp_path):
    d = tempfile.mkdtemp(prefix="ferricorn-cli-", dir="/tmp")
    path = os.path.join(d, "x.sock")
    log = tmp_path / "unix.log"
    srv = TcpServer(["-b", f"unix:{path}", "--umask", "0o077", "testapp:app"], tmp_path, base_env(), log, 0)
    try:
        def ready():
            if srv.proc.poll() is not None:
                raise AssertionError(f"exited {srv.proc.returncode}:\n{srv.log()}")
            return os.path.exists(path) and "Booting worker" in srv.log()

        assert wait_until(ready, 15), srv.log()
        time.sleep(0.2)
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(stat.S_IMODE(st.st_mode))
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            status, body = split_response(http_over(s, "/environ"))
        assert status == 200, body
        env = json.loads(body)
        assert env["REMOTE_ADDR"] == "", env
        assert srv.stop() == 0
        assert not os.path.exists(path), "the socket file should be removed on shutdown"
    finally:
        srv.stop()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(d)


def test_unix_bind_through_a_symlink_to_a_stale_socket(tmp_path):
    """Gunicorn's os.stat follows the link: a stale socket behind it is replaced, and
    the server listens at the link's path."""
    d = tempfile.mkdtemp(prefix="ferricorn-cli-", dir="/tmp")
    real, link = os.path.join(d, "real.sock"), os.path.join(d, "link.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(real)
    os.symlink(real, link)
    srv = TcpServer(["-b", f"unix:{link}", "testapp:app"], tmp_path, base_env(), tmp_path / "link.log", 0)
    try:
        def ready():
            if srv.proc.poll() is not None:
                raise AssertionError(f"exited {srv.proc.returncode}:\n{srv.log()}")
            return "Booting worker" in srv.log()

        assert wait_until(ready, 15), srv.log()
        assert stat.S_ISSOCK(os.lstat(link).st_mode), "the link is replaced by the socket"
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(link)
            status, body = split_response(http_over(s, "/"))
        assert status == 200, body
    finally:
        srv.stop()
        for p in (link, real):
            if os.path.lexists(p):
                os.unlink(p)
        os.rmdir(d)


@pytest.mark.skipif(not can_bind_ipv6("::1"), reason="no IPv6 loopback")
def test_ipv6_bind(launch):
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    srv = launch("-b", f"[::1]:{port}", "testapp:app", port=port, host="::1")
    with socket.create_connection(("::1", port), timeout=5) as s:
        status, body = split_response(http_over(s, "/environ"))
    assert status == 200
    assert json.loads(body)["REMOTE_ADDR"] == "::1"
    assert f"[::1]:{port}" in srv.log()


def test_fd_bind(launch):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    try:
        srv = launch("-b", f"fd://{fd}", "testapp:app", port=port, pass_fds=(fd,))
    finally:
        sock.close()  # the server holds its own copy now
    assert get(srv.url + "/") == (200, b"Hello, World!\n")
    assert get(srv.url + "/pid")[0] == 200


def test_invalid_bind_fails_fast(run_cli):
    t0 = time.monotonic()
    res = run_cli("-b", "127.0.0.1:notaport", "testapp:app", timeout=20)
    elapsed = time.monotonic() - t0
    out = output(res)
    assert res.returncode != 0, out
    assert elapsed < 5, f"took {elapsed:.1f}s"
    line = error_line(out, "bind", "notaport")
    assert line, out
    assert "Traceback" not in out, out


def test_unix_bind_over_a_regular_file_fails_at_once(run_cli, tmp_path):
    """Gunicorn: "'PATH' is not a socket", no retry; the file is left alone."""
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    t0 = time.monotonic()
    res = run_cli("-b", f"unix:{path}", "testapp:app", timeout=20)
    out = output(res)
    assert res.returncode != 0, out
    assert time.monotonic() - t0 < 4, out
    assert f"'{path}' is not a socket" in out, out
    assert "Retrying" not in out, out
    assert path.read_text() == "data"


def test_port_in_use_retries_then_exits_1(run_cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        res = run_cli("-b", f"127.0.0.1:{port}", "testapp:app", timeout=20)
        elapsed = time.monotonic() - t0
    out = output(res)
    assert res.returncode == 1, out
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert elapsed >= 3, f"gave up after {elapsed:.1f}s: Gunicorn retries 5 times, 1 s apart"
    assert "in use" in out.lower(), out
    assert "Booting worker" not in out
    # Gunicorn 27's lines: each failure with Python's words, then one final line.
    addr = f"('127.0.0.1', {port})"
    assert out.count(f"[ERROR] Connection in use: {addr}") == 5, out
    assert out.count(f"[ERROR] connection to {addr} failed: [Errno 98] Address already in use") == 5, out
    assert f"[ERROR] Can't connect to {addr}\n" in out, out
    assert "Retrying" not in out, out  # at debug level in Gunicorn 27


# --------------------------------------------------------------------------------------
# invalid settings: one line naming the setting and the value


@pytest.mark.parametrize(
    "args, names, value",
    [
        (["-w", "abc"], ("workers", "-w"), "abc"),
        (["--threads", "many"], ("threads",), "many"),
        (["--keep-alive", "x"], ("keepalive", "keep-alive"), "x"),
    ],
    ids=["workers", "threads", "keepalive"],
)
def test_invalid_setting_value(run_cli, args, names, value):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", *args, "testapp:app")
    out = output(res)
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    assert "Booting worker" not in out, out
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected a one-line error:\n{out}"
    line = lines[0]
    assert any(n in line for n in names) and re.search(rf"\b{re.escape(value)}\b", line), (
        f"the error does not name the setting {names} and the value {value!r}:\n{out}"
    )


def test_wrong_type_on_the_command_line_in_argparses_words(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "-w", "abc", "testapp:app")
    assert res.returncode == 2
    assert res.stderr.strip() == "Error: argument -w/--workers: invalid int value: 'abc'", res.stderr


@pytest.mark.parametrize(
    "args, code",
    [
        (["-w", "abc"], 2),
        (["-w", "-1"], 1),
        (["-t", "-5"], 1),
        (["--limit-request-line", "-5"], 1),
        (["--limit-request-field_size", "-1"], 1),
    ],
    ids=["type", "workers", "timeout", "limit-line", "limit-field-size"],
)
def test_invalid_value_exit_codes_follow_gunicorn(run_cli, args, code):
    # argparse's type errors exit 2; Gunicorn's validators ("Value must be positive")
    # exit 1 after parsing.
    res = run_cli("-b", f"127.0.0.1:{free_port()}", *args, "testapp:app")
    assert res.returncode == code, output(res)
    assert "Booting worker" not in output(res)


def test_unambiguous_abbreviations_as_argparse(run_cli):
    # Gunicorn's argparse accepts a unique prefix of a long option.
    res = run_cli("--timeo", "7", "--grace", "9", "--print-config", "testapp:app")
    out = output(res)
    assert res.returncode == 0, out
    assert re.search(r"^timeout\s*=\s*7$", out, re.M), out
    assert re.search(r"^graceful_timeout\s*=\s*9$", out, re.M), out
    res = run_cli("--work", "2", "testapp:app")  # --workers, --worker-class...: ambiguous
    assert res.returncode == 2, output(res)


def test_unknown_flag(run_cli):
    """Gunicorn (argparse) answers with a usage line and one error line naming the flag,
    e.g. `gunicorn: error: unrecognized arguments: --bogus`."""
    res = run_cli("--bogus", "testapp:app")
    out = output(res)
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    assert not re.search(r"error:\s*error:", out, re.I), f"doubled 'Error: error:' prefix:\n{out}"
    lines = [l for l in out.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower()]
    assert len(errors) == 1 and "--bogus" in errors[0], out
    assert len(lines) <= 2, f"expected a one-line error (plus at most a usage line):\n{out}"


# --------------------------------------------------------------------------------------
# config files and precedence


def test_gunicorn_conf_py_in_cwd(launch, tmp_path):
    port = free_port()
    write(tmp_path / "gunicorn.conf.py", f"bind = '127.0.0.1:{port}'\nworkers = 2\n")
    srv = launch("testapp:app", port=port)
    assert get(srv.url + "/")[0] == 200
    wait_workers(srv, 2)


def test_config_path_option(launch, tmp_path):
    port = free_port()
    conf = write(tmp_path / "conf" / "my_settings.py", f"bind = ['127.0.0.1:{port}']\nworkers = 2\nthreads = 3\n")
    srv = launch("-c", str(conf), "testapp:app", port=port)
    assert get(srv.url + "/")[0] == 200
    wait_workers(srv, 2)
    assert "gthread" in srv.log()


def test_precedence_file_env_cli(launch, tmp_path):
    port = free_port()
    write(tmp_path / "gunicorn.conf.py", f"bind = '127.0.0.1:{port}'\nworkers = 3\n")
    srv = launch("-w", "1", "testapp:app", port=port, env={"GUNICORN_CMD_ARGS": "-w 2"})
    time.sleep(1.0)  # give a wrong extra worker time to appear
    wait_workers(srv, 1)


def test_precedence_env_over_file(launch, tmp_path):
    port = free_port()
    write(tmp_path / "gunicorn.conf.py", f"bind = '127.0.0.1:{port}'\nworkers = 3\n")
    srv = launch("testapp:app", port=port, env={"GUNICORN_CMD_ARGS": "-w 2"})
    time.sleep(1.0)
    wait_workers(srv, 2)


def test_cli_bind_replaces_config_bind(launch, tmp_path):
    """A list setting from the command line replaces the config file's, it does not add to it."""
    p_file, p_cli = free_port(), free_port()
    write(tmp_path / "gunicorn.conf.py", f"bind = ['127.0.0.1:{p_file}']\n")
    srv = launch("-b", f"127.0.0.1:{p_cli}", "testapp:app", port=p_cli)
    assert get(srv.url + "/")[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p_file), timeout=2).close()


def test_cli_app_module_wins_over_wsgi_app(launch, tmp_path):
    port = free_port()
    write(tmp_path / "gunicorn.conf.py", f"bind = '127.0.0.1:{port}'\nwsgi_app = 'cli_apponly:app'\n")
    srv = launch("cli_pkg.wsgi:handler", port=port)
    assert get(srv.url + "/") == (200, b"from cli_pkg.wsgi")


def test_wsgi_app_from_config_file(launch, tmp_path):
    port = free_port()
    conf = write(tmp_path / "c.py", f"bind = '127.0.0.1:{port}'\nwsgi_app = 'cli_apps:create_app(\"from-config\")'\n")
    srv = launch("-c", str(conf), port=port)
    assert json.loads(get(srv.url + "/")[1]) == {"args": ["from-config"], "kwargs": {}}


def test_hooks_are_called(launch, tmp_path):
    port = free_port()
    hooklog = tmp_path / "hooks.log"
    conf = write(
        tmp_path / "hooks_conf.py",
        f"""
        import os
        bind = '127.0.0.1:{port}'
        workers = 2
        _LOG = {str(hooklog)!r}

        def _w(name):
            with open(_LOG, "a") as f:
                f.write(f"{{name}} {{os.getpid()}}\\n")

        def on_starting(server):
            _w("on_starting")

        def when_ready(server):
            _w("when_ready")

        def post_fork(server, worker):
            _w("post_fork")

        def post_worker_init(worker):
            _w("post_worker_init")

        def worker_exit(server, worker):
            _w("worker_exit")

        def on_exit(server):
            _w("on_exit")
        """,
    )
    srv = launch("-c", str(conf), "testapp:app", port=port)
    assert get(srv.url + "/")[0] == 200
    wait_workers(srv, 2)
    assert wait_until(lambda: hooklog.read_text().count("post_worker_init") == 2, 10), hooklog.read_text()
    master = srv.pid
    assert srv.stop(signal.SIGTERM) == 0
    entries = [l.split() for l in hooklog.read_text().splitlines()]
    names = [e[0] for e in entries]
    by_pid = {}
    for name, pid in entries:
        by_pid.setdefault(name, []).append(int(pid))
    for hook in ("on_starting", "when_ready", "on_exit"):
        assert by_pid.get(hook) == [master], (hook, entries)
    for hook in ("post_fork", "post_worker_init", "worker_exit"):
        assert len(by_pid.get(hook, [])) == 2, (hook, entries)
        assert master not in by_pid[hook], (hook, entries)
    assert names.index("on_starting") < names.index("when_ready") < names.index("on_exit")
    assert names.index("on_starting") < names.index("post_fork")
    assert names[-1] == "on_exit", entries


@pytest.mark.parametrize(
    "hook, code, line",
    [
        ("def when_ready(server):\n    raise RuntimeError('HOOKBOOM')\n", 1, "Error in when_ready hook"),
        ("def post_fork(server, worker):\n    raise RuntimeError('HOOKBOOM')\n", 3, "Reason: Worker failed to boot."),
        ("def post_worker_init(worker):\n    raise RuntimeError('HOOKBOOM')\n", 3, "Reason: Worker failed to boot."),
    ],
    ids=["when_ready", "post_fork", "post_worker_init"],
)
def test_raising_boot_hooks_stop_the_server(run_cli, tmp_path, hook, code, line):
    # Gunicorn: when_ready's exception stops the master (exit 1); post_fork's and
    # post_worker_init's fail the worker's boot (exit 3), which stops the master.
    conf = write(tmp_path / "raising_hook.py", hook)
    res = run_cli("-c", str(conf), "-b", f"127.0.0.1:{free_port()}", "testapp:app")
    out = output(res)
    assert res.returncode == code, out
    assert "HOOKBOOM" in out and line in out, out
    assert "Booting worker" not in out or code == 3, out


@pytest.mark.parametrize(
    "body, why",
    [
        ("def on_starting(server, extra):\n    pass\n", "must take 1 positional argument, it takes 2"),
        ("def post_fork(server):\n    pass\n", "must take 2 positional arguments, it takes 1"),
        ("def post_request(worker):\n    pass\n", "must take 2 or 3 or 4 positional arguments, it takes 1"),
        ("when_ready = 42\n", "not callable"),
        ("on_exit = 'os.path.no_such_function'\n", "can not load 'no_such_function' from 'os.path'"),
        ("on_exit = 'no_dots'\n", "is not an import string"),
    ],
)
def test_bad_hooks_fail_at_start_up(run_cli, tmp_path, body, why):
    conf = write(tmp_path / "bad_hook.py", body)
    res = run_cli("-c", str(conf), "--check-config", "testapp:app")
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert err and err[-1].startswith("Error: Invalid value for "), res.stderr
    assert why in err[-1], res.stderr


def test_hook_as_dotted_path_and_post_request_arities(launch, tmp_path):
    port = free_port()
    hooklog = tmp_path / "hooks.log"
    write(
        tmp_path / "myhooks.py",
        f"""
        def _w(line):
            with open({str(hooklog)!r}, "a") as f:
                f.write(line + "\\n")

        def started(server):
            _w("on_starting")

        def post2(worker, req):
            _w("post_request " + req.path)
        """,
    )
    conf = write(
        tmp_path / "dotted_conf.py",
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        bind = '127.0.0.1:{port}'
        on_starting = "myhooks.started"
        post_request = "myhooks.post2"
        """,
    )
    srv = launch("-c", str(conf), "testapp:app", port=port)
    assert get(srv.url + "/x")[0] in (200, 404)
    assert wait_until(lambda: hooklog.exists() and "post_request /x" in hooklog.read_text(), 10)
    assert hooklog.read_text().splitlines()[0] == "on_starting"


# --------------------------------------------------------------------------------------
# processes and signals


def test_workers_count(start_server):
    srv = start_server("-w", "3", "testapp:app")
    kids = wait_workers(srv, 3)
    time.sleep(0.5)
    assert children(srv.pid) == kids
    pids = {get_json(srv.url + "/pid")["pid"] for _ in range(10)}
    assert pids <= set(kids)


def test_killed_worker_is_replaced(start_server):
    srv = start_server("-w", "3", "testapp:app")
    kids = wait_workers(srv, 3)
    victim = kids[0]
    os.kill(victim, signal.SIGKILL)
    new = wait_until(lambda: (lambda k: len(k) == 3 and victim not in k and k)(children(srv.pid)), 10)
    assert new, f"worker not replaced: {children(srv.pid)}\n{srv.log()}"
    assert victim not in new
    assert len(set(new) - set(kids)) == 1
    assert srv.wait_for(f"Worker (pid:{victim}) was sent SIGKILL")
    for _ in range(5):
        assert get(srv.url + "/")[0] == 200
    assert srv.proc.poll() is None


def test_sigterm_exits_0_without_children(start_server):
    srv = start_server("-w", "2", "testapp:app")
    kids = wait_workers(srv, 2)
    srv.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0, srv.log()
    assert wait_until(lambda: not any(alive(k) for k in kids), 5), [proc_stat(k) for k in kids]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_quick_shutdown(start_server, sig):
    srv = start_server("-w", "2", "testapp:app")
    kids = wait_workers(srv, 2)
    t0 = time.monotonic()
    srv.send_signal(sig)
    assert srv.proc.wait(15) == 0, srv.log()
    assert time.monotonic() - t0 < 5, srv.log()
    assert wait_until(lambda: not any(alive(k) for k in kids), 5)


def _request_in_background(url, timeout=15):
    result = {}

    def run():
        try:
            result["r"] = get(url, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - the caller decides
            result["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_quick_shutdown_does_not_wait_for_requests(start_server, sig):
    """INT/QUIT: workers exit at once (Gunicorn: sys.exit(0) after 0.1 s); a 10 s request
    in flight is abandoned, not waited for."""
    srv = start_server("-w", "1", "testapp:app")
    wait_workers(srv, 1)
    t, _ = _request_in_background(srv.url + "/sleep?10")
    time.sleep(0.6)
    t0 = time.monotonic()
    srv.send_signal(sig)
    assert srv.proc.wait(15) == 0, srv.log()
    assert time.monotonic() - t0 < 4, f"quick shutdown took {time.monotonic() - t0:.1f}s\n{srv.log()}"


def test_sigterm_kills_after_graceful_timeout(start_server):
    srv = start_server("-w", "1", "--graceful-timeout", "1", "testapp:app")
    kids = wait_workers(srv, 1)
    t, _ = _request_in_background(srv.url + "/sleep?10")
    time.sleep(0.6)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0, srv.log()
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 5, f"graceful stop took {elapsed:.1f}s with --graceful-timeout 1\n{srv.log()}"
    assert wait_until(lambda: not any(alive(k) for k in kids), 5)


def test_sigterm_finishes_in_flight_request(start_server):
    srv = start_server("-w", "1", "testapp:app")
    wait_workers(srv, 1)
    result = {}

    def slow():
        try:
            result["r"] = get(srv.url + "/sleep?2", timeout=15)
        except Exception as e:  # noqa: BLE001 - reported below
            result["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.6)
    srv.send_signal(signal.SIGTERM)
    t.join(20)
    assert "e" not in result, f"{result.get('e')!r}\n{srv.log()}"
    status, body = result["r"]
    assert status == 200 and json.loads(body)["slept"] is True
    assert srv.proc.wait(15) == 0, srv.log()


def test_ttin_ttou(start_server):
    srv = start_server("-w", "2", "testapp:app")
    kids = wait_workers(srv, 2)
    srv.send_signal(signal.SIGTTIN)
    more = wait_workers(srv, 3, timeout=10)
    assert set(kids) < set(more)
    assert srv.wait_for("ttin")
    # Workers are forked in order, so (barring pid wrap-around) the lowest pid is the
    # oldest; the "Booting worker" lines are written by the children and may interleave.
    oldest = min(kids)
    srv.send_signal(signal.SIGTTOU)
    fewer = wait_workers(srv, 2, timeout=10)
    assert set(fewer) < set(more)
    assert oldest not in fewer, "TTOU retires the oldest worker, as Gunicorn does"
    time.sleep(1.0)
    assert len(children(srv.pid)) == 2
    assert get(srv.url + "/")[0] == 200


def test_ttou_never_below_one_worker(start_server):
    srv = start_server("-w", "1", "testapp:app")
    kids = wait_workers(srv, 1)
    srv.send_signal(signal.SIGTTOU)
    assert srv.wait_for("ttou")
    time.sleep(1.0)
    assert children(srv.pid) == kids
    assert get(srv.url + "/")[0] == 200


# --------------------------------------------------------------------------------------
# threads and slow clients


def _concurrent_sleeps(srv, n, secs):
    results = []
    errors = []

    def one():
        try:
            results.append(get_json(f"{srv.url}/sleep?{secs}", timeout=30))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert not errors, errors
    assert len(results) == n
    return elapsed, results


def test_threads_run_concurrently(start_server):
    srv = start_server("-w", "1", "--threads", "4", "testapp:app")
    elapsed, results = _concurrent_sleeps(srv, 4, 1)
    assert elapsed < 2.5, f"4 x 1 s requests on 4 threads took {elapsed:.2f}s"
    assert len({r["pid"] for r in results}) == 1
    assert len({r["thread"] for r in results}) == 4


def test_one_thread_serializes(start_server):
    srv = start_server("-w", "1", "--threads", "1", "testapp:app")
    elapsed, _ = _concurrent_sleeps(srv, 4, 0.5)
    assert elapsed >= 1.9, f"4 x 0.5 s requests on 1 thread took only {elapsed:.2f}s"


def test_slow_headers_do_not_block(start_server):
    srv = start_server("-w", "1", "--threads", "1", "testapp:app")
    stalled = srv.connect()
    try:
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        time.sleep(0.3)
        t0 = time.monotonic()
        assert get(srv.url + "/", timeout=5)[0] == 200
        assert time.monotonic() - t0 < 1.0
    finally:
        stalled.close()


def test_slow_body_does_not_block(start_server):
    srv = start_server("-w", "1", "--threads", "1", "testapp:app")
    slow = srv.connect(timeout=10)
    done = {}

    def trickle():
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        for b in b"0123456789":
            time.sleep(0.2)
            slow.sendall(bytes([b]))
        done["raw"] = recv_all(slow, 10)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        time.sleep(0.4)
        timings = []
        for _ in range(3):
            t0 = time.monotonic()
            assert get(srv.url + "/", timeout=5)[0] == 200
            timings.append(time.monotonic() - t0)
            time.sleep(0.3)
        assert max(timings) < 1.0, timings
    finally:
        t.join(15)
        slow.close()
    status, body = split_response(done.get("raw", b""))
    assert status == 200 and body == b"0123456789", done


# --------------------------------------------------------------------------------------
# zero values and the config module, as Gunicorn takes them


def test_zero_threads_and_worker_connections_start_as_in_gunicorn(start_server):
    """Gunicorn accepts 0 for both: no threads is its sync worker, and its sync worker
    ignores worker_connections. Here 0 connections means no limit."""
    srv = start_server("--threads", "0", "--worker-connections", "0", "testapp:app")
    held = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(3)]
    try:
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in held:
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), srv.log()
    finally:
        for s in held:
            s.close()
    assert "Using worker: sync" in srv.log(), srv.log()


def test_zero_workers_start_the_master_alone_and_ttin_adds_one(start_server):
    srv = start_server("-w", "0", "testapp:app", wait=False)
    assert wait_until(lambda: "Listening at:" in srv.log(), 10), srv.log()
    time.sleep(1.0)
    assert "Booting worker" not in srv.log(), srv.log()
    assert children(srv.pid) == [], srv.log()
    srv.send_signal(signal.SIGTTIN)
    srv.wait_ready()
    with urllib.request.urlopen(f"http://{srv.host}:{srv.port}/", timeout=5) as r:
        assert r.status == 200


def test_config_module_is_loaded_as_gunicorn_loads_it(start_server, tmp_path):
    """`__file__` is absolute (hooks find files beside the config after a chdir) and the
    module is sys.modules["__config__"]."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "site.py").write_text(
        textwrap.dedent(
            """\
            import os, sys
            chdir = "/"
            def when_ready(server):
                here = os.path.dirname(__file__)
                with open(os.path.join(here, "seen.txt"), "w") as f:
                    f.write(f"{os.path.isabs(__file__)} {sys.modules['__config__'].__file__ == __file__}")
            """
        )
    )
    srv = start_server("-c", "conf/site.py", "testapp:app", cwd=tmp_path)
    seen = tmp_path / "conf" / "seen.txt"
    assert wait_until(seen.exists, 5), srv.log()
    assert seen.read_text() == "True True", srv.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_log_files_are_given_to_the_worker_user(start_server, tmp_path):
    """Gunicorn's logger chowns its files to --user/--group, so workers can reopen them
    after a rotation (USR1)."""
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    elog, alog = tmp_path / "error.log", tmp_path / "access.log"
    srv = start_server(
        "-u", "nobody", "-g", str(nobody.pw_gid), "--error-logfile", str(elog), "--access-logfile", str(alog),
        "testapp:app", wait=False,
    )
    assert wait_until(lambda: elog.exists() and "Listening at:" in elog.read_text(), 10), srv.log()
    for f in (elog, alog):
        st = f.stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), f


def test_missing_python_config_module_is_one_line(run_cli):
    """Gunicorn imports a `python:` config outside its file loader: the error reaches its
    one-line "Error: ..." handler (a file config's errors print a traceback instead)."""
    res = run_cli("-c", "python:cli_no_such_config_module", "testapp:app")
    out = output(res)
    assert res.returncode == 1, out
    assert "Error: No module named 'cli_no_such_config_module'" in out, out
    assert "Traceback" not in out, out


def test_config_file_without_a_python_extension_is_warned_about(run_cli, tmp_path):
    conf = tmp_path / "gunicorn.conf"
    conf.write_text("workers = 1\n")
    res = run_cli("-c", str(conf), "--check-config", "testapp:app")
    out = output(res)
    assert res.returncode == 0, out
    assert "!!! WARNING: configuration file should have a valid Python extension." in out, out


def test_config_values_gunicorn_accepts_are_accepted(start_server, tmp_path):
    """Values from real Gunicorn configs: helper names one letter from a setting,
    strings with stray whitespace, the boolean form of proxy_protocol, a StatsD host
    that does not resolve yet (Gunicorn then sends no metrics), and an empty
    FORWARDED_ALLOW_IPS, which trusts no proxy."""
    conf = tmp_path / "gunicorn_values.py"
    conf.write_text(
        textwrap.dedent(
            """\
            log_level = "info"
            loglevel = log_level
            worker_class = " sync "
            proxy_protocol = False
            statsd_host = "statsd.invalid:8125"
            """
        )
    )
    srv = start_server("-c", str(conf), "testapp:app", env={"FORWARDED_ALLOW_IPS": ""})
    assert "Ignoring \"log_level\"" in srv.log(), srv.log()
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
        out = recv_all(s, 5)
    assert out.startswith(b"HTTP/1.1 200"), out
    assert b'"wsgi.url_scheme": "http"' in out, out
