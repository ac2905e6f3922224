"""A WSGI app with one route per behaviour the tests check."""

import json
import os
import sys
import threading
import time


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        out = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        out["wsgi.input"] = type(environ["wsgi.input"]).__name__
        out["pid"] = os.getpid()
        return _json(start_response, out)
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo-lines":
        lines = list(environ["wsgi.input"])
        return _json(start_response, [l.decode("latin-1") for l in lines])
    if path == "/stream":
        n = int(environ.get("QUERY_STRING") or 3)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(n))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/capped-writes":
        # More written than the declared length, an empty write, then more: Gunicorn
        # sends the first two bytes and drops the rest without an error.
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        for piece in (b"A", b"BC", b"", b"D"):
            write(piece)
        return []
    if path == "/error":
        raise RuntimeError("boom from the app")
    if path == "/set-environ":
        # What authentication middleware does; the access log's {var}e atoms show it.
        environ["REMOTE_USER"] = "ruser"
        environ["myapp.user"] = "alice"
        # A proxy fix and a request-id middleware.
        environ["REMOTE_ADDR"] = "203.0.113.9"
        environ["HTTP_X_REQUEST_ID"] = "generated-123"
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
        return _json(start_response, {"slept": True, "thread": threading.get_ident(), "pid": os.getpid()})
    if path == "/pid":
        return _json(start_response, {"pid": os.getpid()})
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nb")])
        return [b"never"]
    if path == "/lengths":
        # Content-Length values from the query, e.g. "5,3" or "+5" (body "hello").
        lengths = environ.get("QUERY_STRING", "").split(",")
        start_response("200 OK", [("Content-Length", n) for n in lengths])
        return [b"hello"]
    if path == "/bad-status":
        start_response("OK", [])
        return [b"never"]
    if path == "/file":
        f = open(__file__, "rb")
        size = os.path.getsize(__file__)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/errors":
        environ["wsgi.errors"].write("message to wsgi.errors\n")
        return _json(start_response, {"ok": True})
    body = b"Hello, World!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
