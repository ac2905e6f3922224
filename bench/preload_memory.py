#!/usr/bin/env python3
"""Memory of 4 workers with and without --preload on the test Django project.

    python bench/preload_memory.py [--workers 4] [--app djangoproject.wsgi]

Reports the workers' summed RSS and PSS (PSS divides shared pages between the processes
sharing them, so it shows what copy-on-write sharing saves) and the master's RSS.
"""

import argparse
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def rollup(pid, key):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--app", default="djangoproject.wsgi")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "apps"))
    for preload in (False, True):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = ["ferricorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning", args.app]
        if preload:
            cmd.append("--preload")
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        try:
            time.sleep(4)
            for _ in range(5 * args.workers):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
            workers = children(proc.pid)
            rss = sum(rollup(w, "Rss") for w in workers) / 1024
            pss = sum(rollup(w, "Pss") for w in workers) / 1024
            print(
                f"preload={str(preload):5s} {len(workers)} workers: RSS {rss:6.1f} MiB, PSS {pss:6.1f} MiB; "
                f"master RSS {rollup(proc.pid, 'Rss') / 1024:.1f} MiB"
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
