"""WSGI and raw ASGI 3 apps for the benchmark scenarios (bench/run.py); `hello` is
examples.hello:app, `asgi-hello` its ASGI twin here (no framework in either).

Every app answers any path; a GET on `/` is what the harness uses as its readiness probe
(in `static50k` it polls `/static/50k.bin`, a file the server serves itself, without the app).
Bodies are built once at import, so the scenarios measure the server, not the app.

    python bench/apps.py bjoern MODULE:APP HOST PORT   # the launcher bjoern needs (no CLI)
"""

import time

BODY_HELLO = b"Hello, World!\n"  # the 14 bytes of examples/hello.py
BODY_10K = b"x" * 10240
BODY_1M = b"x" * (1024 * 1024)


def _respond(start_response, body, content_type="application/octet-stream"):
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def ten_k(environ, start_response):
    """`10k`: a 10 KiB response body."""
    return _respond(start_response, BODY_10K)


def one_m(environ, start_response):
    """`1m`: a 1 MiB response body."""
    return _respond(start_response, BODY_1M)


def echo(environ, start_response):
    """`echo`: read the request body from wsgi.input (Content-Length bytes) and send it back."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    return _respond(start_response, body)


def sleep10ms(environ, start_response):
    """`sleep10ms`: an I/O-bound call, 10 ms of blocking sleep (the GIL is released)."""
    time.sleep(0.01)
    return _respond(start_response, b"slept 10 ms\n", "text/plain")


# ---------------------------------------------------------------------------- ASGI

async def _lifespan(receive, send):
    """Accept the lifespan protocol (servers ask for it by default), so no server logs it as unsupported."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _asgi_respond(send, body, content_type=b"application/octet-stream"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def asgi_hello(scope, receive, send):
    """`asgi-hello`: the 14-byte "Hello, World!\\n" of examples/hello.py, as a raw ASGI 3 app."""
    if scope["type"] == "http":
        await _asgi_respond(send, BODY_HELLO, b"text/plain")
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def asgi_ten_k(scope, receive, send):
    """`asgi-10k`: a 10 KiB response body."""
    if scope["type"] == "http":
        await _asgi_respond(send, BODY_10K)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def asgi_echo(scope, receive, send):
    """`asgi-echo`: read the whole request body (`http.request` messages until `more_body` is false)
    and send it back with a content-length."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    await _asgi_respond(send, b"".join(chunks))


def _load(spec):
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "app")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 5 or sys.argv[1] != "bjoern":
        sys.exit(__doc__)
    import bjoern

    bjoern.run(_load(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
