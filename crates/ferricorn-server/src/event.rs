//! One-way worker events that many futures wait for: the worker stops (every connection
//! winds down) or aborts (every request still waiting for its app gets a 500).
//!
//! A waiter leaves its waker in a slab while it waits and takes it back when done. A
//! `watch` subscription cost a notification entry, a receiver clone and their drop per
//! request, and a lock on every later poll; here a later poll with the same waker is
//! one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Default)]
pub(crate) struct Event {
    fired: AtomicBool,
    waiting: Mutex<Slab<Waker>>,
}

/// A waiter's place in an [`Event`]: its key and the waker left there.
pub(crate) type Registration = Option<(usize, Waker)>;

impl Event {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves (or refreshes) `waker` for [`fire`](Self::fire) to wake; true once fired.
    /// Checked after registering, so an event between the two is never missed.
    pub fn register(&self, reg: &mut Registration, waker: &Waker) -> bool {
        match reg {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((key, w)) => {
                w.clone_from(waker);
                if let Some(slot) = self.waiting().get_mut(*key) {
                    slot.clone_from(waker);
                }
            }
            None => {
                let key = self.waiting().insert(waker.clone());
                *reg = Some((key, waker.clone()));
            }
        }
        self.fired.load(Ordering::Acquire)
    }

    /// The waiter is done (or dropped).
    pub fn unregister(&self, reg: &mut Registration) {
        if let Some((key, _)) = reg.take() {
            self.waiting().try_remove(key);
        }
    }

    /// Wakes every waiter; from now on they (and any new one) see the event. The wakers
    /// stay until their waiters leave, so a key is never reused while a waiter holds it.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self.waiting().iter().map(|(_, w)| w.clone()).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the event has fired.
    pub fn fired(&self) -> Fired<'_> {
        Fired { event: self, reg: None }
    }
}

pub(crate) struct Fired<'a> {
    event: &'a Event,
    reg: Registration,
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.event.register(&mut this.reg, cx.waker()) {
            this.event.unregister(&mut this.reg);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Fired<'_> {
    fn drop(&mut self) {
        self.event.unregister(&mut self.reg);
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

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn fire_wakes_the_waiting_and_only_them() {
        let event = Event::default();
        let ((a, wa), (b, wb)) = (counter(), counter());
        let (mut ra, mut rb) = (None, None);
        assert!(!event.register(&mut ra, &wa));
        assert!(!event.register(&mut ra, &wa), "a second poll changes nothing");
        assert!(!event.register(&mut rb, &wb));
        event.unregister(&mut rb);
        assert!(rb.is_none());
        event.fire();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "a waiter that left is not woken");
        // A waiter that comes after the event sees it at once, and gets its own key.
        let mut rc = None;
        assert!(event.register(&mut rc, &wb));
        assert_ne!(rc.as_ref().map(|r| r.0), ra.as_ref().map(|r| r.0));
        event.unregister(&mut ra);
        assert_eq!(event.waiting().len(), 1, "the late waiter's waker is still its own");
        event.unregister(&mut rc);
        assert_eq!(event.waiting().len(), 0);
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let event = Event::default();
        let ((a, wa), (b, wb)) = (counter(), counter());
        let mut r = None;
        event.register(&mut r, &wa);
        event.register(&mut r, &wb);
        event.fire();
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (0, 1));
    }

    #[test]
    fn fired_future_resolves_after_fire_and_leaves_no_waker() {
        let event = Event::default();
        let (_, w) = counter();
        let mut cx = Context::from_waker(&w);
        let mut fut = Box::pin(event.fired());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(event.waiting().len(), 1);
        drop(fut);
        assert_eq!(event.waiting().len(), 0, "a dropped waiter takes its waker back");
        let mut fut = Box::pin(event.fired());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        event.fire();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
}
