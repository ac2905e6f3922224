"""A WSGI app for the arbiter (master process) tests: pids, ids, a call stuck forever
in Python, and a route that reads a whole request body."""

import os
import time


def _reply(start_response, body, status="200 OK", ctype="text/plain"):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def arb_stuck_forever_in_python():
    # A pure-Python loop that never returns: only the master's timeout can end it.
    while True:
        time.sleep(0.1)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _reply(start_response, str(os.getpid()))
    if path == "/ids":
        return _reply(start_response, f"{os.getuid()} {os.getgid()} {os.getpid()}")
    if path == "/forever":
        arb_stuck_forever_in_python()
    if path == "/upload":
        body = environ["wsgi.input"].read()
        return _reply(start_response, str(len(body)))
    if path == "/osenv":
        return _reply(start_response, os.environ.get(environ.get("QUERY_STRING", ""), "-"))
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
        return _reply(start_response, "slept")
    return _reply(start_response, "Hello, World!\n")
