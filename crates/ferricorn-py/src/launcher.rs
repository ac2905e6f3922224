//! Start-up of the master and the life of a worker.
//!
//! Fork order (see ARCHITECTURE.md): the master binds, optionally preloads the app, and
//! forks while attached to the interpreter, bracketed by `PyOS_BeforeFork` /
//! `PyOS_AfterFork_*`. It never starts a thread or a runtime. The worker resets signals,
//! runs `post_fork`, loads the app, and only then builds its thread pool and runtime.

use std::io::Write;
use std::time::Duration;

use ferricorn_arbiter::sockets::{bind_all, dup_fd, BindOptions, BoundListener};
use ferricorn_arbiter::{Arbiter, ArbiterConfig, ArbiterError, Launcher, WorkerExit};
use ferricorn_core::bind::BindAddr;
use ferricorn_core::proxy::AllowList;
use ferricorn_core::request::Limits;
use ferricorn_core::settings::Settings;
use ferricorn_server::{Listener, ServeOutcome, ServerConfig};
use nix::unistd::Pid;
use pyo3::prelude::*;

use crate::cli::{load_app, Fatal};
use crate::hooks::Hooks;
use crate::wsgi::{WsgiBridge, WsgiConfig};

pub struct Boot {
    pub settings: Settings,
    pub hooks: Hooks,
    pub app_uri: String,
    /// The original command line, re-read on SIGHUP.
    pub argv: Vec<String>,
}

struct PyLauncher {
    boot: Boot,
    listeners: Vec<BoundListener>,
    preloaded: Option<Py<PyAny>>,
}

pub fn start(py: Python<'_>, boot: Boot) -> Result<i32, Fatal> {
    let s = &boot.settings;
    boot.hooks
        .call_strict(py, "on_starting", (boot.hooks.server(py),))
        .map_err(|e| Fatal {
            code: 1,
            message: format!(
                "Error in on_starting hook:\n{}",
                crate::pyhelpers::format_exception(py, &e)
            ),
        })?;
    ferricorn_core::info!("Starting ferricorn {}", ferricorn_core::VERSION);
    let addrs: Vec<BindAddr> = s.list("bind").iter().filter_map(|b| BindAddr::parse(b).ok()).collect();
    let opts = BindOptions {
        backlog: s.int("backlog").clamp(1, i32::MAX as i64) as i32,
        reuse_port: s.bool("reuse_port"),
        umask: s.int("umask") as u32,
        attempts: 5,
    };
    let listeners = match bind_all(&addrs, &opts) {
        Ok(l) => l,
        Err(e) => {
            ferricorn_core::error!("{e}");
            return Err(Fatal {
                code: 1,
                message: String::new(),
            });
        }
    };
    for l in &listeners {
        ferricorn_core::info!("Listening at: {} ({})", l.display(), std::process::id());
    }
    let threads = s.int("threads");
    ferricorn_core::info!("Using worker: {}", if threads > 1 { "gthread" } else { "sync" });

    let preloaded = if s.bool("preload_app") {
        match load_app(py, &boot.app_uri) {
            Ok(app) => {
                boot.hooks.set_server_app(py, &app);
                Some(app)
            }
            Err(e) => {
                ferricorn_core::error!("{}", e.message);
                ferricorn_arbiter::sockets::cleanup(&listeners);
                return Err(Fatal {
                    code: e.code,
                    message: String::new(),
                });
            }
        }
    } else {
        None
    };
    let cfg = ArbiterConfig {
        workers: s.int("workers").max(1) as usize,
        graceful_timeout: Duration::from_secs(s.int("graceful_timeout").max(0) as u64),
    };
    let launcher = PyLauncher {
        boot,
        listeners,
        preloaded,
    };
    let mut arbiter = Arbiter::new(cfg, launcher).map_err(|e| Fatal {
        code: 1,
        message: format!("Error: {e}"),
    })?;
    {
        let l = arbiter.launcher();
        l.boot.hooks.call(py, "when_ready", (l.boot.hooks.server(py),));
    }
    let code = arbiter.run();
    let l = arbiter.launcher();
    ferricorn_core::info!("Shutting down: Master");
    l.boot.hooks.call(py, "on_exit", (l.boot.hooks.server(py),));
    ferricorn_arbiter::sockets::cleanup(&l.listeners);
    Ok(code)
}

impl Launcher for PyLauncher {
    fn spawn(&mut self, age: u64) -> Result<Pid, ArbiterError> {
        Python::attach(|py| {
            let hooks = &self.boot.hooks;
            if hooks.has("pre_fork") {
                if let Ok(w) = hooks.worker(py, 0, age) {
                    hooks.call(py, "pre_fork", (hooks.server(py), w));
                }
            }
            // SAFETY: called while attached, with no other thread in this process, as
            // CPython's fork protocol requires.
            unsafe { pyo3::ffi::PyOS_BeforeFork() };
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
                let code = run_worker(py, self, age);
                exit_now(py, code);
            }
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            if pid < 0 {
                return Err(ArbiterError::Fork(nix::Error::last()));
            }
            Ok(Pid::from_raw(pid))
        })
    }

    fn worker_exited(&mut self, exit: &WorkerExit) {
        Python::attach(|py| {
            let hooks = &self.boot.hooks;
            if hooks.has("child_exit") {
                if let Ok(w) = hooks.worker(py, exit.pid as u32, exit.age) {
                    hooks.call(py, "child_exit", (hooks.server(py), w));
                }
            }
        })
    }

    fn nworkers_changed(&mut self, new: usize, old: usize) {
        Python::attach(|py| {
            let hooks = &self.boot.hooks;
            let _ = hooks.server(py).setattr("num_workers", new);
            hooks.call(py, "nworkers_changed", (hooks.server(py), new, old));
        })
    }

    fn reload(&mut self) -> Option<usize> {
        Python::attach(|py| {
            // Re-read the config file and environment; new workers get the new settings.
            match crate::cli::resolve(py, &self.boot.argv) {
                Ok(Ok(resolved)) => match Hooks::new(py, &resolved.settings, resolved.objects) {
                    Ok(hooks) => {
                        let mut settings = resolved.settings;
                        if let Some(uri) = settings
                            .app_uri
                            .clone()
                            .or_else(|| settings.str("wsgi_app").map(str::to_string))
                        {
                            self.boot.app_uri = uri;
                        }
                        settings.app_uri = Some(self.boot.app_uri.clone());
                        self.boot.settings = settings;
                        self.boot.hooks = hooks;
                    }
                    Err(e) => ferricorn_core::error!("reload failed, keeping the old configuration: {e}"),
                },
                Ok(Err(_)) => {}
                Err(f) => ferricorn_core::error!("reload failed, keeping the old configuration: {}", f.message),
            }
            let hooks = &self.boot.hooks;
            hooks.call(py, "on_reload", (hooks.server(py),));
            Some(self.boot.settings.int("workers").max(1) as usize)
        })
    }

    fn reopen_logs(&mut self) {
        let _ = ferricorn_core::log::reopen();
    }
}

/// Flushes Python's stdio and leaves without running the master's cleanup.
fn exit_now(py: Python<'_>, code: i32) -> ! {
    for name in ["stdout", "stderr"] {
        if let Ok(stream) = py.import("sys").and_then(|s| s.getattr(name)) {
            let _ = stream.call_method0("flush");
        }
    }
    let _ = std::io::stderr().flush();
    // SAFETY: _exit is the documented way to leave a forked child.
    unsafe { libc::_exit(code) }
}

fn server_config(py: Python<'_>, s: &Settings, hooks: &Hooks) -> ServerConfig {
    let keepalive = s.int("keepalive");
    let timeout = s.int("timeout");
    ServerConfig {
        keepalive: (keepalive > 0).then(|| Duration::from_secs(keepalive as u64)),
        header_timeout: Duration::from_secs(30),
        limits: Limits::from_settings(
            s.int("limit_request_line"),
            s.int("limit_request_fields"),
            s.int("limit_request_field_size"),
            s.int("limit_request_body"),
        ),
        worker_connections: s.int("worker_connections").max(1) as usize,
        graceful_timeout: Duration::from_secs(s.int("graceful_timeout").max(0) as u64),
        prebuffer: 64 * 1024,
        body_read_timeout: (timeout > 0).then(|| Duration::from_secs(timeout as u64)),
        permit_unconventional_method: s.bool("permit_unconventional_http_method"),
        refuse_underscore_headers: s.str("header_map") == Some("refuse"),
        max_requests: max_requests(s),
        forwarded_allow: AllowList::parse(s.str("forwarded_allow_ips").unwrap_or("")).unwrap_or_default(),
        secure_scheme_headers: secure_scheme_headers(py, hooks),
    }
}

/// `secure_scheme_headers` from the config file (a dict), or Gunicorn's default.
fn secure_scheme_headers(py: Python<'_>, hooks: &Hooks) -> Vec<(http::HeaderName, String)> {
    let Some(obj) = hooks.object(py, "secure_scheme_headers") else {
        return ferricorn_core::proxy::default_secure_scheme_headers();
    };
    let Ok(map) = obj.extract::<std::collections::HashMap<String, String>>() else {
        ferricorn_core::warning!("secure_scheme_headers must be a dict of str to str; using the default");
        return ferricorn_core::proxy::default_secure_scheme_headers();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .ok()
                .map(|k| (k, v))
        })
        .collect()
}

fn max_requests(s: &Settings) -> u64 {
    let max = s.int("max_requests").max(0) as u64;
    let jitter = s.int("max_requests_jitter").max(0) as u64;
    if max == 0 {
        return 0;
    }
    if jitter == 0 {
        return max;
    }
    // Per-worker jitter; the pid and clock are plenty of entropy for staggering restarts.
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    max + seed % (jitter + 1)
}

/// The worker's whole life; returns its exit code.
fn run_worker(py: Python<'_>, launcher: &mut PyLauncher, age: u64) -> i32 {
    ferricorn_arbiter::signals::reset_in_child();
    let pid = std::process::id();
    ferricorn_core::info!("Booting worker with pid: {pid}");
    let boot = &launcher.boot;
    let hooks = &boot.hooks;
    let worker = match hooks.worker(py, pid, age) {
        Ok(w) => w,
        Err(e) => {
            ferricorn_core::error!("{e}");
            return ferricorn_arbiter::WORKER_BOOT_ERROR;
        }
    };
    hooks.call(py, "post_fork", (hooks.server(py), worker.clone()));

    let app = match &launcher.preloaded {
        Some(app) => app.clone_ref(py),
        None => match load_app(py, &boot.app_uri) {
            Ok(app) => app,
            Err(e) => {
                ferricorn_core::error!("Exception in worker process\n{}", e.message);
                return e.code;
            }
        },
    };
    let _ = worker.setattr("app", app.bind(py));
    hooks.call(py, "post_worker_init", (worker.clone(),));

    let mut listeners = Vec::new();
    for l in &launcher.listeners {
        let fd = match dup_fd(l.raw_fd()) {
            Ok(fd) => fd,
            Err(e) => {
                ferricorn_core::error!("can't use listener {}: {e}", l.display());
                return ferricorn_arbiter::WORKER_BOOT_ERROR;
            }
        };
        // SAFETY: `fd` is a fresh duplicate of a listening socket, owned from here on.
        match unsafe { Listener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) } {
            Ok(l) => listeners.push(l),
            Err(e) => {
                ferricorn_core::error!("can't use listener: {e}");
                return ferricorn_arbiter::WORKER_BOOT_ERROR;
            }
        }
    }
    let s = &boot.settings;
    let wsgi_cfg = WsgiConfig::from_settings(py, s);
    let threads = s.int("threads").max(1) as usize;
    let bridge = match WsgiBridge::start(py, app, threads, wsgi_cfg) {
        Ok(b) => b,
        Err(e) => {
            ferricorn_core::error!("can't start the application threads: {e}");
            return ferricorn_arbiter::WORKER_BOOT_ERROR;
        }
    };
    let config = server_config(py, s, hooks);
    let outcome = py.detach(|| ferricorn_server::serve(listeners, std::sync::Arc::new(bridge), config, |_| {}));
    match outcome {
        Ok(ServeOutcome::Quick) => {
            hooks.call(py, "worker_int", (worker.clone(),));
        }
        Ok(ServeOutcome::MaxRequests) => {
            ferricorn_core::info!("Autorestarting worker after current request.");
        }
        Ok(ServeOutcome::Graceful) => {}
        Err(e) => {
            ferricorn_core::error!("worker failed: {e}");
            return 1;
        }
    }
    ferricorn_core::info!("Worker exiting (pid: {pid})");
    hooks.call(py, "worker_exit", (hooks.server(py), worker));
    0
}
