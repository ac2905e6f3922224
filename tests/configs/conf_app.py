"""The application the real-world config files in this directory are served with.

WSGI `app` and ASGI `asgi_app`, with routes that report what a config file's settings
and hooks changed:

  /            "ok <pid>"
  /environ     a JSON subset of the WSGI environ (scheme, remote address...)
  /env?NAME    os.environ.get(NAME), plus cwd and sys.path
  /state       STATE, the module-level dict that hooks (post_fork...) fill in, plus a
               fresh draw from `random`
  /print?TEXT  print()s TEXT to stdout and to stderr (capture_output checks)
  /metric      writes a per-process file into $PROMETHEUS_MULTIPROC_DIR, the way
               prometheus_client's multiprocess mode does
  /sleep?S     sleeps S seconds
"""

import json
import os
import random
import sys
import time

# Filled in by the config files' hooks (post_fork "reconnects" here).
STATE = {"imported_in": os.getpid(), "connected_in": None, "token": None, "connections": 0}


def connect():
    """What `db.connect()` / `engine.dispose()` stand for in a post_fork hook."""
    STATE["connected_in"] = os.getpid()
    STATE["connections"] += 1
    STATE["token"] = random.getrandbits(64)


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _metric_file():
    d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    path = os.path.join(d, f"counter_{os.getpid()}.db")
    with open(path, "a") as f:
        f.write("1\n")
    live = os.path.join(d, f"gauge_livesum_{os.getpid()}.db")
    open(live, "a").close()
    return path


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/environ":
        keys = ("wsgi.url_scheme", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST",
                "SCRIPT_NAME", "PATH_INFO", "wsgi.multithread", "wsgi.multiprocess")
        out = {k: environ.get(k) for k in keys}
        out["pid"] = os.getpid()
        return _json(start_response, out)
    if path == "/env":
        return _json(start_response, {"value": os.environ.get(query), "cwd": os.getcwd(), "sys_path": sys.path,
                                      "pid": os.getpid()})
    if path == "/state":
        return _json(start_response, {**STATE, "pid": os.getpid(), "ppid": os.getppid(), "draw": random.random()})
    if path == "/print":
        print(f"stdout: {query}", flush=True)
        print(f"stderr: {query}", file=sys.stderr, flush=True)
        return _json(start_response, {"printed": query})
    if path == "/metric":
        return _json(start_response, {"file": _metric_file(), "pid": os.getpid()})
    if path == "/sleep":
        time.sleep(float(query or 1))
        return _json(start_response, {"slept": True, "pid": os.getpid()})
    body = f"ok {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    out = {"scheme": scope["scheme"], "client": list(scope["client"] or []), "path": scope["path"],
           "pid": os.getpid(), "root_path": scope.get("root_path", "")}
    body = json.dumps(out, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
