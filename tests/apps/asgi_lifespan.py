"""Lifespan variants: startup that raises, startup that reports failure, and an app that
does not speak lifespan at all (it raises on the lifespan scope, as many apps do)."""

import os


async def _ok(send):
    body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": body})


async def startup_raises(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("database unreachable (startup raised)")
    await _ok(send)


async def startup_failed_message(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "config missing (startup.failed sent)"})
        return
    await _ok(send)


async def no_lifespan(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    await _ok(send)


async def shutdown_marker(scope, receive, send):
    """Writes a marker when startup runs (so `--asgi-lifespan off` can be checked)."""
    if scope["type"] == "lifespan":
        marker = os.environ["ASGI_STARTUP_MARKER"]
        while True:
            m = await receive()
            with open(marker, "a") as f:
                f.write(m["type"] + "\n")
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _ok(send)
