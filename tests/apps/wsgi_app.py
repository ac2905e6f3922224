"""A WSGI app exercising the PEP 3333 surface, one route per behaviour (tests/test_wsgi.py).

Routes read their parameters from QUERY_STRING (parsed with urllib). Close() calls are
observed through a line "CLOSED <token>" written to stderr, which ends up in the server log.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import threading
import time
import wsgiref.validate
from urllib.parse import parse_qs


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def _json(start_response, obj, status="200 OK", extra=()):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Closeable:
    """An iterable (not a generator, not a list) with close()."""

    def __init__(self, token, chunks, fail_after=None, delay=0.0, limit_s=10.0):
        self.token = token
        self.chunks = chunks
        self.fail_after = fail_after
        self.delay = delay
        self.limit_s = limit_s

    def __iter__(self):
        start = time.monotonic()
        i = 0
        while True:
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError(f"iteration failure {self.token}")
            if self.chunks is not None and i >= len(self.chunks):
                return
            if time.monotonic() - start > self.limit_s:
                _log(f"GAVE UP {self.token}")
                return
            yield self.chunks[i] if self.chunks is not None else b"x" * 65536
            i += 1
            if self.delay:
                time.sleep(self.delay)

    def close(self):
        _log(f"CLOSED {self.token}")


class ClosingList(list):
    def __init__(self, items, token):
        super().__init__(items)
        self.token = token

    def close(self):
        _log(f"CLOSED {self.token}")


class NoisyBytesIO(io.BytesIO):
    """A file-like object without a usable fileno(); reports close()."""

    token = None

    def close(self):
        if self.token:
            _log(f"CLOSED {self.token}")
        super().close()


def environ_report(environ):
    out = {"types": {}, "values": {}}
    for k, v in environ.items():
        out["types"][k] = type(v).__name__
        if type(v) in (str, bool, int):
            out["values"][k] = v
    out["version_repr"] = repr(environ.get("wsgi.version"))
    out["environ_is_dict"] = type(environ) is dict
    inp = environ["wsgi.input"]
    out["input_methods"] = {m: callable(getattr(inp, m, None)) for m in ("read", "readline", "readlines", "__iter__")}
    err = environ["wsgi.errors"]
    out["errors_methods"] = {m: callable(getattr(err, m, None)) for m in ("write", "writelines", "flush")}
    out["file_wrapper_callable"] = callable(environ.get("wsgi.file_wrapper"))
    return out


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _q(environ)
    inp = environ["wsgi.input"]

    # -- environ ---------------------------------------------------------------------
    if path == "/mutate-environ":
        environ["SERVER_NAME"] = "mutated"
        environ["app.extra"] = "kept by the app"
        del environ["QUERY_STRING"]
        return _json(start_response, environ_report(environ))
    if path == "/environ" or path.startswith("/environ/") or path.startswith("/caf") or path in ("", "*"):
        return _json(start_response, environ_report(environ))

    # -- wsgi.input --------------------------------------------------------------------
    if path == "/input/slow-size":
        # A size whose __index__ waits (the GIL released) while the read has begun.
        class SlowSize:
            def __index__(self):
                time.sleep(float(q.get("wait", "0.5")))
                return 5

        body = inp.read(SlowSize())
        return _json(start_response, {"len": len(body), "type": type(inp).__name__})
    if path == "/input/read":
        body = inp.read()
        again = inp.read()
        return _json(start_response, {"len": len(body), "sha": hashlib.sha256(body).hexdigest(), "again": again.decode()})
    if path == "/input/readn":
        n = int(q.get("n", "7"))
        sizes, parts = [], []
        while True:
            chunk = inp.read(n)
            if not chunk:
                break
            sizes.append(len(chunk))
            parts.append(chunk)
        body = b"".join(parts)
        return _json(start_response, {"sizes": sizes, "body": body.decode("latin-1")})
    if path == "/input/readline":
        n = int(q["n"]) if "n" in q else None
        lines = []
        while True:
            line = inp.readline() if n is None else inp.readline(n)
            if not line:
                break
            lines.append(line.decode("latin-1"))
        return _json(start_response, lines)
    if path == "/input/readlines":
        return _json(start_response, [l.decode("latin-1") for l in inp.readlines()])
    if path == "/input/iter":
        return _json(start_response, [l.decode("latin-1") for l in inp])
    if path == "/input/past-end":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = inp.read(n)
        tail = [inp.read(10), inp.read(), inp.readline(), inp.readlines(), list(inp)]
        return _json(start_response, {"body": body.decode("latin-1"), "tail": repr(tail)})
    if path == "/input/sha":
        h, total = hashlib.sha256(), 0
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
        return _json(start_response, {"len": total, "sha": h.hexdigest()})
    if path == "/echo":
        cl = environ.get("CONTENT_LENGTH")
        body = inp.read(int(cl)) if cl else inp.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo-stream":
        # Echo as it reads: a streamed (chunked) response.
        def gen():
            while True:
                chunk = inp.read(65536)
                if not chunk:
                    return
                yield chunk

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return gen()
    if path == "/ignore-body":
        return _json(start_response, {"ignored": True, "path": path})

    # -- start_response ----------------------------------------------------------------
    if path == "/sr/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as e:  # noqa: BLE001
            return [f"raised {type(e).__name__}".encode()]
        return [b"did not raise"]
    if path == "/sr/exc-before":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
        try:
            raise ValueError("handled before headers")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("X-Second", "yes")], sys.exc_info())
        return [b"error body from the app"]
    if path == "/sr/exc-after":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first chunk\n"
            time.sleep(0.1)
            try:
                raise ValueError("too late " + q.get("token", ""))
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"must not be sent\n"

        return gen()

    # -- write() -----------------------------------------------------------------------
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        write(b"second ")
        return [b"third ", b"fourth"]
    if path == "/write-gen":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return (c for c in [b"gen1 ", b"gen2"])

    # -- iterables ---------------------------------------------------------------------
    if path == "/gen":
        n = int(q.get("n", "5"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(n))
    if path == "/closeable":
        token = q["token"]
        mode = q.get("mode", "normal")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if mode == "normal":
            return Closeable(token, [b"one ", b"two ", b"three"])
        if mode == "raise":
            return Closeable(token, [b"one ", b"two ", b"three"], fail_after=1)
        if mode == "raise-first":
            return Closeable(token, [b"one "], fail_after=0)
        if mode == "forever":
            return Closeable(token, None, delay=0.005)
    if path == "/closing-list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingList([b"list ", b"body"], q["token"])

    # -- errors the server must turn into a 500 -------------------------------------------
    if path == "/yield-str":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (s for s in ["text, not bytes"])
    if path == "/list-str":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text, not bytes"]
    if path == "/bad-status":
        start_response(q["s"], [("Content-Type", "text/plain")])
        return [b"never sent"]
    if path == "/bad-header-value":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", "a\r\nX-Injected: yes")])
        return [b"never sent"]
    if path == "/bad-header-name":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X Bad", "value")])
        return [b"never sent"]
    if path == "/raise":
        raise RuntimeError("boom from the app " + q.get("token", ""))
    if path == "/no-start-response":
        return [b"forgot start_response"]

    # -- framing -----------------------------------------------------------------------
    if path == "/hop-by-hop":
        body = b"hop body"
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=999"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Server", "EvilServer/1.0"),
                ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ("X-Kept", "yes"),
            ],
        )
        return [body]
    if path == "/short-cl":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        if q.get("mode") == "gen":
            return (c for c in [b"01", b"23456", b"789"])
        return [b"0123456789"]
    if path == "/body-shorter":
        # Declares 10 bytes and gives fewer: Gunicorn sends what there is and closes.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        mode = q.get("mode")
        if mode == "gen":
            return (c for c in [b"hel", b"lo"])
        if mode == "empty":
            return []
        return [b"hello"]
    if path == "/status":
        start_response(q["s"], [("Content-Type", "text/plain"), ("X-Padded", "  padded\t ")])
        return [b"status body"]
    if path == "/list-pairs":
        # Lists instead of tuples: Gunicorn accepts any (name, value) pair.
        start_response("200 OK", [["Content-Type", "text/plain"], ["Content-Length", "2"], ["X-Pair", "list"]])
        return [b"ok"]
    if path == "/no-content":
        start_response("204 No Content", [("Content-Length", "5"), ("X-Kept", "yes")])
        return [b"hello"]
    if path == "/declared-length":
        # The declared length is a new str on every response (parsed from the query), as
        # `str(len(body))` is.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", q.get("cl", ""))])
        return [b"x" * int(q.get("n", "0"))]
    if path == "/head":
        body = b"a body that HEAD must not send\n"
        if q.get("mode") == "gen":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (c for c in [body, body])
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    # -- wsgi.file_wrapper -----------------------------------------------------------------
    if path == "/file":
        name = q["name"]
        size = os.path.getsize(name)
        f = open(name, "rb")
        offset = int(q.get("offset", "0"))
        f.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl") == "1":
            headers.append(("Content-Length", str(size - offset)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, int(q.get("blksize", "8192")))
    if path == "/pipe-file":
        # A descriptor that cannot be read at an offset: the wrapper must fall back to read().
        r, w = os.pipe()
        chunks = [f"pipe-chunk-{i};".encode() for i in range(5)]

        def feed():
            with os.fdopen(w, "wb") as out:
                for c in chunks:
                    out.write(c)
                    out.flush()

        threading.Thread(target=feed, daemon=True).start()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](os.fdopen(r, "rb"))
    if path == "/gzip-file":
        # A GzipFile's fileno() is the compressed file's: the body must be what read() gives.
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](gzip.open(q["name"], "rb"))
    if path == "/bytesio":
        data = bytes(range(256)) * int(q.get("n", "100"))
        f = NoisyBytesIO(data)
        f.token = q.get("token")
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl") == "1":
            headers.append(("Content-Length", str(len(data))))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 1000)

    # -- wsgi.errors -------------------------------------------------------------------
    if path == "/errors":
        token = q["token"]
        environ["wsgi.errors"].write(f"errors-write {token}\n")
        environ["wsgi.errors"].writelines([f"errors-line1 {token}\n", f"errors-line2 {token}\n"])
        environ["wsgi.errors"].flush()
        e = environ["wsgi.errors"]
        # A writable text stream's surface, as on Gunicorn's io-based wsgi.errors.
        surface = [e.isatty(), e.writable(), e.readable(), e.seekable(), e.closed, isinstance(e.fileno(), int)]
        return _json(start_response, {"ok": True, "surface": surface})

    body = b"Hello from wsgi_app\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


validated = wsgiref.validate.validator(app)
