"""A WSGI app for tests/test_early_hints.py: one route per way of calling
`environ["wsgi.early_hints"]` (Gunicorn 25+'s callable for 103 Early Hints)."""

import json
import threading
import time

CSS = "</style.css>; rel=preload; as=style"
JS = "</app.js>; rel=preload; as=script"

# The callable of an earlier request, kept to be called from a later one.
STORED = {}


def _text(start_response, body, status="200 OK", headers=()):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *headers])
    return [body]


def _json(start_response, obj):
    return _text(start_response, json.dumps(obj, sort_keys=True), headers=[("Content-Type", "application/json")])


def big_body(n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d" % i
        i += 1
    return bytes(out[:n])


def _query(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


def _try(fn, *args):
    """The name of the exception `fn(*args)` raised, or "ok"."""
    try:
        fn(*args)
        return "ok"
    except Exception as e:  # noqa: BLE001 - the test wants the type
        return type(e).__name__


def app(environ, start_response):
    path = environ["PATH_INFO"]
    hints = environ.get("wsgi.early_hints")
    q = _query(environ)

    if path == "/plain":
        return _text(start_response, "plain")

    if path == "/big":
        # A large response (a non-repeating pattern, so a stray insert is visible).
        return _text(start_response, big_body(int(q.get("n", "2000000"))), headers=[("Content-Type", "application/octet-stream")])

    if path == "/hint":
        hints([("Link", CSS)])
        return _text(start_response, "one hint")

    if path == "/hints":
        # Two calls, the second with two headers: two 103 responses.
        hints([("Link", CSS)])
        hints([("Link", JS), ("X-Hint", "second")])
        return _text(start_response, "two hints")

    if path == "/hint-forms":
        # bytes and str, surrounding spaces and tabs stripped from values.
        hints([(b"Link", b" \t</b.css>; rel=preload; as=style\t "), ("link", "  </c.js>; rel=preload; as=script  ")])
        return _text(start_response, "forms")

    if path == "/environ":
        out = {
            "has": "wsgi.early_hints" in environ,
            "callable": callable(hints),
            "protocol": environ["SERVER_PROTOCOL"],
            "call": _try(hints, [("Link", CSS)]) if hints is not None else "missing",
        }
        return _json(start_response, out)

    if path == "/after-start-response":
        # start_response called but the body not returned yet: Gunicorn still sends.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        hints([("Link", CSS)])
        return [b"after"]

    if path == "/gen-before-first-chunk":
        def gen():
            hints([("Link", CSS)])
            yield b"first;"
            yield b"second"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/gen-after-first-chunk":
        # The response is the server's once the first chunk is out: hints are dropped.
        def gen():
            yield b"first;"
            time.sleep(float(q.get("s", "0.2")))
            result = _try(hints, [("Link", JS)])
            yield b"late:" + result.encode()

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/slow":
        # A hint, then a slow app: the 103 must reach the client before the response.
        hints([("Link", CSS)])
        time.sleep(float(q.get("s", "1.0")))
        return _text(start_response, "slow")

    if path == "/invalid":
        cases = {
            "name-space": [("Bad Name", "x")],
            "name-colon": [("Link:", "x")],
            "name-empty": [("", "x")],
            "value-crlf": [("Link", "</a>\r\nX-Injected: 1")],
            "value-lf": [("Link", "</a>\nX-Injected: 1")],
            "value-nul": [("Link", "</a>\x00")],
            "bytes-value-crlf": [(b"Link", b"</a>\r\nX-Injected: 1")],
            "not-latin1": [("Link", "</\u20ac>")],
            "valid-then-invalid": [("Link", CSS), ("Bad Name", "x")],
        }
        out = {k: _try(hints, v) for k, v in cases.items()}
        out["not-a-pair"] = _try(hints, ["Link"])
        out["not-a-list"] = _try(hints, 42)
        out["int-value"] = _try(hints, [("Link", 5)])
        # A valid call after all the failed ones still works.
        out["valid"] = _try(hints, [("Link", JS)])
        return _json(start_response, out)

    if path == "/hint-then-raise":
        hints([("Link", CSS)])
        raise RuntimeError("the app failed after its hint")

    if path == "/invalid-uncaught":
        hints([("Bad Name", "x")])
        return _text(start_response, "unreachable")

    if path == "/store":
        STORED["hints"] = hints
        return _text(start_response, "stored")

    if path == "/use-stored":
        # Calls the callable of an earlier request, whose response is long gone.
        result = _try(STORED["hints"], [("Link", "</stale.css>; rel=preload; as=style")])
        return _text(start_response, "used:" + result)

    if path == "/use-stored-then-hint":
        result = _try(STORED["hints"], [("Link", "</stale.css>; rel=preload; as=style")])
        hints([("Link", CSS)])
        return _text(start_response, "used:" + result)

    if path == "/store-and-call-later":
        # A thread of this request calls its hint callable after the response is done.
        def later():
            time.sleep(float(q.get("s", "0.5")))
            STORED["late_result"] = _try(hints, [("Link", "</late.css>; rel=preload; as=style")])

        threading.Thread(target=later, daemon=True).start()
        return _text(start_response, "will call later")

    if path == "/late-result":
        return _text(start_response, STORED.get("late_result", "not yet"))

    if path == "/echo-hint":
        # A hint before the body is read (Expect: 100-continue), then the body.
        hints([("Link", CSS)])
        body = environ["wsgi.input"].read()
        return _text(start_response, body)

    return _text(start_response, "not found", status="404 Not Found")
