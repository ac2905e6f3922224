"""The WSGI app of the reliability suite (tests/reliability).

Load routes answer a body derived from the request (`payload`), so the load client can
check that every response is the right one, whole. Fault routes misbehave on purpose:
an endless loop, a leak, a `close()` that raises, a generator that raises mid-body,
`os._exit(1)`, a segfault. `/stats` reports what this worker process saw (uploads cut
short, streamed responses closed), so a test can check the app side of a client fault.
"""

import ctypes
import json
import os
import threading
import time
import zlib
from urllib.parse import parse_qs

# Shared with the load client (tests/reliability/loadclient.py keeps the same formula).
_PATTERN = "0123456789abcdefghijklmnopqrstuvwxyz" * 8


def payload(rid, n):
    out = (rid + ":") + _PATTERN * (n // len(_PATTERN) + 1)
    return out[: len(rid) + 1 + n].encode()


LEAK = []
STATS = {"uploads_started": 0, "uploads": [], "big_started": 0, "big_closed": 0, "big_sent": [], "requests": 0}
_LOCK = threading.Lock()


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _reply(start_response, body, status="200 OK", ctype="text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(
        status,
        [("Content-Type", ctype), ("Content-Length", str(len(body))), ("X-Pid", str(os.getpid()))] + list(extra),
    )
    return [body]


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rel_busy_loop_forever():
    # Pure Python, holds the GIL (bar the interpreter's switch interval): only the
    # master's --timeout can end it.
    n = 0
    while True:
        n += 1


class CloseRaises:
    """A complete response whose close() raises."""

    def __init__(self, body):
        self.body = body

    def __iter__(self):
        yield self.body

    def close(self):
        raise RuntimeError("rel_close_boom: close() raised on purpose")


def _gen_raises(chunks, size):
    for i in range(chunks):
        yield bytes([65 + i]) * size
    raise RuntimeError("rel_gen_boom: generator raised mid-body on purpose")


def _big(total, chunk):
    sent = 0
    with _LOCK:
        STATS["big_started"] += 1
    try:
        block = b"z" * chunk
        while sent < total:
            n = min(chunk, total - sent)
            yield block if n == chunk else block[:n]
            sent += n
    finally:
        with _LOCK:
            STATS["big_closed"] += 1
            STATS["big_sent"].append(sent)


def _stream(body, pieces):
    step = max(1, len(body) // pieces)
    for i in range(0, len(body), step):
        yield body[i : i + step]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    with _LOCK:
        STATS["requests"] += 1
    if path == "/r":
        q = _q(environ)
        rid, n = q.get("id", "x"), int(q.get("n", "64"))
        body = payload(rid, n)
        if environ["REQUEST_METHOD"] == "POST":
            data = environ["wsgi.input"].read()
            body += b"|%d|%d" % (len(data), zlib.crc32(data))
        if q.get("stream"):
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))])
            return _stream(body, 4)
        return _reply(start_response, body)
    if path == "/pid":
        return _reply(start_response, str(os.getpid()))
    if path == "/sleep":
        time.sleep(float(_q(environ).get("s", "1")))
        return _reply(start_response, "slept")
    if path == "/loop":
        rel_busy_loop_forever()
    if path == "/grow":
        mb = int(_q(environ).get("mb", "4"))
        LEAK.append(b"g" * (mb << 20))
        return _reply(start_response, f"{os.getpid()} {len(LEAK)} {rss_kib()}")
    if path == "/close-raises":
        body = payload("close", 1000)
        start_response("200 OK", [("Content-Length", str(len(body))), ("X-Pid", str(os.getpid()))])
        return CloseRaises(body)
    if path == "/gen-raises":
        q = _q(environ)
        chunks, size = int(q.get("chunks", "3")), int(q.get("size", "1000"))
        headers = [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))]
        if q.get("cl"):
            headers.append(("Content-Length", str(chunks * size * 2)))
        start_response("200 OK", headers)
        return _gen_raises(chunks, size)
    if path == "/exit":
        os._exit(1)
    if path == "/segv":
        ctypes.string_at(0)
    if path == "/upload":
        want = int(environ.get("CONTENT_LENGTH") or 0)
        with _LOCK:
            STATS["uploads_started"] += 1
        got, outcome = 0, None
        inp = environ["wsgi.input"]
        try:
            while True:
                b = inp.read(65536)
                if not b:
                    break
                got += len(b)
            outcome = "complete" if got == want else "short"
        except Exception as e:  # noqa: BLE001 - recorded for the test
            outcome = f"error {type(e).__name__}: {e}"
        with _LOCK:
            STATS["uploads"].append({"want": want, "got": got, "outcome": outcome})
        return _reply(start_response, f"{got}")
    if path == "/big":
        q = _q(environ)
        total, chunk = int(q.get("bytes", str(64 << 20))), int(q.get("chunk", "65536"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Pid", str(os.getpid()))])
        return _big(total, chunk)
    if path == "/stats":
        with _LOCK:
            s = dict(STATS, pid=os.getpid(), rss_kib=rss_kib(), threads=threading.active_count())
            return _reply(start_response, json.dumps(s), ctype="application/json")
    return _reply(start_response, "Hello, World!\n")
