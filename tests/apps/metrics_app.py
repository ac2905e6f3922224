"""A WSGI app for tests/test_metrics.py: any status code, a sleep, an echo, a body of a
chosen size, an exception; every response says which worker answered (X-Pid)."""

import os
import time


def _reply(start_response, status, body=b"ok"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-Pid", str(os.getpid()))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING") or ""
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        return _reply(start_response, f"{code} Chosen", b"status %d" % code)
    if path == "/sleep":
        time.sleep(float(query or 0.3))
        return _reply(start_response, "200 OK", b"slept")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _reply(start_response, "200 OK", body)
    if path == "/bytes":
        return _reply(start_response, "200 OK", b"x" * int(query or 0))
    if path == "/error":
        raise RuntimeError("metrics_app: boom")
    return _reply(start_response, "200 OK")
