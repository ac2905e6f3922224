"""End-to-end tests of metrics: Gunicorn's StatsD instrumentation (`--statsd-host`,
`--statsd-prefix`, `--dogstatsd-tags`, `--enable-backlog-metric`, custom metrics from
config-file hooks) and ferricorn's Prometheus endpoint (`--metrics-bind`).

StatsD datagrams are read by real listeners (a UDP socket on 127.0.0.1, an AF_UNIX
datagram socket); the Prometheus page is parsed with prometheus_client's own parser.
Every loop is bounded in time and all traffic stays on the loopback.

Reference: gunicorn/instrument/statsd.py (wire format) and gunicorn/arbiter.py (the
master's metrics)."""

import concurrent.futures
import http.client
import os
import re
import shutil
import signal
import socket
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from conftest import TcpServer, base_env, children, free_port, wait_until, wait_workers

APP = "metrics_app:app"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER"]
CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]
REASONS = ["timeout", "crash", "max_requests", "memory"]

# --------------------------------------------------------------------------------------
# helpers: a StatsD listener


class StatsdListener:
    """Collects every datagram sent to a UDP socket on 127.0.0.1 (or an AF_UNIX datagram
    socket at `path`, or a UDP socket on ::1) in a background thread."""

    def __init__(self, family=socket.AF_INET, path=None, port=0):
        self.family = family
        self.path = path
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_UNIX:
            self.sock.bind(path)
        elif family == socket.AF_INET6:
            self.sock.bind(("::1", port))
        else:
            self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self._lines = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self):
        if self.family == socket.AF_UNIX:
            return f"unix://{self.path}"
        if self.family == socket.AF_INET6:
            return f"[::1]:{self.sock.getsockname()[1]}"
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._lines.append(data.decode("ascii", errors="replace"))

    def lines(self):
        with self._lock:
            return list(self._lines)

    def clear(self):
        with self._lock:
            self._lines.clear()

    def count(self, line):
        return self.lines().count(line)

    def wait_for(self, pred, timeout=5.0):
        """Waits until pred(lines) is truthy; returns the lines either way."""
        wait_until(lambda: pred(self.lines()), timeout)
        return self.lines()

    def wait_line(self, line, n=1, timeout=5.0):
        lines = self.wait_for(lambda ls: ls.count(line) >= n, timeout)
        assert lines.count(line) >= n, f"{line!r} x{n} not received; got {lines[-40:]}"
        return lines

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def statsd():
    with StatsdListener() as s:
        yield s


def short_tmpdir():
    """A short directory for AF_UNIX paths (108 bytes at most)."""
    return tempfile.mkdtemp(prefix="fcm-", dir="/tmp")


# --------------------------------------------------------------------------------------
# helpers: HTTP to the app and to the metrics page


def request(port, method="GET", path="/", body=None, headers=None, timeout=10.0):
    """One request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Connection": "close"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def scrape_raw(mport, method="GET", path="/metrics", timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


class Snapshot:
    """One scrape, parsed with prometheus_client's parser."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = s.value

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples

    def get(self, name, **labels):
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels} in:\n{self.text}"
        return self.samples[key]

    def requests(self):
        return {(m, c): self.get("ferricorn_http_requests_total", method=m, status=c) for m in METHODS for c in CLASSES}

    def restarts(self):
        return {r: self.get("ferricorn_worker_restarts_total", reason=r) for r in REASONS}

    def buckets(self):
        fam = self.families["ferricorn_http_request_duration_seconds"]
        return {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}

    def total_requests(self):
        return sum(self.requests().values())


def scrape(mport):
    status, headers, body = scrape_raw(mport)
    assert status == 200, (status, body[:300])
    return Snapshot(body.decode())


def wait_scrape(mport, pred, timeout=5.0):
    """Scrapes until pred(snapshot) holds; returns the last snapshot either way."""
    last = [None]

    def ok():
        last[0] = scrape(mport)
        return pred(last[0])

    wait_until(ok, timeout)
    return last[0]


def new_worker(srv, old, timeout=10.0):
    """Waits until the master has exactly one worker, not `old`."""
    return wait_until(lambda: (lambda k: len(k) == 1 and k[0] != old)(children(srv.pid)), timeout)


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


def start_metrics_server(start_server, *args, statsd=None, mport=None, **kw):
    """start_server(...) plus --metrics-bind on a free port (srv.mport) and, if given,
    --statsd-host."""
    mport = mport or free_port()
    extra = ["--metrics-bind", f"127.0.0.1:{mport}"]
    if statsd is not None:
        extra += ["--statsd-host", statsd.address]
    srv = start_server(*extra, *args, **kw)
    srv.mport = mport
    assert wait_until(lambda: _scrapable(mport), 10), f"no metrics at {mport}\n{srv.log()}"
    return srv


def _scrapable(mport):
    try:
        return scrape_raw(mport, timeout=1)[0] == 200
    except OSError:
        return False


def write(path, text):
    path = Path(path)
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------
# helpers: sockets of a process, from /proc


def _socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            out.add(m.group(1))
    return out


def _proc_net(kind):
    """{inode: (local port, state)} from /proc/net/<kind> and <kind>6."""
    table = {}
    for name in (kind, kind + "6"):
        try:
            rows = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            port = int(f[1].rsplit(":", 1)[1], 16)
            table[f[9]] = (port, f[3])
    return table


def tcp_listen_ports(pid):
    tcp = _proc_net("tcp")
    return sorted({tcp[i][0] for i in _socket_inodes(pid) if i in tcp and tcp[i][1] == "0A"})


def udp_sockets(pid):
    udp = _proc_net("udp")
    return [udp[i] for i in _socket_inodes(pid) if i in udp]


# --------------------------------------------------------------------------------------
# a module-scoped server for the Prometheus page: 2 workers, nothing that restarts them


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    d = tmp_path_factory.mktemp("prom")
    port, mport = free_port(), free_port()
    srv = TcpServer(
        ["-b", f"127.0.0.1:{port}", "-w", "2", "--metrics-bind", f"127.0.0.1:{mport}", APP],
        d,
        base_env(),
        d / "server.log",
        port,
    )
    try:
        srv.wait_ready()
        wait_workers(srv, 2)
        assert wait_until(lambda: _scrapable(mport), 10), srv.log()
        srv.mport = mport
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def quiet(prom):
    """The module server with nothing in flight (a test before may have left a request)."""
    assert wait_until(lambda: scrape(prom.mport).get("ferricorn_http_requests_in_flight") == 0, 10)
    return prom


# --------------------------------------------------------------------------------------
# 1. the Prometheus page itself


def test_metrics_page_content_type_and_families(quiet):
    status, headers, body = scrape_raw(quiet.mport)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    snap = Snapshot(body.decode())
    types = {name: f.type for name, f in snap.families.items()}
    # prometheus_client names a counter family without its _total suffix.
    assert types == {
        **types,
        "ferricorn_http_requests": "counter",
        "ferricorn_http_request_duration_seconds": "histogram",
        "ferricorn_http_requests_in_flight": "gauge",
        "ferricorn_http_request_body_bytes": "counter",
        "ferricorn_http_response_body_bytes": "counter",
        "ferricorn_workers": "gauge",
        "ferricorn_worker_restarts": "counter",
        "ferricorn_listen_backlog": "gauge",
    }, types
    # Every method x status class series and every restart reason is there from the start.
    assert set(snap.requests()) == {(m, c) for m in METHODS for c in CLASSES}
    assert set(snap.restarts()) == set(REASONS)
    assert snap.get("ferricorn_workers") == 2
    assert snap.get("ferricorn_listen_backlog") >= 0


def test_metrics_page_head(quiet):
    status, headers, body = scrape_raw(quiet.mport, method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/", "/favicon.ico"])
def test_metrics_other_paths_404(quiet, path):
    status, _, _ = scrape_raw(quiet.mport, path=path)
    assert status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_metrics_other_methods_405(quiet, method):
    status, _, _ = scrape_raw(quiet.mport, method=method)
    assert status == 405


def test_metrics_405_names_allowed_methods(quiet):
    """RFC 9110 15.5.6: a 405 response MUST carry an Allow header."""
    status, headers, _ = scrape_raw(quiet.mport, method="POST")
    assert status == 405
    allow = {m.strip() for m in (headers.get("Allow") or "").split(",") if m.strip()}
    assert "GET" in allow, f"405 without a usable Allow header: {dict(headers)}"


def test_metrics_query_string_is_ignored(quiet):
    status, _, body = scrape_raw(quiet.mport, path="/metrics?name[]=ferricorn_workers")
    assert status == 200 and b"ferricorn_workers 2" in body


def test_workers_do_not_hold_the_metrics_listener(quiet):
    """Only the master listens on the metrics port; a worker never accepts a scrape."""
    assert quiet.mport in tcp_listen_ports(quiet.pid)
    kids = children(quiet.pid)
    assert len(kids) == 2
    for k in kids:
        ports = tcp_listen_ports(k)
        assert quiet.mport not in ports, f"worker {k} listens on {ports}"


# --------------------------------------------------------------------------------------
# 2. request counters, summed over workers


def test_requests_total_by_method_and_status_over_two_workers(quiet):
    plan = (
        [("GET", "/sleep?0.02", "2xx")] * 16
        + [("POST", "/echo", "2xx")] * 6
        + [("PUT", "/status/201", "2xx")] * 4
        + [("DELETE", "/status/202", "2xx")] * 4
        + [("PATCH", "/status/302", "3xx")] * 4
        + [("GET", "/status/404", "4xx")] * 6
        + [("GET", "/error", "5xx")] * 3
        + [("POST", "/status/503", "5xx")] * 2
        + [("HEAD", "/", "2xx")] * 3
        + [("OPTIONS", "/", "2xx")] * 3
        + [("PROPFIND", "/", "2xx")] * 3
    )
    before = scrape(quiet.mport)

    def one(item):
        method, path, _ = item
        status, headers, _ = request(quiet.port, method, path, body=b"hello" if method == "POST" else None)
        return status, headers.get("X-Pid")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, plan))
    statuses = [s for s, _ in results]
    assert statuses.count(500) == 3 and statuses.count(404) == 6, statuses
    pids = {p for _, p in results if p}
    assert len(pids) == 2, f"the load did not reach both workers: {pids}"

    after = wait_scrape(quiet.mport, lambda s: s.total_requests() - before.total_requests() >= len(plan), 5)
    got = delta(before.requests(), after.requests())
    want = {(m, c): 0 for m in METHODS for c in CLASSES}
    for method, _, cls in plan:
        want[(method if method in METHODS else "OTHER", cls)] += 1
    assert got == want, {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    count = after.get("ferricorn_http_request_duration_seconds_count") - before.get("ferricorn_http_request_duration_seconds_count")
    assert count == len(plan)
    assert after.get("ferricorn_http_requests_in_flight") == 0


def test_keepalive_requests_each_counted(quiet):
    before = scrape(quiet.mport)
    conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=5)
    try:
        for _ in range(7):
            conn.request("GET", "/")
            r = conn.getresponse()
            assert r.status == 200
            r.read()
    finally:
        conn.close()
    after = scrape(quiet.mport)
    assert after.get("ferricorn_http_requests_total", method="GET", status="2xx") - before.get(
        "ferricorn_http_requests_total", method="GET", status="2xx"
    ) == 7


# --------------------------------------------------------------------------------------
# 3. the latency histogram


def test_duration_histogram_buckets_sum_and_count(quiet):
    before = scrape(quiet.mport)
    for _ in range(5):
        assert request(quiet.port, "GET", "/")[0] == 200
    t0 = time.monotonic()
    assert request(quiet.port, "GET", "/sleep?0.3")[0] == 200
    slow = time.monotonic() - t0
    assert slow < 0.5, f"the 0.3 s request took {slow:.2f}s on the client side"
    after = scrape(quiet.mport)

    b0, b1 = before.buckets(), after.buckets()
    bounds = [float(le) for le in b1]
    assert bounds[0] == 0.005 and bounds[-2:] == [10.0, float("inf")] and bounds == sorted(bounds), bounds
    assert {0.25, 0.5} <= set(bounds), bounds
    # Cumulative buckets never decrease along `le`.
    values = list(b1.values())
    assert values == sorted(values)
    d = {le: b1[le] - b0[le] for le in b1}
    assert d["0.25"] == 5, d
    assert d["0.5"] == 6, d
    assert d["+Inf"] == 6, d
    assert d["10.0"] == 6, d
    count = after.get("ferricorn_http_request_duration_seconds_count") - before.get("ferricorn_http_request_duration_seconds_count")
    assert count == 6
    assert after.get("ferricorn_http_request_duration_seconds_count") == b1["+Inf"]
    s = after.get("ferricorn_http_request_duration_seconds_sum") - before.get("ferricorn_http_request_duration_seconds_sum")
    assert 0.3 <= s < 0.3 + 5 * 0.25, s


# The default buckets of the official clients: client_python's Histogram.DEFAULT_BUCKETS
# and client_golang's prometheus.DefBuckets.
OFFICIAL_DEFAULT_BUCKETS = {
    "client_python": [*Histogram.DEFAULT_BUCKETS],
    "client_golang": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf")],
}


def test_duration_histogram_uses_a_standard_default_bucket_layout(quiet):
    """The buckets are the Prometheus clients' defaults (0.005 ... 10 s), so dashboards
    built for them work; in particular no gap from 2.5 s straight to 10 s."""
    bounds = [float(le) for le in scrape(quiet.mport).buckets()]
    assert bounds in OFFICIAL_DEFAULT_BUCKETS.values(), bounds


# --------------------------------------------------------------------------------------
# 4. requests in flight


def test_in_flight_gauge_counts_a_slow_request(quiet):
    done = threading.Event()
    result = {}

    def slow():
        result["status"] = request(quiet.port, "GET", "/sleep?1.5")[0]
        done.set()

    t = threading.Thread(target=slow)
    t.start()
    try:
        seen = wait_until(lambda: scrape(quiet.mport).get("ferricorn_http_requests_in_flight") == 1, 1.2, 0.05)
        assert seen, "in-flight gauge never showed the running request"
        assert not done.is_set()
    finally:
        t.join(10)
    assert result.get("status") == 200
    assert wait_until(lambda: scrape(quiet.mport).get("ferricorn_http_requests_in_flight") == 0, 3)


def test_in_flight_returns_to_zero_when_the_client_disconnects(quiet):
    """A client that gives up during a slow request must not leave the gauge at 1."""
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=5) as s:
        s.sendall(b"GET /sleep?1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: scrape(quiet.mport).get("ferricorn_http_requests_in_flight") == 1, 1.0, 0.05)
    # The app call finishes after ~1 s whatever the client did.
    ok = wait_until(lambda: scrape(quiet.mport).get("ferricorn_http_requests_in_flight") == 0, 5)
    assert ok, f"in-flight gauge stuck at {scrape(quiet.mport).get('ferricorn_http_requests_in_flight')}"


# --------------------------------------------------------------------------------------
# 5. body bytes


@pytest.mark.parametrize("size", [10_000, 1_000_000], ids=["10kB", "1MB-streamed"])
def test_body_bytes_counters(quiet, size):
    before = scrape(quiet.mport)
    payload = os.urandom(size)
    status, _, body = request(quiet.port, "POST", "/echo", body=payload, headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body == payload
    after = wait_scrape(quiet.mport, lambda s: s.get("ferricorn_http_response_body_bytes_total") - before.get("ferricorn_http_response_body_bytes_total") >= size, 3)
    din = after.get("ferricorn_http_request_body_bytes_total") - before.get("ferricorn_http_request_body_bytes_total")
    dout = after.get("ferricorn_http_response_body_bytes_total") - before.get("ferricorn_http_response_body_bytes_total")
    assert din >= size, din
    assert dout >= size, dout
    # Nothing else ran: the counters are not wildly off either (headers are not body).
    assert din < size + 1000 and dout < size + 1000, (din, dout)


def test_chunked_request_body_counted(quiet):
    before = scrape(quiet.mport)
    chunks = [b"a" * 3000, b"b" * 4000, b"c" * 500]

    def gen():
        yield from chunks

    conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=10)
    try:
        conn.request("POST", "/echo", body=gen(), headers={"Connection": "close"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"".join(chunks)
    finally:
        conn.close()
    after = scrape(quiet.mport)
    din = after.get("ferricorn_http_request_body_bytes_total") - before.get("ferricorn_http_request_body_bytes_total")
    assert din >= 7500, din


def test_response_bytes_for_generated_body(quiet):
    before = scrape(quiet.mport)
    status, _, body = request(quiet.port, "GET", "/bytes?250000")
    assert status == 200 and len(body) == 250000
    after = scrape(quiet.mport)
    dout = after.get("ferricorn_http_response_body_bytes_total") - before.get("ferricorn_http_response_body_bytes_total")
    assert 250000 <= dout < 251000, dout


# --------------------------------------------------------------------------------------
# 6. workers gauge (Prometheus and StatsD) follows TTIN / TTOU


def test_workers_gauge_follows_ttin_ttou(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "2", APP, statsd=statsd)
    wait_workers(srv, 2)
    statsd.wait_line("gunicorn.workers:2|g")
    assert scrape(srv.mport).get("ferricorn_workers") == 2

    srv.send_signal(signal.SIGTTIN)
    wait_workers(srv, 3)
    assert wait_until(lambda: scrape(srv.mport).get("ferricorn_workers") == 3, 5), scrape(srv.mport).text
    statsd.wait_line("gunicorn.workers:3|g")

    srv.send_signal(signal.SIGTTOU)
    wait_workers(srv, 2)
    time.sleep(0.3)
    srv.send_signal(signal.SIGTTOU)
    wait_workers(srv, 1)
    assert wait_until(lambda: scrape(srv.mport).get("ferricorn_workers") == 1, 5), scrape(srv.mport).text
    statsd.wait_line("gunicorn.workers:1|g")
    gauges = [l for l in statsd.lines() if l.startswith("gunicorn.workers:")]
    # Sent when the number changes, not on every loop.
    assert [g for a, g in zip([None] + gauges, gauges) if a == g] == [], gauges
    assert gauges[-1] == "gunicorn.workers:1|g", gauges
    # Scaling down is not a restart.
    assert set(scrape(srv.mport).restarts().values()) == {0}
    assert request(srv.port)[0] == 200


# --------------------------------------------------------------------------------------
# 7. worker restarts and counters that never go backwards


def test_crash_restart_keeps_counters(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "1", APP, statsd=statsd)
    (worker,) = wait_workers(srv, 1)
    for _ in range(10):
        assert request(srv.port, "POST", "/echo", body=b"x" * 100)[0] == 200
    before = scrape(srv.mport)
    assert before.get("ferricorn_http_requests_total", method="POST", status="2xx") == 10

    # A request is running when the worker is killed.
    t = threading.Thread(target=lambda: _swallow(lambda: request(srv.port, "GET", "/sleep?5", timeout=10)), daemon=True)
    t.start()
    assert wait_until(lambda: scrape(srv.mport).get("ferricorn_http_requests_in_flight") == 1, 2)
    os.kill(worker, signal.SIGKILL)
    assert new_worker(srv, worker, 10), srv.log()
    after = wait_scrape(srv.mport, lambda s: s.get("ferricorn_worker_restarts_total", reason="crash") == 1, 5)
    assert after.restarts() == {"timeout": 0, "crash": 1, "max_requests": 0, "memory": 0}
    # What the dead worker counted is still there; its unfinished request is not in flight.
    assert after.get("ferricorn_http_requests_total", method="POST", status="2xx") == 10
    assert after.get("ferricorn_http_request_body_bytes_total") >= before.get("ferricorn_http_request_body_bytes_total") >= 1000
    assert after.get("ferricorn_http_response_body_bytes_total") >= before.get("ferricorn_http_response_body_bytes_total")
    assert after.get("ferricorn_http_request_duration_seconds_count") >= before.get("ferricorn_http_request_duration_seconds_count") == 10
    assert after.get("ferricorn_http_requests_in_flight") == 0
    assert after.get("ferricorn_workers") == 1
    # Gunicorn logs an error for a worker killed by SIGKILL: counted in StatsD.
    statsd.wait_line("gunicorn.log.error:1|c|@1.0")
    # The new worker counts on top.
    assert request(srv.port, "POST", "/echo", body=b"y")[0] == 200
    assert scrape(srv.mport).get("ferricorn_http_requests_total", method="POST", status="2xx") == 11
    # 10 + 1 requests answered; the one cut short by the SIGKILL was never answered.
    statsd.wait_line("gunicorn.requests:1|c|@1.0", n=11)
    time.sleep(0.2)
    assert statsd.count("gunicorn.requests:1|c|@1.0") == 11


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the connection is expected to break
        pass


def test_max_requests_restarts_counted(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "1", "--max-requests", "5", APP, statsd=statsd)
    wait_workers(srv, 1)
    pids = set()
    for _ in range(12):
        status, headers, _ = request(srv.port, "GET", "/")
        assert status == 200
        pids.add(headers["X-Pid"])
    assert len(pids) >= 3, pids
    snap = wait_scrape(srv.mport, lambda s: s.get("ferricorn_worker_restarts_total", reason="max_requests") >= 2, 5)
    r = snap.restarts()
    assert r["max_requests"] >= 2 and r["crash"] == 0 and r["timeout"] == 0 and r["memory"] == 0, r
    assert snap.get("ferricorn_http_requests_total", method="GET", status="2xx") == 12
    assert snap.get("ferricorn_http_request_duration_seconds_count") == 12
    statsd.wait_line("gunicorn.requests:1|c|@1.0", n=12)
    assert statsd.count("gunicorn.requests:1|c|@1.0") == 12
    assert statsd.count("gunicorn.request.status.200:1|c|@1.0") == 12


def test_timeout_restart_counted(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "1", "-t", "1", APP, statsd=statsd)
    (worker,) = wait_workers(srv, 1)
    assert request(srv.port, "GET", "/")[0] == 200
    _swallow(lambda: request(srv.port, "GET", "/sleep?6", timeout=10))
    srv.wait_for("WORKER TIMEOUT", 8)
    assert new_worker(srv, worker, 10), srv.log()
    snap = wait_scrape(srv.mport, lambda s: s.get("ferricorn_worker_restarts_total", reason="timeout") >= 1, 5)
    assert snap.restarts() == {"timeout": 1, "crash": 0, "max_requests": 0, "memory": 0}
    assert snap.get("ferricorn_http_requests_total", method="GET", status="2xx") >= 1
    assert snap.get("ferricorn_http_requests_in_flight") == 0
    # Gunicorn logs WORKER TIMEOUT at critical level.
    statsd.wait_line("gunicorn.log.critical:1|c|@1.0")


def test_memory_restart_counted(start_server):
    srv = start_metrics_server(start_server, "-w", "1", "--max-worker-memory", "100", "mem_app:app")
    (worker,) = wait_workers(srv, 1)
    for _ in range(3):
        assert request(srv.port, "GET", "/grow")[0] == 200
    assert new_worker(srv, worker, 10), srv.log()
    snap = wait_scrape(srv.mport, lambda s: s.get("ferricorn_worker_restarts_total", reason="memory") >= 1, 5)
    assert snap.restarts() == {"timeout": 0, "crash": 0, "max_requests": 0, "memory": 1}
    assert snap.get("ferricorn_http_requests_total", method="GET", status="2xx") == 3


def test_hup_reload_is_not_a_restart_and_keeps_counters(start_server):
    srv = start_metrics_server(start_server, "-w", "2", APP)
    old = wait_workers(srv, 2)
    for _ in range(8):
        assert request(srv.port, "GET", "/status/404")[0] == 404
    before = scrape(srv.mport)
    srv.send_signal(signal.SIGHUP)
    assert wait_until(lambda: (lambda k: len(k) == 2 and not set(k) & set(old))(children(srv.pid)), 15), srv.log()
    time.sleep(0.3)
    after = scrape(srv.mport)
    assert after.restarts() == {r: 0 for r in REASONS}
    assert after.get("ferricorn_http_requests_total", method="GET", status="4xx") == 8
    assert after.get("ferricorn_http_request_duration_seconds_count") == before.get("ferricorn_http_request_duration_seconds_count")
    assert after.get("ferricorn_http_response_body_bytes_total") == before.get("ferricorn_http_response_body_bytes_total")
    assert after.get("ferricorn_workers") == 2
    assert request(srv.port, "GET", "/status/404")[0] == 404
    assert scrape(srv.mport).get("ferricorn_http_requests_total", method="GET", status="4xx") == 9


def test_worker_stopped_from_outside_is_not_a_max_requests_restart(start_server):
    """No --max-requests: a worker that exits 0 because someone sent it SIGTERM did not
    reach a request limit."""
    srv = start_metrics_server(start_server, "-w", "1", APP)
    (worker,) = wait_workers(srv, 1)
    os.kill(worker, signal.SIGTERM)
    assert new_worker(srv, worker, 10), srv.log()
    time.sleep(0.3)
    r = scrape(srv.mport).restarts()
    assert r["max_requests"] == 0, r


# --------------------------------------------------------------------------------------
# 8. the listen backlog (Prometheus gauge and StatsD histogram)


def test_listen_backlog_gauge_and_statsd_histogram(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "1", "--enable-backlog-metric", APP, statsd=statsd)
    (worker,) = wait_workers(srv, 1)
    # About every second, from the master.
    statsd.clear()
    time.sleep(3.2)
    idle = [l for l in statsd.lines() if l.startswith("gunicorn.backlog:")]
    assert 2 <= len(idle) <= 6, idle
    assert all(re.fullmatch(r"gunicorn\.backlog:\d+\|h", l) for l in idle), idle
    assert scrape(srv.mport).get("ferricorn_listen_backlog") == 0

    # A stopped worker accepts nothing: connections wait in the kernel's accept queue.
    os.kill(worker, signal.SIGSTOP)
    socks = []
    try:
        for _ in range(5):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=2))
        assert wait_until(lambda: scrape(srv.mport).get("ferricorn_listen_backlog") >= 5, 3), scrape(srv.mport).text
        lines = statsd.wait_for(
            lambda ls: any(re.fullmatch(r"gunicorn\.backlog:(\d+)\|h", l) and int(l.split(":")[1].split("|")[0]) >= 5 for l in ls), 3
        )
        assert any(l in (f"gunicorn.backlog:{n}|h" for n in range(5, 50)) for l in lines), lines[-10:]
    finally:
        os.kill(worker, signal.SIGCONT)
        for s in socks:
            s.close()
    assert wait_until(lambda: scrape(srv.mport).get("ferricorn_listen_backlog") == 0, 5)
    assert request(srv.port)[0] == 200


# --------------------------------------------------------------------------------------
# 9. static files and ASGI apps are counted too


def test_static_files_counted(start_server, tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    small = os.urandom(3000)
    big = os.urandom(300 * 1024)  # over the in-memory cache limit: read from the file
    (root / "small.bin").write_bytes(small)
    (root / "big.bin").write_bytes(big)
    srv = start_metrics_server(start_server, "-w", "1", "--static-map", f"/static={root}", APP)
    before = scrape(srv.mport)
    assert request(srv.port, "GET", "/static/small.bin")[2] == small
    assert request(srv.port, "GET", "/static/big.bin")[2] == big
    assert request(srv.port, "GET", "/static/missing.bin")[0] == 404
    assert request(srv.port, "HEAD", "/static/small.bin")[0] == 200
    after = scrape(srv.mport)
    d = delta(before.requests(), after.requests())
    assert d[("GET", "2xx")] == 2 and d[("GET", "4xx")] == 1 and d[("HEAD", "2xx")] == 1, {k: v for k, v in d.items() if v}
    assert sum(d.values()) == 4
    dout = after.get("ferricorn_http_response_body_bytes_total") - before.get("ferricorn_http_response_body_bytes_total")
    assert len(small) + len(big) <= dout < len(small) + len(big) + 1000, dout
    assert after.get("ferricorn_http_request_duration_seconds_count") - before.get("ferricorn_http_request_duration_seconds_count") == 4


def test_asgi_app_counted_in_prometheus_and_statsd(start_server, statsd):
    srv = start_metrics_server(start_server, "-w", "1", "asgi_raw:app", statsd=statsd)
    before = scrape(srv.mport)
    assert request(srv.port, "GET", "/cl")[2] == b"exactly-twenty-bytes"
    assert request(srv.port, "GET", "/status/404")[0] == 404
    assert request(srv.port, "POST", "/echo", body=b"z" * 5000)[0] == 200
    assert request(srv.port, "GET", "/raise-before")[0] == 500
    assert request(srv.port, "GET", "/sleep?s=0.3")[0] == 200
    after = scrape(srv.mport)
    d = delta(before.requests(), after.requests())
    assert {k: v for k, v in d.items() if v} == {("GET", "2xx"): 2, ("GET", "4xx"): 1, ("POST", "2xx"): 1, ("GET", "5xx"): 1}
    assert after.get("ferricorn_http_request_body_bytes_total") - before.get("ferricorn_http_request_body_bytes_total") >= 5000
    assert after.get("ferricorn_http_response_body_bytes_total") - before.get("ferricorn_http_response_body_bytes_total") >= 20
    b0, b1 = before.buckets(), after.buckets()
    assert b1["+Inf"] - b0["+Inf"] == 5 and b1["0.25"] - b0["0.25"] == 4, (b0, b1)
    lines = statsd.wait_line("gunicorn.requests:1|c|@1.0", n=5)
    for code, n in [(200, 3), (404, 1), (500, 1)]:
        assert lines.count(f"gunicorn.request.status.{code}:1|c|@1.0") == n, lines


def test_threaded_worker_counts_concurrent_requests_exactly(start_server):
    srv = start_metrics_server(start_server, "-w", "1", "--threads", "4", APP)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: request(srv.port, "GET", "/sleep?0.01" if i % 2 else "/status/404")[0], range(80)))
    assert statuses.count(200) == 40 and statuses.count(404) == 40
    snap = scrape(srv.mport)
    assert snap.get("ferricorn_http_requests_total", method="GET", status="2xx") == 40
    assert snap.get("ferricorn_http_requests_total", method="GET", status="4xx") == 40
    assert snap.total_requests() == 80
    assert snap.get("ferricorn_http_request_duration_seconds_count") == 80
    assert snap.get("ferricorn_http_requests_in_flight") == 0


def test_websocket_upgrade_counted_as_1xx(start_server):
    websockets_sync = pytest.importorskip("websockets.sync.client")
    srv = start_metrics_server(start_server, "-w", "1", "ws_raw:app")
    with websockets_sync.connect(f"ws://127.0.0.1:{srv.port}/echo", proxy=None, open_timeout=5, ping_interval=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
    snap = wait_scrape(srv.mport, lambda s: s.get("ferricorn_http_requests_total", method="GET", status="1xx") == 1, 5)
    assert snap.total_requests() == 1
    assert wait_until(lambda: scrape(srv.mport).get("ferricorn_http_requests_in_flight") == 0, 5)


# --------------------------------------------------------------------------------------
# 10. off by default; bad --metrics-bind


def test_no_metrics_without_the_options(start_server):
    mport = free_port()
    srv = start_server("-w", "1", APP)
    (worker,) = wait_workers(srv, 1)
    assert request(srv.port)[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=1).close()
    # The only listening socket anywhere in the tree is the application's; no StatsD socket.
    for pid in (srv.pid, worker):
        assert tcp_listen_ports(pid) in ([srv.port], []), (pid, tcp_listen_ports(pid))
        assert udp_sockets(pid) == [], (pid, udp_sockets(pid))
    assert tcp_listen_ports(srv.pid) == [srv.port]
    assert "Metrics at" not in srv.log()


def test_metrics_bind_invalid_value_fails_at_startup(run_cli):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "--metrics-bind", "not an address", APP, timeout=20)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "metrics_bind" in out, out


def test_metrics_bind_port_in_use_fails_at_startup(run_cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = run_cli("-b", f"127.0.0.1:{free_port()}", "--metrics-bind", f"127.0.0.1:{port}", APP, timeout=20)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert str(port) in out, out


def test_second_server_cannot_take_the_same_metrics_port(start_server):
    """Two unrelated servers must not share one --metrics-bind address: a scraper would
    get one server's counters, then the other's."""
    first = start_metrics_server(start_server, "-w", "1", APP)
    second = start_server("--metrics-bind", f"127.0.0.1:{first.mport}", "-w", "3", APP, wait=False)
    exited = wait_until(lambda: second.proc.poll() is not None, 3)
    seen = {scrape(first.mport).get("ferricorn_workers") for _ in range(12)}
    assert exited and second.proc.returncode != 0, (
        f"a second server started on the same metrics port; scrapes saw ferricorn_workers {sorted(seen)}\n{second.log()}"
    )
    assert seen == {1}, seen


def test_slow_scraper_does_not_stall_the_master(start_server):
    """A client that trickles its request line to the metrics port must not hold up the
    master: other scrapes are answered and a dead worker is replaced meanwhile."""
    srv = start_metrics_server(start_server, "-w", "1", APP)
    (worker,) = wait_workers(srv, 1)
    stop = threading.Event()

    def trickle():
        try:
            with socket.create_connection(("127.0.0.1", srv.mport), timeout=10) as s:
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100:
                    if stop.is_set():
                        return
                    s.sendall(bytes([b]))
                    time.sleep(0.3)
        except OSError:
            pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.6)
        t0 = time.monotonic()
        try:
            status = scrape_raw(srv.mport, timeout=3)[0]
        except OSError as e:
            status = repr(e)
        elapsed = time.monotonic() - t0
        assert status == 200 and elapsed < 2, f"scrape during a slow scraper: {status} after {elapsed:.1f}s"
        os.kill(worker, signal.SIGKILL)
        replaced = new_worker(srv, worker, 4)
        assert replaced, f"worker not replaced while a scraper trickles: {children(srv.pid)}"
    finally:
        stop.set()
        t.join(5)


# --------------------------------------------------------------------------------------
# 11. StatsD: Gunicorn's wire format


REQ_RE = r"gunicorn\.request(s|\.)"


@pytest.mark.parametrize(
    "args, prefix, tags",
    [
        ([], "", ""),
        (["--statsd-prefix", "app"], "app.", ""),
        (["--statsd-prefix", "app."], "app.", ""),
        (["--statsd-prefix", "svc.app", "--dogstatsd-tags", "env:test,team"], "svc.app.", "|#env:test,team"),
    ],
    ids=["no-prefix", "prefix", "prefix-dot", "prefix-tags"],
)
def test_statsd_request_metrics_wire_format(start_server, statsd, args, prefix, tags):
    srv = start_server("-w", "1", "--statsd-host", statsd.address, *args, APP)
    wait_workers(srv, 1)
    statsd.wait_line(f"{prefix}gunicorn.workers:1|g{tags}")
    sent = [("/", 200), ("/status/404", 404), ("/error", 500), ("/status/302", 302), ("/sleep?0.3", 200)]
    for path, code in sent:
        assert request(srv.port, "GET", path)[0] == code
    statsd.wait_line(f"{prefix}gunicorn.requests:1|c|@1.0{tags}", n=len(sent))
    # One datagram per metric, and the last request's status counter may still be on its
    # way when its requests counter has arrived.
    statsd.wait_line(f"{prefix}gunicorn.request.status.200:1|c|@1.0{tags}", n=2)
    lines = statsd.lines()
    p, t = re.escape(prefix), re.escape(tags)
    req_lines = [l for l in lines if re.match(p + REQ_RE, l)]
    assert len(req_lines) == 3 * len(sent), req_lines
    durations = []
    for i, (_, code) in enumerate(sent):
        dur, reqs, status = req_lines[3 * i : 3 * i + 3]
        m = re.fullmatch(rf"{p}gunicorn\.request\.duration:(\d+\.\d+)\|ms{t}", dur)
        assert m, (i, req_lines)
        durations.append(float(m.group(1)))
        assert reqs == f"{prefix}gunicorn.requests:1|c|@1.0{tags}", (i, req_lines)
        assert status == f"{prefix}gunicorn.request.status.{code}:1|c|@1.0{tags}", (i, req_lines)
    assert 300 <= durations[-1] < 1000, durations
    assert all(0 <= d < 250 for d in durations[:-1]), durations
    # Every datagram carries the prefix and the tags.
    assert all(l.startswith(prefix) and l.endswith(tags) for l in lines), lines
    assert all(re.fullmatch(rf"{p}[a-z0-9_.]+:-?[0-9.]+\|(c\|@1\.0|g|ms|h){t}", l) for l in lines), lines


def test_statsd_each_metric_is_its_own_datagram(start_server, statsd):
    srv = start_server("-w", "1", "--statsd-host", statsd.address, APP)
    assert request(srv.port)[0] == 200
    lines = statsd.wait_line("gunicorn.requests:1|c|@1.0")
    assert all("\n" not in l for l in lines), lines


def test_statsd_malformed_request_counts_a_warning(start_server, statsd):
    srv = start_server("-w", "1", "--statsd-host", statsd.address, APP)
    wait_workers(srv, 1)
    statsd.clear()
    srv.raw(b"THIS IS NOT HTTP\r\n\r\n", timeout=3)
    srv.wait_for("Invalid request from ip=127.0.0.1", 5)
    statsd.wait_line("gunicorn.log.warning:1|c|@1.0")
    assert statsd.count("gunicorn.log.warning:1|c|@1.0") == 1, statsd.lines()


def test_statsd_app_exception_counts_as_gunicorn_log_exception(start_server, statsd):
    """Gunicorn logs an exception in the app with log.exception("Error handling request
    ..."), which its StatsD logger counts as gunicorn.log.exception (not .error)."""
    srv = start_server("-w", "1", "--statsd-host", statsd.address, APP)
    wait_workers(srv, 1)
    statsd.clear()
    assert request(srv.port, "GET", "/error")[0] == 500
    statsd.wait_line("gunicorn.request.status.500:1|c|@1.0")
    time.sleep(0.2)
    lines = statsd.lines()
    log_lines = [l for l in lines if l.startswith("gunicorn.log.")]
    assert log_lines == ["gunicorn.log.exception:1|c|@1.0"], log_lines


def test_statsd_log_levels_counted_even_when_not_logged(start_server, statsd):
    """Gunicorn counts warnings even under --log-level error (the counter is not a log
    line)."""
    srv = start_server("-w", "1", "--log-level", "critical", "--statsd-host", statsd.address, APP, wait=False)
    wait_workers(srv, 1)
    assert wait_until(lambda: _serves(srv), 10), srv.log()
    statsd.clear()
    srv.raw(b"NOT HTTP AT ALL\r\n\r\n", timeout=3)
    statsd.wait_line("gunicorn.log.warning:1|c|@1.0")
    assert "Invalid request" not in srv.log()


def _serves(srv):
    try:
        return request(srv.port, timeout=2)[0] == 200
    except OSError:
        return False


CUSTOM_CONF = """
def when_ready(server):
    server.log.info("custom gauge", extra={"metric": "my.gauge", "value": 5, "mtype": "gauge"})
    server.log.info("custom counter", extra={"metric": "my.counter", "value": 5, "mtype": "counter"})
    server.log.info("custom histogram", extra={"metric": "my.histogram", "value": 5, "mtype": "histogram"})
    server.log.debug("", extra={"metric": "my.debug.gauge", "value": 9, "mtype": "gauge"})
    server.log.info("no metric", extra={"metric": "my.untyped", "value": 1})
    server.log.warning("a warning with a metric", extra={"metric": "my.warned", "value": 2, "mtype": "counter"})
    try:
        raise ValueError("caught in when_ready")
    except ValueError:
        server.log.exception("when_ready caught an exception")


def post_fork(server, worker):
    worker.log.info("worker metric", extra={"metric": "my.worker.gauge", "value": 7, "mtype": "gauge"})
    try:
        raise KeyError("caught in post_fork")
    except KeyError:
        worker.log.exception("post_fork caught an exception")
"""


def test_statsd_custom_metrics_from_hooks(start_server, statsd, tmp_path):
    conf = write(tmp_path / "metrics_conf.py", CUSTOM_CONF)
    srv = start_server("-w", "1", "-c", str(conf), "--statsd-host", statsd.address, "--statsd-prefix", "app", APP)
    wait_workers(srv, 1)
    lines = statsd.wait_line("app.my.worker.gauge:7|g")
    lines = statsd.wait_for(lambda ls: ls.count("app.gunicorn.log.exception:1|c|@1.0") >= 2, 3)
    for want in [
        "app.my.gauge:5|g",
        "app.my.counter:5|c|@1.0",
        "app.my.histogram:5|h",
        "app.my.debug.gauge:9|g",
        "app.my.warned:2|c|@1.0",
        "app.gunicorn.log.warning:1|c|@1.0",
        "app.my.worker.gauge:7|g",
    ]:
        assert lines.count(want) == 1, (want, lines)
    assert not any("my.untyped" in l for l in lines), lines
    # log.exception counts gunicorn.log.exception (once per call), not gunicorn.log.error.
    assert lines.count("app.gunicorn.log.exception:1|c|@1.0") == 2, lines
    assert "app.gunicorn.log.error:1|c|@1.0" not in lines, lines
    log = srv.log()
    assert "custom gauge" in log and "worker metric" in log and "when_ready caught an exception" in log
    assert "ValueError: caught in when_ready" in log


TIMER_CONF = """
def when_ready(server):
    server.log.info("t", extra={"metric": "my.timer", "value": 5, "mtype": "timer"})
    server.log.info("t", extra={"metric": "my.timer.float", "value": 12.5, "mtype": "timer"})
"""


def test_statsd_custom_timer(start_server, statsd, tmp_path):
    """Gunicorn: timer -> `name:<value>|ms`, the value as Python formats it."""
    conf = write(tmp_path / "timer_conf.py", TIMER_CONF)
    start_server("-w", "1", "-c", str(conf), "--statsd-host", statsd.address, APP)
    lines = statsd.wait_for(lambda ls: any(l.startswith("my.timer.float:") for l in ls), 5)
    assert "my.timer.float:12.5|ms" in lines, lines
    assert "my.timer:5|ms" in lines, [l for l in lines if l.startswith("my.")]


VALUES_CONF = """
def when_ready(server):
    server.log.info("g", extra={"metric": "my.float.gauge", "value": 2.5, "mtype": "gauge"})
    server.log.info("g", extra={"metric": "my.zero.gauge", "value": 0, "mtype": "gauge"})
    server.log.info("h", extra={"metric": "my.float.histogram", "value": 0.75, "mtype": "histogram"})
    server.log.info("c", extra={"metric": "my.negative.counter", "value": -3, "mtype": "counter"})
    server.log.info("done", extra={"metric": "my.done", "value": 1, "mtype": "gauge"})
"""


def test_statsd_custom_metric_values_as_gunicorn_formats_them(start_server, statsd, tmp_path):
    """Gunicorn sends the value with str.format: 2.5 stays 2.5, -3 stays -3, 0 is sent."""
    conf = write(tmp_path / "values_conf.py", VALUES_CONF)
    start_server("-w", "1", "-c", str(conf), "--statsd-host", statsd.address, APP)
    lines = statsd.wait_line("my.done:1|g")
    mine = [l for l in lines if l.startswith("my.")]
    assert mine == [
        "my.float.gauge:2.5|g",
        "my.zero.gauge:0|g",
        "my.float.histogram:0.75|h",
        "my.negative.counter:-3|c|@1.0",
        "my.done:1|g",
    ], mine


# --------------------------------------------------------------------------------------
# 12. StatsD addresses


def test_statsd_settings_from_the_config_file(start_server, statsd, tmp_path):
    conf = write(
        tmp_path / "statsd_conf.py",
        f"""
        statsd_host = {statsd.address!r}
        statsd_prefix = "fromconf"
        dogstatsd_tags = "src:conf"
        """,
    )
    srv = start_server("-w", "1", "-c", str(conf), APP)
    assert request(srv.port)[0] == 200
    statsd.wait_line("fromconf.gunicorn.requests:1|c|@1.0|#src:conf")


def test_statsd_prefix_change_applies_on_hup(start_server, statsd, tmp_path):
    """Gunicorn re-creates its StatsD logger from the re-read configuration on HUP."""
    conf = tmp_path / "hup_statsd_conf.py"
    conf.write_text(f"statsd_host = {statsd.address!r}\nstatsd_prefix = 'before'\n")
    srv = start_server("-w", "1", "-c", str(conf), APP)
    (old,) = wait_workers(srv, 1)
    assert request(srv.port)[0] == 200
    statsd.wait_line("before.gunicorn.requests:1|c|@1.0")
    conf.write_text(f"statsd_host = {statsd.address!r}\nstatsd_prefix = 'after'\n")
    srv.send_signal(signal.SIGHUP)
    assert new_worker(srv, old, 10), srv.log()
    assert request(srv.port)[0] == 200
    lines = statsd.wait_for(lambda ls: "after.gunicorn.requests:1|c|@1.0" in ls, 3)
    assert "after.gunicorn.requests:1|c|@1.0" in lines, lines[-6:]


def test_statsd_unresolvable_host_starts_without_metrics(start_server):
    """Gunicorn's StatsD client swallows a failed connect and sends nothing; a sidecar
    agent that is not up yet must not stop the server."""
    srv = start_server("-w", "1", "--statsd-host", "no-such-host.invalid:8125", APP)
    assert srv.log().count('statsd_host "no-such-host.invalid:8125" does not resolve') == 1, srv.log()
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("exists", [True, False], ids=["socket-exists", "socket-appears-later"])
def test_statsd_unix_socket(start_server, exists):
    d = short_tmpdir()
    path = os.path.join(d, "statsd.sock")
    listener = StatsdListener(socket.AF_UNIX, path) if exists else None
    try:
        srv = start_server("-w", "1", "--statsd-host", f"unix://{path}", "--statsd-prefix", "u", APP)
        wait_workers(srv, 1)
        assert request(srv.port)[0] == 200
        if listener is None:
            listener = StatsdListener(socket.AF_UNIX, path)
        else:
            listener.wait_line("u.gunicorn.workers:1|g")

        def got():
            request(srv.port)
            return "u.gunicorn.requests:1|c|@1.0" in listener.lines()

        assert wait_until(got, 5, 0.1), listener.lines()
        assert any(re.fullmatch(r"u\.gunicorn\.request\.duration:\d+\.\d+\|ms", l) for l in listener.lines())
        # One datagram per metric: the status counter may land a moment after the others.
        assert wait_until(lambda: "u.gunicorn.request.status.200:1|c|@1.0" in listener.lines(), 5), listener.lines()
    finally:
        if listener:
            listener.close()
        shutil.rmtree(d, ignore_errors=True)


def test_statsd_ipv6(start_server):
    try:
        listener = StatsdListener(socket.AF_INET6)
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with listener:
        srv = start_server("-w", "1", "--statsd-host", listener.address, APP)
        assert request(srv.port)[0] == 200
        listener.wait_line("gunicorn.requests:1|c|@1.0")
        listener.wait_line("gunicorn.request.status.200:1|c|@1.0")


def test_statsd_host_without_port_uses_8125(start_server):
    try:
        listener = StatsdListener(port=8125)
    except OSError as e:
        pytest.skip(f"127.0.0.1:8125 is busy here: {e}")
    with listener:
        srv = start_server("-w", "1", "--statsd-host", "127.0.0.1", APP)
        assert request(srv.port)[0] == 200
        listener.wait_line("gunicorn.requests:1|c|@1.0")
