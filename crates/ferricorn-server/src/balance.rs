//! Spreading connections across the workers that share a listener.
//!
//! Every worker waits in `accept` on the same socket and the kernel hands a new
//! connection to whichever gets there first. A worker that is already awake takes a
//! whole burst: all 64 of a load balancer's (or wrk's) keep-alive connections can land in
//! one worker while the others stay idle, and keep-alive keeps it that way. So before
//! each accept a worker compares its open connections with the other workers' (published
//! in the master's shared memory, see `AcceptBalance`); holding more than the least
//! loaded one plus `SLACK`, it steps back from `accept` for a millisecond, a few times at
//! most, so that a less loaded worker takes the connection. If none does (it is busy in
//! a long call), the connection is still taken after `MAX_DEFERS` tries: deferring costs
//! a new connection at most a few milliseconds, never its answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::serve::{ServeOutcome, Shared};

/// How many more connections than the least loaded worker a worker may hold and still
/// accept at once.
const SLACK: usize = 1;
/// One step back from `accept`.
const DEFER: Duration = Duration::from_millis(1);
/// Steps back before accepting anyway.
const MAX_DEFERS: u32 = 3;

/// What a worker knows of the other workers sharing its listeners. Every worker sets
/// [`crate::ServerConfig::balance`] (with no other worker alive nothing is deferred);
/// `None` (the pure-Rust example, tests) leaves accepting to the kernel alone.
pub trait AcceptBalance: Send + Sync + std::fmt::Debug {
    /// Publishes this worker's open connections.
    fn publish(&self, open: usize);
    /// The fewest open connections held by another worker that accepts now, if any.
    fn least_loaded_other(&self) -> Option<usize>;
    /// This worker no longer accepts (it is stopping): the others stop deferring to it.
    fn withdraw(&self);
}

/// Waits while another worker holds fewer connections (see the module doc). Returns at
/// once with one worker, or when the worker starts stopping.
pub(crate) async fn defer_to_less_loaded(shared: &Shared, stop_rx: &mut watch::Receiver<Option<ServeOutcome>>) {
    let Some(balance) = &shared.config.balance else {
        return;
    };
    for _ in 0..MAX_DEFERS {
        let mine = shared.open_connections();
        match balance.least_loaded_other() {
            Some(other) if mine > other.saturating_add(SLACK) => {}
            _ => return,
        }
        // This worker's own connections ending may make it the least loaded again (with
        // short connections, counts change every few microseconds): look again then.
        let fewer = shared.connection_ended.notified();
        tokio::select! {
            _ = tokio::time::sleep(DEFER) => {}
            _ = fewer => {}
            _ = stop_rx.wait_for(Option::is_some) => return,
        }
    }
}

impl Shared {
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Counts a connection (or an upgraded session) in, and tells the other workers.
    pub(crate) fn connection_opened(&self) {
        let n = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        self.publish_load(n);
    }

    /// Counts one out; wakes a graceful drain waiting for the last one.
    pub(crate) fn connection_closed(&self) {
        let n = self.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        self.publish_load(n);
        if n == 0 {
            self.drained.notify_waiters();
        }
        if self.config.balance.is_some() {
            self.connection_ended.notify_waiters();
        }
    }

    fn publish_load(&self, n: usize) {
        if let Some(b) = &self.config.balance {
            if !self.stopping() {
                b.publish(n);
            }
        }
    }
}
