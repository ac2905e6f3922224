//! Per-connection state and the keep-alive idle timer.
//!
//! hyper has one timer for "waiting for a request head", which would either cut slow
//! clients on their first request or keep idle keep-alive connections for too long.
//! Gunicorn's `keepalive` is an idle timeout: the time between the end of one response
//! and the first byte of the next request. [`IdleIo`] implements exactly that: it arms
//! a timer when the connection becomes idle and reports EOF if no byte arrives in time.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use crate::framing::{HeadFacts, HeadScanner};

/// Shared between a connection's I/O wrapper, its request handler and response bodies.
#[derive(Debug, Default)]
pub struct ConnState {
    busy: AtomicBool,
    /// Incremented each time a response completes and the connection becomes idle.
    idle_gen: AtomicU64,
    /// Facts about request heads read but not yet handled, in order.
    heads: Mutex<VecDeque<HeadFacts>>,
    /// The last request line read (see `HeadScanner::request_line`).
    last_request_line: Mutex<String>,
    /// The client closed its side (or the socket failed).
    peer_closed: AtomicBool,
    /// Switched protocols (WebSocket): keep-alive no longer applies.
    upgraded: AtomicBool,
    closed_notify: tokio::sync::Notify,
    /// A chunked body on this connection broke a framing rule hyper tolerates (see
    /// `framing`); nothing more is served on the connection.
    body_violation: Mutex<Option<&'static str>>,
}

/// Resolves when the client goes away; lets a bridge tell an app that waits for it.
#[derive(Clone)]
pub struct ClientGone(pub(crate) Arc<ConnState>);

impl ClientGone {
    pub async fn wait(&self) {
        loop {
            let notified = self.0.closed_notify.notified();
            if self.0.peer_closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl ConnState {
    /// The raw-byte facts of the next request head (see `framing`).
    pub fn next_head(&self) -> Option<HeadFacts> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn mark_closed(&self) {
        if !self.peer_closed.swap(true, Ordering::AcqRel) {
            self.closed_notify.notify_waiters();
        }
    }

    pub fn last_request_line(&self) -> String {
        self.last_request_line.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The framing rule the current request's body broke, if any.
    pub fn body_violation(&self) -> Option<&'static str> {
        *self.body_violation.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_head(&self, facts: HeadFacts) {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).push_back(facts);
    }

    /// No request in progress (just accepted, or idle between keep-alive requests).
    pub fn is_idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire)
    }

    pub fn request_started(&self) {
        self.busy.store(true, Ordering::Release);
    }

    pub fn response_done(&self) {
        self.busy.store(false, Ordering::Release);
        self.idle_gen.fetch_add(1, Ordering::AcqRel);
    }
}

pub struct IdleIo<T> {
    inner: T,
    state: Arc<ConnState>,
    idle: Option<Duration>,
    armed_for: u64,
    data_since: u64,
    timer: Option<Pin<Box<Sleep>>>,
    scanner: HeadScanner,
}

impl<T> IdleIo<T> {
    /// `idle`: the keep-alive timeout; `None` disables the idle timer.
    pub fn new(inner: T, state: Arc<ConnState>, idle: Option<Duration>) -> Self {
        // Generation 0 is the first request: it is bounded by hyper's header timeout,
        // not by keep-alive.
        Self {
            inner,
            state,
            idle,
            armed_for: 0,
            data_since: 0,
            timer: None,
            scanner: HeadScanner::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.state.upgraded.load(Ordering::Acquire) {
                    let state = &this.state;
                    this.scanner
                        .feed(&buf.filled()[before..], &mut |facts| state.push_head(facts));
                    if let Some(v) = this.scanner.body_violation.take() {
                        *state.body_violation.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                    }
                    if !this.scanner.request_line.is_empty() {
                        let mut line = state.last_request_line.lock().unwrap_or_else(|p| p.into_inner());
                        if *line != this.scanner.request_line {
                            line.clone_from(&this.scanner.request_line);
                        }
                    }
                }
                if buf.filled().len() > before {
                    this.timer = None;
                    this.data_since = this.state.idle_gen.load(Ordering::Acquire);
                } else if buf.remaining() > 0 {
                    this.state.mark_closed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.state.mark_closed();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                let Some(idle) = this.idle else { return Poll::Pending };
                let gen = this.state.idle_gen.load(Ordering::Acquire);
                if gen == 0
                    || this.state.busy.load(Ordering::Acquire)
                    || this.data_since == gen
                    || this.state.upgraded.load(Ordering::Acquire)
                {
                    return Poll::Pending;
                }
                if this.armed_for != gen || this.timer.is_none() {
                    this.armed_for = gen;
                    this.timer = Some(Box::pin(tokio::time::sleep(idle)));
                }
                if let Some(t) = this.timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        // Idle too long: report EOF so hyper closes the connection cleanly.
                        this.timer = None;
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

use std::future::Future;

delegate_async_write!(IdleIo<T>);
