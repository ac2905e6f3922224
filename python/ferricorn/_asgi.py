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


async def run_http(app, scope, cycle):
    try:
        await app(scope, cycle.receive, cycle.send)
    except BaseException as exc:  # noqa: BLE001 - every failure must end the response
        cycle.app_failed("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        cycle.app_returned()


class LoopThread(threading.Thread):
    """Runs the worker's event loop; requests arrive through ``drain`` on an eventfd."""

    def __init__(self, kind, efd, drain):
        super().__init__(name="ferricorn-asgi", daemon=True)
        self.loop = new_loop(kind)
        self.efd = efd
        self.drain = drain
        self.started = threading.Event()

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.efd, self.drain)
        self.loop.call_soon(self.started.set)
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
