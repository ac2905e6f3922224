//! Worker heartbeats through shared memory (Gunicorn uses a temp file per worker).
//!
//! The master maps one anonymous shared region before forking; every worker inherits it
//! and owns one slot. A worker publishes two numbers: when it last showed life, and
//! when its oldest application call in flight started (0 = none). The master compares
//! both with `timeout` each tick. No file, no `utime` syscall per request.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ferricorn_core::shared_array::{SharedArray, ZeroInit};

/// One worker's slot. Cache-line sized so workers never share a line.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Slot {
    pub pid: AtomicU32,
    /// Milliseconds since the epoch of the last sign of life; 0 = not booted yet.
    pub beat: AtomicU64,
    /// Start (ms since the epoch) of the oldest app call in flight; 0 = idle.
    pub oldest_call: AtomicU64,
    /// Open connections, for the other workers' accept balancing
    /// (`ferricorn_server::AcceptBalance`); `NOT_ACCEPTING` before the worker accepts,
    /// once it stops, and after it exits.
    pub connections: AtomicU32,
}

pub const NOT_ACCEPTING: u32 = u32::MAX;

impl Slot {
    pub fn publish(&self, oldest_call: u64) {
        self.oldest_call.store(oldest_call, Ordering::Relaxed);
        self.beat.store(now_ms(), Ordering::Release);
    }
}

pub struct Heartbeats(SharedArray<Slot>);

// SAFETY: every field is an atomic integer, valid when zero.
unsafe impl ZeroInit for Slot {}

impl Heartbeats {
    pub fn new(len: usize) -> std::io::Result<Self> {
        SharedArray::new(len).map(Self)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn slot(&self, i: usize) -> Option<&'static Slot> {
        self.0.slot(i)
    }

    pub fn reset(&self, i: usize, pid: u32) {
        if let Some(s) = self.slot(i) {
            s.beat.store(0, Ordering::Relaxed);
            s.oldest_call.store(0, Ordering::Relaxed);
            s.connections.store(NOT_ACCEPTING, Ordering::Relaxed);
            s.pid.store(pid, Ordering::Release);
        }
    }

    /// A worker was reaped: its slot no longer counts as a worker's.
    pub fn retire(&self, i: usize) {
        if let Some(s) = self.slot(i) {
            s.connections.store(NOT_ACCEPTING, Ordering::Relaxed);
            s.pid.store(0, Ordering::Release);
        }
    }

    pub fn all(&self) -> &'static [Slot] {
        self.0.all()
    }
}

/// The fewest open connections among the workers in `peers` other than `me` that
/// accept now: booted, beating within the last two seconds (a worker whose loop is
/// stuck takes nothing), and not stopping.
pub fn least_loaded_other(peers: &[Slot], me: &Slot, now_ms: u64) -> Option<u32> {
    peers
        .iter()
        .filter(|s| !std::ptr::eq(*s, me) && s.pid.load(Ordering::Acquire) != 0)
        .filter(|s| now_ms.saturating_sub(s.beat.load(Ordering::Relaxed)) < 2_000)
        .map(|s| s.connections.load(Ordering::Relaxed))
        .filter(|&n| n != NOT_ACCEPTING)
        .min()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_child() {
        let hb = Heartbeats::new(4).unwrap();
        hb.reset(2, 1);
        // SAFETY: the child only touches atomics and exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                hb.slot(2).unwrap().publish(1234);
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                let s = hb.slot(2).unwrap();
                assert_eq!(s.oldest_call.load(Ordering::Acquire), 1234);
                assert!(s.beat.load(Ordering::Acquire) > 0);
                assert!(hb.slot(4).is_none());
            }
        }
    }

    #[test]
    fn least_loaded_other_skips_self_idle_slots_and_stale_workers() {
        let hb = Heartbeats::new(6).unwrap();
        let now = 1_000_000;
        let set = |i: usize, pid: u32, beat: u64, conns: u32| {
            let s = hb.slot(i).unwrap();
            s.pid.store(pid, Ordering::Relaxed);
            s.beat.store(beat, Ordering::Relaxed);
            s.connections.store(conns, Ordering::Relaxed);
        };
        set(0, 10, now, 7); // me
        set(1, 11, now - 100, 5);
        set(2, 12, now - 5_000, 0); // stuck: no beat for 5 s
        set(3, 0, now, 1); // free slot
        set(4, 14, now, NOT_ACCEPTING); // stopping
        set(5, 15, 0, 0); // booting
        let me = hb.slot(0).unwrap();
        assert_eq!(least_loaded_other(hb.all(), me, now), Some(5));
        set(1, 11, now, 3);
        assert_eq!(least_loaded_other(hb.all(), me, now), Some(3));
        hb.retire(1);
        assert_eq!(least_loaded_other(hb.all(), me, now), None);
        // Only one worker: nobody to defer to.
        assert_eq!(least_loaded_other(&hb.all()[..1], me, now), None);
    }
}
