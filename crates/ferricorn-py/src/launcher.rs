//! Start-up of the master and the life of a worker.
//!
//! Fork order (see ARCHITECTURE.md): the master binds, optionally preloads the app, and
//! forks while attached to the interpreter, bracketed by `PyOS_BeforeFork` /
//! `PyOS_AfterFork_*`. It never starts a thread or a runtime. The worker resets signals,
//! runs `post_fork`, loads the app, and only then builds its thread pool and runtime.

use std::io::Write;
use std::time::Duration;

use ferricorn_arbiter::heartbeat::Slot;
use ferricorn_arbiter::process::{Identity, Pidfile};
use ferricorn_arbiter::sockets::{bind_all, BindOptions, BoundListener};
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
    /// The bound addresses, kept after the listeners are closed (socket-file cleanup).
    addrs: Vec<ferricorn_core::bind::BindAddr>,
    preloaded: Option<Py<PyAny>>,
    identity: Identity,
    pidfile: Option<Pidfile>,
    tls: Option<std::sync::Arc<ferricorn_server::tls::TlsConfig>>,
    /// Set in a master started by USR2 until the old master is gone.
    parent_master: Option<i32>,
    proc_name: String,
}

/// The control socket's path (Gunicorn's default when unset; a relative path from the
/// working directory) and mode, unless `--no-control-socket`.
fn control_socket(s: &ferricorn_core::settings::Settings) -> Option<(std::path::PathBuf, u32)> {
    if s.bool("control_socket_disable") {
        return None;
    }
    let path = match s.str("control_socket").filter(|p| !p.is_empty()) {
        Some(p) => std::env::current_dir().unwrap_or_default().join(p),
        None => ferricorn_arbiter::control::default_path(),
    };
    let mode = u32::try_from(s.int("control_socket_mode")).unwrap_or(0o600);
    Some((path, mode))
}

/// Workers run as `user`/`group`: they (and the proxy in front) must be able to use the
/// socket files.
fn chown_unix_sockets(listeners: &[BoundListener], identity: &Identity) {
    for l in listeners {
        if let BindAddr::Unix(path) = &l.addr {
            let _ = nix::unistd::chown(path, identity.uid, identity.gid);
        }
    }
}

/// The log files go to the workers' user (`--user`/`--group`), as Gunicorn's logger
/// chowns them, so a worker can reopen them after a rotation (USR1).
fn chown_log_files(identity: &Identity) {
    if identity.uid.is_none() && identity.gid.is_none() {
        return;
    }
    for path in ferricorn_core::log::file_paths() {
        let _ = nix::unistd::chown(path.as_str(), identity.uid, identity.gid);
    }
}

/// One "Listening at:" line for all listeners, comma-separated, as Gunicorn logs them
/// (at start and when HUP changes `bind`), and what hooks print of `server.LISTENERS`
/// (Gunicorn's socket objects print the same).
fn announce_listeners(py: Python<'_>, hooks: &Hooks, listeners: &[BoundListener], tls: bool) {
    let scheme = if tls { "https" } else { "http" };
    let listening: Vec<String> = listeners.iter().map(|l| l.display_with_scheme(scheme)).collect();
    ferricorn_core::info!("Listening at: {} ({})", listening.join(","), std::process::id());
    if let Ok(l) = pyo3::types::PyList::new(py, &listening) {
        let _ = hooks.server(py).setattr("LISTENERS", l);
    }
}

fn fatal(message: impl Into<String>) -> Fatal {
    Fatal {
        code: 1,
        message: message.into(),
    }
}

/// Listeners handed over by systemd (`LISTEN_FDS`) or by the master we were re-executed
/// from (`GUNICORN_FD`, USR2); empty when we must bind ourselves.
fn inherited_listeners() -> Vec<BoundListener> {
    let systemd = ferricorn_arbiter::process::systemd_listen_fds();
    if !systemd.is_empty() {
        return systemd
            .into_iter()
            .map(|fd| BoundListener {
                addr: BindAddr::Fd(std::os::fd::AsRawFd::as_raw_fd(&fd)),
                fd,
            })
            .collect();
    }
    let Ok(fds) = std::env::var(INHERIT_FDS_ENV) else {
        return Vec::new();
    };
    fds.split(',')
        .filter_map(|f| f.trim().parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        // SAFETY: the old master passed these listening sockets to us through exec.
        .map(|fd| BoundListener {
            addr: BindAddr::Fd(fd),
            fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        })
        .collect()
}

/// The variables a USR2 re-exec passes to the new master (Gunicorn's names).
const INHERIT_FDS_ENV: &str = "GUNICORN_FD";
const PARENT_MASTER_ENV: &str = "GUNICORN_PID";

pub fn start(py: Python<'_>, boot: Boot) -> Result<i32, Fatal> {
    let s = &boot.settings;
    // Gunicorn's order: daemonize; the arbiter's constructor (num_workers, the debug
    // configuration dump, the preloaded app); then its start(): the "Starting" line, the
    // pidfile, on_starting, the sockets. Every hook thus runs in the final master.
    let parent_master = std::env::var(PARENT_MASTER_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if s.bool("daemon") && parent_master.is_none() {
        daemonize(py, s.bool("enable_stdio_inheritance")).map_err(|e| fatal(format!("Error: can't daemonize: {e}")))?;
    }
    // Gunicorn's arbiter takes its pid after daemonizing.
    let _ = boot.hooks.server(py).setattr("pid", std::process::id());
    // The environment is read and changed here, while the master is alone: hooks and a
    // preloaded app may start threads, and libc's environment is not thread-safe.
    ferricorn_arbiter::process::sd_notify_init();
    let mut listeners = inherited_listeners();
    let _ = py
        .import("os")
        .and_then(|os| os.getattr("environ")?.call_method1("pop", (INHERIT_FDS_ENV, py.None())));
    // systemd's variables were for this process only (sd_listen_fds' unset_environment):
    // once taken, the app's environment and its children must not see them.
    if std::env::var_os("LISTEN_FDS").is_none() {
        for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            let _ = py
                .import("os")
                .and_then(|os| os.getattr("environ")?.call_method1("pop", (key, py.None())));
        }
    }
    // Gunicorn's arbiter sets `num_workers` in its constructor: the hook sees None first.
    let workers = s.int("workers").max(0);
    let _ = boot.hooks.server(py).setattr("num_workers", workers);
    boot.hooks
        .call(py, "nworkers_changed", (boot.hooks.server(py), workers, py.None()));
    if ferricorn_core::log::enabled(ferricorn_core::log::Level::Debug) {
        ferricorn_core::debug!("Current configuration:\n{}", s.render_current());
    }
    // A preloaded app that fails to load stops the start before anything is bound, with
    // its error on stderr and exit code 1, as Gunicorn's uncaught exception does.
    let preloaded = if s.bool("preload_app") {
        match load_app(py, &boot.app_uri) {
            Ok(app) => {
                boot.hooks.set_server_app(py, &app);
                Some(app)
            }
            Err(e) => {
                // On stderr, as Gunicorn's uncaught exception; and in a log file, where
                // an operator looks (with -D stderr goes nowhere).
                if s.str("errorlog").is_some_and(|f| f != "-") {
                    ferricorn_core::error!("{}", e.message);
                }
                return Err(fatal(e.message));
            }
        }
    } else {
        None
    };
    ferricorn_core::info!("Starting ferricorn {}", ferricorn_core::VERSION);
    let identity = Identity::resolve(s.str("user"), s.str("group")).map_err(|e| fatal(format!("Error: {e}")))?;
    let pidfile = match s.str("pidfile").filter(|p| !p.is_empty()) {
        Some(p) => {
            let path = match parent_master {
                Some(_) => std::path::PathBuf::from(format!("{p}.2")),
                None => std::path::PathBuf::from(p),
            };
            Some(Pidfile::create(&path, std::process::id()).map_err(|e| fatal(format!("Error: {e}")))?)
        }
        None => None,
    };
    boot.hooks
        .call_strict(py, "on_starting", (boot.hooks.server(py),))
        .map_err(|e| {
            fatal(format!(
                "Error in on_starting hook:\n{}",
                crate::pyhelpers::format_exception(py, &e)
            ))
        })?;
    let tls = tls_config(&boot)?;
    if listeners.is_empty() {
        let addrs: Vec<BindAddr> = s.list("bind").iter().filter_map(|b| BindAddr::parse(b).ok()).collect();
        let opts = BindOptions {
            backlog: s.int("backlog").clamp(1, i32::MAX as i64) as i32,
            reuse_port: s.bool("reuse_port"),
            umask: s.int("umask") as u32,
            attempts: 5,
        };
        listeners = match bind_all(&addrs, &opts) {
            Ok(l) => l,
            Err(e) => {
                ferricorn_core::error!("{e}");
                return Err(fatal(""));
            }
        };
        chown_unix_sockets(&listeners, &identity);
    }
    chown_log_files(&identity);
    ferricorn_core::debug!("Arbiter booted");
    announce_listeners(py, &boot.hooks, &listeners, tls.is_some());
    let threads = s.int("threads");
    let asgi_forced = s.str("interface") == Some("asgi")
        || worker_interface(s.str("worker_class").unwrap_or("sync")) == Some(Some("asgi"));
    // Gunicorn's worker_class_str: the class as configured, "gthread" for a sync class
    // given threads.
    let configured = s.str("worker_class").unwrap_or("sync");
    // `--interface asgi` with the default class is ferricorn's own: "asgi" then.
    let kind = if asgi_forced && configured == "sync" {
        "asgi"
    } else if asgi_forced {
        configured
    } else if threads > 1 && (configured == "sync" || configured.ends_with("SyncWorker")) {
        "gthread"
    } else {
        configured
    };
    ferricorn_core::info!("Using worker: {kind}");
    let mut proc_name = s
        .str("proc_name")
        .filter(|n| !n.is_empty())
        .unwrap_or(&boot.app_uri)
        .to_string();
    // A master started by USR2 is "Master.2" with ".2" titles until promoted (Gunicorn).
    if let Some(parent) = parent_master {
        proc_name.push_str(".2");
        let server = boot.hooks.server(py);
        let _ = server.setattr("master_name", "Master.2");
        let _ = server.setattr("master_pid", parent);
        let _ = server.setattr("proc_name", &proc_name);
    }
    set_proc_title(py, &format!("ferricorn: master [{proc_name}]"));
    let cfg = ArbiterConfig {
        workers: s.int("workers").max(0) as usize,
        graceful_timeout: Duration::from_secs(s.int("graceful_timeout").max(0) as u64),
        timeout: (s.int("timeout") > 0).then(|| Duration::from_secs(s.int("timeout") as u64)),
        daemon: s.bool("daemon"),
        max_worker_memory: (s.int("max_worker_memory") > 0).then(|| (s.int("max_worker_memory") as u64) << 20),
        metrics_bind: s.str("metrics_bind").and_then(|a| crate::cli::metrics_addr(a).ok()),
        backlog_metric: s.bool("enable_backlog_metric"),
        max_requests: s.int("max_requests") > 0,
        control_socket: control_socket(s),
    };
    let launcher = PyLauncher {
        boot,
        addrs: listeners.iter().map(|l| l.addr.clone()).collect(),
        listeners,
        preloaded,
        identity,
        pidfile,
        parent_master,
        proc_name,
        tls,
    };
    let mut arbiter = Arbiter::new(cfg, launcher).map_err(|e| fatal(format!("Error: {e}")))?;
    {
        // Gunicorn calls it outside its main loop's error handling: an exception stops
        // the master before any worker starts.
        let l = arbiter.launcher();
        l.boot
            .hooks
            .call_strict(py, "when_ready", (l.boot.hooks.server(py),))
            .map_err(|e| {
                fatal(format!(
                    "Error in when_ready hook:\n{}",
                    crate::pyhelpers::format_exception(py, &e)
                ))
            })?;
    }
    ferricorn_arbiter::process::sd_notify("READY=1\nSTATUS=ferricorn arbiter booted");
    // The master's loop is Rust and takes the GIL only for hooks and forks: threads a
    // hook started (on_starting, when_ready) run meanwhile, as in Gunicorn's master.
    let code = py.detach(|| arbiter.run());
    ferricorn_arbiter::process::sd_notify("STOPPING=1");
    let shares_sockets = arbiter.has_reexec_child();
    let halt_reason = arbiter.halt_reason();
    let l = arbiter.launcher();
    // Gunicorn's halt(): both lines at ERROR when the master stops because of a failure.
    let name = if l.parent_master.is_some() {
        "Master.2"
    } else {
        "Master"
    };
    match halt_reason {
        Some(reason) => {
            ferricorn_core::error!("Shutting down: {name}");
            ferricorn_core::error!("Reason: {reason}");
        }
        None => ferricorn_core::info!("Shutting down: {name}"),
    }
    // Gunicorn removes the pidfile before on_exit, and an on_exit that raises makes
    // the exit status 1.
    drop(l.pidfile.take());
    let mut code = code;
    if let Err(e) = l.boot.hooks.call_strict(py, "on_exit", (l.boot.hooks.server(py),)) {
        ferricorn_core::error!(
            "Exception in on_exit hook:\n{}",
            crate::pyhelpers::format_exception(py, &e)
        );
        if code == 0 {
            code = 1;
        }
    }
    // A USR2 pair shares the socket files: only a master alone removes them.
    if !shares_sockets && l.parent_master.is_none() {
        ferricorn_arbiter::sockets::cleanup(&l.addrs);
    }
    Ok(code)
}

/// Gunicorn's daemonize: double fork with `setsid`, `umask(0o22)`, stdio to /dev/null.
fn daemonize(py: Python<'_>, keep_stdio: bool) -> PyResult<()> {
    let os = py.import("os")?;
    if os.getattr("fork")?.call0()?.extract::<i32>()? != 0 {
        exit_now(py, 0);
    }
    os.getattr("setsid")?.call0()?;
    if os.getattr("fork")?.call0()?.extract::<i32>()? != 0 {
        exit_now(py, 0);
    }
    os.getattr("umask")?.call1((0o22,))?;
    if !keep_stdio {
        let devnull = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
        for fd in 0..3 {
            // SAFETY: replacing the standard descriptors with /dev/null.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), fd) };
        }
    }
    Ok(())
}

/// `ferricorn: master [app]`, via setproctitle when installed (as Gunicorn), else the
/// kernel's 15-byte thread name.
fn set_proc_title(py: Python<'_>, title: &str) {
    let done = py
        .import("setproctitle")
        .and_then(|m| m.getattr("setproctitle")?.call1((title,)).map(|_| ()));
    if done.is_err() {
        let short: String = title.chars().take(15).collect();
        if let Ok(name) = std::ffi::CString::new(short) {
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        }
    }
}

impl Launcher for PyLauncher {
    fn spawn(
        &mut self,
        age: u64,
        slot: &'static Slot,
        peers: &'static [Slot],
        stats: Option<&'static ferricorn_core::metrics::WorkerStats>,
    ) -> Result<Pid, ArbiterError> {
        Python::attach(|py| {
            let hooks = &self.boot.hooks;
            if hooks.has("pre_fork") {
                if let Ok(w) = hooks.worker(py, 0, age) {
                    // Gunicorn's worker object has no pid until it is forked.
                    let _ = w.setattr("pid", "[booting]");
                    hooks.call(py, "pre_fork", (hooks.server(py), w));
                }
            }
            // SAFETY: called while attached, as CPython's fork protocol requires: it takes
            // the interpreter's locks so that threads a hook started (the master's only
            // other threads) hold none of them across the fork.
            unsafe { pyo3::ffi::PyOS_BeforeFork() };
            let mask = ferricorn_arbiter::signals::block_for_fork();
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
                if let Some(stats) = stats {
                    ferricorn_core::metrics::set_worker_stats(stats);
                }
                let code = run_worker(py, self, age, slot, peers);
                exit_now(py, code);
            }
            ferricorn_arbiter::signals::unblock_after_fork(mask);
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            if pid < 0 {
                return Err(ArbiterError::Fork(nix::Error::last()));
            }
            if let Ok(w) = hooks.worker(py, pid as u32, age) {
                hooks.track_worker(py, pid, Some(w));
            }
            Ok(Pid::from_raw(pid))
        })
    }

    fn close_listeners(&mut self) {
        self.listeners.clear();
    }

    fn listen_backlog(&self) -> Option<u64> {
        let mut total = None;
        for l in &self.listeners {
            if let Some(n) = ferricorn_arbiter::sockets::accept_queue_len(l.raw_fd()) {
                *total.get_or_insert(0) += n;
            }
        }
        total
    }

    fn worker_exited(&mut self, exit: &WorkerExit) {
        Python::attach(|py| {
            let hooks = &self.boot.hooks;
            hooks.track_worker(py, exit.pid, None);
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
            let old = self
                .boot
                .hooks
                .server(py)
                .getattr("num_workers")
                .and_then(|n| n.extract::<usize>())
                .unwrap_or(1);
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
                        match crate::cli::statsd_client(&settings) {
                            Ok(client) => ferricorn_core::metrics::set_statsd(client),
                            Err(e) => ferricorn_core::error!("{e}; keeping the previous StatsD settings"),
                        }
                        // Gunicorn's reload sets its logger up again: a new level
                        // applies to the master and to the workers it forks next.
                        let level = settings.str("loglevel").unwrap_or("info");
                        ferricorn_core::log::set_level(
                            ferricorn_core::log::Level::parse(level).unwrap_or(ferricorn_core::log::Level::Info),
                        );
                        // A logging configuration sets its own levels (Gunicorn applies it
                        // after the level): those stay.
                        let configured = hooks.has("logconfig_dict")
                            || ["logconfig_json", "logconfig"]
                                .iter()
                                .any(|k| settings.str(k).is_some_and(|v| !v.is_empty()));
                        if !configured {
                            if let Err(e) = py
                                .import("ferricorn._logging")
                                .and_then(|m| m.call_method1("set_level", (level,)))
                            {
                                ferricorn_core::warning!("can't apply the new log level to Python logging: {e}");
                            }
                        }
                        self.apply_reloaded(py, &settings);
                        self.boot.settings = settings;
                        if let Ok(workers) = self.boot.hooks.server(py).getattr("WORKERS") {
                            let _ = hooks.server(py).setattr("WORKERS", workers);
                        }
                        self.boot.hooks = hooks;
                        // New workers serve the certificate files as they are now
                        // (renewed by certbot...); the old ones drain with theirs.
                        match tls_config(&self.boot) {
                            Ok(tls) => self.tls = tls,
                            Err(f) => ferricorn_core::error!(
                                "TLS reload failed, keeping the previous certificate: {}",
                                f.message
                            ),
                        }
                    }
                    Err(e) => ferricorn_core::error!("reload failed, keeping the old configuration: {e}"),
                },
                Ok(Err(_)) => {}
                Err(f) => ferricorn_core::error!("reload failed, keeping the old configuration: {}", f.message),
            }
            let hooks = &self.boot.hooks;
            let new = self.boot.settings.int("workers").max(0) as usize;
            // As in Gunicorn's reload: `num_workers` is reassigned (even unchanged), then
            // `on_reload` runs.
            let _ = hooks.server(py).setattr("num_workers", new);
            hooks.call(py, "nworkers_changed", (hooks.server(py), new, old));
            hooks.call(py, "on_reload", (hooks.server(py),));
            Some(new)
        })
    }

    fn reopen_logs(&mut self) {
        let _ = ferricorn_core::log::reopen();
        // A rotated file is new (the master's): the workers reopen it right after.
        chown_log_files(&self.identity);
    }

    fn reloaded_config(&self, cfg: &mut ArbiterConfig) {
        let s = &self.boot.settings;
        cfg.timeout = (s.int("timeout") > 0).then(|| Duration::from_secs(s.int("timeout") as u64));
        cfg.graceful_timeout = Duration::from_secs(s.int("graceful_timeout").max(0) as u64);
        cfg.max_worker_memory = (s.int("max_worker_memory") > 0).then(|| (s.int("max_worker_memory") as u64) << 20);
        cfg.max_requests = s.int("max_requests") > 0;
    }

    fn is_reexec_child(&self) -> bool {
        self.parent_master.is_some()
    }

    fn control_config(&self) -> serde_json::Value {
        use ferricorn_core::settings::Value;
        let s = &self.boot.settings;
        let mut out = serde_json::Map::new();
        for key in [
            "bind",
            "workers",
            "worker_class",
            "threads",
            "timeout",
            "graceful_timeout",
            "keepalive",
            "max_requests",
            "max_requests_jitter",
            "worker_connections",
            "preload_app",
            "daemon",
            "pidfile",
            "proc_name",
            "reload",
            "dirty_workers",
            "dirty_apps",
            "dirty_timeout",
            "control_socket",
            "control_socket_disable",
        ] {
            let value = match s.get(key) {
                Value::None => serde_json::Value::Null,
                Value::Int(i) => (*i).into(),
                Value::Bool(b) => (*b).into(),
                Value::Str(t) => t.clone().into(),
                Value::List(l) => l.clone().into(),
                Value::Python(repr) => repr.clone().into(),
            };
            out.insert(key.to_string(), value);
        }
        if let Some((path, _)) = control_socket(s) {
            out.insert("control_socket".into(), path.display().to_string().into());
        }
        out.into()
    }

    fn control_listeners(&self) -> Vec<serde_json::Value> {
        self.listeners
            .iter()
            .map(|l| {
                // The socket's own family, as Gunicorn reads it (inherited ones included).
                let family = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(l.raw_fd())
                    .ok()
                    .and_then(|a| nix::sys::socket::SockaddrLike::family(&a));
                let kind = match family {
                    Some(nix::sys::socket::AddressFamily::Inet) => "tcp",
                    Some(nix::sys::socket::AddressFamily::Inet6) => "tcp6",
                    Some(nix::sys::socket::AddressFamily::Unix) => "unix",
                    _ => "unknown",
                };
                serde_json::json!({
                    "address": l.addr.to_string(),
                    "fd": std::os::fd::AsRawFd::as_raw_fd(&l.fd),
                    "type": kind,
                })
            })
            .collect()
    }

    /// USR2: fork, and exec the same command line in the child with the listeners
    /// inherited (`GUNICORN_FD`) and our pid (`GUNICORN_PID`), as Gunicorn does.
    fn reexec(&mut self) -> Option<Pid> {
        Python::attach(|py| match self.fork_new_master(py) {
            Ok(pid) => Some(pid),
            Err(e) => {
                ferricorn_core::error!("USR2 re-exec failed: {e}");
                None
            }
        })
    }

    fn tick(&mut self) {
        let Some(old) = self.parent_master else { return };
        if nix::unistd::getppid().as_raw() == old {
            return;
        }
        ferricorn_core::info!("Master has been promoted.");
        self.parent_master = None;
        if let Some(name) = self.proc_name.strip_suffix(".2") {
            self.proc_name = name.to_string();
        }
        Python::attach(|py| {
            let _ = py.import("os").and_then(|os| {
                os.getattr("environ")?
                    .call_method1("pop", (PARENT_MASTER_ENV, py.None()))
            });
            let server = self.boot.hooks.server(py);
            let _ = server.setattr("master_name", "Master");
            let _ = server.setattr("master_pid", 0);
            let _ = server.setattr("proc_name", &self.proc_name);
            set_proc_title(py, &format!("ferricorn: master [{}]", self.proc_name));
        });
        if let Some(pidfile) = self.pidfile.as_mut() {
            let final_path = pidfile.path().with_extension("");
            let target = match pidfile.path().to_str().and_then(|p| p.strip_suffix(".2")) {
                Some(p) => std::path::PathBuf::from(p),
                None => final_path,
            };
            if let Err(e) = pidfile.rename(&target) {
                ferricorn_core::error!("{e}");
            }
        }
    }
}

impl PyLauncher {
    /// What Gunicorn's reload sets up again in the master besides the workers: the log
    /// files and access log, `raw_env`, the process name, and the listeners when `bind`
    /// changed (old workers drain the old sockets; new ones get the new).
    fn apply_reloaded(&mut self, py: Python<'_>, settings: &Settings) {
        let level = settings
            .str("loglevel")
            .and_then(ferricorn_core::log::Level::parse)
            .unwrap_or(ferricorn_core::log::Level::Info);
        if let Err(e) = ferricorn_core::log::configure(level, settings.str("errorlog")) {
            ferricorn_core::error!(
                "can't open error log {:?}: {e}",
                settings.str("errorlog").unwrap_or("-")
            );
        }
        if let Err(e) = ferricorn_core::log::configure_access(settings.str("accesslog")) {
            ferricorn_core::error!(
                "can't open access log {:?}: {e}",
                settings.str("accesslog").unwrap_or("-")
            );
        }
        for (k, v) in settings.list("raw_env").iter().filter_map(|kv| kv.split_once('=')) {
            if let Err(e) = crate::pyhelpers::set_environ(py, k, v) {
                ferricorn_core::error!("can't set {k} from raw_env: {e}");
            }
        }
        self.proc_name = settings
            .str("proc_name")
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.boot.app_uri)
            .to_string();
        set_proc_title(py, &format!("ferricorn: master [{}]", self.proc_name));

        // As Gunicorn: only a change of the `bind` setting itself re-creates listeners (so
        // sockets handed over by systemd or a USR2 parent stay as long as it does not).
        if settings.list("bind") == self.boot.settings.list("bind") {
            return;
        }
        let addrs: Vec<BindAddr> = settings
            .list("bind")
            .iter()
            .filter_map(|b| BindAddr::parse(b).ok())
            .collect();
        if addrs.is_empty() {
            return;
        }
        let opts = BindOptions {
            backlog: settings.int("backlog").clamp(1, i32::MAX as i64) as i32,
            reuse_port: settings.bool("reuse_port"),
            umask: settings.int("umask") as u32,
            attempts: 5,
        };
        // Addresses kept from the old list keep their socket (binding them again would
        // collide with it); only the new ones are bound.
        let to_bind: Vec<BindAddr> = addrs.iter().filter(|a| !self.addrs.contains(a)).cloned().collect();
        let mut fresh = match bind_all(&to_bind, &opts) {
            Ok(l) => l,
            Err(e) => {
                ferricorn_core::error!("can't listen on the new bind addresses, keeping the old ones: {e}");
                return;
            }
        };
        let mut old = std::mem::take(&mut self.listeners);
        let mut listeners = Vec::with_capacity(addrs.len());
        for a in &addrs {
            let from = if self.addrs.contains(a) { &mut old } else { &mut fresh };
            if let Some(i) = from.iter().position(|l| l.addr == *a) {
                listeners.push(from.swap_remove(i));
            }
        }
        chown_unix_sockets(&listeners, &self.identity);
        announce_listeners(py, &self.boot.hooks, &listeners, self.tls.is_some());
        // The dropped sockets close with the last old worker holding them; a socket file
        // nobody will listen on any more goes now.
        for l in &old {
            if let BindAddr::Unix(path) = &l.addr {
                let _ = std::fs::remove_file(path);
            }
        }
        drop(old);
        self.listeners = listeners;
        self.addrs = addrs;
    }

    fn fork_new_master(&mut self, py: Python<'_>) -> PyResult<Pid> {
        let os = py.import("os")?;
        let sys = py.import("sys")?;
        let fds: Vec<String> = self.listeners.iter().map(|l| l.raw_fd().to_string()).collect();
        let master = std::process::id();
        let pid: i32 = os.getattr("fork")?.call0()?.extract()?;
        if pid != 0 {
            ferricorn_core::info!("Started a new master (pid:{pid}) for the binary upgrade.");
            return Ok(Pid::from_raw(pid));
        }
        // In the child: make the listeners survive exec, then become the new master.
        for l in &self.listeners {
            // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
            unsafe { libc::fcntl(l.raw_fd(), libc::F_SETFD, 0) };
        }
        let environ = os.getattr("environ")?;
        environ.set_item(INHERIT_FDS_ENV, fds.join(","))?;
        environ.set_item(PARENT_MASTER_ENV, master.to_string())?;
        let hooks = &self.boot.hooks;
        hooks.call(py, "pre_exec", (hooks.server(py),));
        let exe = sys.getattr("executable")?;
        let argv = pyo3::types::PyList::new(py, [exe.clone()])?;
        for a in sys.getattr("argv")?.try_iter()? {
            argv.append(a?)?;
        }
        let err = os.getattr("execv")?.call1((exe, argv)).err();
        ferricorn_core::error!("exec failed: {}", err.map(|e| e.to_string()).unwrap_or_default());
        exit_now(py, 1);
    }
}

/// What a worker serves under `--reload` while the application cannot be loaded: the
/// error, to every request, until a file change restarts the worker.
struct ErrorApp(String);

impl ferricorn_server::App for ErrorApp {
    fn call(&self, _req: ferricorn_server::Request) -> ferricorn_server::Reply {
        ferricorn_server::Reply::Ready(ferricorn_server::error_page::response(500, &self.0, false))
    }
}

/// The signals a worker's signal thread takes (see `start_signal_thread`).
fn worker_signal_set() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in [Signal::SIGABRT, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGUSR1] {
        set.add(sig);
    }
    set
}

/// Blocks the worker's signals in the calling thread, and so in every thread it creates
/// afterwards; only the signal thread takes them, with `sigwait`. Every other signal is
/// unblocked (the master blocked its own across the fork): one that arrived meanwhile,
/// such as a TERM while booting, is delivered now, to the worker's handlers.
fn block_worker_signals() {
    use nix::sys::signal::{pthread_sigmask, SigmaskHow};
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&worker_signal_set()), None) {
        ferricorn_core::warning!("can't block worker signals: {e}");
    }
}

/// A TERM received while the worker boots (the app still importing).
static TERM_DURING_BOOT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_boot_term(_: libc::c_int) {
    TERM_DURING_BOOT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Until the I/O loop installs its own TERM handler, a TERM only sets a flag: the worker
/// finishes booting, then stops gracefully with `worker_exit`, as in Gunicorn, instead of
/// dying mid-import. (A handler, not a blocked mask: masks are inherited by the app's
/// threads and by every process it spawns.)
fn defer_boot_term() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(note_boot_term),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGTERM, &action) } {
        ferricorn_core::warning!("can't defer SIGTERM during boot: {e}");
    }
}

/// A worker's ABRT (the master's timeout), INT/QUIT (quick stop) and USR1 (reopen logs)
/// are taken by a dedicated thread with `sigwait`, not by the I/O loop: the call they must
/// interrupt may be running on the I/O thread itself (inline mode). TERM stays with the
/// loop: a graceful stop waits for calls in flight anyway.
fn start_signal_thread(
    py: Python<'_>,
    hooks: &Hooks,
    worker: &Bound<'_, PyAny>,
    target: std::sync::Arc<std::sync::OnceLock<ferricorn_server::StopSignal>>,
    abort_code: i32,
) {
    use nix::sys::signal::Signal;
    let set = worker_signal_set();
    let abort_hook = hooks.object(py, "worker_abort").map(Bound::unbind);
    let int_hook = hooks.object(py, "worker_int").map(Bound::unbind);
    let exit_hook = hooks.object(py, "worker_exit").map(Bound::unbind);
    let server = hooks.server(py).unbind();
    let worker = worker.clone().unbind();
    let spawned = std::thread::Builder::new()
        .name("ferricorn-signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            let (outcome, hook, code) = match sig {
                Signal::SIGUSR1 => {
                    // Only the master says "Handling signal: usr1", as in Gunicorn.
                    let _ = ferricorn_core::log::reopen();
                    continue;
                }
                Signal::SIGABRT => {
                    crate::wsgi::answer_stuck_inline_call();
                    (ServeOutcome::Abort, &abort_hook, abort_code)
                }
                _ => {
                    crate::wsgi::answer_stuck_inline_call();
                    (ServeOutcome::Quick, &int_hook, 0)
                }
            };
            if let Some(stop) = target.get() {
                stop.stop(outcome);
                // Let the front end answer 500 to the calls in flight.
                std::thread::sleep(Duration::from_millis(150));
            }
            Python::attach(|py| {
                if outcome == ServeOutcome::Abort {
                    dump_all_stacks(py);
                }
                let name = if outcome == ServeOutcome::Abort {
                    "worker_abort"
                } else {
                    "worker_int"
                };
                crate::hooks::call_logged(py, name, hook.as_ref(), (worker.bind(py),));
                // Gunicorn's worker leaves through sys.exit() in both cases, and the
                // arbiter's `finally` logs the exit and runs `worker_exit`.
                if first_exit() {
                    ferricorn_core::info!("Worker exiting (pid: {})", std::process::id());
                    crate::hooks::call_logged(
                        py,
                        "worker_exit",
                        exit_hook.as_ref(),
                        (server.bind(py), worker.bind(py)),
                    );
                }
                exit_now(py, code)
            })
        });
    if let Err(e) = spawned {
        ferricorn_core::warning!("can't start the worker's signal thread: {e}");
    }
}

/// The interface a `worker_class` implies: `Some(None)` for "decide from the app".
pub fn worker_interface(worker_class: &str) -> Option<Option<&'static str>> {
    match worker_class {
        "sync"
        | "gthread"
        | "ferricorn.workers.SyncWorker"
        | "gunicorn.workers.sync.SyncWorker"
        | "gunicorn.workers.gthread.ThreadWorker" => Some(None),
        "asgi"
        | "uvicorn.workers.UvicornWorker"
        | "uvicorn.workers.UvicornH11Worker"
        | "uvicorn_worker.UvicornWorker"
        | "uvicorn_worker.UvicornH11Worker"
        | "gunicorn.workers.gasgi.ASGIWorker" => Some(Some("asgi")),
        _ => None,
    }
}

/// WSGI or ASGI for this app: `--interface`, else the worker class, else detection.
fn is_asgi(py: Python<'_>, s: &Settings, app: &Py<PyAny>) -> bool {
    match s.str("interface") {
        Some("asgi") => return true,
        Some("wsgi") => return false,
        _ => {}
    }
    if worker_interface(s.str("worker_class").unwrap_or("sync")) == Some(Some("asgi")) {
        return true;
    }
    py.import("ferricorn._asgi")
        .and_then(|m| m.getattr("is_asgi")?.call1((app.bind(py),))?.is_truthy())
        .unwrap_or(false)
}

/// Writes every Python thread's stack to the error log (on a worker timeout), with
/// faulthandler, which walks the threads itself and needs no cooperation from them.
fn dump_all_stacks(py: Python<'_>) {
    ferricorn_core::critical!("Worker timed out; stacks of all threads follow (most recent call first):");
    let dumped = py.import("faulthandler").and_then(|fh| {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("file", ferricorn_core::log::fd())?;
        kwargs.set_item("all_threads", true)?;
        fh.getattr("dump_traceback")?.call((), Some(&kwargs))
    });
    if let Err(e) = dumped {
        ferricorn_core::error!("could not dump the stacks: {e}");
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

/// Built in the master, so a bad certificate or setting stops the start-up with one line.
fn tls_config(boot: &Boot) -> Result<Option<std::sync::Arc<ferricorn_server::tls::TlsConfig>>, Fatal> {
    let s = &boot.settings;
    let alpn = ferricorn_server::tls::alpn_for(s.str("http_protocols").unwrap_or("h1"))
        .map_err(|e| fatal(format!("Error: {e}")))?;
    if boot.hooks.has("ssl_context") {
        return Err(fatal(
            "Error: the ssl_context hook returns a Python SSLContext, which cannot configure ferricorn's TLS (rustls); \
             use certfile, keyfile, ca_certs and cert_reqs instead",
        ));
    }
    let (cert, key) = (
        s.str("certfile").filter(|c| !c.is_empty()),
        s.str("keyfile").filter(|k| !k.is_empty()),
    );
    let (certfile, keyfile) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => (c, c),
        (None, Some(_)) => {
            return Err(fatal(
                "Error: Invalid value for certfile: keyfile is set but certfile is not",
            ))
        }
    };
    let opts = ferricorn_server::tls::TlsOptions {
        certfile,
        keyfile,
        ca_certs: s.str("ca_certs").filter(|c| !c.is_empty()),
        cert_reqs: s.int("cert_reqs"),
        alpn,
        ciphers: s.str("ciphers").filter(|c| !c.is_empty()),
    };
    ferricorn_server::tls::server_config(&opts)
        .map(Some)
        .map_err(|e| fatal(format!("Error: {e}")))
}

/// `(worker, pre_request, post_request)` for the ASGI bridge, when either hook is set.
fn asgi_request_hooks(py: Python<'_>, worker: &Bound<'_, PyAny>, hooks: &Hooks) -> Option<Py<PyAny>> {
    let pre = hooks.object(py, "pre_request");
    let post = hooks.object(py, "post_request");
    if pre.is_none() && post.is_none() {
        return None;
    }
    let none = || py.None().into_bound(py);
    pyo3::types::PyTuple::new(
        py,
        [worker.clone(), pre.unwrap_or_else(none), post.unwrap_or_else(none)],
    )
    .ok()
    .map(|t| t.into_any().unbind())
}

fn server_config(
    py: Python<'_>,
    s: &Settings,
    hooks: &Hooks,
    tls: Option<std::sync::Arc<ferricorn_server::tls::TlsConfig>>,
    static_files: Option<std::sync::Arc<ferricorn_server::static_files::StaticFiles>>,
) -> ServerConfig {
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
        // 0: no limit (Gunicorn's sync worker ignores the setting).
        worker_connections: match s.int("worker_connections") {
            n if n > 0 => n as usize,
            _ => tokio::sync::Semaphore::MAX_PERMITS,
        },
        graceful_timeout: Duration::from_secs(s.int("graceful_timeout").max(0) as u64),
        prebuffer: 64 * 1024,
        body_read_timeout: (timeout > 0).then(|| Duration::from_secs(timeout as u64)),
        permit_unconventional_method: s.bool("permit_unconventional_http_method"),
        underscore_headers: match s.str("header_map") {
            Some("refuse") => ferricorn_server::UnderscoreHeaders::Refuse,
            Some("dangerous") => ferricorn_server::UnderscoreHeaders::Keep,
            _ => ferricorn_server::UnderscoreHeaders::Drop,
        },
        // Drawn once per worker, jitter included, by the worker boot.
        max_requests: 0,
        forwarded_allow: AllowList::parse(s.str("forwarded_allow_ips").unwrap_or("")).unwrap_or_default(),
        secure_scheme_headers: secure_scheme_headers(py, hooks),
        access_log: ferricorn_core::log::access_enabled().then(|| {
            if s.bool("access_log_json") {
                return std::sync::Arc::new(ferricorn_core::access_log::AccessFormat::json());
            }
            let format = s
                .str("access_log_format")
                .unwrap_or(ferricorn_core::access_log::DEFAULT_FORMAT);
            std::sync::Arc::new(ferricorn_core::access_log::AccessFormat::compile(format))
        }),
        script_name: crate::wsgi::script_name(py),
        tls,
        proxy_protocol: ferricorn_core::proxy::ProxyMode::parse(s.str("proxy_protocol").unwrap_or("off")),
        proxy_allow: AllowList::parse(s.str("proxy_allow_ips").unwrap_or("")).unwrap_or_default(),
        http2: ferricorn_server::Http2Options {
            max_concurrent_streams: s.int("http2_max_concurrent_streams").clamp(1, u32::MAX as i64) as u32,
            initial_window_size: s.int("http2_initial_window_size").clamp(1, i32::MAX as i64) as u32,
            max_frame_size: s.int("http2_max_frame_size").clamp(16384, 16_777_215) as u32,
            max_header_list_size: s.int("http2_max_header_list_size").clamp(0, u32::MAX as i64) as u32,
        },
        static_files,
        forwarded_header: s.bool("forwarded_header"),
        half_close: true,
        h2c_prior_knowledge: matches!(s.str("http2_cleartext"), Some("prior-knowledge" | "both")),
        h2c_upgrade: matches!(s.str("http2_cleartext"), Some("upgrade" | "both")),
        balance: None,
        forwarder_headers: ferricorn_core::proxy::ForwarderHeaders::parse(s.str("forwarder_headers").unwrap_or("")),
        max_queued: (s.int("max_queued") > 0).then(|| s.int("max_queued") as usize),
        app_threads: s.int("threads").max(1) as usize,
        h2_calls_per_connection: None,
        request_deadline: (s.int("request_deadline") > 0)
            .then(|| Duration::from_secs(s.int("request_deadline") as u64)),
        // Gunicorn's default `pre_request` logs `METHOD path` at debug level.
        log_requests: ferricorn_core::log::enabled(ferricorn_core::log::Level::Debug) && !hooks.has("pre_request"),
    }
}

/// The `--static-map` directories, opened in the worker (validated by the master). A
/// directory the worker cannot open (after the user/group drop, say) is a boot error:
/// serving on without it would hand `/static/...` to the application.
fn static_files(s: &Settings) -> Result<Option<std::sync::Arc<ferricorn_server::static_files::StaticFiles>>, String> {
    let cfg = ferricorn_core::static_files::StaticConfig::from_settings(s).map_err(|e| e.to_string())?;
    ferricorn_server::static_files::StaticFiles::open(cfg)
        .map(|files| files.map(std::sync::Arc::new))
        .map_err(|e| format!("static_map: cannot open a mapped directory: {e}"))
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

/// This worker's open connections and the other workers', through the heartbeat slots
/// (see `ferricorn_server::AcceptBalance`).
#[derive(Debug)]
struct PeerLoad {
    me: &'static Slot,
    peers: &'static [Slot],
}

impl ferricorn_server::AcceptBalance for PeerLoad {
    fn publish(&self, open: usize) {
        let n = u32::try_from(open).unwrap_or(u32::MAX - 1).min(u32::MAX - 1);
        self.me.connections.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn least_loaded_other(&self) -> Option<usize> {
        let now = ferricorn_arbiter::heartbeat::now_ms();
        ferricorn_arbiter::heartbeat::least_loaded_other(self.peers, self.me, now).map(|n| n as usize)
    }

    fn withdraw(&self) {
        self.me.connections.store(
            ferricorn_arbiter::heartbeat::NOT_ACCEPTING,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// What the heartbeat reports as the worker's oldest call in flight.
enum Busy {
    /// The app threads' call start times.
    Wsgi(std::sync::Arc<crate::wsgi::CallClock>),
    /// The ASGI event loop's last beat, once it stops beating.
    Asgi(Py<crate::asgi::LoopPulse>),
}

impl Busy {
    fn oldest(&self) -> u64 {
        match self {
            Busy::Wsgi(clock) => clock.oldest(),
            Busy::Asgi(pulse) => pulse.get().stuck_since(),
        }
    }
}

/// The worker's whole life; returns its exit code.
fn run_worker(py: Python<'_>, launcher: &mut PyLauncher, age: u64, slot: &'static Slot, peers: &'static [Slot]) -> i32 {
    // Taken at once: a master that dies while this worker boots must still be noticed
    // (read after the boot, the parent would already be init).
    let master = nix::unistd::getppid();
    let inherited = std::mem::take(&mut launcher.listeners);
    ferricorn_arbiter::signals::reset_in_child();
    defer_boot_term();
    block_worker_signals();
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
    // This worker's limit, jitter included, as Gunicorn's `worker.max_requests` shows it.
    let max_requests = max_requests(&boot.settings);
    if max_requests > 0 {
        let _ = worker.setattr("max_requests", max_requests);
    }
    // Gunicorn runs both hooks inside the worker's boot: an exception is a boot failure
    // (exit 3, and the master stops with "Worker failed to boot.").
    // Gunicorn's spawn_worker ends every boot, failed or not, in a `finally` that logs
    // "Worker exiting" and runs `worker_exit`.
    let boot_failed = |code: i32| {
        if first_exit() {
            ferricorn_core::info!("Worker exiting (pid: {})", std::process::id());
            hooks.call(py, "worker_exit", (hooks.server(py), worker.clone()));
        }
        code
    };
    let boot_hook_failed = |e: PyErr| {
        ferricorn_core::error!(
            "Exception in worker process\n{}",
            crate::pyhelpers::format_exception(py, &e)
        );
        boot_failed(ferricorn_arbiter::WORKER_BOOT_ERROR)
    };
    if let Err(e) = hooks.call_strict(py, "post_fork", (hooks.server(py), worker.clone())) {
        return boot_hook_failed(e);
    }
    if let Err(e) = launcher.identity.apply(boot.settings.bool("initgroups")) {
        ferricorn_core::error!("Exception in worker process: {e}");
        return ferricorn_arbiter::WORKER_BOOT_ERROR;
    }
    set_proc_title(py, &format!("ferricorn: worker [{}]", launcher.proc_name));

    let reload = boot.settings.bool("reload");
    let mut reload_extra = boot.settings.list("reload_extra_files");
    let app = match &launcher.preloaded {
        Some(app) => Ok(app.clone_ref(py)),
        None => match load_app(py, &boot.app_uri) {
            Ok(app) => Ok(app),
            // With --reload, a broken app is shown to the client (as Gunicorn does) until
            // a file changes, instead of stopping the server.
            Err(e) if reload => {
                ferricorn_core::error!("Exception in worker process\n{}", e.message);
                reload_extra.push("**/*.py".into());
                Err(e.message)
            }
            // An app that cannot be resolved (exit 4): Gunicorn prints the reason bare
            // to stderr; anything the import raised (exit 3) is logged with its traceback.
            Err(e) if e.code == ferricorn_arbiter::APP_LOAD_ERROR => {
                eprintln!("{}", e.message);
                return boot_failed(e.code);
            }
            Err(e) => {
                ferricorn_core::error!("Exception in worker process\n{}", e.message);
                return boot_failed(e.code);
            }
        },
    };
    if let Ok(app) = &app {
        let _ = worker.setattr("app", app.bind(py));
        // Gunicorn's name for the loaded application.
        let _ = worker.setattr("wsgi", app.bind(py));
    }
    if let Err(e) = hooks.call_strict(py, "post_worker_init", (worker.clone(),)) {
        return boot_hook_failed(e);
    }
    let _ = worker.setattr("booted", true);
    crate::pylog::route_customised(py);

    let mut listeners = Vec::new();
    // The worker owns the sockets it inherited: when its accept loops end, the socket
    // is closed in this process (no second copy left open until exit).
    for l in inherited {
        let fd = l.fd;
        // SAFETY: `fd` is this process's own descriptor of a listening socket, owned
        // from here on.
        match unsafe { Listener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) } {
            Ok(l) => listeners.push(l),
            Err(e) => {
                ferricorn_core::error!("can't use listener: {e}");
                return ferricorn_arbiter::WORKER_BOOT_ERROR;
            }
        }
    }
    let s = &boot.settings;
    let mut wsgi_cfg = WsgiConfig::from_settings(py, s);
    wsgi_cfg.hooks = crate::wsgi::RequestHooks::new(
        py,
        &worker,
        hooks.object(py, "pre_request"),
        hooks.object(py, "post_request"),
    );
    let threads = s.int("threads").max(1) as usize;
    let mut asgi_runtime = None;
    let (bridge, clock): (std::sync::Arc<dyn ferricorn_server::App>, _) = match app {
        Ok(app) if is_asgi(py, s, &app) => {
            let cfg = crate::asgi::AsgiConfig {
                root_path: s.str("root_path").unwrap_or("").trim_end_matches('/').to_string(),
                loop_kind: s.str("asgi_loop").unwrap_or("auto").to_string(),
                lifespan: s.str("asgi_lifespan").unwrap_or("auto").to_string(),
                high_water: 1 << 20,
                websocket: ferricorn_server::websocket::WsOptions {
                    max_message_size: (s.int("websocket_max_message_size") > 0)
                        .then(|| s.int("websocket_max_message_size") as usize),
                    ping_interval: seconds(s.int("websocket_ping_interval")),
                    ping_timeout: seconds(s.int("websocket_ping_timeout")),
                },
                request_hooks: asgi_request_hooks(py, &worker, hooks),
                disconnect_grace: s.int("asgi_disconnect_grace_period") as f64,
                forwarded_allow: ferricorn_core::proxy::AllowList::parse(s.str("forwarded_allow_ips").unwrap_or(""))
                    .unwrap_or_default(),
            };
            match crate::asgi::start(py, app, cfg) {
                Ok((bridge, runtime)) => {
                    asgi_runtime = Some(runtime);
                    let pulse = bridge.pulse();
                    (std::sync::Arc::new(bridge), Some(Busy::Asgi(pulse)))
                }
                Err(message) => {
                    ferricorn_core::error!("Application startup failed. Exiting.\n{}", message.trim_end());
                    return ferricorn_arbiter::WORKER_BOOT_ERROR;
                }
            }
        }
        Ok(app) => match WsgiBridge::start(py, app, threads, wsgi_cfg) {
            Ok(b) => {
                let clock = b.clock();
                (std::sync::Arc::new(b), Some(Busy::Wsgi(clock)))
            }
            Err(e) => {
                ferricorn_core::error!("can't start the application threads: {e}");
                return ferricorn_arbiter::WORKER_BOOT_ERROR;
            }
        },
        Err(message) => (std::sync::Arc::new(ErrorApp(message)), None),
    };
    let static_files = match static_files(s) {
        Ok(files) => files,
        Err(e) => {
            ferricorn_core::error!("{e}");
            return ferricorn_arbiter::WORKER_BOOT_ERROR;
        }
    };
    let mut config = server_config(py, s, hooks, launcher.tls.clone(), static_files);
    config.max_requests = max_requests;
    config.half_close = asgi_runtime.is_none();
    // WSGI: one HTTP/2 connection runs at most half the threads' requests at once (at
    // least one), as HTTP/1.1 connections each hold one thread at most.
    if asgi_runtime.is_none() {
        config.h2_calls_per_connection = Some((threads / 2).max(1));
    }
    config.balance = Some(std::sync::Arc::new(PeerLoad { me: slot, peers }));
    let abort_target = std::sync::Arc::new(std::sync::OnceLock::<ferricorn_server::StopSignal>::new());
    // Gunicorn's sync worker catches the abort's SystemExit in its request handler and
    // leaves its loop normally (exit 0); its threaded and async workers exit with 1.
    let abort_code = if asgi_runtime.is_none() && threads == 1 { 0 } else { 1 };
    start_signal_thread(py, hooks, &worker, abort_target.clone(), abort_code);
    // Gunicorn's reloader: a warning at each boot, and `worker_int` when a file changes.
    let on_reload: Option<Box<dyn FnOnce() + Send>> = reload.then(|| {
        ferricorn_core::warning!("Reloader is on. Use in development only!");
        let hook = hooks.object(py, "worker_int").map(Bound::unbind);
        let worker = worker.clone().unbind();
        Box::new(move || {
            Python::attach(|py| crate::hooks::call_logged(py, "worker_int", hook.as_ref(), (worker.bind(py),)));
        }) as Box<dyn FnOnce() + Send>
    });
    let outcome = py.detach(|| {
        ferricorn_server::serve(listeners, bridge, config, move |stop| {
            let _ = abort_target.set(stop.clone());
            // The loop's own TERM handler is installed now; honour one that came earlier.
            if TERM_DURING_BOOT.load(std::sync::atomic::Ordering::Relaxed) {
                stop.stop(ServeOutcome::Graceful);
            }
            if let Some(on_reload) = on_reload {
                crate::reloader::Reloader::new(reload_extra).spawn(stop.clone(), on_reload);
            }
            // The heartbeat runs on the I/O loop, so a wedged loop stops it too.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    slot.publish(clock.as_ref().map_or(0, |c| c.oldest()));
                    if nix::unistd::getppid() != master {
                        ferricorn_core::info!("Parent changed, shutting down: {}", std::process::id());
                        stop.stop(ServeOutcome::Graceful);
                        break;
                    }
                }
            });
        })
    });
    match outcome {
        Ok(ServeOutcome::Quick) => {
            // INT/QUIT come through the signal thread, which runs `worker_int` and exits.
            py.detach(|| loop {
                std::thread::sleep(Duration::from_secs(1));
            });
        }
        Ok(ServeOutcome::MaxRequests) => {
            ferricorn_core::info!("Autorestarting worker after current request.");
        }
        Ok(ServeOutcome::Graceful) => {}
        Ok(ServeOutcome::Abort) => {
            // The signal thread is dumping the stacks and exits the process.
            py.detach(|| loop {
                std::thread::sleep(Duration::from_secs(1));
            });
        }
        Err(e) => {
            ferricorn_core::error!("worker failed: {e}");
            return 1;
        }
    }
    if let Some(runtime) = asgi_runtime {
        runtime.shutdown(py, Duration::from_secs(s.int("graceful_timeout").max(1) as u64));
    }
    if first_exit() {
        ferricorn_core::info!("Worker exiting (pid: {pid})");
        hooks.call(py, "worker_exit", (hooks.server(py), worker));
    }
    0
}

/// A worker leaves once: a QUIT that arrives while the graceful path runs `worker_exit`
/// must not run it again (Gunicorn's `finally` runs once).
fn first_exit() -> bool {
    static EXITED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    !EXITED.swap(true, std::sync::atomic::Ordering::AcqRel)
}

/// A duration setting in whole seconds; 0 (or less) is "off".
fn seconds(n: i64) -> Option<std::time::Duration> {
    u64::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .map(std::time::Duration::from_secs)
}
