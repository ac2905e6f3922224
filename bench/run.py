#!/usr/bin/env python3
"""Side-by-side load benchmark: ferricorn vs Gunicorn, Granian, uvicorn, bjoern and a
pure-Rust reference, over several WSGI scenarios (bench/apps.py), raw ASGI scenarios
(asgi-*: ferricorn, Gunicorn's asgi worker, Granian ASGI, uvicorn), plus a static-file
scenario (static50k) where ferricorn and Granian serve a file themselves, next to nginx.

Every server runs exactly one worker, pinned to one CPU; wrk runs on the other CPU(s).
For each round, scenario and server a fresh server is started on a free loopback port,
timed to its first successful response, checked for a correct answer, measured idle
(RSS of its whole process tree), warmed up and loaded with wrk while its RSS is sampled.
Rounds are interleaved (A B C A B C ...); the table reports medians and ratios against
Gunicorn, Granian and the pure-Rust reference (and nginx in static50k). Servers that are
not installed are skipped with a note. See bench/README.md.

    python bench/run.py --setup              # bench/.venv with the peers + a release build, then run
    python bench/run.py                      # full run with whatever is installed here
    python bench/run.py --scenarios hello,echo --rounds 2 --duration 5
    python bench/run.py --smoke              # a few seconds: hello only, checks the harness works
    python bench/run.py --instructions --scenarios hello,asgi-hello --rounds 2   # CPU instructions/request (callgrind)
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / "bench" / ".venv"
RUST_HELLO = ROOT / "target" / "release" / "examples" / "hello"
RUST_BUILD = ["cargo", "build", "--release", "--example", "hello", "-p", "ferricorn-server"]
ALL_SERVERS = ["ferricorn", "gunicorn", "granian", "uvicorn", "bjoern", "rust", "nginx"]
ECHO_BYTES = 10240
STATIC_BYTES = 51200
STATIC_FILE = "50k.bin"
# Servers that serve a static file themselves (static scenarios take only these; nginx takes only those).
STATIC_SERVERS = ["ferricorn", "granian", "nginx"]
# Servers with an ASGI mode (ASGI scenarios take only these).
ASGI_SERVERS = ["ferricorn", "gunicorn", "granian", "uvicorn"]

# name -> app, request (path: "/" unless given), expected response body length, default threads/connections.
# "static": the server serves the file STATIC_FILE from a temp directory under /static/ itself.
# "asgi": the app is a raw ASGI 3 app (the servers run in their ASGI mode; threads do not apply).
SCENARIOS = {
    "hello": {"app": "examples.hello:app", "body": 14, "threads": 1, "connections": 64,
              "what": 'GET, the 14-byte "Hello, World!\\n" of examples/hello.py'},
    "10k": {"app": "bench.apps:ten_k", "body": 10240, "threads": 1, "connections": 64,
            "what": "GET, a 10 KiB response body"},
    "echo": {"app": "bench.apps:echo", "body": ECHO_BYTES, "post": ECHO_BYTES, "threads": 1, "connections": 64,
             "what": "POST of 10 KiB, read from wsgi.input and sent back"},
    "1m": {"app": "bench.apps:one_m", "body": 1024 * 1024, "threads": 1, "connections": 64,
           "what": "GET, a 1 MiB response body"},
    "sleep10ms": {"app": "bench.apps:sleep10ms", "body": 12, "threads": 32, "connections": 256,
                  "what": "GET, the app sleeps 10 ms (I/O-bound); 32 app threads, 256 connections"},
    "static50k": {"app": "examples.hello:app", "path": f"/static/{STATIC_FILE}", "static": True,
                  "body": STATIC_BYTES, "threads": 1, "connections": 64,
                  "what": f"GET /static/{STATIC_FILE}, a {STATIC_BYTES:,}-byte file of random bytes that the server "
                          "serves itself as a static file (the app is not called); `DIR` is the temp directory "
                          "holding it"},
    "asgi-hello": {"app": "bench.apps:asgi_hello", "asgi": True, "body": 14, "threads": 1, "connections": 64,
                   "what": 'GET, the 14-byte "Hello, World!\\n" from a raw ASGI 3 app'},
    "asgi-10k": {"app": "bench.apps:asgi_ten_k", "asgi": True, "body": 10240, "threads": 1, "connections": 64,
                 "what": "GET, a 10 KiB response body from a raw ASGI 3 app"},
    "asgi-echo": {"app": "bench.apps:asgi_echo", "asgi": True, "body": ECHO_BYTES, "post": ECHO_BYTES, "threads": 1,
                  "connections": 64, "what": "POST of 10 KiB, read through `http.request` messages (`more_body`) "
                                             "and sent back, from a raw ASGI 3 app"},
}
ECHO_LUA = f"""-- wrk script for the echo scenarios: POST a {ECHO_BYTES}-byte body
wrk.method = "POST"
wrk.body = string.rep("x", {ECHO_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


# ---------------------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name):
    return shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def nginx_exe():
    """nginx on PATH, else in the usual sbin directories (often not on a user's PATH); None if missing."""
    found = shutil.which("nginx")
    return found or next((p for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] if os.access(p, os.X_OK)), None)


def nginx_conf(port, static_dir, tmp, workers):
    """nginx.conf for static scenarios: `workers` workers (1: master + one worker), no daemon, files under tmp."""
    return f"""# nginx.conf for the static-file scenarios of bench/run.py
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ application/octet-stream bin; }}
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{
            alias {static_dir}/;
        }}
    }}
}}
"""


def server_cmd(name, app, port, workers, threads, static=None, asgi=False):
    """The command line for one server, or a string saying why it cannot run.

    static: for a static scenario, {"dir": directory served at /static/, "tmp": nginx's directory}.
    asgi: the app is an ASGI 3 app: the server's ASGI mode, on uvloop everywhere (threads do not apply)."""
    bind = f"127.0.0.1:{port}"
    if name == "ferricorn":
        exe = tool("ferricorn")
        base = [exe] if exe else [sys.executable, "-m", "ferricorn"]
        extra = ["--static-map", f"/static={static['dir']}"] if static else []
        mode = ["--interface", "asgi", "--asgi-loop", "uvloop"] if asgi else ["--threads", str(threads)]
        return base + ["-w", str(workers)] + mode + ["-b", bind, "--log-level", "warning"] + extra + [app]
    if name == "gunicorn":
        exe = tool("gunicorn")
        if not exe:
            return "not installed (python bench/run.py --setup)"
        if asgi:  # Gunicorn 27's native asyncio worker
            mode = ["-k", "asgi", "--asgi-loop", "uvloop"]
        else:
            mode = ["-k", "sync" if threads == 1 else "gthread", "--threads", str(threads)]
        return [exe, "-w", str(workers)] + mode + ["-b", bind, "--log-level", "warning", app]
    if name == "granian":
        exe = tool("granian")
        if not exe:
            return "not installed (python bench/run.py --setup)"
        extra = ["--static-path-route", "/static", "--static-path-mount", static["dir"]] if static else []
        # ASGI: Granian's defaults (task implementation asyncio, runtime mode auto, HTTP auto, WebSockets on)
        # on uvloop. --task-impl rust (experimental) is ~10% faster on asgi-hello but ~45% slower on asgi-echo;
        # --runtime-mode st / --http 1 / --no-ws made no difference beyond noise (bench/README.md).
        mode = ["--interface", "asgi", "--loop", "uvloop"] if asgi else ["--interface", "wsgi"]
        threads_opt = [] if asgi else ["--blocking-threads", str(threads)]
        return [exe] + mode + ["--workers", str(workers), "--runtime-threads", "1"] + threads_opt + [
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"] + extra + [app]
    if name == "uvicorn":
        exe = tool("uvicorn")
        if not exe:
            return "not installed (python bench/run.py --setup)"
        # WSGI through uvicorn's own WSGIMiddleware: a fixed pool of 10 threads, no flag for it.
        mode = ["--interface", "asgi3"] if asgi else ["--interface", "wsgi"]
        return [exe] + mode + ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                               "--no-access-log", app]
    if name == "bjoern":
        if importlib.util.find_spec("bjoern") is None:
            return "not installed (it needs libev headers to build; python bench/run.py --setup tries it)"
        # One process, one thread, no options: `threads` and `workers` do not apply.
        return [sys.executable, "bench/apps.py", "bjoern", app, "127.0.0.1", str(port)]
    if name == "rust":
        if not RUST_HELLO.exists():
            return f"not built ({' '.join(RUST_BUILD)})"
        return [str(RUST_HELLO), bind]
    if name == "nginx":
        exe = nginx_exe()
        if not exe:
            return "not installed (Debian: apt-get install nginx)"
        # The config (nginx_conf) is written to {tmp}/nginx.conf before each start, with the run's port.
        return [exe, "-c", f"{static['tmp']}/nginx.conf"]
    raise ValueError(name)


def applies(name, scenario):
    """The pure-Rust reference serves one fixed body: it only takes part in `hello`. Static scenarios
    take only the servers that serve files themselves (STATIC_SERVERS); nginx takes part only in those.
    ASGI scenarios take only the servers with an ASGI mode (ASGI_SERVERS)."""
    if SCENARIOS.get(scenario, {}).get("static"):
        return name in STATIC_SERVERS
    if SCENARIOS.get(scenario, {}).get("asgi"):
        return name in ASGI_SERVERS
    if name == "nginx":
        return False
    return name != "rust" or scenario == "hello"


def pin(cmd, cpus):
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus] + cmd
    return cmd


def request(port, method="GET", body=None, timeout=2.0, path="/"):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_ready(port, proc, timeout=30, path="/", probe_timeout=1):
    """Poll `path` (every 5 ms) until the server answers 200; False if it died or never answered.

    probe_timeout: how long one probe waits for its answer once connected (under valgrind: long, so that
    exactly one probe reaches the server, whatever its start-up time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            status, _ = request(port, timeout=probe_timeout, path=path)
            if status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def check_response(port, sc, expect=None, timeout=5):
    """One request as the load will send it; returns a problem or None. expect: the exact body, if known."""
    payload = b"x" * sc["post"] if sc.get("post") else None
    expect = payload if payload is not None else expect
    try:
        status, body = request(port, "POST" if payload else "GET", payload, timeout=timeout, path=sc.get("path", "/"))
    except OSError as e:
        return f"check request failed: {e}"
    if status != 200:
        return f"check request: status {status}"
    if len(body) != sc["body"]:
        return f"check request: {len(body)}-byte body, expected {sc['body']}"
    if expect is not None and body != expect:
        return "check request: the body's bytes differ from the expected ones"
    return None


def stop(proc, grace=10, whole_group=False, nudge=5):
    """TERM the server, then KILL whatever is left of its process group (it has its own session).

    whole_group: wait (within `grace` seconds) for every process of the group to exit by itself (under
    valgrind each writes its counts when it exits, and a killed one loses them); after `nudge` seconds TERM
    the whole group once more (under valgrind Granian's master sometimes never passes TERM on to its
    worker). Returns True if something was left to kill."""
    start = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if not whole_group:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
    nudged = False
    while whole_group and time.monotonic() < start + grace:
        proc.poll()  # reaps the server's first process, so that its zombie does not count as the group's
        try:
            os.killpg(proc.pid, signal.SIGTERM if not nudged and time.monotonic() > start + nudge else 0)
            nudged = nudged or time.monotonic() > start + nudge
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = killed or whole_group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    return killed


# ---------------------------------------------------------------------------- memory

def tree_pids(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    pids, i = [root], 0
    while i < len(pids):
        pids += children.get(pids[i], [])
        i += 1
    return pids


def tree_rss_kib(root):
    """Sum of VmRSS over a process and all its descendants (master + workers + helpers)."""
    total = 0
    for p in tree_pids(root):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_cpu_s(root):
    """utime + stime (seconds) of a process tree's live processes."""
    ticks = 0
    for p in tree_pids(root):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def cpus_busy_s(cpus):
    """user + nice + system seconds of these CPUs (/proc/stat; irq/softirq time left out)."""
    total = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                total += int(vals[0]) + int(vals[1]) + int(vals[2])
    except (OSError, ValueError, IndexError):
        pass
    return total / os.sysconf("SC_CLK_TCK")


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class RssSampler(threading.Thread):
    """Peak process-tree RSS while the load runs."""

    def __init__(self, pid, every=0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            self.peak = max(self.peak, tree_rss_kib(self.pid))

    def stop(self):
        self.done.set()
        self.join()
        return max(self.peak, tree_rss_kib(self.pid))


# ---------------------------------------------------------------------------- load

def wrk_cmd(url, duration, connections, threads, script):
    cmd = [shutil.which("wrk") or "wrk", "-t", str(max(1, min(threads, connections))), "-c", str(connections),
           "-d", f"{duration}s", "--latency"]
    if script:
        cmd += ["-s", script]
    return cmd + [url]


def parse_wrk(out):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        return None
    rps = float(m.group(1))

    def lat(p):
        m = re.search(rf"\s{p}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = socket_errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        non2xx = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        socket_errors = sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "errors": non2xx + socket_errors,
            "non2xx": non2xx, "socket_errors": socket_errors, "requests": int(m.group(1)) if m else None}


def python_load(port, duration, connections, payload, path="/"):
    """Fallback when wrk is missing: keep-alive clients on threads (much slower than wrk)."""
    import http.client

    lat, errors = [[] for _ in range(connections)], [0]
    stop_at = time.monotonic() + duration

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                conn.request("POST" if payload else "GET", path, body=payload)
                r = conn.getresponse()
                r.read()
                if r.status >= 400:
                    errors[0] += 1
                lat[i].append((time.perf_counter() - t) * 1000)
            except Exception:
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    all_lat = sorted(x for xs in lat for x in xs)

    def pct(p):
        return all_lat[min(len(all_lat) - 1, int(len(all_lat) * p / 100))] if all_lat else None

    return {"rps": len(all_lat) / duration, "p50_ms": pct(50), "p99_ms": pct(99), "errors": errors[0],
            "non2xx": None, "socket_errors": None, "requests": len(all_lat)}


def run_load(port, duration, connections, load, script, payload, path="/"):
    if load["wrk"]:
        cmd = pin(wrk_cmd(f"http://127.0.0.1:{port}{path}", duration, connections, load["threads"], script), load["cpus"])
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - t0
        res = parse_wrk(out.stdout)
        if res is None:
            raise RuntimeError(f"wrk failed: {(out.stdout + out.stderr).strip()[-500:]}")
        # Share of its CPU(s) wrk used: near 100% means the load generator, not the server, is the limit.
        used = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        res["wrk_cpu_pct"] = 100 * used / wall / load["ncpus"]
        return res
    return python_load(port, duration, connections, payload, path)


# ---------------------------------------------------------------------------- idle keep-alive connections

# Servers that keep an idle HTTP/1.1 connection open (Gunicorn's sync worker closes each one after its response),
# and what each needs so that neither a connection limit nor an idle timeout closes N connections during the
# measurement: ferricorn caps connections per worker (--worker-connections, default 1,000) and closes idle ones after
# --keep-alive (2 s); Granian accepts at most --backpressure connections at once (default 1,024 per worker).
IDLE_SERVERS = ["ferricorn", "granian", "uvicorn", "bjoern"]


def idle_extra(name, n):
    return {"ferricorn": ["--worker-connections", str(n + 1000), "--keep-alive", "600"],
            "granian": ["--backpressure", str(n + 1000)],
            "uvicorn": ["--timeout-keep-alive", "600"]}.get(name, [])


def idle_cost(port, proc, n, warm=50):
    """Opens `warm` then `n` keep-alive connections, each with one complete GET; returns the server tree's RSS
    (KiB) after the warm ones and after all, and how many of the n are still open 1 s later."""
    socks = []

    def one():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"Hello, World!\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        socks.append(s)

    try:
        for _ in range(warm):
            one()
        time.sleep(0.5)
        before = tree_rss_kib(proc.pid)
        for _ in range(n):
            one()
        time.sleep(1)
        after = tree_rss_kib(proc.pid)
        open_now = 0
        for s in socks[warm:]:
            s.setblocking(False)
            try:
                open_now += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
        return before, after, open_now
    finally:
        for s in socks:
            s.close()


def idle_mode(args, names, env, server_cpus, now, model):
    """--idle-connections N: what N idle keep-alive connections cost each server (hello app, 1 worker)."""
    import resource

    n = args.idle_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 1200:
        sys.exit(f"--idle-connections {n} needs {n + 1200} file descriptors; the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    rows, commands, notes = [], {}, []
    for name in [x for x in names if x in IDLE_SERVERS]:
        cmd = server_cmd(name, SCENARIOS["hello"]["app"], "PORT", args.workers, 1)
        if isinstance(cmd, str):
            notes.append(f"{name}: skipped, {cmd}")
            continue
        commands[name] = show(pin(cmd + idle_extra(name, n), server_cpus))
        for rnd in range(args.rounds):
            port = free_port()
            cmd = server_cmd(name, SCENARIOS["hello"]["app"], port, args.workers, 1) + idle_extra(name, n)
            proc = subprocess.Popen(pin(cmd, server_cpus), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                if not wait_ready(port, proc):
                    notes.append(f"{name} (round {rnd + 1}): did not start")
                    continue
                time.sleep(0.2)
                idle = tree_rss_kib(proc.pid)
                before, after, still = idle_cost(port, proc, n)
            except OSError as e:
                notes.append(f"{name} (round {rnd + 1}): {e}")
                continue
            finally:
                stop(proc)
            per = (after - before) / n
            rows.append((name, rnd + 1, idle, before, after, per, still))
            print(f"round {rnd + 1} {name:9s} RSS {idle / 1024:.1f} MiB idle, {before / 1024:.1f} -> {after / 1024:.1f} "
                  f"MiB for {n:,} idle connections: {per:.1f} KiB each; {still:,} still open", flush=True)
    lines = [f"# ferricorn benchmark: idle keep-alive connections, {now.strftime('%Y-%m-%d %H:%M UTC')}", "",
             f"- Machine: {model}, {os.cpu_count()} cores",
             f"- Method: per server and round a fresh server (1 worker, the `hello` app), 50 keep-alive connections "
             f"opened to warm it, its process tree's RSS taken, then {n:,} more connections opened, each with one "
             "complete GET and its response read, and left idle; 1 s later the RSS again and how many of them the "
             "server still holds open. KiB/connection = (RSS after - RSS before) / N. Gunicorn's sync worker is not "
             "measured: it closes every connection after its response.",
             f"- Command: `{shlex.join(['python', 'bench/run.py'] + sys.argv[1:])}`", ""]
    table = ["| server | round | RSS idle MiB | RSS before MiB | RSS after MiB | KiB/connection | still open |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    table += [f"| {r[0]} | {r[1]} | {r[2] / 1024:.1f} | {r[3] / 1024:.1f} | {r[4] / 1024:.1f} | {r[5]:.1f} | {r[6]:,} |"
              for r in rows]
    lines += table
    lines += ["", "## Commands", "", "```"] + [f"{k}: {v}" for k, v in commands.items()] + ["```"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in notes]
    print("\n" + "\n".join(table + [f"note: {x}" for x in notes]))
    if not args.no_results:
        path = Path(args.results) if args.results else default_results_path(
            now.strftime("%Y-%m-%d"), model, os.cpu_count(), "-idle")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        print(f"\nwrote {rel(path)}")
    return 0


# ---------------------------------------------------------------------------- instructions per request

# Under callgrind every process of the tree (--trace-children) counts the instructions it executes in user
# space (Ir: kernel time is not counted). --dump-before=*fork writes a process's counts so far and zeroes them
# before it forks (fork, vfork, _Fork...), so a forked worker does not inherit its master's counts: the sum over
# all the files is each instruction once.
CALLGRIND = ["valgrind", "--tool=callgrind", "-q", "--trace-children=yes", "--dump-before=*fork"]
INSTR_REQUESTS = 2000  # the runs send N and 2N requests
INSTR_CONNECTIONS = 1  # sequential keep-alive requests: the same work in every run (see bench/README.md)
INSTR_TIMEOUT = 600  # seconds for a start, a request, a graceful stop under valgrind


def send_requests(port, count, connections, payload, path, expect):
    """Exactly `count` requests, spread over `connections` keep-alive connections (http.client opens a
    new one when the server closes); returns the problems (empty: every answer was 200 with `expect` bytes)."""
    import http.client

    problems = []

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=INSTR_TIMEOUT)
        headers = {"Content-Type": "application/octet-stream"} if payload is not None else {}
        try:
            for _ in range(n):
                conn.request("POST" if payload is not None else "GET", path, body=payload, headers=headers)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or (expect is not None and len(body) != expect):
                    problems.append(f"status {r.status}, {len(body)}-byte body")
        except (OSError, http.client.HTTPException) as e:
            problems.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    ts = [threading.Thread(target=worker, args=(count // connections + (i < count % connections),))
          for i in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return problems


def callgrind_total(out_dir):
    """Instructions summed over every callgrind output file (every process, every dump) in out_dir."""
    total = files = 0
    for f in Path(out_dir).iterdir():
        text = f.read_text(errors="replace")
        m = re.search(r"^totals:\s*(\d+)", text, re.M) or re.search(r"^summary:\s*(\d+)", text, re.M)
        if m:
            total += int(m.group(1))
            files += 1
    return total, files


def count_instructions(cmd, spec, count, connections, cwd, env, static_data=None):
    """Start a server under callgrind (cmd(port, out_dir) -> its command line), wait for its first 200 (one probe
    reaches it), check one request, send exactly `count` requests, stop it gracefully; returns
    {"instructions", "files", "wall_s"}. Raises RuntimeError if something went wrong."""
    out_dir = tempfile.mkdtemp(prefix="ferricorn-bench-callgrind-")
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd(port, out_dir), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    errlog = []
    threading.Thread(target=lambda: errlog.extend(proc.stderr), daemon=True).start()
    try:
        path = spec.get("path", "/")
        if not wait_ready(port, proc, timeout=INSTR_TIMEOUT, path=path, probe_timeout=INSTR_TIMEOUT):
            time.sleep(0.2)
            tail = b"".join(errlog).decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError("did not start under valgrind" + (f": {' / '.join(tail)}" if tail else ""))
        problem = spec["body"] is not None and check_response(port, spec, static_data, timeout=INSTR_TIMEOUT)
        if problem:
            raise RuntimeError(problem)
        payload = b"x" * spec["post"] if spec.get("post") else None
        problems = send_requests(port, count, connections, payload, path, spec["body"])
        if problems:
            raise RuntimeError(f"{len(problems)} bad answers of {count} requests under valgrind, e.g. {problems[0]}")
    finally:
        killed = stop(proc, grace=INSTR_TIMEOUT, whole_group=True)
        total, files = callgrind_total(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
    if killed:
        raise RuntimeError(f"did not stop within {INSTR_TIMEOUT} s of TERM under valgrind: killed, its counts are lost")
    return {"instructions": total, "files": files, "wall_s": time.monotonic() - t0}


# ---------------------------------------------------------------------------- machine

def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def parse_cpus(spec):
    """taskset's list syntax: "0", "1-3,5" -> {0}, {1, 2, 3, 5}."""
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cpu_list(cpus):
    return ",".join(str(c) for c in cpus)


def elf_has_debug_info(path):
    """True if the shared object has a .debug_info section (a dev-profile build here)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != b"\x7fELF" or data[4] != 2:
            return None
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        off, size = struct.unpack_from("<QQ", data, shoff + shstrndx * shentsize + 0x18)
        return b".debug_info\x00" in data[off:off + size]
    except (OSError, struct.error, IndexError):
        return None


def versions(nginx=False, valgrind=False):
    """Versions of Python, ferricorn (build kind, git revision), the peers, wrk; nginx's when it took part,
    valgrind's when it counted instructions."""
    v = {"python": platform.python_version()}
    for pkg in ["ferricorn", "gunicorn", "granian", "uvicorn", "uvloop", "httptools", "bjoern"]:
        try:
            v[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    spec = importlib.util.find_spec("ferricorn._ferricorn") if "ferricorn" in v else None
    if spec and spec.origin:
        dbg = elf_has_debug_info(spec.origin)
        v["ferricorn_build"] = "unknown build" if dbg is None else "dev build (debug info)" if dbg else "release build"
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if rev.returncode == 0:
            v["git"] = rev.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        pass
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        m = re.match(r"wrk (\S+)", (out.stdout + out.stderr).strip())
        v["wrk"] = m.group(1) if m else "?"
    exe = nginx_exe() if nginx else None
    if exe:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True)
        m = re.search(r"nginx/(\S+)", out.stdout + out.stderr)
        v["nginx"] = m.group(1) if m else "?"
    if valgrind and shutil.which("valgrind"):
        out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
        v["valgrind"] = out.stdout.strip().removeprefix("valgrind-") or "?"
    return v


# ---------------------------------------------------------------------------- report

def med(values):
    values = [x for x in values if x is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    return {
        "rps": med(r["rps"] for r in runs),
        "p50_ms": med(r["p50_ms"] for r in runs),
        "p99_ms": med(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "rss_idle_kib": med(r["rss_idle_kib"] for r in runs),
        "rss_load_kib": med(r["rss_load_kib"] for r in runs),
        "start_ms": med(r["start_ms"] for r in runs),
        "server_cpu_pct": med(r["server_cpu_pct"] for r in runs),
        "wrk_cpu_pct": med(r.get("wrk_cpu_pct") for r in runs),
        "other_server_pct": med(r["other_on_server_cpu_pct"] for r in runs),
        "other_load_pct": med(r["other_on_load_cpus_pct"] for r in runs),
        # req/s per second of server CPU time (per core): what the server would do if its CPU were the limit.
        "rps_per_cpu_s": med(r["rps"] * 100 / r["server_cpu_pct"] for r in runs if r.get("server_cpu_pct")),
        "runs": len(runs),
    }


def fmt(x, spec, suffix=""):
    return "-" if x is None else format(x, spec) + suffix


def ratio(a, b):
    return fmt_ratio(a / b if a and b else None)


def paired_ratio(runs, peer_runs, key="rps"):
    """Median over the rounds of a server's value divided by a peer's in the same round. The
    two ran one after the other, so a machine whose speed drifts between rounds (a shared VM)
    moves both; a ratio of medians could pair one server's fast round with the other's slow
    one. None without a round both have."""
    peer = {r.get("round"): r.get(key) for r in peer_runs}
    return med(r[key] / peer[r.get("round")] for r in runs if r.get(key) and peer.get(r.get("round")))


def add_paired_ratios(summary, results, peers=("gunicorn", "granian", "rust")):
    for sc, per in summary.items():
        for name, s in per.items():
            s["vs"] = {p: paired_ratio(results[sc][name], results[sc][p]) for p in peers if per.get(p)}


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def table(summary, scenarios, names):
    head = ["scenario", "server", "req/s", "vs gunicorn", "vs granian", "vs Rust ref", "p50 ms", "p99 ms",
            "errors", "RSS idle MiB", "RSS load MiB", "start ms", "CPU % server/wrk", "other CPU %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "--:" for i in range(len(head))) + "|"]
    for sc in scenarios:
        got = summary.get(sc, {})
        for name in names:
            s = got.get(name)
            if not s:
                continue
            vs = s.get("vs", {})
            rows.append("| " + " | ".join([
                sc, "pure-Rust ref" if name == "rust" else name, fmt(s["rps"], ",.0f"),
                fmt_ratio(vs.get("gunicorn")), fmt_ratio(vs.get("granian")), fmt_ratio(vs.get("rust")),
                fmt(s["p50_ms"], ".2f"), fmt(s["p99_ms"], ".2f"), str(s["errors"]),
                fmt(s["rss_idle_kib"] and s["rss_idle_kib"] / 1024, ".1f"),
                fmt(s["rss_load_kib"] and s["rss_load_kib"] / 1024, ".1f"), fmt(s["start_ms"], ".0f"),
                f"{fmt(s['server_cpu_pct'], '.0f')}/{fmt(s['wrk_cpu_pct'], '.0f')}",
                f"{fmt(s['other_server_pct'], '.0f')}/{fmt(s['other_load_pct'], '.0f')}",
            ]) + " |")
    return "\n".join(rows)


def summarize_instructions(runs):
    per = [r["instr_per_req"] for r in runs]
    return {"instr_per_req": med(per), "per_round": per, "fixed": med(r["fixed"] for r in runs),
            "spread_pct": 100 * (max(per) - min(per)) / med(per) if len(per) > 1 and med(per) else None,
            "runs": len(runs)}


def instructions_table(summary, scenarios, names):
    """--instructions: one row per scenario and server."""
    head = ["scenario", "server", "instructions/request", "per round", "spread", "start-up + exit, M instructions"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "--:" for i in range(len(head))) + "|"]
    for sc in scenarios:
        for name in names:
            s = summary.get(sc, {}).get(name)
            if s:
                rows.append("| " + " | ".join([
                    sc, "pure-Rust ref" if name == "rust" else name, fmt(s["instr_per_req"], ",.0f"),
                    " / ".join(format(x, ",.0f") for x in s["per_round"]), fmt(s["spread_pct"], ".2f", "%"),
                    fmt(s["fixed"] / 1e6, ",.0f")]) + " |")
    return "\n".join(rows)


NGINX_TARGET = 0.8  # static scenarios: ferricorn >= 0.8x nginx per core, and faster than Granian


def vs_nginx(summary, scenarios):
    """For static scenarios with an nginx result: one line each, every server's req/s (and req/s per server
    CPU-second) against nginx's, and whether ferricorn meets the target."""
    lines = []
    for sc in scenarios:
        got = summary.get(sc, {})
        base = got.get("nginx")
        if not SCENARIOS.get(sc, {}).get("static") or not base:
            continue
        parts = [f"{'pure-Rust ref' if n == 'rust' else n} {ratio(s['rps'], base['rps'])} "
                 f"({ratio(s.get('rps_per_cpu_s'), base.get('rps_per_cpu_s'))} per CPU-s)"
                 for n, s in got.items() if n != "nginx"]
        line = (f"`{sc}` vs nginx (req/s; in parentheses req/s per second of server CPU time): "
                + (", ".join(parts) or "no other server") + ".")
        f, g = got.get("ferricorn"), got.get("granian")
        if f:
            checks = []
            for what, key in [("req/s", "rps"), ("per CPU-s", "rps_per_cpu_s")]:
                ok = bool(f.get(key) and base.get(key) and f[key] >= NGINX_TARGET * base[key])
                if g:
                    ok = ok and bool(f.get(key) and g.get(key) and f[key] > g[key])
                checks.append(f"{what} {'met' if ok else 'NOT met'}")
            line += (f" Target (ferricorn >= {NGINX_TARGET:.1f}x nginx" + (", faster than Granian" if g else "")
                     + "): " + "; ".join(checks) + ".")
        lines.append(line)
    return lines


def rel(path):
    try:
        return str(Path(os.path.abspath(path)).relative_to(ROOT))
    except ValueError:
        return str(path)


def show(cmd):
    return shlex.join(rel(c) if os.path.isabs(c) and os.path.exists(c) else c for c in cmd)


def markdown(report, tbl):
    m, p, v = report["machine"], report["params"], report["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in ["gunicorn", "granian", "uvicorn", "uvloop", "httptools", "bjoern", "nginx"]
                      if k in v)
    static = [sc for sc in p["scenarios"] if SCENARIOS.get(sc, {}).get("static")]
    instr = report.get("instructions")
    if instr:
        method = (f"{p['rounds']} interleaved rounds; per round, scenario and server two fresh servers under "
                  f"valgrind's callgrind, one sent {instr['requests']:,} requests and one {2 * instr['requests']:,} "
                  f"(after its first 200 and one checked request), on {instr['connections']} keep-alive "
                  "connection(s); 1 worker per server; medians over rounds.")
    else:
        method = (f"{p['rounds']} interleaved rounds; per round, scenario and server a fresh server, "
                  f"{p['warmup']} s wrk warm-up, then {p['duration']} s measured; 1 worker per server; medians over "
                  f"rounds (errors: sum). Load generator: {report['loader']}.")
    lines = [
        f"# ferricorn benchmark, {report['date']}",
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores (usable: CPUs {m['usable_cpus']})"
        + (f", {m['mem_gib']:.0f} GiB RAM" if m.get("mem_gib") else "") + f", {m['platform']}"
        + (f"; load average at start {' '.join(m['loadavg'])}" if m.get("loadavg") else ""),
        f"- Pinning: {m['pinning']}",
        f"- Method: {method}",
        f"- Versions: Python {v['python']}; ferricorn {v.get('ferricorn', '?')} ({v.get('ferricorn_build', '?')}"
        + (f", git {v['git']}" if "git" in v else "") + f"); {peers or 'no peers installed'}"
        + (f"; valgrind {v['valgrind']}" if instr and "valgrind" in v else f"; wrk {v['wrk']}" if "wrk" in v else ""),
        f"- Command: `{report['command']}`",
        "",
        tbl,
        "",
    ]
    if report.get("vs_nginx"):
        lines += report["vs_nginx"] + [""]
    if instr:
        lines += [
            "instructions/request = (I(2N) - I(N)) / N, where I(k) is the number of instructions (callgrind's `Ir`, "
            "user space only: time in the kernel is not counted) that the server's whole process tree (master, "
            "workers, helpers: every process valgrind followed, `--trace-children=yes`) executed in the run that "
            "was sent k requests, from its start to its exit after TERM. Subtracting the two runs removes the "
            "start-up, the readiness probe, the checked request and the shutdown; what is left is the cost of N "
            "requests in a warm server. The count does not depend on the machine's load, so it is repeatable "
            "where req/s is not (spread = (max - min) / median over rounds). start-up + exit = I(N) - N x "
            "instructions/request. Under valgrind the server's threads run one at a time and about 50x slower, "
            "so work driven by timers (heartbeats, idle wake-ups) is slightly over-represented.",
        ]
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]] if report["notes"] else []
        lines += ["", "## Commands", "",
                  "Run from the repository root with `PYTHONPATH=<repo root>` and `PYTHONHASHSEED=0`; `PORT` is a free "
                  "loopback port, `OUT` a fresh temp directory per server run.", ""]
        for sc, cmds in report["commands"].items():
            lines += [f"`{sc}`: {SCENARIOS[sc]['what'] if sc in SCENARIOS else 'custom app'}", "", "```"]
            lines += [f"{name}: {c}" for name, c in cmds.items()]
            lines += ["```", ""]
        return "\n".join(lines)
    lines += [
        "req/s, p50/p99 (wrk's latency distribution) and RSS are medians over rounds; errors are non-2xx "
        "responses plus socket errors (connect/read/write/timeout), summed over rounds. RSS is the sum of "
        "VmRSS over the server's whole process tree: idle = after the first response, load = peak during the "
        "measured run. start = from spawning the server to its first 200 response. CPU % = share of its "
        "pinned CPU(s) the server's process tree and wrk used during the measured run: wrk near 100% means "
        "the load generator, not the server, was the limit. other CPU % = share of the server's / wrk's CPU "
        "that other processes on the machine took meanwhile (should be 0). Ratios compare req/s medians "
        "within a scenario; the pure-Rust reference serves only `hello`."
        + (" Static scenarios (" + ", ".join(f"`{sc}`" for sc in static) + ") take only ferricorn, Granian and "
           "nginx, and nginx only those; `per CPU-s` = req/s divided by the server's CPU share (req/s per core "
           "of server CPU time)." if static else ""),
    ]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "## Commands", "",
              "Run from the repository root with `PYTHONPATH=<repo root>`; `PORT` is a free loopback port. "
              f"Each measured wrk run follows a warm-up with the same command and `-d {p['warmup']}s`.", ""]
    for sc, cmds in report["commands"].items():
        lines += [f"`{sc}`: {SCENARIOS[sc]['what'] if sc in SCENARIOS else 'custom app'}", "", "```"]
        lines += [f"{name}: {c}" for name, c in cmds.items()]
        lines += ["```", ""]
    if any(SCENARIOS.get(sc, {}).get("post") for sc in report["commands"]) and report["loader"] == "wrk":
        lines += ["`echo.lua`:", "", "```lua", ECHO_LUA.rstrip(), "```", ""]
    if any("nginx" in report["commands"].get(sc, {}) for sc in static):
        lines += ["`TMP/nginx.conf` (`TMP`: a temp directory; written before each start with the run's port):", "",
                  "```nginx", nginx_conf("PORT", "DIR", "TMP", p["workers"]).rstrip(), "```", ""]
    return "\n".join(lines)


def default_results_path(date, model, cores, suffix=""):
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "machine"
    return ROOT / "bench" / "results" / f"{date}-{slug}-{cores}c{suffix}.md"


# ---------------------------------------------------------------------------- setup

def setup(argv, dry_run):
    """bench/.venv with the peers and a release build of this checkout, then re-run there."""
    py = BENCH_VENV / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q"]
    steps = []
    if not py.exists():
        steps.append(("create bench/.venv", [sys.executable, "-m", "venv", str(BENCH_VENV)], True))
    # bjoern builds against libev: on Debian/Ubuntu as root, its headers are installed
    # first (nothing is done elsewhere; bjoern is then skipped if it cannot build).
    if not Path("/usr/include/ev.h").exists() and shutil.which("apt-get") and os.geteuid() == 0:
        apt = "apt-get install -y -q libev-dev"
        steps.append(("libev headers for bjoern (optional)",
                      ["sh", "-c", f"{apt} || (apt-get update -q && {apt})"], False))
    steps += [
        ("peers", pip + ["-r", str(ROOT / "bench" / "requirements.txt")], True),
        ("bjoern (optional: needs a C compiler and libev headers)", pip + ["bjoern"], False),
        # A non-editable install of the checkout: pip runs maturin's PEP 517 backend, which
        # builds a release (`--release`, profile.release: fat LTO) wheel.
        ("ferricorn, release build", pip + ["--force-reinstall", "--no-deps", str(ROOT)], True),
        ("pure-Rust reference", RUST_BUILD, False),
    ]
    rest = [a for a in argv if a not in ("--setup", "--dry-run")]
    run = [str(py), str(ROOT / "bench" / "run.py")] + rest
    for what, cmd, required in steps:
        print(f"# {what}\n{shlex.join(cmd)}", flush=True)
        if dry_run:
            continue
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0:
            if required:
                sys.exit(f"setup step failed ({what}): exit {rc}")
            print(f"note: {what} failed (exit {rc}); it is skipped in the run", file=sys.stderr)
    print(f"# run\n{shlex.join(run)}", flush=True)
    if dry_run:
        return 0
    os.execv(run[0], run)


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true",
                    help="create/update bench/.venv (peers, bjoern if it builds, a release build of ferricorn), "
                         "build the pure-Rust reference, then run the benchmark there with the other options")
    ap.add_argument("--dry-run", action="store_true", help="with --setup: print the setup commands only")
    ap.add_argument("--smoke", action="store_true", help="a few seconds (hello only), to check the harness works")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma-separated, of: " + ", ".join(ALL_SERVERS) + " (rust = pure-Rust reference, hello only; "
                         "nginx: static scenarios only)")
    ap.add_argument("--app", help="benchmark this app (MODULE:CALLABLE, GET /) as scenario `custom` instead")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, help="override every scenario's thread count (default: 1, sleep10ms 32)")
    ap.add_argument("--connections", type=int, help="override every scenario's connections (default: 64, sleep10ms 256)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of measured load per run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each measured run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-cpu", help="CPU(s) for the server (default: the first usable CPU)")
    ap.add_argument("--load-cpus", help="CPU(s) for wrk (default: the next usable CPUs, up to 4)")
    ap.add_argument("--out", help="also write every run as JSON here")
    ap.add_argument("--results", help="markdown report path (default: bench/results/DATE-MACHINE.md; not in --smoke)")
    ap.add_argument("--no-results", action="store_true", help="do not write the markdown report")
    ap.add_argument("--instructions", action="store_true",
                    help="instead of the load: CPU instructions per request of each server's whole process tree, "
                         "under valgrind's callgrind (a run with N requests and one with 2N, per round; the "
                         "difference divided by N)")
    ap.add_argument("--idle-connections", type=int, metavar="N",
                    help="instead of the load: what N idle keep-alive connections cost each server in RSS "
                         "(hello app; ferricorn, granian, uvicorn, bjoern)")
    ap.add_argument("--instructions-requests", type=int, default=INSTR_REQUESTS, metavar="N",
                    help=f"with --instructions: N (default {INSTR_REQUESTS}); connections: --connections "
                         f"(default {INSTR_CONNECTIONS}: sequential keep-alive requests)")
    args = ap.parse_args()
    if args.setup:
        return setup(sys.argv[1:], args.dry_run)

    if args.app:
        SCENARIOS["custom"] = {"app": args.app, "body": None, "threads": 1, "connections": 64, "what": args.app}
        scenarios = ["custom"]
    else:
        scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.smoke:
        args.duration, args.warmup, args.rounds = 1, 0, 1
        scenarios = scenarios if args.app else ["hello"]
        args.connections = args.connections or 8
    bad = [s for s in scenarios if s not in SCENARIOS]
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    bad += [n for n in names if n not in ALL_SERVERS]
    if bad:
        ap.error(f"unknown scenario/server: {', '.join(bad)}")
    if args.instructions and not shutil.which("valgrind"):
        ap.error("--instructions needs valgrind (Debian: apt-get install valgrind)")
    if args.instructions and args.smoke:
        ap.error("--instructions and --smoke do not go together")

    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    pinned = bool(shutil.which("taskset")) and (len(usable) >= 2 or args.server_cpu)
    server_cpus = args.server_cpu or (str(usable[0]) if pinned else None)
    load_cpus = args.load_cpus or (cpu_list([c for c in usable if str(c) != server_cpus][:4] or usable) if pinned else None)
    if pinned:
        load_set = parse_cpus(load_cpus)
        os.sched_setaffinity(0, load_set)  # the harness itself (RSS sampling, probes) stays off the server CPU
        pinning = f"server on CPU {server_cpus}, wrk and this harness on CPU(s) {load_cpus} (taskset)"
    else:
        load_set = set(usable)
        pinning = "none (fewer than 2 usable CPUs or no taskset): server and wrk share the CPUs"
    load = {"wrk": bool(shutil.which("wrk")), "cpus": load_cpus if pinned else None,
            "threads": len(load_set) if pinned else 2, "ncpus": len(load_set)}
    server_set = parse_cpus(server_cpus) if pinned else set(usable)
    server_ncpus = len(server_set)
    loadavg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.idle_connections:
        return idle_mode(args, names, env, server_cpus if pinned else None,
                         datetime.datetime.now(datetime.timezone.utc), cpu_model())
    if args.instructions:
        env["PYTHONHASHSEED"] = "0"  # the same string hashes (dict layouts, collisions) in every run
    results = {sc: {n: [] for n in names if applies(n, sc)} for sc in scenarios}
    notes, commands, skipped = [], {}, {}
    script = None
    if any(SCENARIOS[sc].get("post") for sc in scenarios) and load["wrk"] and not args.instructions:
        fd, script = tempfile.mkstemp(prefix="ferricorn-bench-echo-", suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(ECHO_LUA)

    def conns(sc):
        return args.connections or (INSTR_CONNECTIONS if args.instructions else SCENARIOS[sc]["connections"])

    def threads(sc):
        return args.threads or SCENARIOS[sc]["threads"]

    def path(sc):
        return SCENARIOS[sc].get("path", "/")

    for sc in scenarios:
        commands[sc] = {}
        static_shown = {"dir": "DIR", "tmp": "TMP"} if SCENARIOS[sc].get("static") else None
        for name in results[sc]:
            cmd = server_cmd(name, SCENARIOS[sc]["app"], "PORT", args.workers, threads(sc), static_shown,
                             SCENARIOS[sc].get("asgi", False))
            if isinstance(cmd, str):
                skipped[name] = cmd
            elif args.instructions:
                cmd = CALLGRIND + ["--callgrind-out-file=OUT/callgrind.out.%p"] + cmd
                commands[sc][name] = show(pin(cmd, server_cpus if pinned else None))
            else:
                commands[sc][name] = show(pin(cmd, server_cpus if pinned else None))
        if args.instructions:
            n = args.instructions_requests
            commands[sc]["client"] = (f"{'POST' if SCENARIOS[sc].get('post') else 'GET'} http://127.0.0.1:PORT{path(sc)}"
                                      f" x {n:,}, then (fresh server) x {2 * n:,}, on {conns(sc)} keep-alive "
                                      "connection(s) (Python http.client)")
        elif load["wrk"]:
            commands[sc]["wrk"] = show(pin(wrk_cmd(f"http://127.0.0.1:PORT{path(sc)}", args.duration, conns(sc),
                                                   load["threads"], "echo.lua" if SCENARIOS[sc].get("post") else None),
                                           load["cpus"]))

    # Static scenarios: one file of random bytes, created once, in DIR = <temp>/static (served at /static/),
    # and nginx's config, pid, logs and temp paths in TMP = <temp>/nginx. All removed at the end.
    static_root = static = static_data = None
    if any(SCENARIOS[sc].get("static") for sc in scenarios):
        static_root = tempfile.mkdtemp(prefix="ferricorn-bench-static-")
        static = {"dir": os.path.join(static_root, "static"), "tmp": os.path.join(static_root, "nginx")}
        static_data = os.urandom(STATIC_BYTES)
        os.mkdir(static["dir"])
        os.mkdir(static["tmp"])
        Path(static["dir"], STATIC_FILE).write_bytes(static_data)
        # nginx started as root runs its worker as `nobody`: it must be able to read the file (mkdtemp gives 0700).
        for d in [static_root, static["dir"], static["tmp"]]:
            os.chmod(d, 0o755)
        os.chmod(os.path.join(static["dir"], STATIC_FILE), 0o644)

    try:
        for rnd in range(args.rounds):
            for sc in scenarios:
                spec = SCENARIOS[sc]
                payload = b"x" * spec["post"] if spec.get("post") else None
                sc_static = static if spec.get("static") else None
                for name in results[sc]:
                    if name in skipped:
                        continue
                    if args.instructions:
                        def under_callgrind(port, out_dir, name=name, sc=sc, sc_static=sc_static):
                            if name == "nginx":
                                Path(sc_static["tmp"], "nginx.conf").write_text(
                                    nginx_conf(port, sc_static["dir"], sc_static["tmp"], args.workers))
                            cmd = server_cmd(name, SCENARIOS[sc]["app"], port, args.workers, threads(sc), sc_static,
                                             SCENARIOS[sc].get("asgi", False))
                            return pin(CALLGRIND + [f"--callgrind-out-file={out_dir}/callgrind.out.%p"] + cmd,
                                       server_cpus if pinned else None)

                        n = args.instructions_requests
                        try:
                            one, two = [count_instructions(under_callgrind, spec, k, conns(sc), ROOT, env,
                                                           static_data if sc_static else None) for k in (n, 2 * n)]
                        except RuntimeError as e:
                            msg = f"{name} ({sc}, round {rnd + 1}): {e}"
                            print(msg, file=sys.stderr, flush=True)
                            notes.append(msg)
                            continue
                        per = (two["instructions"] - one["instructions"]) / n
                        res = {"instr_per_req": per, "fixed": one["instructions"] - n * per, "files": two["files"],
                               "totals": [one["instructions"], two["instructions"]], "requests": [n, 2 * n],
                               "wall_s": [one["wall_s"], two["wall_s"]], "round": rnd + 1}
                        results[sc][name].append(res)
                        print(f"round {rnd + 1} {sc:10s} {name:9s} {per:12,.0f} instructions/request  (totals "
                              f"{one['instructions']:,} / {two['instructions']:,} for {n:,} / {2 * n:,} requests; "
                              f"{two['files']} callgrind files; {one['wall_s']:.0f} / {two['wall_s']:.0f} s)", flush=True)
                        continue
                    port = free_port()
                    cmd = server_cmd(name, spec["app"], port, args.workers, threads(sc), sc_static, spec.get("asgi", False))
                    if name == "nginx":
                        Path(sc_static["tmp"], "nginx.conf").write_text(
                            nginx_conf(port, sc_static["dir"], sc_static["tmp"], args.workers))
                    t0 = time.monotonic()
                    proc = subprocess.Popen(pin(cmd, server_cpus if pinned else None), cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
                    errlog = []
                    threading.Thread(target=lambda p=proc, e=errlog: e.extend(p.stderr), daemon=True).start()
                    try:
                        if not wait_ready(port, proc, path=path(sc)):
                            time.sleep(0.2)
                            tail = b"".join(errlog).decode(errors="replace").strip().splitlines()[-3:]
                            if name == "nginx" and not tail:
                                try:
                                    tail = Path(sc_static["tmp"], "error.log").read_text().strip().splitlines()[-3:]
                                except OSError:
                                    pass
                            msg = f"{name} ({sc}, round {rnd + 1}): did not start" + (f": {' / '.join(tail)}" if tail else "")
                            print(msg, file=sys.stderr, flush=True)
                            notes.append(msg)
                            continue
                        start_ms = (time.monotonic() - t0) * 1000
                        problem = spec["body"] is not None and check_response(
                            port, spec, static_data if spec.get("static") else None)
                        if problem:
                            msg = f"{name} ({sc}, round {rnd + 1}): {problem}"
                            print(msg, file=sys.stderr, flush=True)
                            notes.append(msg)
                            continue
                        time.sleep(0.2)
                        rss_idle = tree_rss_kib(proc.pid)
                        if args.warmup:
                            run_load(port, args.warmup, conns(sc), load, script if payload else None, payload,
                                     path(sc))
                        sampler = RssSampler(proc.pid)
                        sampler.start()
                        cpu0, w0 = tree_cpu_s(proc.pid), time.monotonic()
                        sbusy0, lbusy0, me0 = cpus_busy_s(server_set), cpus_busy_s(load_set), self_cpu_s()
                        try:
                            res = run_load(port, args.duration, conns(sc), load, script if payload else None,
                                           payload, path(sc))
                        finally:
                            wall, used = time.monotonic() - w0, tree_cpu_s(proc.pid) - cpu0
                            sbusy, lbusy, me = cpus_busy_s(server_set), cpus_busy_s(load_set), self_cpu_s()
                            rss_load = sampler.stop()
                        cpu_pct = 100 * used / wall / server_ncpus
                        # CPU time other processes took on the pinned CPUs (other work on the machine).
                        other_server = 100 * (sbusy - sbusy0 - used) / wall / server_ncpus
                        wrk_s = res.get("wrk_cpu_pct", 0) * wall * load["ncpus"] / 100
                        other_load = 100 * (lbusy - lbusy0 - (me - me0) - wrk_s) / wall / load["ncpus"]
                        if proc.poll() is not None:
                            notes.append(f"{name} ({sc}, round {rnd + 1}): exited during the load (status {proc.returncode})")
                        res.update(rss_idle_kib=rss_idle, rss_load_kib=rss_load, start_ms=start_ms, round=rnd + 1,
                                   server_cpu_pct=cpu_pct, other_on_server_cpu_pct=max(0.0, other_server),
                                   other_on_load_cpus_pct=max(0.0, other_load))
                        results[sc][name].append(res)
                        print(f"round {rnd + 1} {sc:10s} {name:9s} {res['rps']:9.0f} req/s  p50 {fmt(res['p50_ms'], '.2f')} ms"
                              f"  p99 {fmt(res['p99_ms'], '.2f')} ms  errors {res['errors']}  RSS {rss_idle / 1024:.1f}"
                              f"/{rss_load / 1024:.1f} MiB  start {start_ms:.0f} ms  CPU {cpu_pct:.0f}/{fmt(res.get('wrk_cpu_pct'), '.0f')}%",
                              flush=True)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        msg = f"{name} ({sc}, round {rnd + 1}): {e}"
                        print(msg, file=sys.stderr, flush=True)
                        notes.append(msg)
                    finally:
                        stop(proc)
    finally:
        if script:
            os.unlink(script)
        if static_root:
            shutil.rmtree(static_root, ignore_errors=True)

    summarize_runs = summarize_instructions if args.instructions else summarize
    summary = {sc: {n: summarize_runs(runs) for n, runs in per.items() if runs} for sc, per in results.items()}
    if not args.instructions:
        add_paired_ratios(summary, results)
    for name, why in skipped.items():
        notes.insert(0, f"{name}: skipped, {why}")
    v = versions(nginx=any("nginx" in results[sc] for sc in scenarios), valgrind=args.instructions)
    if v.get("ferricorn_build", "").startswith("dev"):
        notes.insert(0, "ferricorn here is a dev (debug) build of the extension: its numbers are not representative; "
                        "`python bench/run.py --setup` benchmarks a release build")
    if "bjoern" in summary.get("sleep10ms", {}):
        notes.append("bjoern runs one request at a time (no threads): sleep10ms is capped near 100 req/s")
    if "uvicorn" in summary.get("sleep10ms", {}):
        notes.append("uvicorn runs WSGI apps on its fixed 10-thread pool (no flag for 32): sleep10ms is capped near 1,000 req/s")
    runs_all = [r for per in results.values() for runs in per.values() for r in runs]
    disturbed = [r for r in runs_all if max(r.get("other_on_server_cpu_pct", 0), r.get("other_on_load_cpus_pct", 0)) >= 5]
    if pinned and disturbed:
        notes.append(f"in {len(disturbed)} of {len(runs_all)} runs other processes took >= 5% of the server's or wrk's "
                     "CPU (column `other CPU %`): those numbers are disturbed; rerun on a quiet machine")
    if loadavg and float(loadavg[0]) >= 0.5 and not args.instructions:
        notes.append(f"the machine was not idle at the start (load average {' '.join(loadavg)}): other work may "
                     "have competed for the CPUs")
    busy = sorted({f"{n} ({sc})" for sc, per in summary.items() for n, s in per.items()
                   if (s.get("wrk_cpu_pct") or 0) >= 90})
    if busy:
        notes.append("wrk used >= 90% of its CPU for " + ", ".join(busy) + ": there the load generator may be the "
                     "limit, so those req/s (and ratios to them) are lower bounds")
    now = datetime.datetime.now(datetime.timezone.utc)
    model = cpu_model()
    report = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu_model": model, "cores": os.cpu_count(), "usable_cpus": cpu_list(usable),
                    "mem_gib": mem_total_gib(), "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
                    "pinning": pinning, "loadavg": loadavg},
        "params": {"rounds": args.rounds, "duration": args.duration, "warmup": args.warmup, "workers": args.workers,
                   "scenarios": scenarios, "servers": names},
        "loader": "wrk" if load["wrk"] else "Python threads (wrk not found; much slower, numbers not comparable)",
        "versions": v,
        "command": shlex.join(["python", "bench/run.py"] + sys.argv[1:]),
        "commands": commands,
        "notes": notes,
        "vs_nginx": [] if args.instructions else vs_nginx(summary, scenarios),
        "summary": summary,
        "runs": results,
    }
    if args.instructions:
        report["instructions"] = {"requests": args.instructions_requests,
                                  "connections": args.connections or INSTR_CONNECTIONS}
        tbl = instructions_table(summary, scenarios, names)
    else:
        tbl = table(summary, scenarios, names)
    print("\n" + tbl)
    for line in report["vs_nginx"]:
        print(line)
    for n in notes:
        print(f"note: {n}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    if not args.no_results and (args.results or not args.smoke):
        path = Path(args.results) if args.results else default_results_path(
            now.strftime("%Y-%m-%d"), model, os.cpu_count(), "-instructions" if args.instructions else "")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown(report, tbl) + "\n")
        print(f"\nwrote {rel(path)}")

    if "ferricorn" in names:
        if not any("ferricorn" in s for s in summary.values()):
            print("ferricorn produced no result", file=sys.stderr)
            return 1
        bad = [sc for sc, s in summary.items() if s.get("ferricorn", {}).get("errors")]
        if bad:
            print(f"ferricorn had errors under load: {', '.join(bad)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
