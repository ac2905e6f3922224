//! The master loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::signals::SelfPipe;
use crate::{ArbiterError, APP_LOAD_ERROR, WORKER_BOOT_ERROR};

#[derive(Debug, Clone)]
pub struct ArbiterConfig {
    pub workers: usize,
    pub graceful_timeout: Duration,
}

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
    /// Forks worker number `age`. Returns the child's pid in the master; in the child it
    /// runs the worker and exits, never returning.
    fn spawn(&mut self, age: u64) -> Result<Pid, ArbiterError>;
    /// A worker was reaped (`child_exit` hook).
    fn worker_exited(&mut self, _exit: &WorkerExit) {}
    /// The target number of workers changed (`nworkers_changed` hook).
    fn nworkers_changed(&mut self, _new: usize, _old: usize) {}
    /// SIGHUP: reload the configuration; returns the new worker count.
    fn reload(&mut self) -> Option<usize> {
        None
    }
    /// SIGUSR1 in the master: reopen log files.
    fn reopen_logs(&mut self) {}
}

struct Worker {
    age: u64,
}

pub struct Arbiter<L: Launcher> {
    cfg: ArbiterConfig,
    launcher: L,
    pipe: SelfPipe,
    workers: BTreeMap<i32, Worker>,
    next_age: u64,
}

enum Stop {
    Graceful,
    Quick,
}

impl<L: Launcher> Arbiter<L> {
    pub fn new(cfg: ArbiterConfig, launcher: L) -> Result<Self, ArbiterError> {
        let pipe = SelfPipe::install().map_err(ArbiterError::Signals)?;
        Ok(Self {
            cfg,
            launcher,
            pipe,
            workers: BTreeMap::new(),
            next_age: 0,
        })
    }

    pub fn launcher(&mut self) -> &mut L {
        &mut self.launcher
    }

    /// Runs until a stop signal or a fatal worker error; returns the exit code.
    pub fn run(&mut self) -> i32 {
        if let Err(code) = self.manage_workers() {
            return code;
        }
        loop {
            for sig in self.pipe.wait(1000) {
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
            if let Err(code) = self.manage_workers() {
                return code;
            }
        }
    }

    fn set_workers(&mut self, n: usize) {
        let old = self.cfg.workers;
        self.cfg.workers = n;
        self.launcher.nworkers_changed(n, old);
    }

    /// Starts a full set of new workers, then retires the old ones gracefully.
    fn reload(&mut self) {
        if let Some(n) = self.launcher.reload() {
            if n != self.cfg.workers {
                self.set_workers(n);
            }
        }
        let old: Vec<i32> = self.workers.keys().copied().collect();
        for _ in 0..self.cfg.workers {
            if self.spawn().is_err() {
                break;
            }
        }
        for pid in old {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    fn spawn(&mut self) -> Result<(), ArbiterError> {
        self.next_age += 1;
        let age = self.next_age;
        match self.launcher.spawn(age) {
            Ok(pid) => {
                self.workers.insert(pid.as_raw(), Worker { age });
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
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        Ok(())
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
            let Some(worker) = self.workers.remove(&pid.as_raw()) else {
                continue;
            };
            let exit = WorkerExit {
                pid: pid.as_raw(),
                age: worker.age,
                code,
                signal,
            };
            match (code, signal) {
                (Some(WORKER_BOOT_ERROR), _) => {
                    ferricorn_core::error!("Worker (pid:{pid}) exited with code {WORKER_BOOT_ERROR}");
                    halt = Some((WORKER_BOOT_ERROR, "Worker failed to boot."));
                }
                (Some(APP_LOAD_ERROR), _) => {
                    ferricorn_core::error!("Worker (pid:{pid}) exited with code {APP_LOAD_ERROR}");
                    halt = Some((APP_LOAD_ERROR, "App failed to load."));
                }
                (Some(0), _) => {}
                (Some(c), _) => ferricorn_core::error!("Worker (pid:{pid}) exited with code {c}."),
                (_, Some(s)) if s == libc::SIGKILL => {
                    ferricorn_core::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                (_, Some(s)) => ferricorn_core::error!("Worker (pid:{pid}) was sent {}!", signal_name(s)),
                _ => {}
            }
            self.launcher.worker_exited(&exit);
        }
        if let Some((code, reason)) = halt {
            self.stop(Stop::Graceful);
            ferricorn_core::info!("Reason: {reason}");
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
        self.signal_all(match how {
            Stop::Graceful => Signal::SIGTERM,
            Stop::Quick => Signal::SIGQUIT,
        });
        let deadline = Instant::now() + self.cfg.graceful_timeout;
        while !self.workers.is_empty() && Instant::now() < deadline {
            let _ = self.pipe.wait(100);
            self.reap_quietly();
        }
        if !self.workers.is_empty() {
            self.signal_all(Signal::SIGKILL);
            while !self.workers.is_empty() {
                let _ = self.pipe.wait(100);
                self.reap_quietly();
            }
        }
    }

    fn reap_quietly(&mut self) {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, c) => (pid, Some(c), None),
                WaitStatus::Signaled(pid, s, _) => (pid, None, Some(s as i32)),
                _ => break,
            };
            if let Some(w) = self.workers.remove(&pid.as_raw()) {
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

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
