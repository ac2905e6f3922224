"""Large response bodies (>= 4 KiB are sent from the bytes object's own buffer, not copied)."""

SHARED = bytes(range(256)) * 4096  # 1 MiB, one object for every request


def fresh(n):
    """A new 1 MiB object per request, its content tied to the request."""
    head = b"%08d" % n
    return (head * (1024 * 1024 // len(head)))[: 1024 * 1024]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    n = int(environ.get("QUERY_STRING") or 0)
    body = SHARED if path.endswith("/shared") else fresh(n)
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if path.startswith("/list"):
        return [body]
    if path.startswith("/write"):
        write(body[:300000])
        write(body[300000:])
        return []
    return iter([body[:500000], body[500000:]])  # a generator-like iterable


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    n = int(scope["query_string"] or 0)
    body = SHARED if path.endswith("/shared") else fresh(n)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
    if path.startswith("/stream"):
        await send({"type": "http.response.body", "body": body[:600000], "more_body": True})
        await send({"type": "http.response.body", "body": body[600000:]})
    else:
        await send({"type": "http.response.body", "body": body})
