"""Apps for tests/test_proxy_protocol.py and tests/test_h2load.py: each answers `/` with
the client address and scheme the server gave it, and `/echo` with the request body.

WSGI: `proxy_app:app`; ASGI: `proxy_app:asgi`."""

import json
import os

WSGI_KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SERVER_PROTOCOL", "PROXY_PROTOCOL", "PROXY_ADDR", "PROXY_PORT")


def app(environ, start_response):
    if environ["PATH_INFO"] == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    out = {k: environ.get(k) for k in WSGI_KEYS}
    out["pid"] = os.getpid()
    body = json.dumps(out, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def _read_body(receive):
    body = b""
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return body
        body += msg.get("body", b"")
        if not msg.get("more_body", False):
            return body


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        body = await _read_body(receive)
        ctype = b"application/octet-stream"
    else:
        client = scope.get("client")
        body = json.dumps(
            {
                "client": list(client) if client is not None else None,
                "scheme": scope["scheme"],
                "http_version": scope["http_version"],
                "pid": os.getpid(),
            },
            sort_keys=True,
        ).encode()
        ctype = b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
