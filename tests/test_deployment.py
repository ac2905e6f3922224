"""The deployment material in deploy/ checked against the real ferricorn command:

- deploy/Dockerfile: parsed (valid instructions, two stages, the wheel carried from the
  build stage, a non-root user) and its CMD run as the image would run it;
- deploy/kubernetes.yaml: parsed with PyYAML, the shutdown arithmetic checked
  (terminationGracePeriodSeconds > preStop + --graceful-timeout), and the container's
  command run with its readiness and liveness probes answered;
- deploy/systemd/ferricorn.{service,socket}: the unit's ExecStart run under
  systemd-socket-activate (LISTEN_FDS, sd_notify, ExecReload, SIGTERM), and a restart
  behind a socket held open the way systemd holds it;
- two ferricorn instances behind one nginx upstream under load: HUP of one, full restart
  of the other (DEPLOY_LONG=1 runs the load for 20 s instead of 5 s);
- SIGTERM (what `docker stop` and the kubelet send): in-flight requests complete, idle
  accepted connections are closed cleanly, the listener closes at once.

The numbers the nginx test prints are quoted in docs/deployment.md."""

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

import test_frameworks
from conftest import TcpServer, base_env, children, ferricorn_cmd, free_port, wait_until, wait_workers
from test_frameworks import nginx_proxy  # noqa: F401 - the fixture, reused with DEPLOY_NGINX_CONF

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
LONG = os.environ.get("DEPLOY_LONG") == "1"
# Parameters of each `server` line of the nginx upstream (docs/deployment.md explains why
# max_fails=0, and what `max_fails=1 fail_timeout=1s` measured instead).
UPSTREAM_PARAMS = os.environ.get("DEPLOY_UPSTREAM_PARAMS", "max_fails=0")


# --------------------------------------------------------------------------------------
# helpers


class ArgvServer(TcpServer):
    """A TcpServer started from a full argv (a wrapper in front of ferricorn, or a command
    taken from a deployment file) instead of `ferricorn ARGS`."""

    def __init__(self, argv, cwd, env, log_path, port, pass_fds=()):
        self.port, self.host, self.url = port, "127.0.0.1", f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=pass_fds)


def http_get(port, path="/", timeout=10.0, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_http(srv, path="/", timeout=15.0):
    """Waits until `srv` answers `path` with 200 (the first request may wait in the backlog
    while the workers boot)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise AssertionError(f"exited with {srv.proc.returncode}:\n{srv.log()}")
        try:
            status, body = http_get(srv.port, path, timeout=max(0.5, deadline - time.monotonic()))
            if status == 200:
                return body
            last = status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{path} never answered 200 (last: {last!r}):\n{srv.log()}")


def option(argv, *names, default=None):
    """The value of `--name VALUE` / `--name=VALUE` / `-n VALUE` in an argv."""
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if n.startswith("--") and a.startswith(n + "="):
                return a.split("=", 1)[1]
    return default


def replace_option(argv, names, value):
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in names and i + 1 < len(argv):
            out += [a, value]
            skip = True
        elif any(n.startswith("--") and a.startswith(n + "=") for n in names):
            out.append(a.split("=", 1)[0] + "=" + value)
        else:
            out.append(a)
    return out


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def listener_holders(port):
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    return out.strip() or "(ss unavailable or no listener)"


# --------------------------------------------------------------------------------------
# deploy/Dockerfile

# Every Dockerfile instruction (https://docs.docker.com/reference/dockerfile/).
DOCKER_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def dockerfile_instructions(text):
    """[(KEYWORD, arguments)]: comments dropped, backslash continuations joined."""
    out, buf = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("#") or (not s and buf is None):
            continue  # comments (also inside a continuation) and blank lines are ignored
        if buf is None:
            buf, start = "", lineno
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        keyword, _, args = buf.partition(" ")
        out.append((keyword, args.strip(), start))
        buf = None
    assert buf is None, "the Dockerfile ends inside a line continuation"
    return out


def dockerfile_stages():
    """[(FROM arguments, [(KEYWORD, args, line)])] per build stage."""
    stages = []
    for kw, args, line in dockerfile_instructions((DEPLOY / "Dockerfile").read_text()):
        assert kw.upper() in DOCKER_INSTRUCTIONS, f"line {line}: unknown instruction {kw!r}"
        assert kw == kw.upper(), f"line {line}: write {kw.upper()}"
        if kw == "FROM":
            stages.append((args, []))
        else:
            assert stages or kw == "ARG", f"line {line}: {kw} before the first FROM"
            stages[-1][1].append((kw, args, line))
    return stages


def dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip().rstrip("/") for p in lines if p.strip() and not p.strip().startswith("#")]


def dockerignored(rel, patterns):
    parts = Path(rel).parts
    for p in patterns:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch(prefix, p) or (p.startswith("**/") and fnmatch(parts[i - 1], p[3:])):
                return True
    return False


def docker_cmd():
    stages = dockerfile_stages()
    final = stages[-1][1]
    cmd = [args for kw, args, _ in final if kw == "CMD"]
    assert cmd, "the final stage has no CMD"
    return json.loads(cmd[-1]), stages


def test_dockerfile_parses_with_build_and_runtime_stages():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    build_from, build = stages[0]
    m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", build_from, re.I)
    assert m, f"the build stage needs a name: FROM {build_from}"
    build_name = m.group(2)
    runs = " ".join(args for kw, args, _ in build if kw == "RUN")
    assert "maturin build --release" in runs, runs
    assert "rustup" in runs or "cargo" in runs or "maturin" in m.group(1), "no Rust toolchain in the build stage"

    runtime_from, runtime = stages[-1]
    assert re.fullmatch(r"python:3\.12-slim(-\w+)?", runtime_from), runtime_from
    kws = [kw for kw, _, _ in runtime]
    copies = [args for kw, args, _ in runtime if kw == "COPY"]
    assert any(a.startswith(f"--from={build_name} ") for a in copies), f"the wheel is not copied from {build_name!r}: {copies}"
    assert any(".whl" in args and "pip install" in args for kw, args, _ in runtime if kw == "RUN"), "the wheel is not installed"

    users = [args for kw, args, _ in runtime if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"the image must not run as root: USER {users}"
    assert ("EXPOSE", "8000") in [(kw, args) for kw, args, _ in runtime]
    assert ("STOPSIGNAL", "SIGTERM") in [(kw, args) for kw, args, _ in runtime]
    assert kws.index("USER") < kws.index("CMD")
    assert "ENTRYPOINT" not in kws  # the CMD below is the whole command line

    cmd, _ = docker_cmd()
    assert cmd[0] == "ferricorn", cmd
    assert option(cmd, "-b", "--bind") == "0.0.0.0:8000", cmd
    assert option(cmd, "-w", "--workers") == "2", cmd
    assert cmd[-1] == "examples.hello:app", cmd


def test_dockerfile_copies_exist_and_are_not_dockerignored():
    patterns = dockerignore_patterns()
    for heavy in ("target", ".venv", ".git"):
        assert dockerignored(heavy, patterns), f".dockerignore must exclude {heavy}"
    sources = []
    for _, instructions in dockerfile_stages():
        for kw, args, line in instructions:
            if kw in ("COPY", "ADD") and not args.startswith("--from="):
                words = [w for w in shlex.split(args) if not w.startswith("--")]
                sources += [(line, w) for w in words[:-1]]
    assert sources
    for line, src in sources:
        assert (ROOT / src).exists(), f"line {line}: COPY {src}: not in the repository"
        assert not dockerignored(src, patterns), f"line {line}: COPY {src}: excluded by .dockerignore"
    # What maturin needs: the workspace members, the Python package and pyproject's readme.
    for needed in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "crates", "python"):
        assert any(src == needed for _, src in sources), f"{needed} is not copied into the build stage"


def test_dockerfile_cmd_serves_and_stops_on_stopsignal(tmp_path):
    """The image's CMD, run as the image runs it: from WORKDIR holding a copy of examples/,
    with nothing but the installed package on the path."""
    cmd, stages = docker_cmd()
    runtime = stages[-1][1]
    workdir = [args for kw, args, _ in runtime if kw == "WORKDIR"][-1]
    assert [args for kw, args, _ in runtime if kw == "COPY" and args.split()[0] == "examples"], "examples/ not copied"
    app_dir = tmp_path / workdir.strip("/")
    shutil.copytree(ROOT / "examples", app_dir / "examples")
    port = free_port()
    argv = ferricorn_cmd() + replace_option(cmd[1:], ("-b", "--bind"), f"127.0.0.1:{port}")
    env = base_env()
    env.pop("PYTHONPATH")  # not the repository: only WORKDIR, as in the image
    srv = ArgvServer(argv, app_dir, env, tmp_path / "docker-cmd.log", port)
    try:
        assert wait_http(srv) == b"Hello, World!\n"
        wait_workers(srv, 2)
        stop = [args for kw, args, _ in runtime if kw == "STOPSIGNAL"][-1]
        srv.send_signal(getattr(signal, stop))
        assert srv.proc.wait(15) == 0, srv.log()
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# deploy/kubernetes.yaml


def k8s_objects():
    yaml = pytest.importorskip("yaml")
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    kinds = {}
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
        kinds.setdefault(d["kind"], []).append(d)
    assert len(kinds.get("Deployment", [])) == 1 and len(kinds.get("Service", [])) == 1, list(kinds)
    return kinds["Deployment"][0], kinds["Service"][0]


def k8s_container():
    dep, svc = k8s_objects()
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dep, svc, containers[0]


def container_port(container, ref):
    """A probe's or Service's port (a name or a number) as a container port number."""
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if isinstance(ref, int):
        assert ref in ports.values(), (ref, ports)
        return ref
    assert ref in ports, f"no container port named {ref!r}: {ports}"
    return ports[ref]


def prestop_seconds(container):
    pre = container["lifecycle"]["preStop"]
    if "sleep" in pre:  # the native sleep action (Kubernetes >= 1.30)
        return int(pre["sleep"]["seconds"])
    cmd = pre["exec"]["command"]
    assert cmd[0] in ("sleep", "/bin/sleep", "/usr/bin/sleep") and len(cmd) == 2, cmd
    return int(cmd[1])


def test_kubernetes_manifest_fields():
    dep, svc, c = k8s_container()
    assert dep["apiVersion"] == "apps/v1" and svc["apiVersion"] == "v1"
    tmpl = dep["spec"]["template"]
    labels = tmpl["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items(), "the Service selects no pod of the Deployment"

    cmd = c["command"] + c.get("args", [])
    assert cmd[0] == "ferricorn", cmd
    app_port = container_port(c, "http")
    assert port_of(option(cmd, "-b", "--bind")) == app_port
    graceful = int(option(cmd, "--graceful-timeout", default="30"))

    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert container_port(c, ready["port"]) == app_port
    live_port = container_port(c, live["port"])
    if live_port != app_port:
        assert live["path"] == "/metrics" and port_of(option(cmd, "--metrics-bind")) == live_port, live

    sleep = prestop_seconds(c)
    assert 2 <= sleep <= 30, sleep
    grace = tmpl["spec"]["terminationGracePeriodSeconds"]
    # The kubelet's grace period runs from the start of preStop: SIGTERM comes `sleep`
    # seconds in, and ferricorn may then drain for `graceful` seconds.
    assert grace > sleep + graceful, f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + --graceful-timeout {graceful}"

    (svc_port,) = svc["spec"]["ports"]
    assert container_port(c, svc_port["targetPort"]) == app_port

    # The pod's user is the image's user (deploy/Dockerfile), and it is not root.
    sec = tmpl["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True
    final = dockerfile_stages()[-1][1]
    image_user = [args for kw, args, _ in final if kw == "USER"][-1]
    assert str(sec["runAsUser"]) == image_user.split(":")[0], (sec, image_user)


def test_kubernetes_command_answers_its_probes(tmp_path):
    """The container's command, run locally with the app replaced by the test app: both
    probes get 200; the liveness probe still answers in time while the application threads
    are busy (so a busy pod is not restarted); SIGTERM ends it with 0."""
    _, _, c = k8s_container()
    cmd = c["command"] + c.get("args", [])
    ports = {"http": free_port(), "metrics": free_port()}
    argv = replace_option(cmd[1:], ("-b", "--bind"), f"127.0.0.1:{ports['http']}")
    argv = replace_option(argv, ("--metrics-bind",), f"127.0.0.1:{ports['metrics']}")
    assert re.fullmatch(r"[\w.]+:[\w.]+", argv[-1]), argv
    srv = ArgvServer(ferricorn_cmd() + argv[:-1] + ["testapp:app"], tmp_path, base_env(), tmp_path / "k8s.log", ports["http"])
    busy = {}
    try:
        wait_http(srv)

        def probe(name):
            get = c[name]["httpGet"]
            port = next(ports[p["name"]] for p in c["ports"] if p["containerPort"] == container_port(c, get["port"]))
            t = time.monotonic()
            status, body = http_get(port, get["path"], timeout=c[name].get("timeoutSeconds", 1))
            return status, time.monotonic() - t

        for name in ("readinessProbe", "livenessProbe"):
            assert probe(name)[0] == 200, name
        workers = int(option(cmd, "-w", "--workers", default="1"))
        threads = int(option(cmd, "--threads", default="1"))
        hogs = [threading.Thread(target=_slow_request, args=(ports["http"], 1, busy, i)) for i in range(workers * threads)]
        for t in hogs:
            t.start()
        time.sleep(0.3)
        status, took = probe("livenessProbe")
        assert status == 200 and took < 0.5, (status, took)
        for t in hogs:
            t.join(15)
        assert all(isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200 ") for r in busy.values()), busy
        srv.send_signal(signal.SIGTERM)
        graceful = int(option(cmd, "--graceful-timeout", default="30"))
        assert srv.proc.wait(graceful) == 0, srv.log()
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# deploy/systemd


def parse_unit(path):
    """{section: {key: [values]}} of a systemd unit file."""
    sections, cur = {}, None
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        assert not s.endswith("\\"), f"{path}: continuation lines are not supported here: {s}"
        if s.startswith("[") and s.endswith("]"):
            cur = sections.setdefault(s[1:-1], {})
            continue
        assert cur is not None and "=" in s, f"{path}: {s!r}"
        k, _, v = s.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def unit_value(unit, section, key, default=None):
    values = unit.get(section, {}).get(key)
    return values[-1] if values else default


def systemd_seconds(v):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", v)
    assert m, f"unsupported time span {v!r}"
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def service_exec_start():
    service = parse_unit(DEPLOY / "systemd" / "ferricorn.service")
    argv = shlex.split(unit_value(service, "Service", "ExecStart"))
    assert Path(argv[0]).name == "ferricorn", argv
    assert re.fullmatch(r"[\w.]+(:[\w.]+)?", argv[-1]), f"ExecStart must end with the app: {argv}"
    return service, argv


def test_systemd_units_fields():
    sock = parse_unit(DEPLOY / "systemd" / "ferricorn.socket")
    service, argv = service_exec_start()
    assert unit_value(sock, "Socket", "ListenStream"), "no ListenStream"
    assert unit_value(sock, "Socket", "Accept") == "no"
    assert unit_value(sock, "Install", "WantedBy") == "sockets.target"

    assert unit_value(service, "Service", "Type") == "notify"
    assert unit_value(service, "Service", "NotifyAccess", "main") == "main"
    assert unit_value(service, "Service", "KillSignal") == "SIGTERM"
    assert unit_value(service, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    requires = " ".join(service["Unit"].get("Requires", []))
    after = " ".join(service["Unit"].get("After", []))
    assert "ferricorn.socket" in requires and "ferricorn.socket" in after
    # Socket activation replaces --bind (ferricorn would ignore it anyway).
    assert option(argv, "-b", "--bind") is None, argv
    graceful = int(option(argv, "--graceful-timeout", default="30"))
    stop = systemd_seconds(unit_value(service, "Service", "TimeoutStopSec", "90"))
    assert stop > graceful, f"TimeoutStopSec {stop} must exceed --graceful-timeout {graceful}"


class Notify:
    """A NOTIFY_SOCKET that records (message, sender pid) as systemd would see them."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.msgs = []

    def wait(self, text, timeout):
        deadline = time.monotonic() + timeout
        while not any(text in m for m, _ in self.msgs) and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.msgs.append((data.decode(errors="replace"), pid))
        return [pid for m, pid in self.msgs if text in m]

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def test_systemd_socket_activation_runs_exec_start(tmp_path):
    """systemd-socket-activate plays ferricorn.socket (it holds the listener and execs the
    command once a connection arrives, with LISTEN_FDS): the unit's ExecStart, with the app
    replaced, serves; READY=1 comes from the main PID (Type=notify); ExecReload reloads
    without a failed request; SIGTERM drains the request in flight and exits 0."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate not installed (Debian package systemd; scripts/setup-test-env.sh installs it)")
    service, argv = service_exec_start()
    port = free_port()
    notify = Notify(str(tmp_path / "notify.sock"))
    # systemd-socket-activate passes only PATH, HOME, USER, TERM and -E variables on.
    env_args = ["-E", f"PYTHONPATH={base_env()['PYTHONPATH']}", "-E", f"NOTIFY_SOCKET={notify.path}"]
    for line in service["Service"].get("Environment", []):
        for kv in shlex.split(line):
            env_args += ["-E", kv]
    cmd = [tool, "-l", f"127.0.0.1:{port}", *env_args] + ferricorn_cmd() + argv[1:-1] + ["testapp:app"]
    srv = ArgvServer(cmd, tmp_path, base_env(), tmp_path / "activate.log", port)
    try:
        assert wait_http(srv, timeout=20) == b"Hello, World!\n"
        # The tool exec'ed ferricorn in place: the master is the process systemd started.
        status, body = http_get(port, "/pid")
        assert status == 200
        worker = json.loads(body)["pid"]
        assert worker in children(srv.pid), (worker, children(srv.pid), srv.log())
        assert notify.wait("READY=1", 10) == [srv.pid], notify.msgs
        assert f"Listening at: http://127.0.0.1:{port}" in srv.log(), srv.log()

        workers = int(option(argv, "-w", "--workers", default="1"))
        old = wait_workers(srv, workers)
        reload_cmd = shlex.split(unit_value(service, "Service", "ExecReload").replace("$MAINPID", str(srv.pid)))
        subprocess.run(reload_cmd, check=True, timeout=10)
        new = wait_until(lambda: (k := children(srv.pid)) and len(k) == workers and not set(k) & set(old) and k, 15)
        assert new, f"ExecReload did not replace the workers {old}: {children(srv.pid)}\n{srv.log()}"
        for _ in range(5):
            assert http_get(port, "/")[0] == 200

        result = {}
        t = threading.Thread(target=lambda: result.update(r=http_get(port, "/sleep?1", timeout=15)))
        t.start()
        time.sleep(0.3)
        srv.send_signal(getattr(signal, unit_value(service, "Service", "KillSignal")))
        stop_timeout = systemd_seconds(unit_value(service, "Service", "TimeoutStopSec"))
        assert srv.proc.wait(stop_timeout) == 0, srv.log()
        t.join(5)
        assert result.get("r", (None,))[0] == 200, (result, srv.log())
        assert notify.wait("STOPPING=1", 5) == [srv.pid], notify.msgs
    finally:
        srv.stop()
        notify.close()


# Plays systemd's part for a restart: exec a command with the listening socket passed in
# as fd 3 (LISTEN_FDS=1, LISTEN_PID = the exec'ed process).
_EXEC_WITH_FD3 = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def test_socket_held_by_systemd_restart_loses_no_connection(tmp_path):
    """`systemctl restart ferricorn.service` with ferricorn.socket: the listening socket
    stays open in systemd, so connections made while no ferricorn runs wait in its backlog
    and the next instance answers them. Here the test holds the socket as systemd does."""
    _, argv = service_exec_start()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(2048)
    port = holder.getsockname()[1]
    cmd = ferricorn_cmd() + argv[1:-1] + ["testapp:app"]

    def start(n):
        wrapper = [sys.executable, "-c", _EXEC_WITH_FD3, str(holder.fileno())] + cmd
        return ArgvServer(wrapper, tmp_path, base_env(), tmp_path / f"held-{n}.log", port, pass_fds=(holder.fileno(),))

    results, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status, _ = http_get(port, "/", timeout=20)
            except OSError as e:
                status = repr(e)
            with lock:
                results.append((t0, time.monotonic(), status))
            time.sleep(0.01)

    first = start(1)
    second = None
    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        wait_http(first)
        for t in threads:
            t.start()
        time.sleep(0.5)
        first.send_signal(signal.SIGTERM)
        assert first.proc.wait(15) == 0, first.log()
        gap_start = time.monotonic()
        time.sleep(0.5)  # RestartSec, or a slow ExecStartPre
        second = start(2)
        wait_http(second)
        gap_end = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(25)
        first.stop()
        if second:
            assert second.stop() == 0, second.log()
        holder.close()
    failed = [r for r in results if r[2] != 200]
    # Requests pending while no ferricorn ran: they waited in the held socket's backlog.
    during_gap = [r for r in results if r[0] < gap_end and r[1] > gap_start]
    print(
        f"\nheld socket restart: {len(results)} requests, {len(failed)} failed, {len(during_gap)} pending "
        f"while no ferricorn ran (worst {max(r[1] - r[0] for r in results):.2f}s)"
    )
    assert not failed, failed[:5]
    assert during_gap, "no request was pending while ferricorn was down"


# --------------------------------------------------------------------------------------
# two instances behind one nginx upstream

DEPLOY_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream ferricorn {{
        {upstream}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ferricorn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Try the other instance when one refuses, resets or times out (GET and HEAD;
            # nginx never replays a POST that reached an upstream).
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            add_header X-Upstream $upstream_addr always;
            add_header X-Upstream-Status $upstream_status always;
        }}
    }}
}}
"""


class CountingLoad:
    """`threads` keep-alive clients GET `path` through nginx until stop(); every request is
    recorded: (start, end, status or None, upstream addresses nginx tried, error)."""

    def __init__(self, port, threads=6, path="/"):
        self.port, self.path, self.nthreads = port, path, threads
        self.records = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _run(self):
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            t0 = time.monotonic()
            try:
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                status = r.status if body == b"Hello, World!\n" or r.status != 200 else f"200 with {body[:50]!r}"
                rec = (t0, time.monotonic(), status, r.getheader("X-Upstream", ""), None)
                if r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted
                rec = (t0, time.monotonic(), None, "", repr(e))
                conn.close()
                conn = None
            with self.lock:
                self.records.append(rec)
        if conn is not None:
            conn.close()

    def start(self):
        for _ in range(self.nthreads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(25)

    def snapshot(self):
        with self.lock:
            return list(self.records)


def window_stats(records, windows):
    """Requests overlapping one of the [start, end] windows: count, failures, nginx
    retries, worst latency."""
    rs = [r for r in records if any(r[1] >= start and r[0] <= end for start, end in windows)]
    failed = [r for r in rs if r[2] != 200]
    retried = [r for r in rs if "," in r[3]]
    worst = max((r[1] - r[0] for r in rs), default=0.0)
    return {
        "requests": len(rs),
        "failed": len(failed),
        "nginx_retries": len(retried),
        "max_latency_ms": round(worst * 1000, 1),
        "failures": failed[:5],
    }


def test_two_instances_behind_nginx_hup_and_restart(tmp_path, nginx_proxy, monkeypatch):  # noqa: F811
    """Two ferricorn instances (2 workers each) in one nginx upstream under a counting
    keep-alive load. Each cycle sends HUP to A, waits until A runs only new workers, then
    stops B (TERM) and starts a new B on the same port. One cycle in 5 s by default, four
    in 20 s with DEPLOY_LONG=1."""
    cycles, duration = (4, 20.0) if LONG else (1, 5.0)
    monkeypatch.setattr(test_frameworks, "NGINX_CONF", DEPLOY_NGINX_CONF)
    ports = {"A": free_port(), "B": free_port()}
    servers = []

    def launch(name):
        port = ports[name]
        args = ["-b", f"127.0.0.1:{port}", "-w", "2", "--keep-alive", "75", "--graceful-timeout", "10", "testapp:app"]
        srv = TcpServer(args, tmp_path, base_env(), tmp_path / f"{name}-{len(servers)}.log", port)
        servers.append(srv)
        return srv

    a, b = launch("A"), launch("B")
    b_addr = f"127.0.0.1:{ports['B']}"
    load, hups, restarts = None, [], []
    try:
        wait_http(a)
        wait_http(b)
        upstream = "\n        ".join(f"server 127.0.0.1:{p} {UPSTREAM_PARAMS};" for p in ports.values())
        url, ngtmp = nginx_proxy(upstream)
        load = CountingLoad(int(url.rsplit(":", 1)[1])).start()
        t0 = time.monotonic()
        period = duration / cycles
        for cycle in range(cycles):
            # HUP instance A: new workers, the old ones finish their requests and exit.
            time.sleep(max(0.0, t0 + (cycle + 0.2) * period - time.monotonic()))
            old = children(a.pid)
            hup_at = time.monotonic()
            a.send_signal(signal.SIGHUP)
            new = wait_until(lambda: (k := children(a.pid)) and len(k) == 2 and not set(k) & set(old) and k, 15)
            assert new, f"HUP did not replace A's workers {old}: {children(a.pid)}\n{a.log()}"
            hups.append((hup_at, time.monotonic()))

            # Full stop of instance B (TERM), then a new B on the same port.
            time.sleep(max(0.0, t0 + (cycle + 0.55) * period - time.monotonic()))
            term_at = time.monotonic()
            assert b.stop() == 0, b.log()
            exited = time.monotonic()
            b = launch("B")
            wait_http(b)
            ready = time.monotonic()
            back = wait_until(lambda: [r for r in load.snapshot() if r[0] > ready and r[3] == b_addr and r[2] == 200], 10)
            assert back, f"nginx never went back to the restarted B\n{b.log()}"
            restarts.append((term_at, exited, ready, min(r[1] for r in back)))
        time.sleep(max(0.3, t0 + duration - time.monotonic()))
    finally:
        if load:
            load.stop()
        for s in servers:
            s.stop()
    records = load.snapshot()
    total = window_stats(records, [(0, float("inf"))])
    hup = window_stats(records, [(h0, h1 + 0.2) for h0, h1 in hups])
    restart = window_stats(records, [(r[0], r[3]) for r in restarts])
    served = {name: sum(1 for r in records if r[3] == f"127.0.0.1:{p}" and r[2] == 200) for name, p in ports.items()}
    elapsed = max(r[1] for r in records) - min(r[0] for r in records)
    # What nginx retried, from its error log (one line per failed upstream attempt).
    errlog = ngtmp / "nginx-error.log"
    nginx_errors = {}
    for line in (errlog.read_text(errors="replace") if errlog.exists() else "").splitlines():
        m = re.search(r"\[(?:error|crit|warn)\] \S+ (?:\*\d+ )?(.*?), client:", line)
        if m:
            up = re.search(r'upstream: "http://127\.0\.0\.1:(\d+)', line)
            who = {str(p): n for n, p in ports.items()}.get(up.group(1), "?") if up else "-"
            key = f"{who}: {m.group(1)}"
            nginx_errors[key] = nginx_errors.get(key, 0) + 1
    report = {
        "cycles": cycles,
        "duration_s": round(elapsed, 1),
        "req_per_s": round(total["requests"] / elapsed),
        "served_by": served,
        "total": total,
        "hup_A": hup,
        "restart_B": restart,
        "hup_A_done_s": [round(h1 - h0, 2) for h0, h1 in hups],
        "B_term_to_exit_s": [round(r[1] - r[0], 2) for r in restarts],
        "B_term_to_ready_s": [round(r[2] - r[0], 2) for r in restarts],
        "B_term_to_back_in_nginx_s": [round(r[3] - r[0], 2) for r in restarts],
        "nginx_error_log": nginx_errors,
    }
    print("\nnginx + 2 instances: " + json.dumps(report, indent=1))
    if total["failed"]:
        print("\n".join(f"--- {s.log_path}\n{s.log()}" for s in servers))
    assert total["requests"] > 100 * duration, report
    assert served["A"] > 0 and served["B"] > 0, report
    # HUP is graceful by design: no request fails.
    assert hup["failed"] == 0, report
    # The full restart of B: B refuses connections while it is down, resets the ones that
    # reached it as it exits, and closes its idle keep-alive connections. nginx retries all
    # of these on A (a GET, `proxy_next_upstream error timeout`); B finishes the requests it
    # had started; A is up throughout (max_fails=0: never marked down by a retried race).
    # So the bound is zero: a failure would be a request nginx could not retry, i.e. one
    # that B dropped after it had started it.
    assert restart["nginx_retries"] > 0, f"nginx never saw B down: the restart phase proves nothing\n{report}"
    assert restart["failed"] == 0, report
    assert total["failed"] == 0, report


# --------------------------------------------------------------------------------------
# SIGTERM in a container (docker stop, the kubelet): see also
# test_arbiter.py::test_sigterm_finishes_slow_request_and_stops_accepting


def _slow_request(port, seconds, out, key):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(f"GET /sleep?{seconds} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            out[key] = data
    except OSError as e:
        out[key] = e


def test_sigterm_drains_inflight_and_idle_connections(start_server):
    """Several requests in flight complete with 200; connections accepted before the
    SIGTERM that had not sent a request yet are served if their request follows at once
    (a load balancer had already picked this pod) and closed cleanly (FIN, no reset)
    otherwise; the master exits 0 well within --graceful-timeout."""
    graceful = 10
    srv = start_server("testapp:app", "-w", "2", "--threads", "4", "--graceful-timeout", str(graceful))
    wait_workers(srv, 2)
    inflight = {}
    threads = [threading.Thread(target=_slow_request, args=(srv.port, 1.5, inflight, i)) for i in range(4)]
    for t in threads:
        t.start()
    idle = [srv.connect(timeout=10) for _ in range(4)]
    time.sleep(0.5)  # the slow requests are in the app, the idle connections accepted
    term_at = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    for s in idle[:2]:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = []
    for s in idle:
        data, err = b"", None
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError as e:
            err = e
        answers.append((data, err, round(time.monotonic() - term_at, 2)))
        s.close()
    code = srv.proc.wait(graceful + 5)
    exit_after = time.monotonic() - term_at
    for t in threads:
        t.join(10)
    log = srv.log()
    for i in range(4):
        r = inflight.get(i)
        assert isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200 ") and b'"slept": true' in r, f"in-flight {i}: {r!r}\n{log}"
    for data, err, when in answers[:2]:
        assert err is None and data.startswith(b"HTTP/1.1 200 "), (data, err, log)
        assert b"connection: close" in data.lower(), data
    for data, err, when in answers[2:]:
        assert (data, err) == (b"", None), f"an idle connection was not closed cleanly: {data!r} {err!r}"
    assert code == 0, log
    assert exit_after < graceful, f"exit took {exit_after:.1f}s\n{log}"
    assert "graceful timeout reached" not in log, log


def test_sigterm_closes_listener_at_once(start_server):
    """After SIGTERM no new connection should be accepted into a backlog that nobody will
    serve: it must be refused at once (so a client or load balancer retries elsewhere
    immediately) while the requests in flight finish."""
    srv = start_server("testapp:app", "-w", "2", "--threads", "2", "--graceful-timeout", "10")
    wait_workers(srv, 2)
    inflight = {}
    t = threading.Thread(target=_slow_request, args=(srv.port, 2.5, inflight, 0))
    t.start()
    time.sleep(0.4)
    srv.send_signal(signal.SIGTERM)
    term_at = time.monotonic()
    refused_after, accepted = None, 0
    holders = ""
    while time.monotonic() - term_at < 1.5:
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=1):
                accepted += 1
                if not holders:
                    holders = listener_holders(srv.port)
        except ConnectionRefusedError:
            refused_after = time.monotonic() - term_at
            break
        time.sleep(0.05)
    draining = srv.proc.poll() is None and t.is_alive()
    t.join(10)
    code = srv.proc.wait(15)
    r = inflight.get(0)
    assert isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200 "), f"{r!r}\n{srv.log()}"
    assert code == 0, srv.log()
    assert draining, "the in-flight request ended before the check: the test proves nothing"
    assert refused_after is not None and refused_after < 1.0, (
        f"the listening socket stayed open after SIGTERM ({accepted} connections accepted into "
        f"the backlog in 1.5 s while the workers drained); still listening:\n{holders}"
    )
