"""5. Idle keep-alive connections on one worker (--worker-connections 20000,
--keep-alive 300): 10,000 in LONG mode, 2,000 in SHORT mode. Each connection makes one
request and then stays idle. Reported: the worker's RSS growth per connection (must be
< 64 KiB), the latency of new clients while they are held (must stay within
max(2 x, +20 ms) of the latency without them), and that every idle connection is still
open and usable afterwards."""

import random
import resource
import time

import pytest

from conftest import wait_workers

from .conftest import dur
from .loadclient import Conn, lat_summary, measure_latency, payload, percentile, request_bytes, rss_kib


@pytest.mark.slow
def test_idle_keepalive_connections(rel_server, report):
    n = dur(2000, 10000)
    need = n + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files; RLIMIT_NOFILE hard limit is {hard} (raise it with ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        # The server inherits the raised limit.
        srv = rel_server("-w", "1", "--worker-connections", "20000", "--keep-alive", "300")
        (pid,) = wait_workers(srv, 1)
        measure_latency(srv.port, count=50, interval=0)  # warm up
        base_lat, base_fail = measure_latency(srv.port, count=dur(300, 1000), interval=0.002)
        time.sleep(0.3)
        rss0 = rss_kib(pid)
        conns, open_fail = [], []
        t0 = time.monotonic()
        for i in range(n):
            try:
                c = Conn("127.0.0.1", srv.port, timeout=10)
                c.send(request_bytes("GET", f"/r?id=idle{i}&n=10"))
                r = c.read_response()
                if r.status != 200 or r.body != payload(f"idle{i}", 10) or r.will_close:
                    open_fail.append(f"#{i}: {r.status} {r.body[:60]!r} close={r.will_close}")
                    c.close()
                    continue
                conns.append(c)
            except Exception as e:  # noqa: BLE001 - reported
                open_fail.append(f"#{i}: {type(e).__name__}: {e}")
                if len(open_fail) > 20:
                    break
        t_open = time.monotonic() - t0
        time.sleep(1.0)
        rss1 = rss_kib(pid)
        lat, fail = measure_latency(srv.port, count=dur(300, 1000), interval=0.002)
        # Every idle connection is still open, and a sample of them still serves.
        closed = [i for i, c in enumerate(conns) if c.idle_state() != "open"]
        sample = random.sample(range(len(conns)), min(200, len(conns)))
        reuse_fail = []
        for i in sample:
            c = conns[i]
            try:
                c.send(request_bytes("GET", f"/r?id=again{i}&n=10"))
                r = c.read_response()
                if r.status != 200 or r.body != payload(f"again{i}", 10):
                    reuse_fail.append(f"#{i}: {r.status} {r.body[:60]!r}")
            except Exception as e:  # noqa: BLE001 - reported
                reuse_fail.append(f"#{i}: {type(e).__name__}: {e}")
        rss2 = rss_kib(pid)
    finally:
        for c in locals().get("conns", []):
            c.close()
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    per_conn = (rss1 - rss0) / max(1, len(conns))
    p99_base, p99 = percentile(base_lat, 0.99), percentile(lat, 0.99)
    bound = max(2 * p99_base, p99_base + 0.020)
    report(
        f"{len(conns)} idle connections opened in {t_open:.1f}s; worker RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
        f"({per_conn:.1f} KiB per connection; {rss2 / 1024:.1f} MiB after reuse); new clients: before "
        f"{lat_summary(base_lat)}, with the idle connections {lat_summary(lat)} (bound p99 {bound * 1000:.2f}ms); "
        f"closed-while-idle={len(closed)} reuse-failures={len(reuse_fail)}/{len(sample)}"
    )
    assert open_fail == [], open_fail[:10]
    assert len(conns) == n
    assert base_fail == [] and fail == [], (base_fail[:5], fail[:5])
    assert closed == [], f"{len(closed)} idle keep-alive connections closed by the server (--keep-alive 300)"
    assert reuse_fail == [], reuse_fail[:10]
    assert per_conn < 64, f"{per_conn:.1f} KiB of worker RSS per idle connection"
    assert p99 <= bound, f"p99 {p99 * 1000:.2f} ms with {n} idle connections > bound {bound * 1000:.2f} ms"
