//! The ASGI 3.0 bridge: `http` and `lifespan` scopes on an asyncio loop in a worker
//! thread, fed by the same front end as WSGI.
//!
//! The I/O thread never takes the GIL: it posts events (a new request, "this request's
//! state changed") to a channel and bumps an eventfd that the loop watches. The loop
//! thread drains the channel: it builds the scope, starts the app task, and resolves the
//! futures that `receive()`/`send()` returned. Request bodies are read on the I/O thread
//! only when the app asks for more; responses go through the same byte-budgeted pipe as
//! WSGI, whose drain and close hooks wake a `send()` waiting for room or a `receive()`
//! waiting for the disconnect.

mod cycle;
mod scope;
mod websocket;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use ferricorn_server::{App, Request};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use cycle::{CycleShared, HttpCycle};

use crate::replies::ReplyTx as Reply;

pub(crate) enum Event {
    Request(Box<(Request, Reply, Arc<CycleShared>)>),
    /// A request's I/O state changed: wake whatever its app is awaiting.
    Wake(Arc<CycleShared>),
    WebSocket(
        Box<(
            Request,
            Reply,
            ferricorn_server::websocket::Handshake,
            Arc<websocket::WsShared>,
            tokio::runtime::Handle,
        )>,
    ),
    WsWake(Arc<websocket::WsShared>),
}

/// Events for the loop thread: a channel plus an eventfd the loop's selector watches.
pub(crate) struct Mailbox {
    tx: crossbeam_channel::Sender<Event>,
    rx: crossbeam_channel::Receiver<Event>,
    efd: OwnedFd,
    /// The eventfd was bumped and the loop has not drained yet: under load most posts
    /// then skip the syscall.
    pending: std::sync::atomic::AtomicBool,
    /// New requests posted since the flusher last ran (see `post_batched`).
    batch_open: std::sync::atomic::AtomicBool,
    batch_notify: tokio::sync::Notify,
    flusher: std::sync::Once,
}

impl Mailbox {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        // SAFETY: a fresh descriptor we own.
        Ok(Self {
            tx,
            rx,
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: Default::default(),
            batch_open: Default::default(),
            batch_notify: tokio::sync::Notify::new(),
            flusher: std::sync::Once::new(),
        })
    }

    pub(crate) fn post(&self, event: Event) {
        if self.tx.send(event).is_ok() {
            self.wake();
        }
    }

    fn wake(&self) {
        if !self.pending.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: an 8-byte write to our own eventfd; EAGAIN (counter full) is harmless.
            unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// From the I/O thread (inside its runtime): a new request. Waking the loop thread
    /// for each one lets it preempt the I/O thread (both often share a core) after every
    /// request it reads. Instead the wake-up is left to a flusher task, which the
    /// runtime polls after the tasks that are ready now: the requests read from one
    /// batch of ready connections reach the loop with one wake-up.
    pub(crate) fn post_batched(self: &Arc<Self>, event: Event) {
        self.flusher.call_once(|| {
            tokio::spawn(self.clone().flush_batches());
        });
        if self.tx.send(event).is_ok() && !self.batch_open.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.batch_notify.notify_one();
        }
    }

    async fn flush_batches(self: Arc<Self>) {
        loop {
            self.batch_notify.notified().await;
            // Cleared before the wake-up: a later post opens a new batch and notifies.
            self.batch_open.store(false, std::sync::atomic::Ordering::Release);
            self.wake();
        }
    }

    /// Called by the loop before it drains the channel. The eventfd is read *before*
    /// `pending` is cleared: a post landing in between then either finds `pending` still
    /// set (its event is drained right after) or writes the eventfd again (next wake-up).
    /// The other order could swallow a post's write and leave `pending` set for good.
    fn reset(&self) {
        let mut n: u64 = 0;
        // SAFETY: an 8-byte read from our own non-blocking eventfd.
        unsafe { libc::read(self.efd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        self.pending.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Per-worker constants of the bridge.
pub struct AsgiConfig {
    pub root_path: String,
    pub loop_kind: String,
    pub lifespan: String,
    pub high_water: usize,
    /// `--websocket-max-message-size`, `--websocket-ping-interval`/`-timeout`.
    pub websocket: ferricorn_server::websocket::WsOptions,
    /// `(worker, pre_request, post_request)` when the config file defines either hook.
    pub request_hooks: Option<Py<PyAny>>,
    /// `--asgi-disconnect-grace-period`, seconds.
    pub disconnect_grace: f64,
    /// `--forwarded-allow-ips`: the proxies whose `X-Forwarded-For` sets `client`.
    pub forwarded_allow: ferricorn_core::proxy::AllowList,
}

/// What the loop thread needs to start a request.
pub(crate) struct LoopCtx {
    pub app: Py<PyAny>,
    pub run_http: Py<PyAny>,
    pub create_task: Py<PyAny>,
    /// `asyncio.Task` and the loop's `get_task_factory` (see `TaskMaker`).
    pub task_type: Py<PyAny>,
    /// `Task`'s keyword arguments before Python 3.12: the loop and a name (see
    /// `task_kwargs`).
    pub task_kwargs: Option<Py<PyDict>>,
    pub get_task_factory: Py<PyAny>,
    pub create_future: Py<PyAny>,
    pub state: Py<PyDict>,
    pub root_path: String,
    /// `cancel_later(task)` cancels an app task `--asgi-disconnect-grace-period`
    /// seconds after its client left, if it still runs (see `_asgi.cancel_later`).
    pub cancel_later: Py<PyAny>,
    /// See `scope::templates`.
    pub scope_template: Py<PyDict>,
    pub extensions_templates: [Py<PyDict>; 2],
    pub high_water: usize,
    pub websocket: ferricorn_server::websocket::WsOptions,
    pub forwarded_allow: ferricorn_core::proxy::AllowList,
    pub mailbox: Arc<Mailbox>,
    /// Where HTTP responses go back to the I/O thread.
    pub replies: Arc<crate::replies::Replies>,
}

/// The loop's reader callback for the eventfd.
#[pyclass(module = "ferricorn")]
pub struct Drain {
    ctx: Option<Arc<LoopCtx>>,
    mailbox: Arc<Mailbox>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.mailbox.reset();
        let Some(ctx) = &self.ctx else { return };
        let mut tasks = TaskMaker { ctx, direct: None };
        while let Ok(event) = self.mailbox.rx.try_recv() {
            match event {
                Event::Request(job) => {
                    // The request is read in its box (a move would copy its 472 bytes).
                    let (reply, shared) = (job.1, job.2);
                    if let Err(e) = start_request(py, &mut tasks, &job.0, reply, shared) {
                        ferricorn_core::error!(
                            "Error starting the ASGI application\n{}",
                            crate::pyhelpers::format_exception(py, &e)
                        );
                    }
                }
                Event::Wake(shared) => cycle::wake(py, ctx, &shared),
                Event::WsWake(shared) => websocket::wake(py, &shared),
                Event::WebSocket(job) => {
                    let (req, reply, handshake, shared, rt) = *job;
                    if let Err(e) = start_websocket(py, &mut tasks, req, reply, handshake, shared, rt) {
                        ferricorn_core::error!(
                            "Error starting the ASGI application\n{}",
                            crate::pyhelpers::format_exception(py, &e)
                        );
                    }
                }
            }
        }
    }
}

/// Makes the app's tasks for one drained batch. With no task factory set,
/// `loop.create_task(coro)` is `Task(coro, loop=loop)` (asyncio and uvloop alike):
/// calling `Task(coro)` directly, which finds the running loop itself, skips the loop's
/// method and the keyword dict it builds (~1,700 instructions per request on uvloop).
/// A factory the app installed is still used; none can be installed while a batch is
/// drained, since no task runs meanwhile, so one look per batch is enough.
struct TaskMaker<'a> {
    ctx: &'a Arc<LoopCtx>,
    direct: Option<bool>,
}

impl TaskMaker<'_> {
    fn spawn<'py>(&mut self, py: Python<'py>, coro: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let direct = match self.direct {
            Some(d) => d,
            None => *self
                .direct
                .insert(self.ctx.get_task_factory.bind(py).call0()?.is_none()),
        };
        if direct {
            let kwargs = self.ctx.task_kwargs.as_ref().map(|k| k.bind(py));
            self.ctx.task_type.bind(py).call((coro,), kwargs)
        } else {
            self.ctx.create_task.bind(py).call1((coro,))
        }
    }
}

fn start_request(
    py: Python<'_>,
    tasks: &mut TaskMaker<'_>,
    req: &Request,
    reply: Reply,
    shared: Arc<CycleShared>,
) -> PyResult<()> {
    let ctx = tasks.ctx;
    let scope = scope::http_scope(py, ctx, req)?;
    let cycle = Bound::new(
        py,
        HttpCycle::new(
            ctx.clone(),
            shared.clone(),
            reply,
            req.head.method == http::Method::HEAD,
            req.early_hints.clone(),
        ),
    )?;
    let coro = ctx.run_http.bind(py).call1((ctx.app.bind(py), scope, cycle))?;
    let task = tasks.spawn(py, coro)?;
    shared.set_task(py, ctx, task.unbind());
    Ok(())
}

fn start_websocket(
    py: Python<'_>,
    tasks: &mut TaskMaker<'_>,
    req: Request,
    reply: Reply,
    handshake: ferricorn_server::websocket::Handshake,
    shared: Arc<websocket::WsShared>,
    rt: tokio::runtime::Handle,
) -> PyResult<()> {
    let ctx = tasks.ctx;
    let scope = scope::websocket_scope(py, ctx, &req, &handshake.subprotocols)?;
    let cycle = Bound::new(py, websocket::WsCycle::new(ctx.clone(), shared, reply, handshake, rt))?;
    let coro = ctx.run_http.bind(py).call1((ctx.app.bind(py), scope, cycle))?;
    tasks.spawn(py, coro)?;
    Ok(())
}

/// Before Python 3.12 a task made without its loop finds the running loop with a
/// `getpid()` system call (the check that the loop belongs to this process), and a task
/// without a name formats `Task-<n>` as it is made, with `sprintf` (~1,000
/// instructions, a fifth of the task's cost). 3.12 checks neither way: it resets the
/// running loop in a forked child instead, and formats names when asked. Before 3.12,
/// requests' tasks get the loop and the name `ferricorn.request` from one keyword dict
/// made here (read, never changed, by `Task.__init__`).
fn task_kwargs(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyDict>>> {
    if py.version_info() >= (3, 12) {
        return Ok(None);
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("loop", event_loop)?;
    kwargs.set_item("name", pyo3::intern!(py, "ferricorn.request"))?;
    Ok(Some(kwargs.unbind()))
}

/// When the event loop last got control back (ms since the epoch), beaten from the loop
/// every half second. A loop that stops beating is stuck in blocking code: the worker
/// reports the last beat as its oldest call in flight, so the master's `--timeout`
/// aborts the worker (with every thread's stack in the log) as it does for WSGI.
#[pyclass(module = "ferricorn", frozen)]
#[derive(Default)]
pub struct LoopPulse(std::sync::atomic::AtomicU64);

#[pymethods]
impl LoopPulse {
    fn beat(&self) {
        self.0.store(
            ferricorn_arbiter::heartbeat::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl LoopPulse {
    /// For the worker heartbeat: 0 while the loop beats, else its last beat.
    pub fn stuck_since(&self) -> u64 {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        let now = ferricorn_arbiter::heartbeat::now_ms();
        // Two missed beats: busy, not merely between ticks.
        if last != 0 && now.saturating_sub(last) > 1_000 {
            last
        } else {
            0
        }
    }
}

/// The loop thread and lifespan of an ASGI worker.
pub struct AsgiRuntime {
    loop_thread: Py<PyAny>,
    lifespan: Py<PyAny>,
}

impl AsgiRuntime {
    /// Runs the lifespan shutdown, bounded by `timeout`.
    pub fn shutdown(&self, py: Python<'_>, timeout: std::time::Duration) {
        let lifespan = self.lifespan.bind(py);
        let speaks = supports_lifespan(lifespan);
        if speaks {
            ferricorn_core::info!("Waiting for application shutdown.");
        }
        let result = lifespan.call_method0("shutdown").and_then(|coro| {
            self.loop_thread
                .bind(py)
                .call_method1("submit", (coro, timeout.as_secs_f64()))
        });
        match result {
            Ok(msg) if !msg.is_none() => ferricorn_core::error!("Application shutdown failed:\n{msg}"),
            Ok(_) if speaks => ferricorn_core::info!("Application shutdown complete."),
            Ok(_) => {}
            Err(e) => ferricorn_core::error!("Application shutdown failed: {e}"),
        }
    }
}

/// Whether the app takes part in the lifespan protocol (not `off`, and in `auto` mode it
/// did not fail on the lifespan scope).
fn supports_lifespan(lifespan: &Bound<'_, PyAny>) -> bool {
    lifespan
        .getattr("supported")
        .and_then(|v| v.is_truthy())
        .unwrap_or(false)
}

pub struct AsgiBridge {
    mailbox: Arc<Mailbox>,
    replies: Arc<crate::replies::Replies>,
    pulse: Py<LoopPulse>,
}

impl AsgiBridge {
    pub fn pulse(&self) -> Py<LoopPulse> {
        Python::attach(|py| self.pulse.clone_ref(py))
    }
}

/// Starts the loop thread and runs the lifespan startup. `Err` carries a message when
/// the application's startup failed (the worker must not serve).
pub fn start(py: Python<'_>, app: Py<PyAny>, cfg: AsgiConfig) -> Result<(AsgiBridge, AsgiRuntime), String> {
    let err = |e: PyErr| crate::pyhelpers::format_exception(py, &e);
    let helpers = py.import("ferricorn._asgi").map_err(err)?;
    let app = helpers.getattr("as_asgi3").and_then(|f| f.call1((app,))).map_err(err)?;
    let mailbox = Arc::new(Mailbox::new().map_err(|e| e.to_string())?);
    let replies = crate::replies::Replies::new();
    let drain = Bound::new(
        py,
        Drain {
            ctx: None,
            mailbox: mailbox.clone(),
        },
    )
    .map_err(err)?;
    let pulse = Py::new(py, LoopPulse::default()).map_err(err)?;
    let loop_thread = helpers
        .getattr("LoopThread")
        .and_then(|c| {
            c.call1((
                cfg.loop_kind.as_str(),
                mailbox.efd.as_raw_fd(),
                drain.clone(),
                pulse.clone_ref(py),
            ))
        })
        .map_err(err)?;
    let event_loop = loop_thread.getattr("loop").map_err(err)?;
    let state = PyDict::new(py);
    let (scope_template, extensions_templates) = scope::templates(py, &cfg.root_path).map_err(err)?;
    let ctx = LoopCtx {
        scope_template,
        extensions_templates,
        app: app.clone().unbind(),
        run_http: match &cfg.request_hooks {
            Some(h) => helpers
                .getattr("hooked_run_http")
                .and_then(|f| f.call1(h.bind(py).cast::<pyo3::types::PyTuple>()?.clone()))
                .map_err(err)?
                .unbind(),
            None => helpers.getattr("run_http").map_err(err)?.unbind(),
        },
        create_task: event_loop.getattr("create_task").map_err(err)?.unbind(),
        task_type: py
            .import("asyncio")
            .and_then(|m| m.getattr("Task"))
            .map_err(err)?
            .unbind(),
        task_kwargs: task_kwargs(py, &event_loop).map_err(err)?,
        get_task_factory: event_loop.getattr("get_task_factory").map_err(err)?.unbind(),
        cancel_later: helpers
            .getattr("cancel_later")
            .and_then(|f| f.call1((event_loop.clone(), cfg.disconnect_grace)))
            .map_err(err)?
            .unbind(),
        create_future: event_loop.getattr("create_future").map_err(err)?.unbind(),
        state: state.clone().unbind(),
        root_path: cfg.root_path.clone(),
        high_water: cfg.high_water,
        websocket: cfg.websocket,
        forwarded_allow: cfg.forwarded_allow.clone(),
        mailbox: mailbox.clone(),
        replies: replies.clone(),
    };
    drain.borrow_mut().ctx = Some(Arc::new(ctx));
    loop_thread.call_method0("start").map_err(err)?;
    let lifespan = helpers
        .getattr("Lifespan")
        .and_then(|c| c.call1((app, cfg.lifespan.as_str(), state)))
        .map_err(err)?;
    // uvicorn's lines (Gunicorn's UvicornWorker shows them in the error log).
    let speaks_lifespan = cfg.lifespan != "off";
    if speaks_lifespan {
        ferricorn_core::info!("Waiting for application startup.");
    }
    let failure = lifespan
        .call_method0("startup")
        .and_then(|coro| loop_thread.call_method1("submit", (coro,)))
        .map_err(err)?;
    if !failure.is_none() {
        return Err(failure.to_string());
    }
    if speaks_lifespan {
        if supports_lifespan(&lifespan) {
            ferricorn_core::info!("Application startup complete.");
        } else {
            ferricorn_core::info!("ASGI 'lifespan' protocol appears unsupported.");
        }
    }
    Ok((
        AsgiBridge {
            mailbox,
            replies,
            pulse,
        },
        AsgiRuntime {
            loop_thread: loop_thread.unbind(),
            lifespan: lifespan.unbind(),
        },
    ))
}

impl App for AsgiBridge {
    fn call(&self, mut req: Request) -> ferricorn_server::Reply {
        if req.head.headers.contains_key(http::header::UPGRADE) {
            if let Some(resp) = ferricorn_server::websocket::refusal(&req.head) {
                return ferricorn_server::Reply::Ready(resp);
            }
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if let Some(handshake) = ferricorn_server::websocket::Handshake::take(&mut req.head) {
            let shared = websocket::WsShared::new();
            let rt = tokio::runtime::Handle::current();
            self.mailbox
                .post(Event::WebSocket(Box::new((req, reply, handshake, shared, rt))));
            return ferricorn_server::Reply::Channel(rx);
        }
        self.replies.ensure_pump();
        let body = std::mem::replace(&mut req.body, ferricorn_server::RequestBody::empty());
        let shared = CycleShared::new(body, &self.mailbox, req.client_gone.clone());
        // hyper drops this future when the client leaves before the response starts:
        // the app then gets http.disconnect (and, after the grace period, cancelled).
        let mut gone = cycle::GoneOnDrop(Some((shared.clone(), self.mailbox.clone())));
        self.mailbox
            .post_batched(Event::Request(Box::new((req, reply, shared))));
        ferricorn_server::Reply::Later(Box::pin(async move {
            let resp = ferricorn_server::answer(rx).await;
            gone.disarm();
            resp
        }))
    }
}
