"""The ASGI side of a worker that must be Python: the event loop thread, the task that
wraps each app call, and the lifespan protocol. The per-request work (scope, receive,
send, body streaming, backpressure) is in Rust (`ferricorn._ferricorn`)."""

import asyncio
import inspect
import threading
import traceback


def is_asgi(app):
    """ASGI 3 callables are coroutine functions, or objects whose __call__ is one. A class
    is an ASGI 2 application (instantiated per scope), as uvicorn treats it."""
    if inspect.isclass(app):
        return False
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return inspect.iscoroutinefunction(call)


def as_asgi3(app):
    """Wraps an ASGI 2 double callable (``app(scope)`` returning ``instance(receive, send)``)."""
    if is_asgi(app):
        return app

    async def asgi3(scope, receive, send):
        instance = app(scope)
        await instance(receive, send)

    return asgi3


def new_loop(kind):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


def cancel_later(loop, grace):
    """Gunicorn's ``asgi_disconnect_grace_period``: the returned function cancels an app
    task ``grace`` seconds after its client left, unless it has finished by then."""

    def cancel_if_pending(task):
        if not task.done():
            task.cancel()

    def schedule(task):
        if grace > 0:
            loop.call_later(grace, cancel_if_pending, task)
        else:
            cancel_if_pending(task)

    return schedule


async def run_http(app, scope, cycle):
    try:
        await app(scope, cycle.receive, cycle.send)
    except BaseException as exc:  # noqa: BLE001 - every failure must end the response
        # Cancelled: the server cancelled the task (its client left); not the app's error.
        cancelled = isinstance(exc, asyncio.CancelledError)
        cycle.app_failed("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), cancelled)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        cycle.app_returned()


def hooked_run_http(worker, pre_request, post_request):
    """``run_http`` with Gunicorn's ``pre_request(worker, req)`` and
    ``post_request(worker, req[, environ[, resp]])`` around each HTTP request. Used only
    when the config file defines one of them, so the plain path pays nothing."""
    post_arity = 0
    if post_request is not None:
        import inspect

        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        try:
            params = inspect.signature(post_request).parameters.values()
            post_arity = min(4, max(2, sum(1 for p in params if p.kind in positional)))
        except (TypeError, ValueError):
            post_arity = 4

    def report(name):
        worker.log.error(f"Exception in {name} hook:\n" + traceback.format_exc().rstrip())

    async def run(app, scope, cycle):
        if scope.get("type") != "http":
            return await run_http(app, scope, cycle)
        req = RequestInfo(scope)
        resp = ResponseInfo(cycle.send)
        try:
            # As in Gunicorn: the hook sees the count of the requests before this one,
            # and its exception fails the request like the app's would.
            if pre_request is not None:
                try:
                    pre_request(worker, req)
                except Exception as exc:  # noqa: BLE001 - answered as the app's error
                    cycle.app_failed("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                    return
            worker.nr = getattr(worker, "nr", 0) + 1
            await run_http(app, scope, _Cycle(cycle, resp.send))
        finally:
            if post_request is not None:
                if resp.status_code is None:
                    resp.set_status(500, [])
                args = (worker, req, req.environ(), resp)[:post_arity]
                try:
                    post_request(*args)
                except Exception:  # noqa: BLE001
                    report("post_request")

    return run


class _Cycle:
    """The cycle with ``send`` observed (status, headers, bytes sent)."""

    __slots__ = ("_cycle", "send")

    def __init__(self, cycle, send):
        self._cycle = cycle
        self.send = send

    def __getattr__(self, name):
        return getattr(self._cycle, name)


class RequestInfo:
    """What Gunicorn's ``Request`` offers hooks: method, uri, path, query, version,
    scheme, headers (UPPERCASE names), remote_addr."""

    def __init__(self, scope):
        self.scope = scope
        self.method = scope["method"]
        self.path = scope.get("root_path", "") + scope["path"]
        self.query = scope.get("query_string", b"").decode("latin-1")
        self.uri = scope.get("raw_path", self.path.encode()).decode("latin-1") + (f"?{self.query}" if self.query else "")
        major, _, minor = scope.get("http_version", "1.1").partition(".")
        self.version = (int(major), int(minor or 0))
        self.scheme = scope.get("scheme", "http")
        self.headers = [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        client = scope.get("client")
        # Gunicorn's `Request.remote_addr`: the peer's `(ip, port)`.
        self.remote_addr = tuple(client) if client else ""
        self.peer_addr = self.remote_addr

    def environ(self):
        """The reduced environ Gunicorn's ASGI worker hands to ``post_request``."""
        env = {
            "REQUEST_METHOD": self.method,
            "PATH_INFO": self.scope["path"],
            "SCRIPT_NAME": self.scope.get("root_path", ""),
            "QUERY_STRING": self.query,
            "RAW_URI": self.uri,
            "SERVER_PROTOCOL": "HTTP/%d.%d" % self.version,
            "REMOTE_ADDR": self.remote_addr[0] if self.remote_addr else "",
            "wsgi.url_scheme": self.scheme,
        }
        for name, value in self.headers:
            env["HTTP_" + name.replace("-", "_")] = value
        return env


class ResponseInfo:
    """What ``post_request`` reads of the response: status, status_code, headers, sent."""

    def __init__(self, send):
        self._send = send
        self.status = None
        self.status_code = None
        self.headers = []
        self.sent = 0

    def set_status(self, code, headers):
        from http import HTTPStatus

        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        self.status_code = code
        self.status = f"{code} {reason}".rstrip()
        self.headers = [
            (k.decode("latin-1") if isinstance(k, bytes) else k, v.decode("latin-1") if isinstance(v, bytes) else v)
            for k, v in headers
        ]

    def send(self, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "http.response.start":
            self.set_status(int(message.get("status", 500)), message.get("headers", ()))
        elif kind == "http.response.body":
            self.sent += len(message.get("body", b"") or b"")
        return self._send(message)


class LoopThread(threading.Thread):
    """Runs the worker's event loop; requests arrive through ``drain`` on an eventfd."""

    #: Seconds between the loop's heartbeats (see ``LoopPulse`` in asgi/mod.rs).
    PULSE = 0.5

    def __init__(self, kind, efd, drain, pulse):
        super().__init__(name="ferricorn-asgi", daemon=True)
        self.loop = new_loop(kind)
        self.efd = efd
        self.drain = drain
        self.pulse = pulse
        self.started = threading.Event()

    def _beat(self):
        # Runs only when the loop gets control back: a coroutine stuck in blocking code
        # stops the beats, and the worker's --timeout then applies to the loop itself.
        self.pulse.beat()
        self.loop.call_later(self.PULSE, self._beat)

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.efd, self.drain)
        self.loop.call_soon(self.started.set)
        self.loop.call_soon(self._beat)
        self.loop.run_forever()

    def submit(self, coro, timeout=None):
        """Runs a coroutine on the loop from another thread and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class Lifespan:
    """The ASGI lifespan protocol, run once per worker."""

    def __init__(self, app, mode, state):
        self.app = app
        self.mode = mode
        self.state = state
        self.supported = True
        self.error = None
        self._events = None
        self._startup = None
        self._shutdown = None
        self._task = None

    async def _receive(self):
        return await self._events.get()

    async def _send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._startup.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._startup.set_result(message.get("message") or "startup failed")
        elif kind == "lifespan.shutdown.complete":
            self._shutdown.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self._shutdown.set_result(message.get("message") or "shutdown failed")

    async def _main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # noqa: BLE001
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if not self._startup.done():
                if self.mode == "auto":
                    self.supported = False
                    self._startup.set_result(None)
                else:
                    self._startup.set_result(text)
            if not self._shutdown.done():
                self._shutdown.set_result(text if self.supported else None)
        finally:
            for fut in (self._startup, self._shutdown):
                if not fut.done():
                    fut.set_result(None if self.mode == "auto" else "the application returned during lifespan")

    async def startup(self):
        """None on success (or when the app does not speak lifespan in auto mode), else the error."""
        if self.mode == "off":
            self.supported = False
            return None
        loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        self._task = loop.create_task(self._main())
        await self._events.put({"type": "lifespan.startup"})
        return await self._startup

    async def shutdown(self):
        if not self.supported or self._task is None:
            return None
        await self._events.put({"type": "lifespan.shutdown"})
        return await self._shutdown
