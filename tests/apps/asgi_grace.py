"""ASGI apps for --asgi-disconnect-grace-period: each records in MARKS_DIR what
happened to its task (finished, cancelled, saw http.disconnect)."""

import asyncio
import os
import time

MARKS = os.environ.get("MARKS_DIR", "/tmp")


def mark(name, what):
    with open(os.path.join(MARKS, name), "a") as f:
        f.write(f"{what} {time.monotonic():.3f}\n")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    name = scope["path"].strip("/") or "root"
    try:
        if scope["path"].startswith("/sleep"):
            await asyncio.sleep(30)
        elif scope["path"].startswith("/wait"):
            while (await receive())["type"] != "http.disconnect":
                pass
            mark(name, "disconnect")
            await asyncio.sleep(30)
        elif scope["path"].startswith("/stream"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:
                    await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                    await asyncio.sleep(0.05)
            except OSError:
                # ASGI 2.4: a send after the client left raises; this app carries on.
                mark(name, "oserror")
                await asyncio.sleep(30)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        mark(name, "done")
    except asyncio.CancelledError:
        mark(name, "cancelled")
        raise
