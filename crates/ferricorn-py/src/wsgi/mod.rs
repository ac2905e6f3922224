//! The WSGI (PEP 3333) bridge.
//!
//! Requests arrive from the front end on a channel; `threads` OS threads take them one
//! at a time, attach to the interpreter once per request, build the environ, call the
//! app and hand the response back (in one piece when the app returns a list, through a
//! byte-budgeted pipe otherwise). Waiting for the socket always happens detached.

mod call;
mod early_hints;
mod environ;
mod errors;
mod file;
mod hooks;
mod input;
mod response;

pub use errors::ErrorStream;
pub use file::FileWrapper;
pub use hooks::RequestHooks;
pub use input::{EmptyInput, InputStream};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::replies::{Replies, ReplyTx};
use ferricorn_core::settings::Settings;
use ferricorn_server::{error_page, App, Reply, Request};
use pyo3::prelude::*;
use response::Handover;

/// Per-worker constants of the environ.
pub struct WsgiConfig {
    pub script_name: String,
    pub multithread: bool,
    pub multiprocess: bool,
    /// `--forwarder-headers`: underscore headers a trusted proxy may set.
    pub forwarder_headers: ferricorn_core::proxy::ForwarderHeaders,
    pub sendfile: bool,
    /// Queued response bytes before an app thread waits for the client.
    pub high_water: usize,
    /// `pre_request` / `post_request`, when the config file defines them.
    pub hooks: Option<RequestHooks>,
    /// With `--threads 1`, run complete requests on the I/O thread. Off with
    /// `--request-deadline` and `--max-queued`: the I/O thread must stay free to answer
    /// the deadline or shed the next requests.
    pub inline: bool,
    /// The `{var}e` access-log atoms only the app's environ holds (lower case); empty
    /// for most formats.
    pub access_environ: Arc<[String]>,
}

/// The mount prefix: the `SCRIPT_NAME` environment variable, as in Gunicorn.
/// `--root-path` is ASGI's (Gunicorn 27 ignores it for WSGI apps).
pub fn script_name(py: Python<'_>) -> String {
    let script_name = crate::pyhelpers::get_environ(py, "SCRIPT_NAME").unwrap_or_default();
    script_name.trim_end_matches('/').to_string()
}

impl WsgiConfig {
    pub fn from_settings(py: Python<'_>, s: &Settings) -> Self {
        Self {
            script_name: script_name(py),
            multithread: s.int("threads") > 1,
            multiprocess: s.int("workers") > 1,
            forwarder_headers: ferricorn_core::proxy::ForwarderHeaders::parse(s.str("forwarder_headers").unwrap_or("")),
            sendfile: s.bool("sendfile"),
            high_water: 1 << 20,
            hooks: None,
            inline: s.int("request_deadline") == 0 && s.int("max_queued") == 0,
            access_environ: if ferricorn_core::log::access_enabled() && !s.bool("access_log_json") {
                let format = s
                    .str("access_log_format")
                    .unwrap_or(ferricorn_core::access_log::DEFAULT_FORMAT);
                ferricorn_core::access_log::AccessFormat::compile(format)
                    .environ_keys()
                    .into()
            } else {
                Arc::from([])
            },
        }
    }
}

pub(crate) struct Job {
    req: Request,
    reply: ReplyTx,
}

/// What the app threads take from their queue.
pub(crate) enum Work {
    Request(Box<Job>),
    Continue(call::Continuation),
}

pub struct WsgiBridge {
    jobs: crossbeam_channel::Sender<Work>,
    clock: Arc<CallClock>,
    replies: Arc<Replies>,
    /// Runs complete requests on the I/O thread (`threads == 1`).
    inline: Option<Arc<InlineRunner>>,
}

/// How long the I/O thread runs queued apps before it lets the connections whose
/// responses are ready write them.
const INLINE_BATCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);

/// `--threads 1`: complete requests run on the I/O thread, in batches. The connections
/// made ready by one `epoll` round queue their requests; one task then runs them all
/// under one GIL acquisition, and the connections write their responses after it. Running
/// each app as its connection is polled instead alternates hyper's and the interpreter's
/// code and data on the core for every request, and each evicts the other from the caches.
struct InlineRunner {
    shared: Arc<Shared>,
    clock: Arc<CallClock>,
    /// Where a response that is not a plain list is finished.
    jobs: crossbeam_channel::Sender<Work>,
    queue: std::sync::Mutex<VecDeque<Job>>,
    ready: tokio::sync::Notify,
    spawned: std::sync::atomic::AtomicBool,
}

/// When each app thread's current call started (ms since the epoch; 0 = idle), for the
/// heartbeat the master checks against `timeout`.
pub struct CallClock(Vec<AtomicU64>);

thread_local! {
    /// This app thread's entry in its worker's clock.
    static MY_CLOCK: std::cell::RefCell<Option<(Arc<CallClock>, usize)>> = const { std::cell::RefCell::new(None) };
    /// Set while the I/O thread runs the app inline: nothing may wait for the client then.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The connection whose request the I/O thread is running inline (-1: none), so that a
/// timeout can still answer it (see `answer_stuck_inline_call`).
static INLINE_CONN: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// On a worker timeout or quick stop with the app on the I/O thread, the loop cannot write the
/// 500 Gunicorn sends; write it on the socket directly. Nothing of this response was
/// written yet: an inline call hands its response over only when it returns.
pub fn answer_stuck_inline_call() {
    let fd = INLINE_CONN.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return;
    }
    // Gunicorn's page for an app that failed (its handle_error: no message).
    let resp = ferricorn_server::error_page::raw(500, "");
    // SAFETY: the descriptor belongs to a connection the stuck I/O thread keeps open; the
    // process exits right after this.
    unsafe {
        libc::write(fd, resp.as_ptr().cast(), resp.len());
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Whether the current call runs on the I/O thread (see `WsgiBridge::call`).
pub fn on_io_thread() -> bool {
    ON_IO_THREAD.with(|f| f.get())
}

/// Runs `f` (a wait for the client: body bytes, or room in the response pipe) with this
/// thread's call clock stopped, so `timeout` measures the app's own time, not a slow
/// client's. The clock restarts when the wait ends.
pub fn waiting_for_client<T>(f: impl FnOnce() -> T) -> T {
    let mine = MY_CLOCK.with(|c| c.borrow().clone());
    if let Some((clock, i)) = &mine {
        clock.0[*i].store(0, Ordering::Relaxed);
    }
    let out = f();
    if let Some((clock, i)) = &mine {
        clock.0[*i].store(ferricorn_arbiter::heartbeat::now_ms(), Ordering::Relaxed);
    }
    out
}

impl CallClock {
    /// Start of the oldest call in flight, or 0.
    pub fn oldest(&self) -> u64 {
        self.0
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .filter(|t| *t != 0)
            .min()
            .unwrap_or(0)
    }
}

pub(crate) struct Shared {
    pub app: Py<PyAny>,
    pub cfg: WsgiConfig,
    /// What every environ starts as (see `environ::template`).
    pub environ_template: Py<pyo3::types::PyDict>,
    /// The template with `SERVER_NAME`/`SERVER_PORT` set, per local address served.
    pub local_templates: environ::LocalTemplates,
    /// How app threads hand their responses to the I/O thread.
    pub replies: Arc<Replies>,
}

impl WsgiBridge {
    pub fn start(py: Python<'_>, app: Py<PyAny>, threads: usize, cfg: WsgiConfig) -> PyResult<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let cfg_inline = cfg.inline;
        let errors = Py::new(py, ErrorStream)?;
        let file_wrapper = py.get_type::<FileWrapper>().into_any().unbind();
        // Requests that cannot have early hints (HTTP/1.0, HTTP/2) keep this no-op one.
        let no_hints = Bound::new(py, early_hints::EarlyHintsFn::none())?;
        let empty_input = Py::new(py, EmptyInput)?;
        let environ_template = environ::template(
            py,
            &cfg,
            errors.bind(py).as_any(),
            file_wrapper.bind(py),
            no_hints.as_any(),
            empty_input.bind(py).as_any(),
        )?;
        let shared = Arc::new(Shared {
            app,
            cfg,
            environ_template,
            local_templates: Default::default(),
            replies: Replies::new(),
        });
        // One entry per app thread, plus one for the I/O thread's inline calls.
        let clock = Arc::new(CallClock((0..=threads).map(|_| AtomicU64::new(0)).collect()));
        for i in 0..threads {
            let rx = rx.clone();
            let shared = shared.clone();
            let clock = clock.clone();
            std::thread::Builder::new()
                .name(format!("ferricorn-app-{i}"))
                .spawn(move || {
                    MY_CLOCK.with(|c| *c.borrow_mut() = Some((clock.clone(), i)));
                    // Attach once for the thread's whole life and detach only while
                    // waiting for work: re-attaching per request would create and destroy
                    // a Python thread state (and its frame stack) every time.
                    Python::attach(|py| {
                        while let Ok(work) = py.detach(|| rx.recv()) {
                            clock.0[i].store(ferricorn_arbiter::heartbeat::now_ms(), Ordering::Relaxed);
                            match work {
                                Work::Request(job) => {
                                    let Job { mut req, reply } = *job;
                                    if abandoned(&reply) {
                                        clock.0[i].store(0, Ordering::Relaxed);
                                        continue;
                                    }
                                    let handover = Handover::Channel(reply, shared.replies.clone());
                                    call::run(py, &shared, &mut req, handover, false);
                                }
                                Work::Continue(cont) => call::resume(py, &shared, cont),
                            }
                            clock.0[i].store(0, Ordering::Relaxed);
                        }
                    });
                })
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        }
        let inline = (threads == 1 && cfg_inline).then(|| {
            Arc::new(InlineRunner {
                shared: shared.clone(),
                clock: clock.clone(),
                jobs: tx.clone(),
                queue: std::sync::Mutex::new(VecDeque::new()),
                ready: tokio::sync::Notify::new(),
                spawned: std::sync::atomic::AtomicBool::new(false),
            })
        });
        Ok(Self {
            jobs: tx,
            clock,
            replies: shared.replies.clone(),
            inline,
        })
    }

    pub fn clock(&self) -> Arc<CallClock> {
        self.clock.clone()
    }
}

impl InlineRunner {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // Nothing panics while holding it; a poisoned queue is still a valid queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a complete request; gives it back when there is no runtime to run the
    /// queue on.
    fn enqueue(self: &Arc<Self>, job: Job) -> Option<Job> {
        if !self.spawned.load(Ordering::Relaxed) {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return Some(job);
            };
            self.spawned.store(true, Ordering::Relaxed);
            rt.spawn(self.clone().run_batches());
            // For the responses that app threads finish (see `run_one`).
            self.shared.replies.ensure_pump();
        }
        let first = {
            let mut queue = self.queue();
            queue.push_back(job);
            queue.len() == 1
        };
        if first {
            self.ready.notify_one();
        }
        None
    }

    async fn run_batches(self: Arc<Self>) {
        // Swapped with the queue, so that both keep their capacity. What a batch leaves
        // when its time is up stays at its front and runs first, before newer requests.
        let mut batch = VecDeque::new();
        loop {
            if batch.is_empty() {
                std::mem::swap(&mut batch, &mut *self.queue());
            }
            if batch.is_empty() {
                self.ready.notified().await;
                continue;
            }
            Python::attach(|py| {
                let started = std::time::Instant::now();
                while let Some(job) = batch.pop_front() {
                    // This task serves every later inline request: a bug that panics in
                    // one request must not take it down. The request's reply sender is
                    // dropped by the unwinding, which its connection answers with a 500.
                    let run = std::panic::AssertUnwindSafe(|| self.run_one(py, job));
                    if std::panic::catch_unwind(run).is_err() {
                        self.call_ended();
                        ferricorn_core::error!("Error handling request: a panic in the WSGI bridge");
                    }
                    if started.elapsed() >= INLINE_BATCH_BUDGET {
                        break;
                    }
                }
            });
            if !batch.is_empty() {
                tokio::task::yield_now().await;
            }
        }
    }

    /// The I/O thread's call is over (returned or panicked).
    fn call_ended(&self) {
        INLINE_CONN.store(-1, Ordering::Release);
        ON_IO_THREAD.with(|f| f.set(false));
        self.clock.0[self.clock.0.len() - 1].store(0, Ordering::Relaxed);
    }

    /// One request on the I/O thread. Only complete requests come here, so the app never
    /// waits for the client; a response that is not a plain list is finished by an app
    /// thread.
    fn run_one(&self, py: Python<'_>, job: Job) {
        let Job { mut req, reply } = job;
        if abandoned(&reply) {
            return;
        }
        let io_index = self.clock.0.len() - 1;
        MY_CLOCK.with(|c| {
            if c.borrow().is_none() {
                *c.borrow_mut() = Some((self.clock.clone(), io_index));
            }
        });
        self.clock.0[io_index].store(ferricorn_arbiter::heartbeat::now_ms(), Ordering::Relaxed);
        ON_IO_THREAD.with(|f| f.set(true));
        INLINE_CONN.store(req.conn.fd, Ordering::Release);
        let (responder, mut cont) =
            ferricorn_server::in_call(|| call::run(py, &self.shared, &mut req, Handover::Keep, true));
        // An app thread finishes this response: the request's call slot goes with it.
        if let Some(cont) = cont.as_mut() {
            cont.keep_call_slot(req.call_slot.take());
        }
        // A sender dropped unanswered is answered `not_answered` by the front end.
        if let Some(responder) = responder {
            let mut responder = responder.borrow_mut();
            match responder.take_kept() {
                Some(resp) => {
                    // The client may be gone: nobody to answer then.
                    let _ = reply.send(resp);
                }
                None if cont.is_some() => responder.hand_over_later(reply, self.shared.replies.clone()),
                None => {}
            }
        }
        self.call_ended();
        if let Some(cont) = cont {
            if let Err(e) = self.jobs.send(Work::Continue(cont)) {
                // The app threads are gone (shutdown); dropping the continuation drops the
                // response sender, which the front end turns into an error.
                drop(e);
            }
        }
    }
}

/// The request's answer is no longer awaited: its client left (a connection closed, an
/// HTTP/2 stream reset) while the request waited in the queue. Running the app for it
/// would only delay everyone else; a burst of streams opened and reset at once (HTTP/2
/// "rapid reset" past hyper's own guard) would otherwise hold every thread.
fn abandoned(reply: &ReplyTx) -> bool {
    if reply.is_closed() {
        ferricorn_core::debug!("Skipped a queued request: its client is gone");
        return true;
    }
    false
}

impl App for WsgiBridge {
    fn call(&self, req: Request) -> Reply {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job { req, reply };
        let job = match &self.inline {
            Some(inline) if job.req.body.is_complete() => match inline.enqueue(job) {
                None => return Reply::Channel(rx),
                Some(job) => job,
            },
            _ => job,
        };
        self.replies.ensure_pump();
        match self.jobs.send(Work::Request(Box::new(job))) {
            Ok(()) => Reply::Channel(rx),
            Err(_) => Reply::Ready(error_page::response(500, "application threads are gone", true)),
        }
    }
}
