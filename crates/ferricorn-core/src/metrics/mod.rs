//! Metrics: Gunicorn's StatsD metrics, and request counters in shared memory that the
//! master serves in Prometheus' text format (`--metrics-bind`).
//!
//! Everything here is process-global. The shared counters are relaxed atomics in a slot
//! each worker owns (set once after `fork`); the StatsD client is behind an `RwLock`
//! (the master rebuilds it on HUP; workers inherit it across `fork`), read-locked per
//! metric and only when StatsD is on.

pub mod prometheus;
pub mod shm;
pub mod statsd;

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use shm::{StatsRegion, Totals, WorkerStats};
pub use statsd::{Statsd, StatsdError};

/// Replaced on HUP (the config may change the host, prefix or tags); read-locked per
/// metric, and only when StatsD is on (`STATSD_ON`).
static STATSD: RwLock<Option<Arc<Statsd>>> = RwLock::new(None);
static STATSD_ON: AtomicBool = AtomicBool::new(false);
static STATS: AtomicPtr<WorkerStats> = AtomicPtr::new(std::ptr::null_mut());

/// Turns StatsD on (or off, with `None`) for this process and the workers it forks.
pub fn set_statsd(client: Option<Statsd>) {
    STATSD_ON.store(client.is_some(), Ordering::Release);
    *STATSD.write().unwrap_or_else(|p| p.into_inner()) = client.map(Arc::new);
}

pub fn statsd() -> Option<Arc<Statsd>> {
    if !STATSD_ON.load(Ordering::Acquire) {
        return None;
    }
    STATSD.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// In a worker: where its request counters go.
pub fn set_worker_stats(stats: &'static WorkerStats) {
    STATS.store((stats as *const WorkerStats).cast_mut(), Ordering::Release);
}

fn stats() -> Option<&'static WorkerStats> {
    let p = STATS.load(Ordering::Acquire);
    // SAFETY: only ever set from a `&'static WorkerStats`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Whether requests need to be measured at all (cheap check on the request path).
pub fn enabled() -> bool {
    STATSD_ON.load(Ordering::Relaxed) || !STATS.load(Ordering::Relaxed).is_null()
}

pub fn request_started() {
    if let Some(s) = stats() {
        s.request_started();
    }
}

/// One finished response: Gunicorn's three StatsD metrics (in its order) and the
/// shared counters.
pub fn request_finished(method: &str, status: u16, duration: Duration) {
    if let Some(s) = stats() {
        s.request_finished(shm::method_index(method), status, duration.as_secs_f64());
    }
    if let Some(c) = statsd() {
        // Gunicorn's arithmetic: whole milliseconds plus microseconds / 1000.
        let ms = (duration.as_secs() * 1000) as f64 + f64::from(duration.subsec_micros()) / 1000.0;
        c.timing_ms("gunicorn.request.duration", ms);
        c.incr("gunicorn.requests", 1);
        c.incr(&format!("gunicorn.request.status.{status}"), 1);
    }
}

pub fn bytes_in(n: u64) {
    if let Some(s) = stats() {
        s.add_io(n, 0);
    }
}

pub fn bytes_out(n: u64) {
    if let Some(s) = stats() {
        s.add_io(0, n);
    }
}

/// `gunicorn.log.<level>` for warning, error, critical and exception lines.
pub fn log_line(level: &str) {
    if let Some(c) = statsd() {
        c.incr(&format!("gunicorn.log.{level}"), 1);
    }
}
