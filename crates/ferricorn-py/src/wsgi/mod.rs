//! The WSGI (PEP 3333) bridge.
//!
//! Requests arrive from the front end on a channel; `threads` OS threads take them one
//! at a time, attach to the interpreter once per request, build the environ, call the
//! app and hand the response back (in one piece when the app returns a list, through a
//! byte-budgeted pipe otherwise). Waiting for the socket always happens detached.

mod call;
mod environ;
mod errors;
mod file;
mod input;
mod response;

pub use errors::ErrorStream;
pub use file::FileWrapper;
pub use input::InputStream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferricorn_core::settings::Settings;
use ferricorn_server::{error_page, App, BoxFuture, Request, ResponseBody};
use pyo3::prelude::*;

/// Per-worker constants of the environ.
pub struct WsgiConfig {
    pub script_name: String,
    pub multithread: bool,
    pub multiprocess: bool,
    /// `header_map = dangerous`: map headers with `_` instead of dropping them.
    pub map_underscore_headers: bool,
    pub sendfile: bool,
    /// Queued response bytes before an app thread waits for the client.
    pub high_water: usize,
}

/// The mount prefix: `--root-path`, else the `SCRIPT_NAME` environment variable.
pub fn script_name(py: Python<'_>, s: &Settings) -> String {
    let script_name = match s.str("root_path").filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => crate::pyhelpers::get_environ(py, "SCRIPT_NAME").unwrap_or_default(),
    };
    script_name.trim_end_matches('/').to_string()
}

impl WsgiConfig {
    pub fn from_settings(py: Python<'_>, s: &Settings) -> Self {
        Self {
            script_name: script_name(py, s),
            multithread: s.int("threads") > 1,
            multiprocess: s.int("workers") > 1,
            map_underscore_headers: s.str("header_map") == Some("dangerous"),
            sendfile: s.bool("sendfile"),
            high_water: 1 << 20,
        }
    }
}

pub(crate) struct Job {
    req: Request,
    reply: tokio::sync::oneshot::Sender<http::Response<ResponseBody>>,
}

pub struct WsgiBridge {
    jobs: crossbeam_channel::Sender<Job>,
    clock: Arc<CallClock>,
}

/// When each app thread's current call started (ms since the epoch; 0 = idle), for the
/// heartbeat the master checks against `timeout`.
pub struct CallClock(Vec<AtomicU64>);

thread_local! {
    /// This app thread's entry in its worker's clock.
    static MY_CLOCK: std::cell::RefCell<Option<(Arc<CallClock>, usize)>> = const { std::cell::RefCell::new(None) };
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
    pub errors: Py<ErrorStream>,
    pub file_wrapper: Py<PyAny>,
}

impl WsgiBridge {
    pub fn start(py: Python<'_>, app: Py<PyAny>, threads: usize, cfg: WsgiConfig) -> PyResult<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let shared = Arc::new(Shared {
            app,
            cfg,
            errors: Py::new(py, ErrorStream)?,
            file_wrapper: py.get_type::<FileWrapper>().into_any().unbind(),
        });
        let clock = Arc::new(CallClock((0..threads).map(|_| AtomicU64::new(0)).collect()));
        for i in 0..threads {
            let rx = rx.clone();
            let shared = shared.clone();
            let clock = clock.clone();
            std::thread::Builder::new()
                .name(format!("ferricorn-app-{i}"))
                .spawn(move || {
                    MY_CLOCK.with(|c| *c.borrow_mut() = Some((clock.clone(), i)));
                    while let Ok(job) = rx.recv() {
                        clock.0[i].store(ferricorn_arbiter::heartbeat::now_ms(), Ordering::Relaxed);
                        Python::attach(|py| call::run(py, &shared, job));
                        clock.0[i].store(0, Ordering::Relaxed);
                    }
                })
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        }
        Ok(Self { jobs: tx, clock })
    }

    pub fn clock(&self) -> Arc<CallClock> {
        self.clock.clone()
    }
}

impl App for WsgiBridge {
    fn call(&self, req: Request) -> BoxFuture<http::Response<ResponseBody>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = self.jobs.send(Job { req, reply });
        Box::pin(async move {
            if sent.is_err() {
                return error_page::response(500, "application threads are gone", true);
            }
            rx.await
                .unwrap_or_else(|_| error_page::response(500, "the application did not respond", true))
        })
    }
}
