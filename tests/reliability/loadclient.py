"""A counting HTTP/1.1 load client for the reliability suite, on raw sockets.

Every request is accounted for exactly once:

- ``ok``      status 200 and the exact body the app derives from the request (``payload``);
- ``errors``  a deliberate error status (by default: 503 with ``Retry-After``, the
              server's load shedding), counted but not a failure;
- ``failed``  everything else, with the reason: a wrong status, a wrong or truncated
              body, a connection reset or closed before the response, a timeout, a
              refused connection.

``sent == ok + errors + failed`` always holds (``check_accounting``).

Keep-alive connections are reused. Before a connection is reused it is polled: if the
server closed it while it was idle (keep-alive expiry, a graceful stop, a dead worker),
it is replaced without sending anything, since nothing was lost. If a request on a
*reused* connection gets no response byte at all, the server may have closed the idle
connection just as the request left (RFC 9112 section 9.3.1): with ``retry_stale`` the
request is retried once on a fresh connection, as every HTTP client does for idempotent
requests, and ``stale_retries`` counts it; only the retry's outcome is counted. Without
``retry_stale`` (the kill -9 test) such a request is a failure.

Each response carries the worker pid (``X-Pid``), so every failure records which worker
the connection was last served by: a test can tell a request lost on a killed worker
from one lost anywhere else.
"""

import collections
import errno
import os
import select
import socket
import struct
import threading
import time
import zlib

# Must match tests/reliability/apps/rel_app.py.
_PATTERN = "0123456789abcdefghijklmnopqrstuvwxyz" * 8


def payload(rid, n):
    out = (rid + ":") + _PATTERN * (n // len(_PATTERN) + 1)
    return out[: len(rid) + 1 + n].encode()


# --------------------------------------------------------------------------------------
# one HTTP/1.1 exchange on a raw socket


class NoResponse(Exception):
    """The connection ended (EOF or reset) before any byte of the response."""


class Truncated(Exception):
    """The connection ended in the middle of the response."""


class Protocol(Exception):
    """Bytes that are not a valid HTTP/1.1 response."""


class Response:
    __slots__ = ("status", "headers", "body", "will_close", "raw_head")

    def __init__(self, status, headers, body, will_close, raw_head):
        self.status, self.headers, self.body, self.will_close, self.raw_head = status, headers, body, will_close, raw_head

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)


class Conn:
    """A client connection with a read buffer; remembers the worker that served it."""

    def __init__(self, host, port, timeout=10.0):
        self.connected_at = time.monotonic()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.got_any = False
        self.uses = 0
        self.pid = None  # X-Pid of the last response on this connection

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def rst(self):
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def idle_state(self):
        """Before reuse: 'open', 'closed' (EOF or reset while idle) or 'data' (bytes
        nobody asked for)."""
        if self.buf:
            return "data"
        p = select.poll()  # not select(): descriptors may be above FD_SETSIZE
        p.register(self.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        if not p.poll(0):
            return "open"
        try:
            d = self.sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, socket.timeout):
            return "open"
        except OSError:
            return "closed"
        return "data" if d else "closed"

    def _fill(self):
        try:
            d = self.sock.recv(262144)
        except socket.timeout:
            raise
        except OSError as e:
            if self.got_any:
                raise Truncated(f"{type(e).__name__} after {len(self.buf)} buffered bytes") from e
            raise NoResponse(f"{type(e).__name__}: {e}") from e
        if not d:
            if self.got_any:
                raise Truncated("EOF")
            raise NoResponse("EOF")
        self.got_any = True
        self.buf += d

    def _line(self, limit=65536):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > limit:
                raise Protocol(f"line longer than {limit}: {bytes(self.buf[:100])!r}")
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data):
        self.got_any = False
        self.sock.sendall(data)

    def read_response(self, head_only=False):
        """Reads one response; raises NoResponse, Truncated, Protocol or socket.timeout."""
        self.got_any = bool(self.buf)
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Protocol(f"bad status line {status_line[:200]!r}")
        version, status = parts[0], int(parts[1])
        headers = {}
        head = [status_line]
        while True:
            line = self._line()
            if not line:
                break
            head.append(line)
            name, sep, value = line.partition(b":")
            if not sep:
                raise Protocol(f"bad header line {line[:200]!r}")
            k = name.strip().lower().decode("latin-1")
            v = value.strip().decode("latin-1")
            headers[k] = headers[k] + ", " + v if k in headers else v
        conn_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        will_close = "close" in conn_tokens or (version == b"HTTP/1.0" and "keep-alive" not in conn_tokens)
        if 100 <= status < 200:
            return self.read_response(head_only)  # 100 Continue: the real response follows
        if head_only or status in (204, 304):
            return Response(status, headers, b"", will_close, b"\r\n".join(head))
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                size_line = self._line()
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise Protocol(f"bad chunk size {size_line[:100]!r}") from None
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                body += self._exact(size)
                if self._exact(2) != b"\r\n":
                    raise Protocol("chunk not followed by CRLF")
            body = bytes(body)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                raise Protocol(f"bad Content-Length {headers['content-length']!r}") from None
            body = self._exact(n)
        else:
            # Delimited by the end of the connection.
            while True:
                try:
                    self._fill()
                except Truncated:
                    break
            body = bytes(self.buf)
            self.buf.clear()
            will_close = True
        return Response(status, headers, body, will_close, b"\r\n".join(head))


def request_bytes(method, target, body=b"", close=False, extra=()):
    lines = [f"{method} {target} HTTP/1.1", "Host: reliability.test"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/octet-stream")
    if close:
        lines.append("Connection: close")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def fetch(port, target="/", method="GET", body=b"", timeout=10.0, host="127.0.0.1"):
    """One request on a fresh connection with Connection: close -> Response."""
    c = Conn(host, port, timeout)
    try:
        c.send(request_bytes(method, target, body, close=True))
        return c.read_response(head_only=method == "HEAD")
    finally:
        c.close()


def worker_pid(port, timeout=10.0):
    r = fetch(port, "/pid", timeout=timeout)
    assert r.status == 200, (r.status, r.body)
    return int(r.body)


# --------------------------------------------------------------------------------------
# request kinds for the load: each gives (bytes to send, expected body)


def _kind_get(rid, n):
    return request_bytes("GET", f"/r?id={rid}&n={n}"), payload(rid, n)


def _kind_stream(rid, n):
    return request_bytes("GET", f"/r?id={rid}&n={n}&stream=1"), payload(rid, n)


def _kind_post(rid, n):
    data = payload("body-" + rid, 2000)
    return request_bytes("POST", f"/r?id={rid}&n={n}", data), payload(rid, n) + b"|%d|%d" % (len(data), zlib.crc32(data))


def _kind_close_raises(rid, n):
    return request_bytes("GET", "/close-raises"), payload("close", 1000)


KINDS = {"get": _kind_get, "stream": _kind_stream, "post": _kind_post, "close-raises": _kind_close_raises}


def add_kind(name, make):
    """make(rid, size) -> (request bytes, expected body or a predicate on the body)."""
    KINDS[name] = make


def default_deliberate(resp):
    """Load shedding (``--max-queued``): 503 with Retry-After is a deliberate answer."""
    return resp.status == 503 and resp.header("retry-after") is not None


# --------------------------------------------------------------------------------------
# the load


class Failure:
    __slots__ = ("t", "reason", "pid", "uses", "connected_at", "detail", "thread")

    def __init__(self, t, reason, pid, uses, connected_at, detail, thread):
        self.t, self.reason, self.pid, self.uses = t, reason, pid, uses
        self.connected_at, self.detail, self.thread = connected_at, detail, thread

    def __repr__(self):
        return (
            f"<{self.reason} at +{self.t:.3f}s thread={self.thread} last-pid={self.pid} uses={self.uses} "
            f"detail={self.detail}>"
        )


class Load:
    """``threads`` client threads send requests until ``stop()``, ``duration`` seconds or
    ``total`` requests in all. ``keepalive_threads`` of them (all by default) reuse one
    connection; the others open a fresh one per request with ``Connection: close``.
    Request kinds rotate through ``kinds`` (GET with a list body, GET streamed by a
    generator, POST with a 2000-byte body that the app checks)."""

    def __init__(
        self,
        port,
        threads=4,
        keepalive_threads=None,
        duration=30.0,
        total=None,
        kinds=("get", "stream", "post"),
        size=200,
        timeout=10.0,
        pause=0.0,
        retry_stale=True,
        deliberate=default_deliberate,
        host="127.0.0.1",
        name="load",
    ):
        self.port, self.host, self.name = port, host, name
        self.nthreads = threads
        self.keepalive_threads = threads if keepalive_threads is None else keepalive_threads
        self.duration, self.total, self.kinds, self.size = duration, total, list(kinds), size
        self.timeout, self.pause, self.retry_stale, self.deliberate = timeout, pause, retry_stale, deliberate
        self.lock = threading.Lock()
        self.sent = self.ok = self.errors = 0
        self.failures = []
        self.error_statuses = collections.Counter()
        self.stale_retries = 0
        # Why each retried request got no response: "EOF" (the server had closed the
        # idle connection before the request reached it) or "ConnectionResetError: ..."
        # (an RST without a FIN first: the server closed the connection with the
        # request unread in its receive buffer).
        self.stale_kinds = collections.Counter()
        self.idle_closed = 0  # connections found closed before reuse (nothing sent on them)
        self.connects = 0
        self.anomalies = []  # bytes received on an idle connection, and the like
        self.pids = collections.Counter()
        self.latencies = []
        self._started = 0
        self._stop = threading.Event()
        self._threads = []
        self.t0 = None
        self.elapsed = None

    # -- accounting

    @property
    def failed(self):
        return len(self.failures)

    def _take(self):
        with self.lock:
            if self.total is not None and self._started >= self.total:
                return False
            self._started += 1
            return True

    def _fail(self, reason, conn, detail, thread):
        f = Failure(
            time.monotonic() - self.t0,
            reason,
            conn.pid if conn else None,
            conn.uses if conn else 0,
            (conn.connected_at - self.t0) if conn else None,
            detail,
            thread,
        )
        with self.lock:
            self.failures.append(f)

    def _connect(self):
        with self.lock:
            self.connects += 1
        return Conn(self.host, self.port, self.timeout)

    # -- one request

    def _exchange(self, conn, data, expected):
        """-> ('ok'|'error'|'fail', reason, detail)."""
        t = time.monotonic()
        conn.send(data)
        resp = conn.read_response()
        conn.uses += 1
        pid = resp.header("x-pid")
        if pid and pid.isdigit():
            conn.pid = int(pid)
        good = expected(resp.body) if callable(expected) else resp.body == expected
        if resp.status == 200 and good:
            with self.lock:
                self.ok += 1
                self.latencies.append(time.monotonic() - t)
                if conn.pid:
                    self.pids[conn.pid] += 1
            return "ok", resp
        if resp.status != 200 and self.deliberate(resp):
            with self.lock:
                self.errors += 1
                self.error_statuses[resp.status] += 1
            return "error", resp
        if resp.status != 200:
            return "fail", (f"status {resp.status}", resp.body[:300])
        want = expected.__doc__ if callable(expected) else f"{expected[:80]!r}..."
        return "fail", ("wrong body", f"got {len(resp.body)} bytes {resp.body[:80]!r}..., expected {want}")

    def _run(self, idx, keepalive):
        conn = None
        seq = 0
        deadline = time.monotonic() + self.duration
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            seq += 1
            rid = f"{self.name}.{idx}.{seq}"
            data, expected = KINDS[self.kinds[seq % len(self.kinds)]](rid, self.size)
            if not keepalive:
                data = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            # A reused connection that the server closed while it was idle is replaced
            # before anything is sent on it.
            if conn is not None:
                state = conn.idle_state()
                if state != "open":
                    if state == "data":
                        try:
                            peek = bytes(conn.buf) or conn.sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                        except OSError as e:
                            peek = repr(e).encode()
                        with self.lock:
                            self.anomalies.append(f"unsolicited bytes on an idle connection (last pid {conn.pid}): {peek[:200]!r}")
                    else:
                        with self.lock:
                            self.idle_closed += 1
                    conn.close()
                    conn = None
            with self.lock:
                self.sent += 1
            if conn is None:
                try:
                    conn = self._connect()
                except OSError as e:
                    self._fail(f"connect: {type(e).__name__}", None, str(e), idx)
                    time.sleep(0.01)
                    continue
            outcome = None
            try:
                outcome, info = self._exchange(conn, data, expected)
            except NoResponse as e:
                if conn.uses > 0 and self.retry_stale:
                    with self.lock:
                        self.stale_retries += 1
                        self.stale_kinds[str(e)] += 1
                    conn.close()
                    conn = None
                    try:
                        conn = self._connect()
                        outcome, info = self._exchange(conn, data, expected)
                    except NoResponse as e2:
                        self._fail("closed before response (retry)", conn, f"{e2} (first try: {e})", idx)
                    except Truncated as e2:
                        self._fail("truncated response (retry)", conn, str(e2), idx)
                    except socket.timeout:
                        self._fail("timeout (retry)", conn, f"no response in {self.timeout}s", idx)
                    except Protocol as e2:
                        self._fail("protocol error (retry)", conn, str(e2), idx)
                    except OSError as e2:
                        self._fail(f"retry: {type(e2).__name__}", conn, str(e2), idx)
                else:
                    self._fail("closed before response", conn, str(e), idx)
            except Truncated as e:
                self._fail("truncated response", conn, str(e), idx)
            except socket.timeout:
                self._fail("timeout", conn, f"no complete response in {self.timeout}s", idx)
            except Protocol as e:
                self._fail("protocol error", conn, str(e), idx)
            except OSError as e:
                # sendall() failing: EPIPE / ECONNRESET on a connection that looked open.
                name = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
                if conn.uses > 0 and self.retry_stale and e.errno in (errno.EPIPE, errno.ECONNRESET):
                    with self.lock:
                        self.stale_retries += 1
                        self.stale_kinds[f"send: {name}"] += 1
                    conn.close()
                    conn = None
                    try:
                        conn = self._connect()
                        outcome, info = self._exchange(conn, data, expected)
                    except Exception as e2:  # noqa: BLE001 - counted
                        self._fail(f"send failed, retry failed: {type(e2).__name__}", conn, f"{e2} (first: {name})", idx)
                else:
                    self._fail(f"send failed: {name}", conn, str(e), idx)
            if outcome == "fail":
                self._fail(info[0], conn, info[1], idx)
            keep = outcome in ("ok", "error") and keepalive and conn is not None and not info.will_close
            if not keep and conn is not None:
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    # -- control

    def start(self):
        self.t0 = time.monotonic()
        for i in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(i, i < self.keepalive_threads), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout * 2 + 5)
        if self.elapsed is None and self.t0 is not None:
            self.elapsed = time.monotonic() - self.t0
        return self

    def wait(self):
        for t in self._threads:
            t.join(self.duration + self.timeout * 2 + 5)
        if self.elapsed is None:
            self.elapsed = time.monotonic() - self.t0
        return self

    def now(self):
        return time.monotonic() - self.t0

    # -- reporting

    def check_accounting(self):
        assert not any(t.is_alive() for t in self._threads), "load threads still running"
        assert self.sent == self.ok + self.errors + self.failed, (
            f"accounting: sent={self.sent} != ok={self.ok} + errors={self.errors} + failed={self.failed}"
        )

    def reasons(self):
        return dict(collections.Counter(f.reason for f in self.failures))

    def p(self, q):
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    def summary(self):
        rate = self.sent / self.elapsed if self.elapsed else 0
        return (
            f"sent={self.sent} ok={self.ok} errors={self.errors} failed={self.failed} "
            f"stale-retries={self.stale_retries}{dict(self.stale_kinds) if self.stale_kinds else ''} idle-closed={self.idle_closed} connects={self.connects} "
            f"workers-seen={len(self.pids)} rate={rate:.0f}/s p50={self.p(0.5) * 1000:.1f}ms p99={self.p(0.99) * 1000:.1f}ms"
            + (f" error-statuses={dict(self.error_statuses)}" if self.errors else "")
            + (f" reasons={self.reasons()}" if self.failures else "")
            + (f" anomalies={len(self.anomalies)}" if self.anomalies else "")
        )

    def details(self, n=15):
        out = [self.summary()]
        out += [f"  failure: {f!r}" for f in self.failures[:n]]
        if len(self.failures) > n:
            out.append(f"  ... {len(self.failures) - n} more")
        out += [f"  anomaly: {a}" for a in self.anomalies[:5]]
        return "\n".join(out)


# --------------------------------------------------------------------------------------
# process and latency helpers


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def percentile(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(q * len(v)))]


def measure_latency(port, duration=None, count=None, interval=0.01, target="/pid", timeout=10.0, stop=None):
    """Sequential requests, each on a fresh connection (connect + request + whole
    response, so time spent waiting to be accepted counts). Returns (latencies in
    seconds, failures as strings)."""
    lat, failures = [], []
    deadline = time.monotonic() + duration if duration else None
    i = 0
    while True:
        if count is not None and i >= count:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        if stop is not None and stop.is_set():
            break
        i += 1
        t = time.monotonic()
        try:
            r = fetch(port, target, timeout=timeout)
            if r.status != 200:
                failures.append(f"status {r.status}: {r.body[:100]!r}")
            else:
                lat.append(time.monotonic() - t)
        except Exception as e:  # noqa: BLE001 - reported
            failures.append(f"{type(e).__name__}: {e} after {time.monotonic() - t:.3f}s")
        if interval:
            time.sleep(interval)
    return lat, failures


def lat_summary(lat):
    if not lat:
        return "n=0"
    return (
        f"n={len(lat)} p50={percentile(lat, 0.5) * 1000:.2f}ms p99={percentile(lat, 0.99) * 1000:.2f}ms "
        f"max={max(lat) * 1000:.2f}ms"
    )


def unjustified_failures(load, deaths, slack=0.05):
    """Failures not explained by a worker death. `deaths` is [(load time, pid)]. A
    failure is explained if the worker that last served its connection died before it,
    or, for a connection that had not been served yet, some worker died between the
    connect and the failure (the connection may have been accepted by it)."""
    died = {}
    for t, pid in deaths:
        died.setdefault(pid, t)

    def explained(f):
        if f.pid is not None:
            return f.pid in died and died[f.pid] <= f.t + slack
        lo = (f.connected_at if f.connected_at is not None else f.t) - slack
        return any(lo <= t <= f.t + slack for t, _ in deaths)

    return [f for f in load.failures if not explained(f)]
