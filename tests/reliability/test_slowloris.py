"""4. Slowloris: N connections trickle header bytes (one byte per second each, never
finishing the head) against 1 worker with 1 thread, while a normal client measures the
latency of requests on fresh connections.

SHORT: 300 connections for 10 s. LONG: 2000 connections for 60 s (hyper's 30 s header
timeout then closes them, and the attacker reconnects: the report says when).

The server runs with --worker-connections 5000: with the default of 1000, a worker
holding 1000 trickling connections accepts no more, and a normal client waits in the
listen backlog until a slowloris connection times out (30 s). That is by design (it is
what the setting means, and --max-queued can answer 503 instead); this test measures the
cost of trickling connections the worker does hold."""

import json
import subprocess
import sys

import pytest

from conftest import wait_workers

from .conftest import LONG, TOOLS, dur
from .loadclient import lat_summary, measure_latency, percentile, rss_kib


@pytest.mark.slow
def test_slowloris_does_not_slow_normal_clients(rel_server, report):
    conns, duration = dur(300, 2000), dur(10, 60)
    srv = rel_server("-w", "1", "--threads", "1", "--worker-connections", "5000")
    (pid,) = wait_workers(srv, 1)
    measure_latency(srv.port, count=50, interval=0)  # warm up
    base_lat, base_fail = measure_latency(srv.port, duration=dur(3, 10), interval=0.005)
    rss0 = rss_kib(pid)
    attacker = subprocess.Popen(
        [sys.executable, str(TOOLS / "slowloris.py"), str(srv.port), str(conns), str(duration), "--rate", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = attacker.stdout.readline().split()
        assert ready and ready[0] == "READY", f"slowloris did not start: {ready} {attacker.stderr.read()}"
        opened = int(ready[1])
        lat, fail = measure_latency(srv.port, duration=duration - 1.0, interval=0.005)
        rss_peak = rss_kib(pid)
        out, err = attacker.communicate(timeout=duration + 60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    p99_base, p99 = percentile(base_lat, 0.99), percentile(lat, 0.99)
    bound = max(2 * p99_base, p99_base + 0.020)
    report(
        f"{opened} trickling connections for {duration}s; unloaded {lat_summary(base_lat)}; "
        f"under slowloris {lat_summary(lat)} failures={len(fail)}; p99 bound {bound * 1000:.2f}ms; "
        f"worker RSS {rss0 / 1024:.1f} -> {rss_peak / 1024:.1f} MiB; attacker: {json.dumps(stats)}"
    )
    assert opened == conns, f"only {opened} of {conns} slowloris connections opened"
    assert base_fail == [] and fail == [], (base_fail[:5], fail[:5])
    assert len(lat) >= 100, lat_summary(lat)
    assert stats["answers"] == 0, f"the server answered an unfinished head: {stats['answer_samples']}"
    assert stats["connect_errors"] == 0, stats
    if not LONG:
        # Shorter than the 30 s header timeout: nothing may have been closed.
        assert stats["closed_by_server"] + stats["reset_by_server"] == 0, stats
    else:
        # The header timeout (30 s) closes them, and not much earlier.
        lt = stats["closed_lifetime_s"]
        assert lt["n"] == 0 or lt["min"] >= 25, stats
    assert rss_peak < 200 * 1024, f"worker RSS {rss_peak} KiB with {conns} trickling connections"
    assert p99 <= bound, f"p99 {p99 * 1000:.2f} ms under slowloris > bound {bound * 1000:.2f} ms (unloaded p99 {p99_base * 1000:.2f} ms)"
