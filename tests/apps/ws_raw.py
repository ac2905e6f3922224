"""A raw ASGI 3 application (no framework) for tests/test_websocket.py: one websocket
route per scope key or message rule, plus plain HTTP routes. What the client cannot see
(the messages the app received after the client closed) is kept per worker in RECORD and
read back over HTTP at `/record`; the tests that use it run one worker."""

import asyncio
import json
import os

RECORD = {}
SUPPORTED = ("chat.v2", "chat.v1")


def _jsonable(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def query(scope):
    out = {}
    for part in scope["query_string"].decode().split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


async def send_json(send, obj, status=200):
    body = json.dumps(obj, sort_keys=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def drain_body(receive):
    while True:
        m = await receive()
        if m["type"] != "http.request" or not m.get("more_body", False):
            return


async def http_app(scope, receive, send):
    await drain_body(receive)
    if scope["path"] == "/record":
        return await send_json(send, _jsonable(RECORD))
    # Anything else: what kind of scope the app got (a GET with `Upgrade: websocket` but
    # no key must arrive here as plain HTTP).
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    return await send_json(
        send, {"type": scope["type"], "method": scope.get("method"), "path": scope["path"], "headers": headers, "pid": os.getpid()}
    )


async def echo_loop(receive, send, key):
    """Echoes text as text and bytes as bytes until the client goes away; records the
    disconnect message under RECORD[key]."""
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            RECORD[key] = m
            return
        assert m["type"] == "websocket.receive", m
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def ws_app(scope, receive, send):
    path = scope["path"]
    q = query(scope)

    if path == "/deny":
        first = await receive()
        RECORD["deny_first"] = first
        await send({"type": "websocket.close", "code": 1008})
        return

    if path == "/deny-response":
        # The websocket.http.response extension: the app's own refusal.
        await receive()
        RECORD["deny_ext"] = "websocket.http.response" in scope.get("extensions", {})
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"token"})
        return

    if path == "/raise-before":
        await receive()
        raise RuntimeError("ws-boom-before-accept")

    if path == "/accept-first":
        # Accepts before receiving: the first receive() is still websocket.connect.
        await send({"type": "websocket.accept"})
        m = await receive()
        await send({"type": "websocket.send", "text": m["type"]})
        return await echo_loop(receive, send, "accept_first")

    first = await receive()

    if path == "/scope":
        chosen = next((p for p in scope["subprotocols"] if p in SUPPORTED), None)
        await send({"type": "websocket.accept", "subprotocol": chosen})
        info = _jsonable(dict(scope))
        info["_first"] = first
        info["_chosen"] = chosen
        info["_types"] = {
            "query_string": type(scope["query_string"]).__name__,
            "raw_path": type(scope.get("raw_path")).__name__,
            "subprotocols": type(scope["subprotocols"]).__name__,
            "header_item": sorted({type(h).__name__ for h in scope["headers"]}),
            "header_name_value": sorted({type(x).__name__ for h in scope["headers"] for x in h}),
        }
        await send({"type": "websocket.send", "text": json.dumps(info)})
        return await echo_loop(receive, send, "scope_disconnect")

    if path == "/echo":
        RECORD.pop(q.get("key", "echo"), None)
        await send({"type": "websocket.accept"})
        return await echo_loop(receive, send, q.get("key", "echo"))

    if path == "/timed-receive":
        # receive() under a timeout that fires first (its future is cancelled): the next
        # message must reach the next receive(), not the cancelled one.
        await send({"type": "websocket.accept"})
        try:
            await asyncio.wait_for(receive(), 0.3)
            first = "no timeout"
        except asyncio.TimeoutError:
            first = "timeout"
        await asyncio.sleep(1.0)
        m = await receive()
        await send({"type": "websocket.send", "text": f"{first} {m.get('text')}"})
        return await echo_loop(receive, send, "timed")

    if path == "/close":
        # Accept, wait for one message, then close with the code and reason asked for.
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": int(q.get("code", "1000")), "reason": q.get("reason", "")})
        return

    if path == "/flood":
        # Sends 64 KiB frames as fast as send() lets it, to a client that reads nothing.
        await send({"type": "websocket.accept"})
        RECORD["flood_sent"] = 0
        try:
            for _ in range(1000):
                await send({"type": "websocket.send", "bytes": b"f" * 65536})
                RECORD["flood_sent"] += 1
            RECORD["flood_end"] = "all sent"
        except OSError as e:
            RECORD["flood_end"] = f"OSError: {e}"
        return

    if path == "/raise-after":
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("ws-boom-after-accept")

    if path == "/return-after":
        await send({"type": "websocket.accept"})
        await receive()
        return

    if path == "/burst":
        # Server-initiated traffic: send n messages without being asked.
        await send({"type": "websocket.accept"})
        n = int(q.get("n", "1000"))
        for i in range(n):
            await send({"type": "websocket.send", "text": f"srv-{i}"})
        return await echo_loop(receive, send, "burst")

    if path == "/idle":
        # Accept and echo until the session ends; how it ended is also appended to the
        # file named by $WS_IDLE_MARKER (readable after the worker has exited).
        await send({"type": "websocket.accept"})
        await echo_loop(receive, send, "idle")
        marker = os.environ.get("WS_IDLE_MARKER")
        if marker:
            with open(marker, "a") as f:
                f.write(json.dumps(RECORD["idle"]) + "\n")
        return

    if path == "/accept-headers":
        await send({"type": "websocket.accept", "headers": [(b"x-ws-app", b"hello"), (b"set-cookie", b"a=1")]})
        return await echo_loop(receive, send, "accept_headers")

    await send({"type": "websocket.close"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        return await http_app(scope, receive, send)
    assert scope["type"] == "websocket", scope["type"]
    return await ws_app(scope, receive, send)
