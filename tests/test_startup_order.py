"""The master's start-up and shutdown order, as Gunicorn 27's arbiter has it, through the
real `ferricorn` command: daemonize, then `nworkers_changed` and the preloaded app (the
arbiter's constructor), then the "Starting" line, the pidfile, `on_starting`, the sockets;
at the end the pidfile goes before `on_exit`. Also what follows from it: a preloaded app
that fails stops the start before anything is bound (exit 1), relative log paths are
relative to `--chdir`, hook threads of the master keep running, and each worker's
`max_requests` shows its jitter."""

import os
import signal
import socket
import time
from pathlib import Path

from conftest import free_port, wait_until


def _config(tmp_path, body):
    path = tmp_path / "order.conf.py"
    path.write_text(body)
    return path


def test_preload_failure_stops_before_binding(run_cli, tmp_path):
    (tmp_path / "notcallable.py").write_text("app = 42\n")
    port = free_port()
    for app, words in [("testapp:nope", "Failed to find attribute 'nope' in 'testapp'."),
                       ("notcallable:app", "Application object must be callable."),
                       ("no_such_module_xyz:app", "No module named 'no_such_module_xyz'")]:
        res = run_cli("--preload", "--pythonpath", str(tmp_path), "-b", f"127.0.0.1:{port}", app)
        assert res.returncode == 1, (app, res.returncode, res.stderr)
        assert words in res.stderr, (app, res.stderr)
        # Nothing was started: no Starting/Listening lines, the port was never bound.
        assert "Listening at" not in res.stderr and "Starting ferricorn" not in res.stderr, res.stderr


def test_hook_order_pidfile_and_preload(start_server, tmp_path):
    log = tmp_path / "order.log"
    pidfile = tmp_path / "app.pid"
    (tmp_path / "orderapp.py").write_text(
        "import os, sys\n"
        "print('ORDERAPP IMPORTED', file=sys.stderr, flush=True)\n"
        f"open({str(log)!r}, 'a').write('import %d\\n' % os.getpid())\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n"
    )
    conf = _config(
        tmp_path,
        "import os\n"
        f"LOG = {str(log)!r}\n"
        f"PIDFILE = {str(pidfile)!r}\n"
        "def w(line):\n"
        "    open(LOG, 'a').write(line + '\\n')\n"
        "def nworkers_changed(server, new, old):\n"
        "    w('nworkers_changed %s %s' % (new, old))\n"
        "def on_starting(server):\n"
        "    w('on_starting pidfile=%s' % os.path.exists(PIDFILE))\n"
        "def when_ready(server):\n"
        "    w('when_ready')\n"
        "def on_exit(server):\n"
        "    w('on_exit pidfile=%s' % os.path.exists(PIDFILE))\n",
    )
    srv = start_server("-c", str(conf), "--preload", "-w", "2", "-p", str(pidfile), "orderapp:app",
                       env={"PYTHONPATH": str(tmp_path)})
    assert srv.stop(signal.SIGTERM) == 0
    lines = log.read_text().splitlines()
    master = srv.pid
    assert lines[:5] == [
        "nworkers_changed 2 None",
        f"import {master}",
        "on_starting pidfile=True",
        "when_ready",
        "on_exit pidfile=False",
    ], lines
    text = srv.log()
    # The preloaded app is imported before the "Starting" line, which precedes the sockets.
    assert text.index("ORDERAPP IMPORTED") < text.index("Starting ferricorn") < text.index("Listening at"), text


def test_relative_log_files_follow_chdir(start_server, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    srv = start_server("--chdir", "sub", "--error-logfile", "err.log", "--access-logfile", "acc.log",
                       "-p", "app.pid", "testapp:app", cwd=tmp_path, wait=False)
    err = sub / "err.log"
    assert wait_until(lambda: err.exists() and "Booting worker" in err.read_text()), srv.log()
    assert wait_until(lambda: b"200" in srv.raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert wait_until(lambda: (sub / "acc.log").exists() and (sub / "acc.log").read_text())
    assert (sub / "app.pid").exists()
    assert srv.stop() == 0
    assert "Starting ferricorn" in (sub / "err.log").read_text()
    assert not (tmp_path / "err.log").exists() and not (tmp_path / "acc.log").exists()


def test_master_threads_started_by_hooks_keep_running(start_server, tmp_path):
    beats = tmp_path / "beats.log"
    conf = _config(
        tmp_path,
        "import os, threading, time\n"
        "def on_starting(server):\n"
        "    def beat():\n"
        "        while True:\n"
        f"            open({str(beats)!r}, 'a').write('%d\\n' % os.getpid())\n"
        "            time.sleep(0.1)\n"
        "    threading.Thread(target=beat, daemon=True).start()\n",
    )
    srv = start_server("-c", str(conf), "testapp:app")
    time.sleep(1.5)
    lines = beats.read_text().split()
    assert srv.stop() == 0
    # The master's loop holds no GIL while it waits: the thread beats about 10 times a second.
    assert len(lines) >= 8 and set(lines) == {str(srv.pid)}, lines


def test_on_exit_exception_makes_exit_status_1(start_server, tmp_path):
    conf = _config(tmp_path, "def on_exit(server):\n    raise RuntimeError('cleanup failed')\n")
    srv = start_server("-c", str(conf), "testapp:app")
    assert srv.stop() == 1
    assert "Exception in on_exit hook" in srv.log() and "cleanup failed" in srv.log()


def test_worker_max_requests_shows_its_jitter(start_server, tmp_path):
    out = tmp_path / "max.log"
    conf = _config(
        tmp_path,
        "def post_worker_init(worker):\n"
        f"    open({str(out)!r}, 'a').write('%d\\n' % worker.max_requests)\n",
    )
    srv = start_server("-c", str(conf), "-w", "4", "--max-requests", "100", "--max-requests-jitter", "50",
                       "testapp:app")
    assert wait_until(lambda: out.exists() and len(out.read_text().split()) == 4)
    values = [int(v) for v in out.read_text().split()]
    assert srv.stop() == 0
    assert all(100 <= v <= 150 for v in values), values
    assert len(set(values)) > 1, values


def test_daemon_hooks_run_in_the_daemon(run_cli, tmp_path):
    log = tmp_path / "daemon.log"
    pidfile = tmp_path / "d.pid"
    conf = _config(
        tmp_path,
        "import os\n"
        "def on_starting(server):\n"
        f"    open({str(log)!r}, 'a').write('on_starting %d\\n' % os.getpid())\n"
        "def when_ready(server):\n"
        f"    open({str(log)!r}, 'a').write('when_ready %d\\n' % server.pid)\n",
    )
    port = free_port()
    res = run_cli("-D", "-c", str(conf), "-p", str(pidfile), "-b", f"127.0.0.1:{port}", "testapp:app")
    assert res.returncode == 0, res.stderr
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()
                          and log.exists() and len(log.read_text().splitlines()) == 2)
        pid = int(pidfile.read_text())
        assert log.read_text().split() == ["on_starting", str(pid), "when_ready", str(pid)], log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=15)


def test_failing_worker_exit_is_a_warning_as_in_gunicorn(start_server, tmp_path):
    conf = _config(tmp_path, "def worker_exit(server, worker):\n    raise RuntimeError('exit bug')\n")
    srv = start_server("-c", str(conf), "testapp:app")
    assert srv.stop() == 0
    assert "[WARNING] Exception during worker exit:" in srv.log() and "exit bug" in srv.log(), srv.log()


def test_server_methods_hooks_call(start_server, tmp_path):
    """Gunicorn's Arbiter methods hooks use: kill_worker (a worker replaced), reload (a
    HUP), and `server.pid` the master's pid."""
    out = tmp_path / "methods.log"
    conf = _config(
        tmp_path,
        "import os, signal, threading, time\n"
        "def when_ready(server):\n"
        "    def act():\n"
        "        while not server.WORKERS:\n"
        "            time.sleep(0.05)\n"
        "        pid = next(iter(server.WORKERS))\n"
        f"        open({str(out)!r}, 'a').write('%d %d %d\\n' % (server.pid, os.getpid(), pid))\n"
        "        server.kill_worker(pid, signal.SIGTERM)\n"
        "        time.sleep(1)\n"
        "        server.reload()\n"
        "    threading.Thread(target=act, daemon=True).start()\n",
    )
    srv = start_server("-c", str(conf), "testapp:app")
    assert wait_until(lambda: "Handling signal: hup" in srv.log(), timeout=10), srv.log()
    master, hook_pid, killed = map(int, out.read_text().split())
    assert master == hook_pid == srv.pid
    assert srv.log().count("Booting worker") >= 2 and f"Worker exiting (pid: {killed})" in srv.log(), srv.log()
    assert srv.stop() == 0
