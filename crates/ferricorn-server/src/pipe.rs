//! A byte-budgeted channel from an application thread to a response body.
//!
//! The producer is a plain OS thread (a WSGI app thread); the consumer is polled by hyper.
//! Up to `high_water` bytes are queued without blocking, so a response of moderate size is
//! handed over at once and a slow reader never holds an application thread; beyond that
//! the producer blocks (the bridge releases the GIL first) until the client catches up.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    buffered: usize,
    high_water: usize,
    finished: bool,
    aborted: bool,
    consumer_gone: bool,
    waker: Option<Waker>,
    /// Called once when the queue drops below the high-water mark (async producers).
    on_drain: Option<Hook>,
    /// Called once when the consumer goes away (the client disconnected or is done).
    on_close: Option<Hook>,
    /// Trailer fields sent after the last chunk.
    trailers: Option<http::HeaderMap>,
}

struct Shared {
    state: Mutex<State>,
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated, so a
        // poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client is gone; the application should stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client disconnected")]
pub struct Disconnected;

pub struct Sender {
    shared: Arc<Shared>,
}

pub struct Receiver {
    shared: Arc<Shared>,
}

pub fn channel(high_water: usize) -> (Sender, Receiver) {
    let state = State {
        high_water,
        ..State::default()
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        drained: Condvar::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl Sender {
    /// Would `send` block right now?
    pub fn is_full(&self) -> bool {
        let st = self.shared.lock();
        st.buffered >= st.high_water && !st.consumer_gone
    }

    /// Queues a chunk, blocking while more than the high-water mark is queued.
    pub fn send(&self, chunk: Bytes) -> Result<(), Disconnected> {
        let mut st = self.shared.lock();
        while st.buffered >= st.high_water && !st.consumer_gone {
            st = self.shared.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.consumer_gone {
            return Err(Disconnected);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        st.buffered += chunk.len();
        st.queue.push_back(chunk);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Runs `hook` once the queue is below the high-water mark (now, if it already is).
    /// For producers that cannot block, such as an event loop.
    pub fn on_drain(&self, hook: impl FnOnce() + Send + 'static) {
        let mut st = self.shared.lock();
        if st.buffered < st.high_water || st.consumer_gone {
            drop(st);
            hook();
        } else {
            st.on_drain = Some(Box::new(hook));
        }
    }

    /// Runs `hook` once when the consumer goes away (now, if it already has).
    pub fn on_close(&self, hook: impl FnOnce() + Send + 'static) {
        let mut st = self.shared.lock();
        if st.consumer_gone {
            drop(st);
            hook();
        } else {
            st.on_close = Some(Box::new(hook));
        }
    }

    /// Queues a chunk without waiting, whatever is queued already (for a producer that
    /// is the consumer's own thread).
    pub fn send_now(&self, chunk: Bytes) -> Result<(), Disconnected> {
        let mut st = self.shared.lock();
        if st.consumer_gone {
            return Err(Disconnected);
        }
        if !chunk.is_empty() {
            st.buffered += chunk.len();
            st.queue.push_back(chunk);
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
        Ok(())
    }

    /// Trailer fields for the end of the body (sent if the protocol allows; see
    /// `ResponseBody`).
    pub fn set_trailers(&self, trailers: http::HeaderMap) {
        self.shared.lock().trailers = Some(trailers);
    }

    /// Ends the body normally.
    pub fn finish(self) {
        self.close(false);
    }

    /// Ends the body with an error: the client sees a truncated response, never a
    /// well-formed one that silently lacks data.
    pub fn abort(self) {
        self.close(true);
    }

    fn close(&self, aborted: bool) {
        let mut st = self.shared.lock();
        if !st.finished {
            st.finished = true;
            st.aborted = aborted;
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // A sender dropped without `finish` (e.g. a panic) must not look like success.
        self.close(true);
    }
}

/// What the receiver yields.
pub enum Recv {
    Chunk(Bytes),
    End,
    Aborted,
}

impl Receiver {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv> {
        let mut st = self.shared.lock();
        if let Some(chunk) = st.queue.pop_front() {
            st.buffered -= chunk.len();
            self.shared.drained.notify_one();
            let hook = if st.buffered < st.high_water {
                st.on_drain.take()
            } else {
                None
            };
            drop(st);
            if let Some(hook) = hook {
                hook();
            }
            return Poll::Ready(Recv::Chunk(chunk));
        }
        if st.finished {
            return Poll::Ready(if st.aborted { Recv::Aborted } else { Recv::End });
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Receiver {
    /// The trailers, once the body has ended.
    pub fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        self.shared.lock().trailers.take()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.consumer_gone = true;
        st.queue.clear();
        st.buffered = 0;
        self.shared.drained.notify_all();
        let hooks = (st.on_close.take(), st.on_drain.take());
        drop(st);
        if let Some(h) = hooks.0 {
            h();
        }
        if let Some(h) = hooks.1 {
            h();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backpressure_and_end() {
        let (tx, mut rx) = channel(4);
        let producer = std::thread::spawn(move || {
            for i in 0..10u8 {
                tx.send(Bytes::from(vec![i; 3])).unwrap();
            }
            tx.finish();
        });
        let mut got = Vec::new();
        loop {
            match poll_fn(|cx| rx.poll_recv(cx)).await {
                Recv::Chunk(c) => got.extend_from_slice(&c),
                Recv::End => break,
                Recv::Aborted => panic!("aborted"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got.len(), 30);
        assert_eq!(&got[27..], &[9, 9, 9]);
    }

    #[test]
    fn dropped_receiver_unblocks_sender() {
        let (tx, rx) = channel(1);
        tx.send(Bytes::from_static(b"ab")).unwrap();
        let t = std::thread::spawn(move || tx.send(Bytes::from_static(b"c")));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(rx);
        assert_eq!(t.join().unwrap(), Err(Disconnected));
    }

    #[tokio::test]
    async fn dropped_sender_aborts() {
        let (tx, mut rx) = channel(10);
        drop(tx);
        assert!(matches!(poll_fn(|cx| rx.poll_recv(cx)).await, Recv::Aborted));
    }
}
