//! Responses handed from Python's threads to the I/O thread in batches.
//!
//! Completing a tokio oneshot from another thread wakes the I/O thread's runtime with
//! one `eventfd` write per response, and on a busy core each such wake-up may also
//! switch threads. The ASGI loop thread answers requests in bursts (one per loop
//! iteration), and WSGI app threads one after another while the I/O thread waits for
//! its turn on the core, so they queue the responses here and wake one pump task per
//! burst; the pump completes the oneshots on the I/O thread, where waking a connection
//! is free.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferricorn_server::ResponseBody;

pub(crate) type ReplyTx = tokio::sync::oneshot::Sender<http::Response<ResponseBody>>;

type Item = (ReplyTx, http::Response<ResponseBody>);

pub(crate) struct Replies {
    tx: crossbeam_channel::Sender<Item>,
    rx: crossbeam_channel::Receiver<Item>,
    /// The pump was notified and has not drained yet: later sends skip the wake-up.
    pending: AtomicBool,
    notify: tokio::sync::Notify,
    started: AtomicBool,
}

impl Replies {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(Self {
            tx,
            rx,
            pending: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            started: AtomicBool::new(false),
        })
    }

    /// On the I/O thread (inside the runtime): starts the pump the first time.
    pub(crate) fn ensure_pump(self: &Arc<Self>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if !self.started.swap(true, Ordering::AcqRel) {
                rt.spawn(self.clone().pump());
            }
        }
    }

    /// From a Python thread. A connection that went away meanwhile just drops it.
    pub(crate) fn send(&self, reply: ReplyTx, resp: http::Response<ResponseBody>) {
        if self.tx.send((reply, resp)).is_ok() && !self.pending.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    async fn pump(self: Arc<Self>) {
        loop {
            self.notify.notified().await;
            // Cleared before draining: a send after this point either is drained below
            // or notifies again (an empty round at worst), never lost. A swap, so that
            // the drain cannot be ordered before the clear.
            self.pending.swap(false, Ordering::AcqRel);
            while let Ok((reply, resp)) = self.rx.try_recv() {
                let _ = reply.send(resp);
            }
        }
    }
}
