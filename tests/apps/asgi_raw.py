"""A raw ASGI 3 application (no framework) with one route per scope key or message rule
that tests/test_asgi.py checks. Results that the client cannot see in the response (what a
later `receive()` returned, how far a stream got) are kept per worker in RECORD and read
back through `/record`; the tests that use it run one worker."""

import asyncio
import hashlib
import json
import os
import time

RECORD = {}
BIG_CHUNK = 64 * 1024


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


async def read_messages(receive):
    msgs = []
    while True:
        m = await receive()
        msgs.append(m)
        if m["type"] != "http.request" or not m.get("more_body", False):
            return msgs


def big_block(i):
    """The i-th 64 KiB block of the large streamed response (content depends on i)."""
    return hashlib.sha256(str(i).encode()).digest() * (BIG_CHUNK // 32)


def query(scope):
    out = {}
    for part in scope["query_string"].decode().split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


async def lifespan(scope, receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            scope["state"]["token"] = "from-lifespan"
            scope["state"]["started_pid"] = os.getpid()
            RECORD["lifespan_startup"] = True
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            marker = os.environ.get("ASGI_SHUTDOWN_MARKER")
            if marker:
                with open(marker, "a") as f:
                    f.write(f"shutdown {os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http", scope["type"]
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    q = query(scope)

    if path.startswith("/scope"):
        msgs = await read_messages(receive)
        out = _jsonable(dict(scope))
        out["_types"] = {
            "raw_path": type(scope.get("raw_path")).__name__,
            "query_string": type(scope["query_string"]).__name__,
            "headers": type(scope["headers"]).__name__,
            "header_item": sorted({type(h).__name__ for h in scope["headers"]}),
            "header_len": sorted({len(h) for h in scope["headers"]}),
            "header_name_value": sorted({type(x).__name__ for h in scope["headers"] for x in h}),
            "client": type(scope["client"]).__name__,
            "server": type(scope["server"]).__name__,
        }
        out["_body"] = b"".join(m.get("body", b"") for m in msgs).decode("latin-1")
        return await send_json(send, out)

    if path == "/state":
        await read_messages(receive)
        state = dict(scope.get("state", {}))
        scope.get("state", {})["mutated_by_request"] = True
        return await send_json(send, _jsonable(state))

    if path == "/record":
        await read_messages(receive)
        return await send_json(send, _jsonable(RECORD))

    if path == "/echo":
        msgs = await read_messages(receive)
        body = b"".join(m.get("body", b"") for m in msgs)
        return await send_json(
            send,
            {
                "messages": [
                    {"type": m["type"], "len": len(m.get("body", b"")), "more_body": m.get("more_body", "MISSING")}
                    for m in msgs
                ],
                "body_types": sorted({type(m.get("body")).__name__ for m in msgs}),
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "body": body.decode("latin-1") if len(body) < 200 else None,
            },
        )

    if path == "/after-response":
        # Send the whole response (keeping what each send() returned: None, as the spec
        # says), then see what receive() gives.
        await read_messages(receive)
        returned = [
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}),
            await send({"type": "http.response.body", "body": b"done"}),
        ]
        RECORD["send_returned"] = returned
        t0 = time.monotonic()
        try:
            m = await asyncio.wait_for(receive(), 3)
            RECORD["after_response"] = {"message": m, "elapsed": time.monotonic() - t0}
        except asyncio.TimeoutError:
            RECORD["after_response"] = {"message": "TIMEOUT", "elapsed": time.monotonic() - t0}
        return

    if path == "/receive-pending":
        # A receive() awaited before the response: it must block while the response is
        # being sent, and return http.disconnect once the response is complete.
        await read_messages(receive)
        pending = asyncio.ensure_future(receive())
        await asyncio.sleep(0.3)
        blocked = not pending.done()
        await send_text(send, "done")
        t0 = time.monotonic()
        try:
            m = await asyncio.wait_for(pending, 3)
        except asyncio.TimeoutError:
            m = "TIMEOUT"
        RECORD["receive_pending"] = {"blocked_before_response": blocked, "message": m, "elapsed": time.monotonic() - t0}
        return

    if path == "/timed-receive":
        # Reads the body with receive() under a timeout (the task's future is cancelled
        # each time it fires): no chunk may be lost to a cancelled receive().
        total, timeouts, types = 0, 0, []
        while True:
            try:
                m = await asyncio.wait_for(receive(), 0.2)
            except asyncio.TimeoutError:
                timeouts += 1
                continue
            types.append(m["type"])
            total += len(m.get("body", b""))
            if m["type"] != "http.request" or not m.get("more_body"):
                break
        RECORD["timed_receive"] = {"bytes": total, "timeouts": timeouts, "last": types[-1]}
        return await send_json(send, RECORD["timed_receive"])

    if path == "/cut-upload":
        # The client leaves half-way through its body: the app must see http.disconnect,
        # not a body that looks complete.
        msgs = []
        while True:
            m = await receive()
            msgs.append((m["type"], len(m.get("body", b"")), m.get("more_body")))
            if m["type"] != "http.request" or not m.get("more_body"):
                break
        RECORD["cut_upload"] = msgs
        return await send_text(send, "read")

    if path == "/wait-disconnect":
        # A long poll: the client goes away before any response; receive() must report it.
        await read_messages(receive)
        RECORD["wait_disconnect"] = {"message": "WAITING"}
        t0 = time.monotonic()
        try:
            m = await asyncio.wait_for(receive(), 5)
        except asyncio.TimeoutError:
            m = "TIMEOUT"
        RECORD["wait_disconnect"] = {"message": m, "elapsed": time.monotonic() - t0}
        return

    if path == "/cl":
        body = b"exactly-twenty-bytes"
        await read_messages(receive)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"20"), (b"x-app", b"raw")]}
        )
        await send({"type": "http.response.body", "body": body[:7], "more_body": True})
        await send({"type": "http.response.body", "body": body[7:], "more_body": False})
        return

    if path == "/nocl":
        await read_messages(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/nocl-single":
        await read_messages(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"single"})
        return

    if path == "/slow-stream":
        await read_messages(receive)
        delay = float(q.get("delay", "0.5"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            if i:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": f"chunk{i};".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/big":
        await read_messages(receive)
        n = int(q.get("blocks", "320"))  # 320 x 64 KiB = 20 MiB
        RECORD["big"] = {"sent": 0, "done": False}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for i in range(n):
            await send({"type": "http.response.body", "body": big_block(i), "more_body": True})
            RECORD["big"]["sent"] += BIG_CHUNK
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        RECORD["big"]["done"] = True
        return

    if path.startswith("/status/"):
        await read_messages(receive)
        code = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": code, "headers": [(b"x-status", str(code).encode())]})
        await send({"type": "http.response.body", "body": b""})
        return

    if path == "/head-stream":
        await read_messages(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"streamed-body", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/own-server":
        await read_messages(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"server", b"my-app"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return

    if path == "/bad-header":
        await read_messages(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"x")]})
        await send({"type": "http.response.body", "body": b"should not be seen"})
        return

    if path == "/raise-before":
        await read_messages(receive)
        raise RuntimeError("boom-before-start")

    if path == "/raise-after":
        await read_messages(receive)
        cl = q.get("cl")
        headers = [(b"content-length", cl.encode())] if cl else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial-data", "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("boom-after-start")

    if path == "/raise-late":
        # Raises after its client has gone (but before the server's grace period ends).
        await read_messages(receive)
        await asyncio.sleep(1.0)
        raise RuntimeError("late-boom-after-disconnect")

    if path == "/return-nothing":
        await read_messages(receive)
        return

    if path == "/body-before-start":
        await read_messages(receive)
        await send({"type": "http.response.body", "body": b"oops"})
        return

    if path == "/sleep":
        await read_messages(receive)
        secs = float(q.get("s", "0.2"))
        await asyncio.sleep(secs)
        return await send_text(send, f"slept {secs}")

    return await send_text(send, "not found", status=404)
