"""Real-world gunicorn.conf.py files (tests/configs/), each started with
`ferricorn -c <file> <app>` and checked end to end over real sockets: the hooks they
define fire in Gunicorn's order with Gunicorn's arguments, their settings are in effect
(worker processes, proxy trust, logging, environment) and the app answers.

A few tests run Gunicorn itself on the same file and compare the recorded hook sequence.
To check that the tests themselves encode Gunicorn's behaviour, run the whole file against
Gunicorn: `REAL_CONFIGS_SERVER=gunicorn pytest tests/test_real_configs.py`.

Reference: Gunicorn 27.0.1 (docs/reference sections 1, 2 and 5)."""

import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import HERE, TcpServer, alive, base_env, children, ferricorn_cmd, free_port, wait_until, wait_workers

CONFIGS = HERE / "configs"
# Which server the tests start; "gunicorn" runs the same tests against Gunicorn itself.
SERVER = os.environ.get("REAL_CONFIGS_SERVER", "ferricorn")


def gunicorn_cmd():
    exe = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    return [exe] if exe else None


needs_gunicorn = pytest.mark.skipif(gunicorn_cmd() is None, reason="gunicorn is not installed next to the test interpreter")


def conf(name):
    return str(CONFIGS / name)


def config_env(extra=None):
    """The test environment with tests/configs (conf_app, python: configs) importable."""
    env = base_env(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(CONFIGS), env["PYTHONPATH"]])
    return env


class Proc(TcpServer):
    """A server process (ferricorn or gunicorn) started with an explicit command; the
    bind address comes from the config file, the test only says which port to probe."""

    def __init__(self, cmd, args, cwd, env, log_path, port):
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd + list(args), cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout=15.0):
        """Waits until GET / answers 200 (works whatever the error log's destination)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log()}")


@pytest.fixture
def serve(tmp_path):
    """serve(*args, env={...}, port=..., server="ferricorn"|"gunicorn", wait=True) starts a
    server on a config-chosen port (the config reads BIND/PORT from the environment)."""
    procs = []

    def start(*args, env=None, port=None, server=None, wait=True, cwd=None):
        server = server or SERVER
        port = port or free_port()
        env = dict(env or {})
        env.setdefault("BIND", f"127.0.0.1:{port}")
        cmd = ferricorn_cmd() if server == "ferricorn" else gunicorn_cmd()
        extra = ["--no-control-socket"] if server == "gunicorn" else []
        p = Proc(cmd, extra + list(args), cwd or tmp_path, config_env(env), tmp_path / f"{server}-{len(procs)}.log", port)
        procs.append(p)
        if wait:
            p.wait_serving()
        return p

    yield start
    for p in procs:
        p.stop()


def get(url, headers=None, source=None, timeout=10.0):
    """GET over a fresh connection, optionally from a given local address (127.0.0.2...)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def get_json(url, **kw):
    status, body = get(url, **kw)
    assert status == 200, (status, body)
    return json.loads(body)


def hook_lines(path):
    """[(name, pid-field, getpid, extra...)] from a hook log."""
    if not Path(path).exists():
        return []
    return [tuple(line.split()) for line in Path(path).read_text().splitlines() if line.strip()]


def names(lines):
    return [l[0] for l in lines]


def wait_lines(path, pred, timeout=10.0):
    ok = wait_until(lambda: pred(hook_lines(path)), timeout)
    assert ok, f"hook log:\n{Path(path).read_text() if Path(path).exists() else '(none)'}"
    return hook_lines(path)


def settle(path, quiet=0.6, timeout=10.0):
    """Waits until the hook log has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        cur = Path(path).read_text() if Path(path).exists() else ""
        if cur != last:
            last, since = cur, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return hook_lines(path)
        time.sleep(0.05)
    return hook_lines(path)


def concurrent(fn, n):
    out, errors = [], []

    def one():
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


def print_config(*args, env=None, server=None, cwd=None):
    server = server or SERVER
    cmd = ferricorn_cmd() if server == "ferricorn" else gunicorn_cmd()
    res = subprocess.run(cmd + ["--print-config", *args], cwd=cwd, env=config_env(env), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    values = {}
    for line in res.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and name.strip().isidentifier():
            values[name.strip()] = value.strip()
    return values, res


# --------------------------------------------------------------------------------------
# 1. Django on Heroku


def test_heroku_django(serve):
    port = free_port()
    env = {"PORT": str(port), "WEB_CONCURRENCY": "2", "GUNICORN_MAX_REQUESTS": "4", "GUNICORN_MAX_REQUESTS_JITTER": "0"}
    srv = serve("-c", conf("heroku_django.py"), "djangoproject.wsgi", env=env, port=port)
    log = srv.log()
    assert f"Listening at: http://0.0.0.0:{port}" in log, log
    kids = wait_workers(srv, 2)
    for _ in range(20):
        data = get_json(srv.url + "/api/items/")
        assert data["count"] == 2
    # max_requests = 4 with two workers: at least one of them was recycled.
    assert wait_until(lambda: len(children(srv.pid)) == 2 and set(children(srv.pid)) != set(kids), 10), (kids, children(srv.pid), srv.log())
    for _ in range(3):
        status, body = get(srv.url + "/api/items/")
        assert status == 200
    assert srv.wait_for('"GET /api/items/ HTTP/1.1" 200')
    assert srv.log().count('"GET /api/items/ HTTP/1.1" 200') >= 20, srv.log()
    assert "Autorestarting worker after current request." in srv.log(), srv.log()
    assert srv.stop() == 0


def test_heroku_django_settings_in_effect():
    values, _ = print_config("-c", conf("heroku_django.py"), "djangoproject.wsgi", env={"PORT": "5123", "WEB_CONCURRENCY": "4"})
    assert values["bind"] == "['0.0.0.0:5123']"
    assert values["workers"] == "4"
    assert values["preload_app"] == "True"
    assert values["max_requests"] == "1200" and values["max_requests_jitter"] == "50"
    assert values["accesslog"] == "-"


# --------------------------------------------------------------------------------------
# 2. Docker image


def test_docker_style(serve):
    port = free_port()
    env = {"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "3"}
    srv = serve("-c", conf("docker.py"), "conf_app:app", env={**env, "BIND": ""}, port=port)
    kids = wait_workers(srv, 3)
    # The config prints its settings once, when it is read.
    printed = [l for l in srv.log().splitlines() if l.startswith("{")]
    assert len(printed) == 1, srv.log()
    assert json.loads(printed[0])["workers"] == 3 and json.loads(printed[0])["bind"] == f"127.0.0.1:{port}"
    # forwarded_allow_ips = "*": a proxy at any address is trusted with X-Forwarded-Proto.
    env_ = get_json(srv.url + "/environ", headers={"X-Forwarded-Proto": "https"}, source="127.0.0.2")
    assert env_["REMOTE_ADDR"] == "127.0.0.2"
    assert env_["wsgi.url_scheme"] == "https", env_
    assert env_["pid"] in kids
    assert get_json(srv.url + "/environ", source="127.0.0.2")["wsgi.url_scheme"] == "http"
    assert srv.wait_for('"GET /environ HTTP/1.1" 200')  # accesslog "-"
    assert srv.stop() == 0


def test_config_helper_variables_are_ignored(serve, tmp_path):
    """Gunicorn applies the top-level names that are settings and ignores every other one
    (Config: "Ignore unknown names"). Real configs are full of helper variables whose
    names look like settings: host, port, worker, max_workers, log_data..."""
    path = tmp_path / "helpers.conf.py"
    path.write_text(
        "import os\n"
        "host = '127.0.0.1'\n"
        "port = os.environ['PORT']\n"
        "bind = f'{host}:{port}'\n"
        "worker = 'sync'\n"
        "max_workers = 4\n"
        "cores = 2\n"
        "workers = 2\n"
        "log_data = {'bind': bind}\n"
    )
    port = free_port()
    srv = serve("-c", str(path), "conf_app:app", env={"PORT": str(port)}, port=port)
    wait_workers(srv, 2)
    assert get(srv.url + "/")[0] == 200


def test_docker_style_defaults_from_cpu_count():
    import multiprocessing

    values, res = print_config("-c", conf("docker.py"), "conf_app:app", env={"PORT": "8123"})
    assert values["workers"] == str(multiprocessing.cpu_count() * 2 + 1)
    assert values["bind"] == "['0.0.0.0:8123']"
    assert values["worker_tmp_dir"] == "/dev/shm"
    assert values["forwarded_allow_ips"] == "['*']"
    assert values["graceful_timeout"] == "120" and values["timeout"] == "120" and values["keepalive"] == "5"


def test_docker_style_uvicorn_worker(serve):
    """The tiangolo image runs this config with `-k uvicorn.workers.UvicornWorker`."""
    pytest.importorskip("uvicorn")
    port = free_port()
    srv = serve(
        "-c", conf("docker.py"), "-k", "uvicorn.workers.UvicornWorker", "conf_app:asgi_app",
        env={"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2", "BIND": ""}, port=port,
    )
    wait_workers(srv, 2)
    scope = get_json(srv.url + "/x", headers={"X-Forwarded-Proto": "https"}, source="127.0.0.2")
    assert scope["scheme"] == "https", scope
    assert scope["path"] == "/x"
    assert srv.stop() == 0


# --------------------------------------------------------------------------------------
# 3. Kubernetes behind an ingress


def test_kubernetes_style(serve):
    port = free_port()
    env = {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_KEEPALIVE": "1", "GUNICORN_GRACEFUL_TIMEOUT": "1"}
    srv = serve("-c", conf("kubernetes.py"), "conf_app:app", env=env, port=port)
    kids = wait_workers(srv, 2)
    h = {"X-Forwarded-Proto": "https"}
    for source in ("127.0.0.2", "127.0.0.1"):
        e = get_json(srv.url + "/environ", headers=h, source=source)
        assert e["wsgi.url_scheme"] == "https", (source, e)
        assert e["REMOTE_ADDR"] == source
        assert e["wsgi.multithread"] is True
    # Only X-Forwarded-Proto is in secure_scheme_headers: the other defaults are ignored.
    assert get_json(srv.url + "/environ", headers={"X-Forwarded-Ssl": "on"}, source="127.0.0.2")["wsgi.url_scheme"] == "http"
    assert get_json(srv.url + "/environ", headers={"X-Forwarded-Protocol": "ssl"}, source="127.0.0.2")["wsgi.url_scheme"] == "http"
    assert get_json(srv.url + "/environ", headers={"X-Forwarded-Proto": "http"})["wsgi.url_scheme"] == "http"

    # keepalive = 1: the connection is reused within the second, closed after it.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while True:
                line = f.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b""):
                    break
            f.read(length)
            time.sleep(0.3)
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(1) == b"", "the idle keep-alive connection should be closed by the server"
        idle = time.monotonic() - t0 + 0.3
        assert 0.7 <= idle < 3.5, f"closed after {idle:.1f}s idle with keepalive = 1"

    # graceful_timeout = 1: TERM with a 10 s request in flight exits after about a second.
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", _try(lambda: get(srv.url + "/sleep?10", timeout=15))))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0, srv.log()
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 4, f"graceful stop took {elapsed:.1f}s with graceful_timeout = 1\n{srv.log()}"
    assert wait_until(lambda: not any(alive(k) for k in kids), 5)
    t.join(15)


def _try(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return e


def test_default_forwarded_allow_ips_does_not_trust_other_addresses(serve):
    """The control for the two tests above: without forwarded_allow_ips = '*', a peer at
    127.0.0.2 is not trusted and X-Forwarded-Proto is ignored."""
    srv = serve("-c", conf("when_ready_signal.py"), "conf_app:app", env={"APP_INITIALIZED": os.devnull})
    e = get_json(srv.url + "/environ", headers={"X-Forwarded-Proto": "https"}, source="127.0.0.2")
    assert e["REMOTE_ADDR"] == "127.0.0.2" and e["wsgi.url_scheme"] == "http", e
    e = get_json(srv.url + "/environ", headers={"X-Forwarded-Proto": "https"}, source="127.0.0.1")
    assert e["wsgi.url_scheme"] == "https", e


# --------------------------------------------------------------------------------------
# Gunicorn's examples/example_config.py


def test_gunicorn_example_config(serve):
    srv = serve("-c", conf("gunicorn_example.py"), "conf_app:app")
    kids = wait_workers(srv, 2)
    master = srv.pid
    assert wait_until(lambda: all(f"[{k}] [INFO] Worker spawned (pid: {k})" in srv.log() for k in kids), 5), srv.log()
    assert f"[{master}] [INFO] Server is ready. Spawning workers" in srv.log(), srv.log()
    assert get_json(srv.url + "/env?SPAM")["value"] == "eggs"
    assert get_json(srv.url + "/env?DJANGO_SECRET_KEY")["value"] == "something"
    assert srv.wait_for('"GET /env?SPAM HTTP/1.1" 200')
    srv.send_signal(signal.SIGINT)
    assert srv.proc.wait(15) == 0, srv.log()
    for k in kids:
        assert f"[{k}] [INFO] worker received INT or QUIT signal" in srv.log(), srv.log()
    assert "Exception in" not in srv.log(), srv.log()


# --------------------------------------------------------------------------------------
# 4. every lifecycle hook, in Gunicorn's order


def test_lifecycle_hooks_order(serve, tmp_path):
    hooklog = tmp_path / "hooks.log"
    srv = serve("-c", conf("hooks_logging.py"), "conf_app:app", env={"HOOK_LOG": str(hooklog), "WEB_CONCURRENCY": "2"})
    kids = wait_workers(srv, 2)
    master = str(srv.pid)
    wait_lines(hooklog, lambda ls: names(ls).count("post_worker_init") == 2)
    assert get(srv.url + "/")[0] == 200
    assert srv.stop(signal.SIGTERM) == 0
    lines = hook_lines(hooklog)
    # nworkers_changed is checked in test_nworkers_changed_*; its position is not this test's concern.
    lines = [l for l in lines if l[0] != "nworkers_changed"]
    seq = names(lines)
    assert seq[:2] == ["on_starting", "when_ready"], lines
    assert seq[-1] == "on_exit", lines
    assert not {"on_reload", "worker_int", "worker_abort", "pre_exec"} & set(seq), lines
    for name in ("on_starting", "when_ready", "on_exit"):
        (line,) = [l for l in lines if l[0] == name]
        assert line[1] == master and line[2] == master, (name, lines)
    assert seq.count("pre_fork") == 2 and seq.count("child_exit") == 2, lines
    for pre in [i for i, l in enumerate(lines) if l[0] == "pre_fork"]:
        assert lines[pre][2] == master
        age = lines[pre][3]
        (post_fork,) = [i for i, l in enumerate(lines) if l[0] == "post_fork" and l[3] == age]
        pid = lines[post_fork][1]
        assert int(pid) in kids, (pid, kids, lines)

        def at(name):
            found = [i for i, l in enumerate(lines) if l[0] == name and l[1] == pid]
            assert len(found) == 1, (name, pid, lines)
            return found[0]

        assert pre < post_fork < at("post_worker_init") < at("worker_exit") < at("child_exit") < len(lines) - 1, lines
        assert lines[post_fork][2] == pid and lines[at("post_worker_init")][2] == pid and lines[at("worker_exit")][2] == pid
        assert lines[at("child_exit")][2] == master, "child_exit runs in the master"
        assert lines[at("child_exit")][3] == age and lines[at("worker_exit")][3] == age
    # In pre_fork the worker object exists but has no process yet: Gunicorn's pid is "[booting]".
    for l in lines:
        if l[0] == "pre_fork":
            assert l[4] == "wpid=[booting]", l


def _hook_phases(serve, server, tmp_path):
    """Runs `server` on hooks_logging.py with one worker through start, a request, TTIN,
    TTOU, HUP and TERM; returns the hook names recorded in each phase."""
    hooklog = tmp_path / f"{server}-hooks.log"
    srv = serve("-c", conf("hooks_logging.py"), "conf_app:app", env={"HOOK_LOG": str(hooklog), "WEB_CONCURRENCY": "1"}, server=server)
    phases = {}
    done = 0

    def phase(name, action, n_workers):
        nonlocal done
        if action:
            action()
        wait_workers(srv, n_workers)
        lines = settle(hooklog)
        phases[name] = names(lines[done:])
        done = len(lines)

    phase("start", None, 1)
    assert get(srv.url + "/")[0] == 200
    phase("ttin", lambda: srv.send_signal(signal.SIGTTIN), 2)
    phase("ttou", lambda: srv.send_signal(signal.SIGTTOU), 1)
    phase("hup", lambda: srv.send_signal(signal.SIGHUP), 1)
    assert srv.stop() == 0
    phases["term"] = names(hook_lines(hooklog)[done:])
    return phases


@needs_gunicorn
def test_hook_sequence_matches_gunicorn(serve, tmp_path):
    g = _hook_phases(serve, "gunicorn", tmp_path)
    f = _hook_phases(serve, "ferricorn", tmp_path)
    # The order inside a HUP is racy in both servers (new workers boot while old ones
    # exit): compare that phase as a multiset, the others exactly.
    g["hup"], f["hup"] = sorted(g["hup"]), sorted(f["hup"])
    assert f == g


# --------------------------------------------------------------------------------------
# 5. post_fork reseeds random and reconnects


def test_post_fork_reconnect_per_worker(serve):
    srv = serve("-c", conf("post_fork_reconnect.py"), "conf_app:app", env={"WEB_CONCURRENCY": "2"})
    kids = wait_workers(srv, 2)
    master = srv.pid
    by_pid = {}
    deadline = time.monotonic() + 10
    while len(by_pid) < 2 and time.monotonic() < deadline:
        for s in concurrent(lambda: get_json(srv.url + "/state"), 8):
            by_pid.setdefault(s["pid"], s)
        # a worker busy with one connection leaves the next to the other one
        concurrent(lambda: get(srv.url + "/sleep?0.2"), 4)
    assert set(by_pid) == set(kids), (by_pid, kids)
    for pid, s in by_pid.items():
        assert s["imported_in"] == master, "preload_app imports the app in the master"
        assert s["connected_in"] == pid and s["connections"] == 1, s
        assert s["ppid"] == master
    a, b = by_pid.values()
    assert a["token"] != b["token"], "each worker reseeded random after the fork"
    for k in kids:
        assert f"Worker spawned (pid: {k}), reconnected" in srv.log(), srv.log()


# --------------------------------------------------------------------------------------
# 6. worker_exit cleanup


def test_worker_exit_cleanup_on_graceful_stop(serve, tmp_path):
    d = tmp_path / "cleanup"
    d.mkdir()
    srv = serve("-c", conf("worker_exit_cleanup.py"), "conf_app:app", env={"CLEANUP_DIR": str(d)})
    kids = wait_workers(srv, 2)
    # both workers have loaded the app (the boot-time race has its own test below)
    assert wait_until(lambda: all((d / f"worker-{k}.ready").exists() for k in kids), 10), srv.log()
    assert get(srv.url + "/")[0] == 200
    assert not list(d.glob("*.exited"))
    assert srv.stop(signal.SIGTERM) == 0
    files = sorted(p.name for p in d.glob("*.exited"))
    assert files == sorted(f"worker-{k}.exited" for k in kids), (files, kids)
    for k in kids:
        pid, getpid, imported_in = (d / f"worker-{k}.exited").read_text().split()
        assert int(pid) == k and int(getpid) == k, "worker_exit runs in the worker"
        assert int(imported_in) == k, "without preload the app is imported in each worker"


def test_worker_exit_runs_when_stopped_during_boot(serve, tmp_path):
    """TERM while the workers are still importing the app (a pod stopped during a slow
    start): Gunicorn's workers finish booting, then exit gracefully through worker_exit
    and log "Worker exiting"; they are not killed half-way."""
    d = tmp_path / "cleanup"
    d.mkdir()
    (tmp_path / "rc_slow_boot_app.py").write_text("import time\ntime.sleep(1.0)\nfrom conf_app import app\n")
    srv = serve("-c", conf("worker_exit_cleanup.py"), "rc_slow_boot_app:app", env={"CLEANUP_DIR": str(d)}, wait=False)
    kids = wait_workers(srv, 2)
    assert wait_until(lambda: all(f"Booting worker with pid: {k}" in srv.log() for k in kids), 5), srv.log()
    time.sleep(0.3)
    assert not list(d.iterdir()), "the app import takes a second: no worker is ready yet"
    srv.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0, srv.log()
    files = sorted(p.name for p in d.glob("*.exited"))
    assert files == sorted(f"worker-{k}.exited" for k in kids), (files, kids, srv.log())
    for k in kids:
        assert f"Worker exiting (pid: {k})" in srv.log(), srv.log()


# --------------------------------------------------------------------------------------
# 7. on_starting prepares the prometheus multiprocess directory


def test_prometheus_multiproc_dir(serve, tmp_path):
    d = tmp_path / "prom"
    d.mkdir()
    (d / "counter_99999.db").write_text("stale from the previous run")
    srv = serve("-c", conf("prometheus_multiproc.py"), "conf_app:app", env={"PROMETHEUS_MULTIPROC_DIR": str(d)}, wait=False)
    assert wait_until(lambda: (d / "on_starting").exists(), 10), srv.log()
    # Before any request: wiped and recreated by the master.
    assert sorted(p.name for p in d.iterdir()) == ["on_starting"]
    assert (d / "on_starting").read_text() == str(srv.pid)
    srv.wait_serving()
    kids = wait_workers(srv, 2)
    pids = set()
    for _ in range(30):
        pids.add(get_json(srv.url + "/metric")["pid"])
        if pids == set(kids):
            break
        concurrent(lambda: get_json(srv.url + "/sleep?0.1"), 4)
        for m in concurrent(lambda: get_json(srv.url + "/metric"), 4):
            pids.add(m["pid"])
    assert pids and pids <= set(kids)
    for p in pids:
        assert (d / f"gauge_livesum_{p}.db").exists()
    served_by = set(pids)
    # A worker that dies (OOM killer...) is marked dead by child_exit too.
    victim = kids[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: (d / f"dead_{victim}").exists(), 10), srv.log()
    assert (d / f"dead_{victim}").read_text() == str(srv.pid)
    kids = wait_until(lambda: (lambda k: len(k) == 2 and victim not in k and k)(children(srv.pid)), 10)
    assert kids, srv.log()
    assert get(srv.url + "/")[0] == 200
    assert srv.stop() == 0
    for k in kids + [victim]:
        assert (d / f"dead_{k}").read_text() == str(srv.pid), "child_exit runs in the master, once per worker"
        assert not (d / f"gauge_livesum_{k}.db").exists()
    for p in served_by:
        assert (d / f"counter_{p}.db").exists()


# --------------------------------------------------------------------------------------
# 8. when_ready signals readiness


def test_when_ready_touches_readiness_file(serve, tmp_path):
    ready = tmp_path / "app-initialized"
    srv = serve("-c", conf("when_ready_signal.py"), "conf_app:app", env={"APP_INITIALIZED": str(ready)}, wait=False)
    assert wait_until(lambda: ready.exists() or srv.proc.poll() is not None, 15) and ready.exists(), srv.log()
    # The listeners are bound before when_ready: the first request right now is answered.
    status, body = get(srv.url + "/")
    assert status == 200 and body.startswith(b"ok ")
    kids = wait_workers(srv, 2)
    assert int(body.split()[1]) in kids


# --------------------------------------------------------------------------------------
# 9. pre_request / post_request in the published style


def test_request_logging_hooks(serve):
    srv = serve("-c", conf("request_logging.py"), "conf_app:app")
    (worker,) = wait_workers(srv, 1)
    assert get(srv.url + "/env?HOME")[0] == 200
    assert get(srv.url + "/sleep?0.2")[0] == 200
    assert srv.wait_for(f"[{worker}] [INFO] GET /env\n")
    assert srv.wait_for(f"[{worker}] [INFO] GET /env 200 OK 200 in ")
    assert srv.wait_for(f"[{worker}] [INFO] GET /sleep 200 OK 200 in ")
    line = [l for l in srv.log().splitlines() if "GET /sleep 200 OK" in l][0]
    assert 0.19 <= float(line.rsplit(" ", 1)[1].rstrip("s")) < 2, line
    assert "Exception in" not in srv.log(), srv.log()


# --------------------------------------------------------------------------------------
# 10. on_reload + HUP


def test_on_reload_rereads_config_and_replaces_workers(serve, tmp_path):
    hooklog = tmp_path / "reload.log"
    workers_file = tmp_path / "workers"
    workers_file.write_text("1")
    srv = serve("-c", conf("reload_conf.py"), "conf_app:app", env={"HOOK_LOG": str(hooklog), "WORKERS_FILE": str(workers_file)})
    (old,) = wait_workers(srv, 1)
    workers_file.write_text("2")
    srv.send_signal(signal.SIGHUP)
    lines = wait_lines(hooklog, lambda ls: "on_reload" in names(ls))
    (reload_line,) = [l for l in lines if l[0] == "on_reload"]
    assert reload_line[1] == str(srv.pid)
    assert reload_line[2] == "workers=2", "on_reload sees the re-read config"
    new = wait_until(lambda: (lambda k: len(k) == 2 and old not in k and k)(children(srv.pid)), 10)
    assert new, (children(srv.pid), srv.log())
    assert wait_until(lambda: not alive(old), 10)
    lines = wait_lines(hooklog, lambda ls: names(ls).count("post_worker_init") == 3)
    assert {int(l[1]) for l in lines[names(lines).index("on_reload"):] if l[0] == "post_worker_init"} == set(new)
    assert srv.wait_for("Reloading: 2 workers")
    pids = {int(get(srv.url + "/")[1].split()[1]) for _ in range(6)}
    assert pids <= set(new)
    assert srv.proc.poll() is None


# --------------------------------------------------------------------------------------
# 11. logging: debug level to a file, captured output, proc_name; logconfig_dict


def test_debug_logging_capture_output_proc_name(serve, tmp_path):
    elog = tmp_path / "error.log"
    srv = serve("-c", conf("debug_logging.py"), "conf_app:app", env={"ERROR_LOG": str(elog)})
    (worker,) = wait_workers(srv, 1)
    assert get_json(srv.url + "/print?captured-42")["printed"] == "captured-42"
    assert wait_until(lambda: "stderr: captured-42" in elog.read_text(), 5), elog.read_text()
    text = elog.read_text()
    assert "stdout: captured-42" in text, text
    assert "captured-42" not in srv.log(), "capture_output sends the app's stdout/stderr to the error log file"
    # proc_name in the process titles (with setproctitle installed). The prefix is the
    # program's name ("gunicorn: master [...]" / "ferricorn: master [...]", documented).
    if importlib.util.find_spec("setproctitle"):
        master_title = Path(f"/proc/{srv.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        worker_title = Path(f"/proc/{worker}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "master [conf-test-app]" in master_title, master_title
        assert "worker [conf-test-app]" in worker_title, worker_title
    assert srv.stop() == 0
    text = elog.read_text()
    assert "Booting worker with pid" in text and "Shutting down: Master" in text
    # loglevel = "debug": the default pre_request hook logs each request at debug level,
    # and the master dumps its configuration at start.
    assert f"[{worker}] [DEBUG] GET /print" in text, text
    assert f"[{srv.pid}] [DEBUG] Current configuration:" in text, text


def test_logconfig_dict(serve):
    srv = serve("-c", conf("logconfig_dict_json.py"), "conf_app:app")
    assert get(srv.url + "/hello")[0] == 200
    assert srv.wait_for('"GET /hello HTTP/1.1" 200', 5)
    log = srv.log()
    assert f"CUSTOM level=INFO logger=gunicorn.error msg=Listening at: http://127.0.0.1:{srv.port}" in log, log
    (access,) = [l for l in log.splitlines() if '"GET /hello HTTP/1.1" 200' in l]
    assert access.startswith("CUSTOM level=INFO logger=gunicorn.access msg=127.0.0.1 - - ["), log


# --------------------------------------------------------------------------------------
# 12. raw_env, chdir, pythonpath


def test_raw_env_chdir_pythonpath(serve, tmp_path):
    project, libs, elsewhere = tmp_path / "project", tmp_path / "libs", tmp_path / "elsewhere"
    for d in (project, libs, elsewhere):
        d.mkdir()
    (libs / "rc_shared_lib.py").write_text("TEXT = 'from the pythonpath dir'\n")
    (project / "rc_project_app.py").write_text(
        "import os, rc_shared_lib, conf_app\n"
        "def app(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/lib':\n"
        "        body = (rc_shared_lib.TEXT + ' ' + os.getcwd()).encode()\n"
        "        start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "        return [body]\n"
        "    return conf_app.app(environ, start_response)\n"
    )
    srv = serve("-c", conf("env_paths.py"), "rc_project_app:app", env={"PROJECT_DIR": str(project), "EXTRA_PYTHONPATH": str(libs)}, cwd=elsewhere)
    assert get(srv.url + "/lib") == (200, f"from the pythonpath dir {project}".encode())
    assert get_json(srv.url + "/env?FOO")["value"] == "bar"
    assert get_json(srv.url + "/env?WITH_EQUALS")["value"] == "a=b"
    e = get_json(srv.url + "/env?DJANGO_SETTINGS_MODULE")
    assert e["value"] == "project.settings.production" and e["cwd"] == str(project)
    assert str(libs) in e["sys_path"]


# --------------------------------------------------------------------------------------
# 13. -c python:MODULE, -c file:PATH, GUNICORN_CMD_ARGS="-c ...", ./gunicorn.conf.py


PYMOD = "rc_python_settings"


def test_config_python_module(serve, tmp_path):
    (tmp_path / f"{PYMOD}.py").write_text(
        "import os\nbind = os.environ['BIND']\nworkers = 2\nraw_env = ['CONFIG_SOURCE=python-module']\n"
    )
    srv = serve("-c", f"python:{PYMOD}", "conf_app:app", cwd=tmp_path)
    wait_workers(srv, 2)
    assert get_json(srv.url + "/env?CONFIG_SOURCE")["value"] == "python-module"


def test_config_file_prefix(serve, tmp_path):
    path = tmp_path / "deploy" / "prod.conf.py"
    path.parent.mkdir()
    path.write_text("import os\nbind = os.environ['BIND']\nworkers = 2\nraw_env = ['CONFIG_SOURCE=file-prefix']\n")
    srv = serve("-c", f"file:{path}", "conf_app:app")
    wait_workers(srv, 2)
    assert get_json(srv.url + "/env?CONFIG_SOURCE")["value"] == "file-prefix"


def test_config_from_gunicorn_cmd_args(serve, tmp_path):
    path = tmp_path / "from_env.py"
    path.write_text("import os\nbind = os.environ['BIND']\nworkers = 2\nraw_env = ['CONFIG_SOURCE=cmd-args']\n")
    srv = serve("conf_app:app", env={"GUNICORN_CMD_ARGS": f"-c {path}"})
    wait_workers(srv, 2)
    assert get_json(srv.url + "/env?CONFIG_SOURCE")["value"] == "cmd-args"


def test_gunicorn_conf_py_discovered_in_cwd(serve, tmp_path):
    """A project directory with the Heroku config saved as ./gunicorn.conf.py; the start
    command names only the app."""
    shutil.copy(CONFIGS / "heroku_django.py", tmp_path / "gunicorn.conf.py")
    port = free_port()
    srv = serve("conf_app:app", env={"PORT": str(port), "WEB_CONCURRENCY": "2", "BIND": ""}, port=port, cwd=tmp_path)
    wait_workers(srv, 2)
    assert f"Listening at: http://0.0.0.0:{port}" in srv.log()
    assert get(srv.url + "/")[0] == 200
    assert srv.wait_for('"GET / HTTP/1.1" 200')  # accesslog = "-" from the discovered file


# --------------------------------------------------------------------------------------
# 14. wsgi_app in the config, no app on the command line


def test_wsgi_app_in_config(serve):
    srv = serve("-c", conf("wsgi_app_conf.py"))
    kids = wait_workers(srv, 2)
    status, body = get(srv.url + "/")
    assert status == 200 and int(body.split()[1]) in kids


def test_wsgi_app_django_style(serve, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("import os\nwsgi_app = 'djangoproject.wsgi:application'\nbind = os.environ['BIND']\n")
    srv = serve(cwd=tmp_path)
    assert get_json(srv.url + "/api/items/")["count"] == 2


# --------------------------------------------------------------------------------------
# 15. nworkers_changed with TTIN/TTOU; pre_exec with USR2


def test_nworkers_changed_ttin_ttou(serve, tmp_path):
    hooklog = tmp_path / "scaling.log"
    srv = serve("-c", conf("scaling_hooks.py"), "conf_app:app", env={"HOOK_LOG": str(hooklog), "WEB_CONCURRENCY": "2"})
    kids = wait_workers(srv, 2)
    srv.send_signal(signal.SIGTTIN)
    more = wait_workers(srv, 3)
    lines = wait_lines(hooklog, lambda ls: ("nworkers_changed", "3", "2") in ls)
    srv.send_signal(signal.SIGTTOU)
    fewer = wait_workers(srv, 2)
    assert set(kids) < set(more) and set(fewer) < set(more)
    lines = wait_lines(hooklog, lambda ls: ("nworkers_changed", "2", "3") in ls)
    assert lines.index(("nworkers_changed", "3", "2")) < lines.index(("nworkers_changed", "2", "3"))
    assert get(srv.url + "/")[0] == 200
    # Gunicorn also calls it once at start-up, when Arbiter.setup() first sets num_workers.
    assert lines == [("nworkers_changed", "2", "None"), ("nworkers_changed", "3", "2"), ("nworkers_changed", "2", "3")], lines


def test_pre_exec_on_usr2(serve, tmp_path):
    hooklog = tmp_path / "usr2.log"
    pidfile = tmp_path / "app.pid"
    srv = serve("-c", conf("scaling_hooks.py"), "conf_app:app",
                env={"HOOK_LOG": str(hooklog), "WEB_CONCURRENCY": "1", "PIDFILE": str(pidfile)})
    wait_workers(srv, 1)
    assert pidfile.read_text().strip() == str(srv.pid)
    new_pidfile = tmp_path / "app.pid.2"
    new_master = None
    try:
        srv.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: new_pidfile.exists() and new_pidfile.read_text().strip(), 15), srv.log()
        new_master = int(new_pidfile.read_text())
        lines = wait_lines(hooklog, lambda ls: "pre_exec" in names(ls))
        (pre_exec,) = [l for l in lines if l[0] == "pre_exec"]
        # pre_exec runs in the forked child just before exec, so its pid is the new master's.
        assert int(pre_exec[1]) == new_master != srv.pid
        assert wait_until(lambda: len(children(new_master)) == 1, 15), srv.log()
        assert get(srv.url + "/")[0] == 200
    finally:
        if new_master and alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not alive(new_master), 15)
    assert srv.proc.poll() is None
    assert get(srv.url + "/")[0] == 200
