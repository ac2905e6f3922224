//! The master loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use ferricorn_core::metrics::prometheus::{self, MasterState, RestartReason};
use ferricorn_core::metrics::{StatsRegion, Totals, WorkerStats};

use crate::heartbeat::{self, Heartbeats, Slot};
use crate::metrics_http::MetricsServer;
use crate::signals::SelfPipe;
use crate::{ArbiterError, APP_LOAD_ERROR, WORKER_BOOT_ERROR};

#[derive(Debug, Clone)]
pub struct ArbiterConfig {
    pub workers: usize,
    pub graceful_timeout: Duration,
    /// An app call (or a boot) longer than this gets the worker aborted; `None` = never.
    pub timeout: Option<Duration>,
    /// Daemonized: WINCH stops the workers (Gunicorn ignores it otherwise).
    pub daemon: bool,
    /// Retire a worker whose RSS exceeds this many bytes; `None` = never.
    pub max_worker_memory: Option<u64>,
    /// `--metrics-bind`: where the master serves Prometheus metrics.
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// `--enable-backlog-metric`: send `gunicorn.backlog` to StatsD every loop.
    pub backlog_metric: bool,
    /// `--max-requests` is on (a worker's clean exit is then a recycling).
    pub max_requests: bool,
    /// The control socket's path and mode (`None`: `--no-control-socket`).
    pub control_socket: Option<(std::path::PathBuf, u32)>,
}

/// Heartbeat slots: more than any sane worker count, 64 bytes each.
const SLOTS: usize = 1024;
/// Time an aborted worker gets to dump its stacks and run `worker_abort` before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// Time workers get after a quick stop is requested during a graceful one (Gunicorn's).
const QUICK_STOP_GRACE: Duration = Duration::from_secs(2);

/// How a worker ended.
#[derive(Debug, Clone, Copy)]
pub struct WorkerExit {
    pub pid: i32,
    pub age: u64,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What the master needs from the embedding (the Python crate): forking a worker with
/// the interpreter's fork protocol, and the server hooks.
pub trait Launcher {
    /// Forks worker number `age`, which publishes its heartbeat in `slot` (one of
    /// `peers`, every worker's, for accept balancing). Returns the
    /// child's pid in the master; in the child it runs the worker and exits, never returning.
    fn spawn(
        &mut self,
        age: u64,
        slot: &'static Slot,
        peers: &'static [Slot],
        stats: Option<&'static WorkerStats>,
    ) -> Result<Pid, ArbiterError>;
    /// A worker was reaped (`child_exit` hook).
    fn worker_exited(&mut self, _exit: &WorkerExit) {}
    /// The target number of workers changed (`nworkers_changed` hook).
    fn nworkers_changed(&mut self, _new: usize, _old: usize) {}
    /// SIGHUP: reload the configuration and report the new worker count to the hooks
    /// (`nworkers_changed`, then `on_reload`); returns that count.
    fn reload(&mut self) -> Option<usize> {
        None
    }
    /// After [`Self::reload`]: the reloaded settings the master itself uses (timeouts...).
    fn reloaded_config(&self, _cfg: &mut ArbiterConfig) {}
    /// SIGUSR1 in the master: reopen log files.
    fn reopen_logs(&mut self) {}
    /// SIGUSR2: start a new master that inherits the listeners; returns its pid.
    fn reexec(&mut self) -> Option<Pid> {
        None
    }
    /// Once per loop (USR2 promotion checks).
    fn tick(&mut self) {}
    /// A stop has begun: close the master's copies of the listening sockets, so that
    /// once the workers have taken what is queued, new connections are refused at once
    /// instead of piling up unanswered (Gunicorn closes its listeners first too).
    fn close_listeners(&mut self) {}
    /// Connections waiting in the listen queues, where the OS tells.
    fn listen_backlog(&self) -> Option<u64> {
        None
    }
    /// Whether this master was itself started by USR2 and its parent is still there.
    fn is_reexec_child(&self) -> bool {
        false
    }
    /// `show config` on the control socket: Gunicorn's selection of settings.
    fn control_config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// `show listeners` on the control socket: `{"address", "fd", "type"}` each.
    fn control_listeners(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

struct Worker {
    age: u64,
    slot: usize,
    aborted: Option<Instant>,
    /// Sent SIGTERM for using too much memory (so it is asked once).
    retiring: bool,
    /// Sent SIGTERM by the master (reload, fewer workers): not a restart to count.
    stopping: bool,
}

/// The master's side of the Prometheus endpoint.
struct Metrics {
    /// `None` while the address is still held by the master we replace (USR2).
    server: Option<MetricsServer>,
    addr: std::net::SocketAddr,
    region: StatsRegion,
    /// Counters of workers that have exited, so totals never go backwards.
    retired: Totals,
    restarts: [u64; 4],
}

pub struct Arbiter<L: Launcher> {
    cfg: ArbiterConfig,
    launcher: L,
    pipe: SelfPipe,
    workers: BTreeMap<i32, Worker>,
    next_age: u64,
    heartbeats: Heartbeats,
    /// The new master started by USR2, while it runs.
    reexec_pid: Option<i32>,
    /// Why the master stops on its own (a worker that could not boot or load the app).
    halt_reason: Option<&'static str>,
    metrics: Option<Metrics>,
    /// The worker count last sent to StatsD (`gunicorn.workers` is sent on change).
    reported_workers: Option<usize>,
    /// When `gunicorn.backlog` was last sent (once a second, however often the loop wakes).
    backlog_sent: Instant,
    control: Option<crate::control::ControlServer>,
    /// For the control socket's `show stats`, counted as Gunicorn counts them.
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    started: Option<std::time::SystemTime>,
    workers_spawned: u64,
    workers_killed: u64,
    reloads: u64,
}

enum Stop {
    Graceful,
    Quick,
}

impl<L: Launcher> Arbiter<L> {
    pub fn new(cfg: ArbiterConfig, launcher: L) -> Result<Self, ArbiterError> {
        let heartbeats = Heartbeats::new(SLOTS)?;
        let pipe = SelfPipe::install().map_err(ArbiterError::Signals)?;
        let metrics = match cfg.metrics_bind {
            Some(addr) => {
                let server = match MetricsServer::bind(addr) {
                    Ok(s) => {
                        ferricorn_core::info!("Metrics at: http://{}/metrics", s.local_addr().unwrap_or(addr));
                        Some(s)
                    }
                    // A USR2-started master: the old one serves the address until it exits.
                    Err(e) if launcher.is_reexec_child() && e.kind() == std::io::ErrorKind::AddrInUse => None,
                    Err(e) => {
                        return Err(ArbiterError::Bind(format!("Error: can't serve metrics on {addr}: {e}")));
                    }
                };
                Some(Metrics {
                    server,
                    addr,
                    region: StatsRegion::new(SLOTS)?,
                    retired: Totals::default(),
                    restarts: [0; 4],
                })
            }
            None => None,
        };
        Ok(Self {
            cfg,
            launcher,
            pipe,
            workers: BTreeMap::new(),
            next_age: 0,
            heartbeats,
            reexec_pid: None,
            halt_reason: None,
            metrics,
            reported_workers: None,
            backlog_sent: Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now),
            control: None,
            stats: Stats {
                started: Some(std::time::SystemTime::now()),
                ..Stats::default()
            },
        })
    }

    pub fn launcher(&mut self) -> &mut L {
        &mut self.launcher
    }

    /// A USR2 child master is running (it shares our listeners).
    pub fn has_reexec_child(&self) -> bool {
        self.reexec_pid.is_some()
    }

    /// Why [`Self::run`] returned a failure, for the `Reason:` line Gunicorn logs after
    /// `Shutting down: Master`.
    pub fn halt_reason(&self) -> Option<&'static str> {
        self.halt_reason
    }

    /// Runs until a stop signal or a fatal worker error; returns the exit code.
    pub fn run(&mut self) -> i32 {
        let code = self.run_loop();
        // The socket file goes with the master (unless a successor's replaced it).
        self.control = None;
        code
    }

    fn run_loop(&mut self) -> i32 {
        if let Err(code) = self.manage_workers() {
            return code;
        }
        // After the first workers, as Gunicorn starts it.
        self.start_control();
        loop {
            self.bind_pending_metrics();
            let metrics_fd = self
                .metrics
                .as_ref()
                .and_then(|m| m.server.as_ref())
                .map(MetricsServer::fd);
            let mut fds: Vec<std::os::fd::RawFd> = metrics_fd.into_iter().collect();
            if let Some(c) = &self.control {
                fds.extend(c.fds());
            }
            let (signals, ready) = self.pipe.wait_also(1000, &fds);
            let control_ready = ready.iter().skip(usize::from(metrics_fd.is_some())).any(|r| *r);
            if metrics_fd.is_some() && ready.first() == Some(&true) {
                self.serve_metrics();
            }
            if control_ready {
                self.serve_control();
            }
            if let Some(c) = &mut self.control {
                c.prune_idle();
            }
            for sig in signals {
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGTERM => {
                        ferricorn_core::info!("Handling signal: term");
                        self.stop(Stop::Graceful);
                        return 0;
                    }
                    Signal::SIGINT | Signal::SIGQUIT => {
                        ferricorn_core::info!(
                            "Handling signal: {}",
                            if sig == Signal::SIGINT { "int" } else { "quit" }
                        );
                        self.stop(Stop::Quick);
                        return 0;
                    }
                    Signal::SIGTTIN => {
                        ferricorn_core::info!("Handling signal: ttin");
                        self.set_workers(self.cfg.workers + 1);
                    }
                    Signal::SIGTTOU => {
                        ferricorn_core::info!("Handling signal: ttou");
                        if self.cfg.workers > 1 {
                            self.set_workers(self.cfg.workers - 1);
                        }
                    }
                    Signal::SIGHUP => {
                        ferricorn_core::info!("Handling signal: hup");
                        ferricorn_core::info!("Hang up: Master");
                        self.reload();
                    }
                    Signal::SIGUSR2 => {
                        ferricorn_core::info!("Handling signal: usr2");
                        if self.reexec_pid.is_some() {
                            ferricorn_core::warning!("USR2 signal ignored. Child exists.");
                        } else if self.launcher.is_reexec_child() {
                            ferricorn_core::warning!("USR2 signal ignored. Parent exists.");
                        } else {
                            self.reexec_pid = self.launcher.reexec().map(|p| p.as_raw());
                        }
                    }
                    Signal::SIGWINCH => {
                        ferricorn_core::info!("Handling signal: winch");
                        if self.cfg.daemon {
                            ferricorn_core::info!("graceful stop of workers");
                            self.set_workers(0);
                            self.signal_all(Signal::SIGTERM);
                        } else {
                            ferricorn_core::debug!("SIGWINCH ignored. Not daemonized");
                        }
                    }
                    Signal::SIGUSR1 => {
                        ferricorn_core::info!("Handling signal: usr1");
                        self.launcher.reopen_logs();
                        self.signal_all(Signal::SIGUSR1);
                    }
                    other => ferricorn_core::debug!("Ignoring signal {other}"),
                }
            }
            if let Err(code) = self.reap() {
                return code;
            }
            self.murder_workers();
            self.retire_large_workers();
            self.launcher.tick();
            if self.cfg.backlog_metric && self.backlog_sent.elapsed() >= Duration::from_secs(1) {
                self.backlog_sent = Instant::now();
                if let Some(n) = self.launcher.listen_backlog() {
                    ferricorn_core::debug!("socket backlog: {n}");
                    if let Some(c) = ferricorn_core::metrics::statsd() {
                        c.histogram("gunicorn.backlog", n);
                    }
                }
            }
            if let Err(code) = self.manage_workers() {
                return code;
            }
        }
    }

    /// After a USR2 promotion the old master has released the metrics address.
    fn bind_pending_metrics(&mut self) {
        let Some(m) = &mut self.metrics else { return };
        if m.server.is_none() {
            if let Ok(s) = MetricsServer::bind(m.addr) {
                ferricorn_core::info!("Metrics at: http://{}/metrics", m.addr);
                m.server = Some(s);
            }
        }
    }

    fn serve_metrics(&mut self) {
        let Some(m) = &self.metrics else { return };
        let Some(server) = &m.server else { return };
        let mut totals = m.retired.clone();
        for w in self.workers.values() {
            if let Some(s) = m.region.slot(w.slot) {
                totals.add(s, true);
            }
        }
        let state = MasterState {
            workers: self.workers.len() as u64,
            restarts: m.restarts,
            backlog: self.launcher.listen_backlog(),
        };
        server.serve_pending(&|| prometheus::render(&totals, &state));
    }

    /// Folds an exited worker's counters into the totals and counts why it went.
    fn account_exit(&mut self, worker: &Worker, code: Option<i32>) {
        let Some(m) = &mut self.metrics else { return };
        if let Some(s) = m.region.slot(worker.slot) {
            m.retired.add(s, false);
        }
        m.region.clear(worker.slot);
        let reason = if worker.aborted.is_some() {
            Some(RestartReason::Timeout)
        } else if worker.retiring {
            Some(RestartReason::Memory)
        } else if worker.stopping {
            None
        } else if code == Some(0) {
            // A clean exit the master did not ask for: --max-requests, unless that is
            // off (then someone else stopped it; not a restart reason we track).
            self.cfg.max_requests.then_some(RestartReason::MaxRequests)
        } else {
            Some(RestartReason::Crash)
        };
        if let Some(r) = reason {
            m.restarts[r as usize] += 1;
        }
    }

    fn set_workers(&mut self, n: usize) {
        let old = self.cfg.workers;
        self.cfg.workers = n;
        self.launcher.nworkers_changed(n, old);
    }

    fn start_control(&mut self) {
        let Some((path, mode)) = self.cfg.control_socket.clone() else {
            ferricorn_core::debug!("Control socket disabled");
            return;
        };
        match crate::control::ControlServer::bind(&path, mode) {
            Ok(server) => {
                ferricorn_core::info!("Control socket listening at {}", server.path().display());
                self.control = Some(server);
            }
            Err(e) => ferricorn_core::warning!("Failed to start control socket: {e}"),
        }
    }

    fn serve_control(&mut self) {
        let Some(mut control) = self.control.take() else { return };
        control.serve(&mut |cmd| self.control_command(&cmd.words));
        self.control = Some(control);
    }

    /// One `gunicornc` command (Gunicorn's `ctl/handlers.py`, with its replies' keys).
    fn control_command(&mut self, words: &[String]) -> Result<serde_json::Value, String> {
        use serde_json::json;
        let invalid = |e: String| format!("Invalid argument: {e}");
        let count = |w: Option<&String>| -> Result<usize, String> {
            match w {
                None => Ok(1),
                Some(w) => w
                    .parse::<i64>()
                    .map(|n| n.max(1) as usize)
                    .map_err(|_| invalid(format!("invalid literal for int() with base 10: '{w}'"))),
            }
        };
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let arg = |i: usize| lower.get(i).map(String::as_str);
        match (arg(0), arg(1)) {
            (Some("show"), Some("all")) => {
                let workers = self.control_workers();
                let n = workers.len();
                Ok(json!({
                    "arbiter": {"pid": std::process::id(), "type": "arbiter", "role": "master"},
                    "web_workers": workers.into_iter().map(|mut w| {
                        w["type"] = json!("web");
                        if let Some(o) = w.as_object_mut() { o.remove("aborted"); }
                        w
                    }).collect::<Vec<_>>(),
                    "web_worker_count": n,
                    "dirty_arbiter": null,
                    "dirty_workers": [],
                    "dirty_worker_count": 0,
                }))
            }
            (Some("show"), Some("workers")) => {
                let workers = self.control_workers();
                Ok(json!({"count": workers.len(), "workers": workers}))
            }
            (Some("show"), Some("dirty")) => Ok(json!({"enabled": false, "pid": null, "workers": [], "apps": []})),
            (Some("show"), Some("config")) => Ok(self.launcher.control_config()),
            (Some("show"), Some("stats")) => {
                let uptime = self
                    .stats
                    .started
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| (d.as_secs_f64() * 100.0).round() / 100.0);
                Ok(json!({
                    "uptime": uptime,
                    "pid": std::process::id(),
                    "workers_current": self.workers.len(),
                    "workers_target": self.cfg.workers,
                    "workers_spawned": self.stats.workers_spawned,
                    "workers_killed": self.stats.workers_killed,
                    "reloads": self.stats.reloads,
                    "dirty_arbiter_pid": null,
                }))
            }
            (Some("show"), Some("listeners")) => {
                let listeners = self.launcher.control_listeners();
                Ok(json!({"count": listeners.len(), "listeners": listeners}))
            }
            (Some("show"), Some(other)) => Err(invalid(format!("Unknown show target: {other}"))),
            (Some("show"), None) => Err(invalid(
                "Missing show target (all|workers|dirty|config|stats|listeners)".into(),
            )),
            (Some("worker"), Some("add")) => {
                let n = count(words.get(2))?;
                let previous = self.cfg.workers;
                // No more than there are heartbeat slots for.
                self.set_workers(previous.saturating_add(n).min(SLOTS));
                Ok(json!({"added": self.cfg.workers - previous, "previous": previous, "total": self.cfg.workers}))
            }
            (Some("worker"), Some("remove")) => {
                let n = count(words.get(2))?;
                let previous = self.cfg.workers;
                let total = previous.saturating_sub(n).max(1);
                self.set_workers(total);
                Ok(json!({"removed": previous - total, "previous": previous, "total": total}))
            }
            (Some("worker"), Some("kill")) => {
                let Some(w) = words.get(2) else {
                    return Err(invalid("Missing PID for worker kill".into()));
                };
                let pid: i32 = w
                    .parse()
                    .map_err(|_| invalid(format!("invalid literal for int() with base 10: '{w}'")))?;
                if !self.workers.contains_key(&pid) {
                    return Ok(json!({"success": false, "error": format!("Worker {pid} not found")}));
                }
                match kill(Pid::from_raw(pid), Signal::SIGTERM) {
                    Ok(()) => {
                        self.stats.workers_killed += 1;
                        Ok(json!({"success": true, "killed": pid}))
                    }
                    Err(e) => Ok(json!({"success": false, "error": e.desc()})),
                }
            }
            (Some("worker"), Some(other)) => Err(invalid(format!("Unknown worker action: {other}"))),
            (Some("worker"), None) => Err(invalid("Missing worker action (add|remove|kill)".into())),
            (Some("dirty"), Some("add" | "remove")) => {
                count(words.get(2))?;
                Ok(json!({"success": false, "error": "Dirty arbiter not running"}))
            }
            (Some("dirty"), Some(other)) => Err(invalid(format!("Unknown dirty action: {other}"))),
            (Some("dirty"), None) => Err(invalid("Missing dirty action (add|remove)".into())),
            // Signals to itself, handled by the loop as if sent from outside.
            (Some("reload"), _) => {
                let _ = kill(Pid::this(), Signal::SIGHUP);
                Ok(json!({"status": "reloading"}))
            }
            (Some("reopen"), _) => {
                let _ = kill(Pid::this(), Signal::SIGUSR1);
                Ok(json!({"status": "reopening"}))
            }
            (Some("shutdown"), _) => {
                let mode = words.get(1).map_or("graceful", String::as_str);
                let sig = if mode == "quick" {
                    Signal::SIGINT
                } else {
                    Signal::SIGTERM
                };
                let _ = kill(Pid::this(), sig);
                Ok(json!({"status": "shutting_down", "mode": mode}))
            }
            (Some("help"), _) => Ok(crate::control::help()),
            (Some(other), _) => Err(invalid(format!("Unknown command: {other}"))),
            (None, _) => Err("Empty command".into()),
        }
    }

    /// Workers as `show workers` lists them, oldest first.
    fn control_workers(&self) -> Vec<serde_json::Value> {
        let now_ms = heartbeat::now_ms();
        let mut workers: Vec<(u64, serde_json::Value)> = self
            .workers
            .iter()
            .map(|(pid, w)| {
                let beat = self
                    .heartbeats
                    .slot(w.slot)
                    .map_or(0, |s| s.beat.load(std::sync::atomic::Ordering::Acquire));
                let last = (beat != 0).then(|| (now_ms.saturating_sub(beat) as f64 / 10.0).round() / 100.0);
                (
                    w.age,
                    serde_json::json!({
                        "pid": pid,
                        "age": w.age,
                        "booted": beat != 0,
                        "aborted": w.aborted.is_some(),
                        "last_heartbeat": last,
                    }),
                )
            })
            .collect();
        workers.sort_by_key(|(age, _)| *age);
        workers.into_iter().map(|(_, w)| w).collect()
    }

    /// Starts a full set of new workers, then retires the old ones gracefully.
    fn reload(&mut self) {
        self.stats.reloads += 1;
        // The launcher reports the new count to the hooks itself (before `on_reload`).
        if let Some(n) = self.launcher.reload() {
            self.cfg.workers = n;
        }
        self.launcher.reloaded_config(&mut self.cfg);
        let old: Vec<i32> = self.workers.keys().copied().collect();
        for _ in 0..self.cfg.workers {
            if self.spawn().is_err() {
                break;
            }
        }
        for pid in old {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.stopping = true;
            }
            if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
                self.stats.workers_killed += 1;
            }
        }
    }

    fn spawn(&mut self) -> Result<(), ArbiterError> {
        let used: std::collections::HashSet<usize> = self.workers.values().map(|w| w.slot).collect();
        let Some(slot_index) = (0..self.heartbeats.len()).find(|i| !used.contains(i)) else {
            return Err(ArbiterError::Io(std::io::Error::other("no free heartbeat slot")));
        };
        let Some(slot) = self.heartbeats.slot(slot_index) else {
            return Err(ArbiterError::Io(std::io::Error::other("no free heartbeat slot")));
        };
        self.heartbeats.reset(slot_index, 0);
        self.next_age += 1;
        let age = self.next_age;
        let stats = self.metrics.as_ref().and_then(|m| {
            m.region.clear(slot_index);
            m.region.slot(slot_index)
        });
        // The slots a worker looks at when it balances accepts: lowest-first allocation
        // keeps the workers' slots at the front.
        let peers = self.heartbeats.all();
        let peers = &peers[..(2 * self.cfg.workers).max(16).min(peers.len())];
        match self.launcher.spawn(age, slot, peers, stats) {
            Ok(pid) => {
                self.stats.workers_spawned += 1;
                slot.pid
                    .store(pid.as_raw() as u32, std::sync::atomic::Ordering::Release);
                let w = Worker {
                    age,
                    slot: slot_index,
                    aborted: None,
                    retiring: false,
                    stopping: false,
                };
                self.workers.insert(pid.as_raw(), w);
                Ok(())
            }
            Err(e) => {
                ferricorn_core::error!("Unable to start a worker: {e}");
                Err(e)
            }
        }
    }

    fn manage_workers(&mut self) -> Result<(), i32> {
        while self.workers.len() < self.cfg.workers {
            if self.spawn().is_err() {
                break;
            }
        }
        if self.workers.len() > self.cfg.workers {
            // Retire the oldest workers first, as Gunicorn does.
            let mut by_age: Vec<(u64, i32)> = self.workers.iter().map(|(p, w)| (w.age, *p)).collect();
            by_age.sort();
            let extra = self.workers.len() - self.cfg.workers;
            for (_, pid) in by_age.into_iter().take(extra) {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.stopping = true;
                }
                if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
                    self.stats.workers_killed += 1;
                }
            }
        }
        let active = self.workers.len();
        if self.reported_workers != Some(active) {
            self.reported_workers = Some(active);
            ferricorn_core::debug!("{active} workers");
            if let Some(c) = ferricorn_core::metrics::statsd() {
                c.gauge("gunicorn.workers", active as u64);
            }
        }
        Ok(())
    }

    /// Aborts workers whose oldest app call (or boot) has run past `timeout`: SIGABRT
    /// first (the worker dumps every thread's stack and runs `worker_abort`), SIGKILL if
    /// it is still there after a grace period.
    fn murder_workers(&mut self) {
        let Some(timeout) = self.cfg.timeout else { return };
        let now_ms = heartbeat::now_ms();
        let limit_ms = timeout.as_millis() as u64;
        for (pid, w) in self.workers.iter_mut() {
            if let Some(at) = w.aborted {
                if at.elapsed() > ABORT_GRACE {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
                continue;
            }
            let Some(slot) = self.heartbeats.slot(w.slot) else {
                continue;
            };
            let beat = slot.beat.load(std::sync::atomic::Ordering::Acquire);
            let oldest = slot.oldest_call.load(std::sync::atomic::Ordering::Acquire);
            let stuck_call = oldest != 0 && now_ms.saturating_sub(oldest) > limit_ms;
            // Before its first heartbeat a worker is importing the app: Gunicorn never
            // times that out (its heartbeat file's mtime is wall-clock until the first
            // notify), and apps that load models at import rely on it.
            let silent = beat != 0 && now_ms.saturating_sub(beat) > limit_ms;
            if stuck_call || silent {
                ferricorn_core::critical!("WORKER TIMEOUT (pid:{pid})");
                let _ = kill(Pid::from_raw(*pid), Signal::SIGABRT);
                w.aborted = Some(Instant::now());
            }
        }
    }

    /// `--max-worker-memory`: a worker past the limit finishes its requests and is
    /// replaced, like a `--max-requests` restart.
    fn retire_large_workers(&mut self) {
        let Some(limit) = self.cfg.max_worker_memory else {
            return;
        };
        for (pid, w) in self.workers.iter_mut() {
            if w.retiring {
                continue;
            }
            let Some(rss) = rss_bytes(*pid) else { continue };
            if rss > limit {
                ferricorn_core::warning!(
                    "Worker (pid:{pid}) uses {} MiB, over --max-worker-memory {} MiB: retiring it",
                    rss >> 20,
                    limit >> 20
                );
                let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
                w.retiring = true;
            }
        }
    }

    /// Reaps exited workers; `Err(code)` when one reports that it cannot boot.
    fn reap(&mut self) -> Result<(), i32> {
        let mut halt = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, sig, _) => (pid, None, Some(sig as i32)),
                _ => continue,
            };
            if self.reexec_pid == Some(pid.as_raw()) {
                ferricorn_core::info!("The new master (pid:{pid}) exited.");
                self.reexec_pid = None;
                continue;
            }
            let Some(worker) = self.workers.remove(&pid.as_raw()) else {
                continue;
            };
            self.heartbeats.retire(worker.slot);
            let exit = WorkerExit {
                pid: pid.as_raw(),
                age: worker.age,
                code,
                signal,
            };
            self.account_exit(&worker, code);
            match (code, signal) {
                (Some(WORKER_BOOT_ERROR), _) => {
                    ferricorn_core::error!("Worker (pid:{pid}) exited with code {WORKER_BOOT_ERROR}.");
                    halt = Some((WORKER_BOOT_ERROR, "Worker failed to boot."));
                }
                (Some(APP_LOAD_ERROR), _) => {
                    ferricorn_core::error!("Worker (pid:{pid}) exited with code {APP_LOAD_ERROR}.");
                    halt = Some((APP_LOAD_ERROR, "App failed to load."));
                }
                _ => log_exit(pid.as_raw(), code, signal),
            }
            self.launcher.worker_exited(&exit);
        }
        if let Some((code, reason)) = halt {
            self.stop(Stop::Graceful);
            self.halt_reason = Some(reason);
            return Err(code);
        }
        Ok(())
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }

    /// Stops every worker: TERM (graceful) or QUIT (quick), then KILL after
    /// `graceful_timeout`.
    fn stop(&mut self, how: Stop) {
        // Refused from now on rather than left unanswered during the stop (Gunicorn
        // stops its control server first too).
        self.control = None;
        for w in self.workers.values_mut() {
            w.stopping = true;
        }
        self.launcher.close_listeners();
        self.signal_all(match how {
            Stop::Graceful => Signal::SIGTERM,
            Stop::Quick => Signal::SIGQUIT,
        });
        let mut deadline = Instant::now() + self.cfg.graceful_timeout;
        let mut quick = matches!(how, Stop::Quick);
        while !self.workers.is_empty() && Instant::now() < deadline {
            let signals = self.pipe.wait(100);
            // An INT or QUIT during a graceful stop (a second Ctrl-C, an orchestrator
            // escalating) makes it quick, as in Gunicorn 27.
            if !quick && signals.iter().any(|s| matches!(s, Signal::SIGINT | Signal::SIGQUIT)) {
                ferricorn_core::info!("Quick shutdown requested");
                quick = true;
                self.signal_all(Signal::SIGQUIT);
                deadline = deadline.min(Instant::now() + QUICK_STOP_GRACE);
            }
            self.reap_quietly(true);
        }
        if !self.workers.is_empty() {
            self.signal_all(Signal::SIGKILL);
            // Gunicorn's last reap comes right after its SIGKILL, before the workers
            // are gone: the kill it sent itself is not reported as "Perhaps out of
            // memory?" (a deploy that outlasts graceful_timeout would page someone).
            while !self.workers.is_empty() {
                let _ = self.pipe.wait(100);
                self.reap_quietly(false);
            }
        }
    }

    /// Reaps workers while stopping; `report` logs those that did not exit with 0.
    fn reap_quietly(&mut self, report: bool) {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, c) => (pid, Some(c), None),
                WaitStatus::Signaled(pid, s, _) => (pid, None, Some(s as i32)),
                _ => break,
            };
            if let Some(w) = self.workers.remove(&pid.as_raw()) {
                if report {
                    log_exit(pid.as_raw(), code, signal);
                }
                self.heartbeats.retire(w.slot);
                self.account_exit(&w, code);
                self.launcher.worker_exited(&WorkerExit {
                    pid: pid.as_raw(),
                    age: w.age,
                    code,
                    signal,
                });
            }
        }
    }
}

/// Gunicorn's line for a worker that ended other than with exit code 0.
fn log_exit(pid: i32, code: Option<i32>, signal: Option<i32>) {
    match (code, signal) {
        (Some(0), _) => {}
        (Some(c), _) => ferricorn_core::error!("Worker (pid:{pid}) exited with code {c}."),
        (_, Some(s)) if s == libc::SIGKILL => {
            ferricorn_core::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
        }
        (_, Some(s)) if s == libc::SIGTERM => ferricorn_core::info!("Worker (pid:{pid}) was sent SIGTERM!"),
        (_, Some(s)) => ferricorn_core::warning!("Worker (pid:{pid}) was sent {}!", signal_name(s)),
        _ => {}
    }
}

/// Resident set size of a process, from /proc.
fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
