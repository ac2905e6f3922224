"""An ASGI app for tests/test_asgi_extensions.py and tests/test_early_hints.py: the
response extensions ferricorn advertises (early hints / informational responses,
trailers, zerocopysend). What the client cannot see (an error raised inside the app
after the response) is kept in RECORD and read back through /record; those tests run
one worker."""

import asyncio
import json
import os

RECORD = {}
STORED = {}

CSS = b"</style.css>; rel=preload; as=style"
JS = b"</app.js>; rel=preload; as=script"


def query(scope):
    out = {}
    for part in scope["query_string"].decode().split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


ROUTES = {}


def route(path):
    def register(fn):
        ROUTES[path] = fn
        return fn

    return register


def big_body(n):
    """A large body with a non-repeating pattern, so a stray insert is visible."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d" % i
        i += 1
    return bytes(out[:n])


async def drain(receive):
    while True:
        m = await receive()
        if m["type"] != "http.request" or not m.get("more_body", False):
            return


async def send_text(send, text, status=200, headers=()):
    body = text.encode() if isinstance(text, str) else text
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send, obj):
    await send_text(send, json.dumps(obj, sort_keys=True), headers=[(b"x-json", b"1")])


async def attempt(send, message):
    """The name of the exception send(message) raised, or "ok"."""
    try:
        await send(message)
        return "ok"
    except Exception as e:  # noqa: BLE001 - the test wants the type
        return type(e).__name__


@route("/hint")
async def r_hint(q, scope, send):
    await send({"type": "http.response.early_hint", "links": [CSS, JS.decode()]})
    await send({"type": "http.response.informational", "status": 103, "headers": [(b"link", b"</c.css>; rel=preload")]})
    return await send_text(send, "hinted")


@route("/early-hint-headers")
async def r_early_hint_headers(q, scope, send):
    # links and headers together in one early_hint message.
    await send({"type": "http.response.early_hint", "links": [CSS], "headers": [(b"x-hint", b"yes")]})
    return await send_text(send, "hinted")


@route("/informational")
async def r_informational(q, scope, send):
    status = int(q.get("status", "103"))
    result = await attempt(send, {"type": "http.response.informational", "status": status, "headers": [(b"x-info", b"1")]})
    return await send_text(send, "informational:" + result)


@route("/hint-after-start")
async def r_hint_after_start(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    r1 = await attempt(send, {"type": "http.response.early_hint", "links": [CSS]})
    r2 = await attempt(send, {"type": "http.response.informational", "status": 103, "headers": [(b"link", CSS)]})
    await send({"type": "http.response.body", "body": f"{r1},{r2}".encode()})
    return


@route("/hint-after-start-uncaught")
async def r_hint_after_start_uncaught(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.early_hint", "links": [CSS]})
    await send({"type": "http.response.body", "body": b"unreachable"})
    return


@route("/hint-after-response")
async def r_hint_after_response(q, scope, send):
    await send_text(send, "done")
    await asyncio.sleep(0.1)
    RECORD["hint_after_response"] = await attempt(send, {"type": "http.response.early_hint", "links": [CSS]})
    return


@route("/hint-invalid")
async def r_hint_invalid(q, scope, send):
    out = {
        "link-crlf": await attempt(send, {"type": "http.response.early_hint", "links": [b"</a>\r\nx-injected: 1"]}),
        "header-name": await attempt(
            send, {"type": "http.response.informational", "status": 103, "headers": [(b"bad name", b"x")]}
        ),
        "status-100": await attempt(send, {"type": "http.response.informational", "status": 100, "headers": []}),
        "status-101": await attempt(send, {"type": "http.response.informational", "status": 101, "headers": []}),
        "status-200": await attempt(send, {"type": "http.response.informational", "status": 200, "headers": []}),
    }
    return await send_json(send, out)


@route("/hint-slow")
async def r_hint_slow(q, scope, send):
    await send({"type": "http.response.early_hint", "links": [CSS]})
    await asyncio.sleep(float(q.get("s", "1.0")))
    return await send_text(send, "slow")


@route("/store-send")
async def r_store_send(q, scope, send):
    # Request 1 keeps its send; a later request uses it.
    STORED["send"] = send
    return await send_text(send, "stored")


@route("/use-stored-send")
async def r_use_stored_send(q, scope, send):
    result = await attempt(STORED["send"], {"type": "http.response.early_hint", "links": [b"</stale.css>; rel=preload"]})
    return await send_text(send, "used:" + result)


@route("/late-task")
async def r_late_task(q, scope, send):
    # A task of this request sends a hint after its response is complete, while the
    # next request on the connection is being served.
    async def later():
        await asyncio.sleep(float(q.get("s", "0.3")))
        RECORD["late_task"] = await attempt(send, {"type": "http.response.early_hint", "links": [b"</late.css>"]})

    asyncio.get_running_loop().create_task(later())
    return await send_text(send, "late task started")


START_TRAILERS = [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]


@route("/trailers")
async def r_trailers(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": START_TRAILERS, "trailers": True})
    await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
    await send({"type": "http.response.body", "body": b"world"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123"), (b"x-count", b"2")]})
    RECORD["trailers_done"] = True
    return


@route("/trailers-multi")
async def r_trailers_multi(q, scope, send):
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a, x-b, x-c")], "trailers": True}
    )
    await send({"type": "http.response.body", "body": b"multi"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")], "more_trailers": True})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.trailers", "headers": [(b"x-b", b"2"), ("x-c", "3")], "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
    return


@route("/trailers-forbidden")
async def r_trailers_forbidden(q, scope, send):
    names = b"x-ok, content-length, transfer-encoding, host, authorization, te, trailer"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", names)], "trailers": True})
    await send({"type": "http.response.body", "body": b"forbidden"})
    await send(
        {
            "type": "http.response.trailers",
            "headers": [
                (b"x-ok", b"yes"),
                (b"content-length", b"999"),
                (b"transfer-encoding", b"gzip"),
                (b"host", b"evil"),
                (b"authorization", b"secret"),
                (b"te", b"trailers"),
                (b"trailer", b"x-evil"),
            ],
        }
    )
    return


@route("/trailers-undeclared")
async def r_trailers_undeclared(q, scope, send):
    # The Trailer header names x-a only; x-b is sent as a trailer too.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"undeclared"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1"), (b"x-b", b"2")]})


@route("/trailers-no-trailer-header")
async def r_trailers_no_trailer_header(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"no trailer header"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})


@route("/trailers-connection")
async def r_trailers_connection(q, scope, send):
    # Connection-specific fields have no place in a trailer (and none at all in HTTP/2).
    names = b"x-ok, connection, keep-alive, upgrade, proxy-connection"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", names)], "trailers": True})
    await send({"type": "http.response.body", "body": b"connection"})
    await send(
        {
            "type": "http.response.trailers",
            "headers": [
                (b"x-ok", b"yes"),
                (b"connection", b"close"),
                (b"keep-alive", b"timeout=5"),
                (b"upgrade", b"h2c"),
                (b"proxy-connection", b"close"),
            ],
        }
    )


@route("/trailers-big")
async def r_trailers_big(q, scope, send):
    # A streamed body larger than the pipe, then trailers.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-total")], "trailers": True})
    block = bytes(range(256)) * 256  # 64 KiB
    n = int(q.get("n", "32"))
    for i in range(n):
        await send({"type": "http.response.body", "body": block, "more_body": i < n - 1})
    await send({"type": "http.response.trailers", "headers": [(b"x-total", str(n * len(block)).encode())]})
    return


@route("/trailers-empty-body")
async def r_trailers_empty_body(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-only")], "trailers": True})
    await send({"type": "http.response.body", "body": b""})
    await send({"type": "http.response.trailers", "headers": [(b"x-only", b"1")]})
    return


@route("/trailers-without-flag")
async def r_trailers_without_flag(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"body"})
    RECORD["trailers_without_flag"] = await attempt(send, {"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})
    return


@route("/trailers-before-last-body")
async def r_trailers_before_last_body(q, scope, send):
    # trailers=True, a body with more_body, then trailers: an error; the app carries
    # on and finishes properly.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
    early = await attempt(send, {"type": "http.response.trailers", "headers": [(b"x-a", b"early")]})
    await send({"type": "http.response.body", "body": f"early:{early}".encode()})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})
    return


@route("/trailers-before-last-body-uncaught")
async def r_trailers_before_last_body_uncaught(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"early")]})
    await send({"type": "http.response.body", "body": b"unreachable"})
    return


@route("/trailers-before-body-uncaught")
async def r_trailers_before_body_uncaught(q, scope, send):
    # Nothing was sent to the client yet: a 500.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"early")]})
    return


@route("/trailers-never-sent")
async def r_trailers_never_sent(q, scope, send):
    # trailers=True promised, the body ends, the app returns without trailers.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"no trailers follow"})
    return


@route("/trailers-twice")
async def r_trailers_twice(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"twice"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})
    RECORD["trailers_twice"] = {
        "trailers": await attempt(send, {"type": "http.response.trailers", "headers": [(b"x-a", b"2")]}),
        "body": await attempt(send, {"type": "http.response.body", "body": b"more"}),
    }
    return


@route("/trailers-body-after-last")
async def r_trailers_body_after_last(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"last"})
    after = await attempt(send, {"type": "http.response.body", "body": b"after-last"})
    RECORD["body_after_last"] = after
    await send({"type": "http.response.trailers", "headers": [(b"x-a", after.encode())]})
    return


@route("/trailers-invalid")
async def r_trailers_invalid(q, scope, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
    await send({"type": "http.response.body", "body": b"invalid"})
    bad = await attempt(send, {"type": "http.response.trailers", "headers": [(b"x-a", b"1\r\nx-injected: 1")]})
    RECORD["trailers_invalid"] = bad
    await send({"type": "http.response.trailers", "headers": [(b"x-a", bad.encode())]})
    return


@route("/trailers-zerocopy")
async def r_trailers_zerocopy(q, scope, send):
    # zerocopysend as the body of a response with trailers.
    with open(q["path"], "rb") as f:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-a")], "trailers": True})
        await send({"type": "http.response.zerocopysend", "file": f})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"zc")]})
    return


@route("/zc")
async def r_zc(q, scope, send):
    # ?path=...&offset=&count=&seek=&cl=&unlink=1
    fd_path = q["path"]
    f = open(fd_path, "rb", buffering=0)
    if "seek" in q:
        f.seek(int(q["seek"]))
    msg = {"type": "http.response.zerocopysend", "file": f}
    if "offset" in q:
        msg["offset"] = int(q["offset"])
    if "count" in q:
        msg["count"] = int(q["count"])
    headers = [(b"content-type", b"application/octet-stream")]
    if "cl" in q:
        headers.append((b"content-length", q["cl"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send(msg)
    # The app may close (even delete) its file as soon as send() returned.
    f.close()
    if q.get("unlink"):
        os.unlink(fd_path)
    RECORD["zc_closed"] = f.closed
    return


@route("/zc-mixed")
async def r_zc_mixed(q, scope, send):
    # body, zerocopysend(more_body), body, zerocopysend(last).
    with open(q["path"], "rb") as f:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"<head>", "more_body": True})
        await send({"type": "http.response.zerocopysend", "file": f, "offset": 0, "count": 10, "more_body": True})
        await send({"type": "http.response.body", "body": b"<mid>", "more_body": True})
        await send({"type": "http.response.zerocopysend", "file": f, "offset": 10, "count": 5, "more_body": True})
        await send({"type": "http.response.zerocopysend", "file": f, "offset": 20})
    return


@route("/zc-then-body")
async def r_zc_then_body(q, scope, send):
    # zerocopysend with more_body first, a body message last.
    with open(q["path"], "rb") as f:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.zerocopysend", "file": f, "more_body": True})
    await send({"type": "http.response.body", "body": b"<tail>"})
    return


@route("/zc-chunks")
async def r_zc_chunks(q, scope, send):
    # The whole file in 1 MiB zerocopysend messages with more_body.
    size = os.path.getsize(q["path"])
    step = 1 << 20
    with open(q["path"], "rb") as f:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
        for off in range(0, size, step):
            last = off + step >= size
            await send({"type": "http.response.zerocopysend", "file": f, "offset": off, "count": step, "more_body": not last})
    return


@route("/zc-errors")
async def r_zc_errors(q, scope, send):
    out = {}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    out["no-file"] = await attempt(send, {"type": "http.response.zerocopysend", "more_body": True})
    out["no-fileno"] = await attempt(send, {"type": "http.response.zerocopysend", "file": object(), "more_body": True})
    f = open(q["path"], "rb")
    f.close()
    out["closed-file"] = await attempt(send, {"type": "http.response.zerocopysend", "file": f, "more_body": True})
    RECORD["zc_errors"] = out
    await send({"type": "http.response.body", "body": json.dumps(out, sort_keys=True).encode()})
    return


@route("/zc-before-start")
async def r_zc_before_start(q, scope, send):
    with open(q["path"], "rb") as f:
        RECORD["zc_before_start"] = await attempt(send, {"type": "http.response.zerocopysend", "file": f})
    return await send_text(send, "after:" + RECORD["zc_before_start"])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http", scope["type"]
    path = scope["path"]
    q = query(scope)
    await drain(receive)

    if path == "/record":
        return await send_json(send, RECORD)
    if path == "/reset":
        RECORD.clear()
        return await send_text(send, "reset")
    if path == "/extensions":
        ext = scope.get("extensions") or {}
        return await send_json(
            send, {"extensions": {k: v for k, v in ext.items() if k != "tls"}, "http_version": scope["http_version"]}
        )
    if path == "/plain":
        return await send_text(send, "plain")
    if path == "/big":
        return await send_text(send, big_body(int(q.get("n", "2000000"))))

    handler = ROUTES.get(path)
    if handler is None:
        return await send_text(send, "not found", status=404)
    await handler(q, scope, send)


@route("/trailers-one")
async def r_trailers_one(q, scope, send):
    # ?name=...: one trailer field of that name, besides x-ok.
    name = q["name"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-ok, " + name)], "trailers": True})
    await send({"type": "http.response.body", "body": b"one"})
    await send({"type": "http.response.trailers", "headers": [(b"x-ok", b"yes"), (name, q.get("value", "close").encode())]})


@route("/trailers-cl")
async def r_trailers_cl(q, scope, send):
    # The app framed the body itself: no chunked encoding, so no trailer section.
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7"), (b"trailer", b"x-a")], "trailers": True}
    )
    await send({"type": "http.response.body", "body": b"framed!"})
    await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")]})
