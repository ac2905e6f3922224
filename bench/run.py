#!/usr/bin/env python3
"""Side-by-side load benchmark: ferricorn vs Gunicorn vs Granian on the same app.

Each server is started on a free loopback port, warmed up, and loaded with wrk; rounds
are interleaved (A B C A B C ...) and the median of each server's runs is reported,
with ratios against Gunicorn. With two or more CPUs the server and wrk are pinned to
disjoint CPUs (taskset). Servers that are not installed are skipped with a note.

    python bench/run.py                      # full run (pip install -r bench/requirements.txt)
    python bench/run.py --smoke              # a few seconds, ferricorn only if others absent
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name):
    return shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def server_cmd(name, app, port, workers, threads):
    bind = f"127.0.0.1:{port}"
    if name == "ferricorn":
        exe = tool("ferricorn")
        base = [exe] if exe else [sys.executable, "-m", "ferricorn"]
        return base + ["-w", str(workers), "--threads", str(threads), "-b", bind, "--log-level", "warning", app]
    if name == "gunicorn":
        exe = tool("gunicorn")
        if not exe:
            return None
        return [exe, "-w", str(workers), "--threads", str(threads), "-b", bind, "--log-level", "warning", app]
    if name == "granian":
        exe = tool("granian")
        if not exe:
            return None
        return [exe, "--interface", "wsgi", "--workers", str(workers), "--blocking-threads", str(threads),
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", app]
    raise ValueError(name)


def pin(cmd, cpus):
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus] + cmd
    return cmd


def wait_ready(url, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                return True
        except OSError:
            time.sleep(0.1)
    return False


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "errors": errors}


def python_load(url, duration, connections):
    """Fallback when wrk is missing: keep-alive clients on threads (much slower than wrk)."""
    import http.client
    import threading
    from urllib.parse import urlparse

    u = urlparse(url)
    counts, errors = [0] * connections, [0]
    stop = time.monotonic() + duration

    def worker(i):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        while time.monotonic() < stop:
            try:
                conn.request("GET", u.path or "/")
                r = conn.getresponse()
                r.read()
                counts[i] += 1
            except Exception:
                errors[0] += 1
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"rps": sum(counts) / duration, "p50_ms": None, "p99_ms": None, "errors": errors[0]}


def run_load(url, duration, connections, cpus):
    wrk = shutil.which("wrk")
    if not wrk:
        return python_load(url, duration, connections), "python"
    cmd = pin([wrk, "-t", "1" if connections < 4 else "2", "-c", str(connections), "-d", f"{duration}s", "--latency", url], cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    return parse_wrk(out), "wrk"


def rss_kib(pid):
    """Total RSS of a process and its children (master + workers)."""
    total = 0
    pids = [pid]
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
                except OSError:
                    pass
        for p in pids:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few seconds, to check the harness works")
    ap.add_argument("--app", default="examples.hello:app")
    ap.add_argument("--servers", default="ferricorn,gunicorn,granian")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--path", default="/")
    ap.add_argument("--out", help="write results as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.rounds, args.connections = 2, 1, 8

    ncpu = os.cpu_count() or 1
    server_cpus = f"0-{max(0, ncpu // 2 - 1)}" if ncpu >= 2 else None
    load_cpus = f"{ncpu // 2}-{ncpu - 1}" if ncpu >= 2 else None
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    results = {n: [] for n in names}
    meta = {}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    for rnd in range(args.rounds):
        for name in names:
            port = free_port()
            cmd = server_cmd(name, args.app, port, args.workers, args.threads)
            if cmd is None:
                meta.setdefault(name, "not installed (pip install -r bench/requirements.txt)")
                continue
            proc = subprocess.Popen(pin(cmd, server_cpus), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            url = f"http://127.0.0.1:{port}{args.path}"
            try:
                if not wait_ready(url, proc):
                    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
                    print(f"{name}: did not start\n{err}", file=sys.stderr)
                    meta[name] = "failed to start"
                    continue
                run_load(url, 1, args.connections, load_cpus)  # warm-up
                res, loader = run_load(url, args.duration, args.connections, load_cpus)
                res["rss_kib"] = rss_kib(proc.pid)
                res["loader"] = loader
                results[name].append(res)
                print(f"round {rnd + 1} {name:10s} {res['rps']:10.0f} req/s  p99 {res['p99_ms']} ms  errors {res['errors']}", flush=True)
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    summary = {}
    for name, runs in results.items():
        if runs:
            summary[name] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "p99_ms": statistics.median([r["p99_ms"] for r in runs if r["p99_ms"] is not None] or [0]),
                "rss_kib": statistics.median(r["rss_kib"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "runs": len(runs),
            }
    base = summary.get("gunicorn", {}).get("rps")
    print(f"\n{'server':10s} {'req/s':>10s} {'vs gunicorn':>12s} {'p99 ms':>8s} {'RSS MiB':>8s} {'errors':>7s}")
    for name, s in summary.items():
        ratio = f"{s['rps'] / base:.2f}x" if base else "-"
        print(f"{name:10s} {s['rps']:10.0f} {ratio:>12s} {s['p99_ms']:8.2f} {s['rss_kib'] / 1024:8.1f} {s['errors']:7d}")
    for name, why in meta.items():
        if name not in summary:
            print(f"{name:10s} skipped: {why}")

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": ncpu, "platform": platform.platform(), "python": platform.python_version()},
        "params": vars(args),
        "summary": summary,
        "runs": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    if "ferricorn" in names and "ferricorn" not in summary:
        return 1
    if summary.get("ferricorn", {}).get("errors"):
        print("ferricorn had errors under load", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
