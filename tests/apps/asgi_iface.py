"""Callables of each shape, for interface selection: an ASGI 3 coroutine function, an
object whose __call__ is async, an ASGI 2 double callable, and a plain WSGI app."""

import json


async def _reply(send, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def coro_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await _reply(send, "asgi3-coroutine")


class _AsyncCallable:
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        await _reply(send, "asgi3-object")


obj_app = _AsyncCallable()


class asgi2_app:
    """ASGI 2: app(scope) returns an instance awaited with (receive, send)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            return
        await _reply(send, "asgi2-" + self.scope["type"])


def wsgi_app(environ, start_response):
    body = json.dumps({"interface": "wsgi", "version": list(environ["wsgi.version"])}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def asgi2_func(scope):
    """ASGI 2 written as a plain function returning the instance coroutine function."""

    async def instance(receive, send):
        await _reply(send, "asgi2-" + scope["type"])

    if scope["type"] != "http":
        raise ValueError("no lifespan")
    return instance
