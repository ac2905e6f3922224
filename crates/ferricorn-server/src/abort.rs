//! The worker's abort (its `--timeout` ran out): requests still waiting for their app
//! are answered with a 500, as Gunicorn does, instead of a reset.
//!
//! A waiting request leaves its waker here while it waits and takes it back when it is
//! answered: a lock and a slot, where a `watch` subscription per request cost a
//! notification list entry, a receiver clone and their drop on every request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use slab::Slab;

#[derive(Default)]
pub(crate) struct AbortWatch {
    aborted: AtomicBool,
    waiting: Mutex<Slab<Waker>>,
}

/// A waiting request's place in the watch: its key and the waker left there.
pub(crate) type Registration = Option<(usize, Waker)>;

impl AbortWatch {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves (or refreshes) `waker` for [`abort`](Self::abort) to wake; true if the
    /// worker is aborting. Checked after registering, so an abort between the two is
    /// never missed.
    pub fn register(&self, reg: &mut Registration, waker: &Waker) -> bool {
        match reg {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((key, w)) => {
                *w = waker.clone();
                if let Some(slot) = self.waiting().get_mut(*key) {
                    *slot = waker.clone();
                }
            }
            None => {
                let key = self.waiting().insert(waker.clone());
                *reg = Some((key, waker.clone()));
            }
        }
        self.aborted.load(Ordering::Acquire)
    }

    /// The request was answered (or dropped).
    pub fn unregister(&self, reg: &mut Registration) {
        if let Some((key, _)) = reg.take() {
            self.waiting().try_remove(key);
        }
    }

    /// Wakes every waiting request; from now on they (and any new one) see the abort.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self.waiting().drain().collect();
        for w in wakers {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn abort_wakes_the_waiting_and_only_them() {
        let watch = AbortWatch::default();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let (mut ra, mut rb) = (None, None);
        assert!(!watch.register(&mut ra, &wa));
        assert!(!watch.register(&mut ra, &wa), "a second poll changes nothing");
        assert!(!watch.register(&mut rb, &wb));
        watch.unregister(&mut rb);
        assert!(rb.is_none());
        watch.abort();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "an answered request is not woken");
        // A request that starts waiting after the abort sees it at once.
        let mut rc = None;
        assert!(watch.register(&mut rc, &wb));
        watch.unregister(&mut ra);
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let watch = AbortWatch::default();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let mut r = None;
        watch.register(&mut r, &Waker::from(a.clone()));
        watch.register(&mut r, &Waker::from(b.clone()));
        watch.abort();
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (0, 1));
    }
}
