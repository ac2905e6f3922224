//! Per-worker request counters in memory shared with the master, which sums them for
//! the Prometheus endpoint. Each worker writes only its own slot (relaxed atomics, no
//! contention); the master folds a dead worker's slot into its running totals before
//! the slot is reused, so counters never go backwards.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::shared_array::{SharedArray, ZeroInit};

/// Methods counted by name; others fall under `OTHER`.
pub const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER"];
/// Status classes `1xx`..`5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the latency histogram, in seconds (the Python Prometheus client's
/// defaults).
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub fn method_index(m: &str) -> usize {
    METHODS.iter().position(|x| *x == m).unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

#[repr(C, align(64))]
#[derive(Default)]
pub struct WorkerStats {
    requests: [[AtomicU64; METHODS.len()]; CLASSES.len()],
    /// Cumulative counts per bucket (the last is `+Inf`, i.e. the request count).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_us: AtomicU64,
    in_flight: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl WorkerStats {
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, method: usize, status: u16, duration_s: f64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.requests[class_index(status)][method.min(METHODS.len() - 1)].fetch_add(1, Ordering::Relaxed);
        let first = BUCKETS.iter().position(|b| duration_s <= *b).unwrap_or(BUCKETS.len());
        for b in &self.buckets[first..] {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.duration_us.fetch_add((duration_s * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn add_io(&self, read: u64, written: u64) {
        if read > 0 {
            self.bytes_in.fetch_add(read, Ordering::Relaxed);
        }
        if written > 0 {
            self.bytes_out.fetch_add(written, Ordering::Relaxed);
        }
    }
}

/// Sums over workers, as the master reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: [[u64; METHODS.len()]; CLASSES.len()],
    pub buckets: [u64; BUCKETS.len() + 1],
    pub duration_us: u64,
    pub in_flight: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Totals {
    /// Adds a slot's counters (and, if `gauges`, its in-flight gauge).
    pub fn add(&mut self, s: &WorkerStats, gauges: bool) {
        for (row, srow) in self.requests.iter_mut().zip(&s.requests) {
            for (v, sv) in row.iter_mut().zip(srow) {
                *v += sv.load(Ordering::Relaxed);
            }
        }
        for (v, sv) in self.buckets.iter_mut().zip(&s.buckets) {
            *v += sv.load(Ordering::Relaxed);
        }
        self.duration_us += s.duration_us.load(Ordering::Relaxed);
        self.bytes_in += s.bytes_in.load(Ordering::Relaxed);
        self.bytes_out += s.bytes_out.load(Ordering::Relaxed);
        if gauges {
            self.in_flight += s.in_flight.load(Ordering::Relaxed);
        }
    }
}

/// One `WorkerStats` per worker slot (see `shared_array`).
pub struct StatsRegion(SharedArray<WorkerStats>);

// SAFETY: every field is an atomic integer, valid when zero.
unsafe impl ZeroInit for WorkerStats {}

impl StatsRegion {
    pub fn new(len: usize) -> std::io::Result<Self> {
        SharedArray::new(len).map(Self)
    }

    pub fn slot(&self, i: usize) -> Option<&'static WorkerStats> {
        self.0.slot(i)
    }

    /// Zeroes a slot for its next worker.
    pub fn clear(&self, i: usize) {
        if let Some(s) = self.slot(i) {
            for row in &s.requests {
                for v in row {
                    v.store(0, Ordering::Relaxed);
                }
            }
            for v in &s.buckets {
                v.store(0, Ordering::Relaxed);
            }
            for v in [&s.duration_us, &s.in_flight, &s.bytes_in, &s.bytes_out] {
                v.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_sums() {
        let region = StatsRegion::new(2).unwrap();
        let a = region.slot(0).unwrap();
        let b = region.slot(1).unwrap();
        a.request_started();
        a.request_finished(method_index("GET"), 200, 0.003);
        b.request_started();
        b.request_finished(method_index("BREW"), 503, 3.0);
        b.request_started();
        a.add_io(10, 20);
        let mut t = Totals::default();
        t.add(a, true);
        t.add(b, true);
        assert_eq!(t.requests[1][0], 1);
        assert_eq!(t.requests[4][7], 1);
        assert_eq!(t.buckets[0], 1);
        assert_eq!(t.buckets[BUCKETS.len() - 1], 2);
        assert_eq!(t.buckets[BUCKETS.len()], 2);
        assert_eq!(t.in_flight, 1);
        assert_eq!((t.bytes_in, t.bytes_out), (10, 20));
        region.clear(0);
        let mut t = Totals::default();
        t.add(a, true);
        assert_eq!(t, Totals::default());
    }
}
