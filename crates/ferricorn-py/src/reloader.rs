//! `--reload`: a worker watches the source of every imported module (and
//! `--reload-extra-file` globs) and exits gracefully when one changes, so the master
//! starts a worker on the new code. A changed Python file that no longer compiles is
//! reported and the worker keeps serving the old code until it is fixed.
//!
//! Watching is by polling modification times once a second, whatever `--reload-engine`
//! says: it needs no extra thread per directory, works on every filesystem (including
//! bind mounts in containers, where inotify events are often missing), and the cost is
//! one `stat` per file per second in development only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ferricorn_server::{ServeOutcome, StopSignal};
use pyo3::prelude::*;

use crate::pyhelpers::helpers;

pub struct Reloader {
    extra: Vec<String>,
    mtimes: HashMap<PathBuf, SystemTime>,
}

impl Reloader {
    pub fn new(extra: Vec<String>) -> Self {
        Self {
            extra,
            mtimes: HashMap::new(),
        }
    }

    /// Starts the watcher thread; on a change it runs `on_change` (the `worker_int` hook)
    /// and stops the worker through `stop`.
    pub fn spawn(mut self, stop: StopSignal, on_change: Box<dyn FnOnce() + Send>) {
        let spawned = std::thread::Builder::new()
            .name("ferricorn-reloader".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                if let Some(changed) = self.check() {
                    ferricorn_core::info!("Worker reloading: {} modified", changed.display());
                    on_change();
                    stop.stop(ServeOutcome::Graceful);
                    return;
                }
            });
        if let Err(e) = spawned {
            ferricorn_core::error!("can't start the reloader: {e}");
        }
    }

    /// The first changed file that compiles, if any.
    fn check(&mut self) -> Option<PathBuf> {
        let files: Vec<String> = Python::attach(|py| {
            helpers(py)
                .and_then(|h| h.getattr("watched_files")?.call1((self.extra.clone(),))?.extract())
                .unwrap_or_default()
        });
        let mut changed = None;
        for f in files {
            let path = PathBuf::from(f);
            let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            let previous = self.mtimes.insert(path.clone(), mtime);
            let modified = previous.is_some_and(|old| old != mtime);
            if modified && changed.is_none() && self.compiles(&path) {
                changed = Some(path);
            }
        }
        changed
    }

    fn compiles(&self, path: &std::path::Path) -> bool {
        let error: Option<String> = Python::attach(|py| {
            helpers(py)
                .and_then(|h| {
                    h.getattr("syntax_error")?
                        .call1((path.to_string_lossy().as_ref(),))?
                        .extract()
                })
                .unwrap_or(None)
        });
        match error {
            Some(tb) => {
                ferricorn_core::error!(
                    "{} was modified but does not compile; still serving the previous code:\n{}",
                    path.display(),
                    tb.trim_end()
                );
                false
            }
            None => true,
        }
    }
}
