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


async def task_factory(scope, receive, send):
    """Installs a task factory at startup (as apps using eager tasks or instrumentation
    do); each request answers with whether its own task came from that factory and
    whether `asyncio.current_task()` is set."""
    import asyncio

    if scope["type"] == "lifespan":
        await receive()

        def factory(loop, coro, **kwargs):
            task = asyncio.Task(coro, loop=loop, **kwargs)
            task.made_by_app_factory = True
            return task

        asyncio.get_running_loop().set_task_factory(factory)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    task = asyncio.current_task()
    body = f"{task is not None} {getattr(task, 'made_by_app_factory', False)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def current_task(scope, receive, send):
    """Answers with what `asyncio.current_task()` is inside a request: its type's name,
    the task's name, and whether it is the same task as the previous request's."""
    import asyncio

    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    task = asyncio.current_task()
    same = task is current_task.last
    current_task.last = task
    body = f"{type(task).__name__} {task.get_name()} {same}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


current_task.last = None
