//! Per-connection state and the connection's timeouts between requests.
//!
//! hyper has one timer for "waiting for a request head", which would either cut slow
//! clients on their first request or keep idle keep-alive connections for too long.
//! Gunicorn's `keepalive` is an idle timeout: the time between the end of one response
//! and the first byte of the next request. [`IdleIo`] implements exactly that (EOF if no
//! byte arrives in time) and, in place of hyper's, the head timeout: a head that has
//! started must be complete within it (a slow client trickling bytes is cut off). Both
//! use one timer per connection, moved with `Sleep::reset` (an armed tokio timer whose
//! deadline only moves later is not taken out of the timer wheel), instead of two timers
//! created and dropped per request.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use std::task::ready;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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
    last_request_line: Mutex<Vec<u8>>,
    /// The client closed its side (or the socket failed).
    peer_closed: AtomicBool,
    /// Switched protocols (WebSocket): keep-alive no longer applies.
    upgraded: AtomicBool,
    closed_notify: tokio::sync::Notify,
    /// A chunked body on this connection broke a framing rule hyper tolerates (see
    /// `framing`); nothing more is served on the connection.
    body_violation: Mutex<Option<&'static str>>,
    /// Informational responses (103 Early Hints) waiting to be written ahead of the
    /// final response; see [`EarlyHints`].
    interim: Mutex<Interim>,
    /// Set while `interim` holds bytes, so the write path checks it with one load.
    interim_pending: AtomicBool,
    /// The connection task, woken when an informational response is queued.
    interim_waker: futures_util::task::AtomicWaker,
    /// A write to the socket returned Pending and no flush completed since: hyper may
    /// hold bytes it has not written yet.
    write_pending: AtomicBool,
    /// A response body that must end the connection waits here for hyper's buffer to
    /// reach the socket (see `ResponseBody`'s abort path).
    flush_waker: futures_util::task::AtomicWaker,
    /// A request with `Expect: 100-continue` whose body nobody has started to read: the
    /// client may be holding it back, so the connection cannot carry another request.
    continue_unread: AtomicBool,
    /// An HTTP/2 connection's slots for application calls in progress (see
    /// `ServerConfig::h2_calls_per_connection`).
    call_slots: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Debug, Default)]
struct Interim {
    bytes: Vec<u8>,
    /// The current request's final response has not been handed to hyper yet.
    open: bool,
    /// Which request of the connection is current (a handle kept from an earlier one
    /// must not send ahead of a later response).
    request: u64,
}

thread_local! {
    /// Set while a bridge runs an app on this I/O thread for a request whose connection
    /// waits for the answer; hyper then writes nothing for that connection.
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (an app a bridge runs on this I/O thread while the request's connection
/// waits for it) marked as inline: early hints sent during it may go straight to the
/// socket (see [`EarlyHints::send`]).
pub fn in_call<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_CALL.with(|c| c.set(false));
        }
    }
    IN_CALL.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// Sends informational responses (`103 Early Hints`) for the request being handled on
/// an HTTP/1.1 connection. hyper has no API for them: the bytes are queued here and
/// written by [`IdleIo`] before anything hyper writes, which is safe because hyper
/// writes nothing for a request until its final response exists, and the queue closes
/// when that response is handed over.
#[derive(Clone)]
pub struct EarlyHints {
    pub(crate) state: Arc<ConnState>,
    pub(crate) request: u64,
    /// The plain TCP socket (-1 under TLS), for hints sent by an app running inline.
    pub(crate) fd: std::os::fd::RawFd,
}

impl EarlyHints {
    /// The bridge hands its final response over: from now on [`send`](Self::send) refuses.
    /// The front end closes the queue too, once it has the response; closing here, on the
    /// thread that hands it over, leaves no window in which a hint sent right after the
    /// response (by an app on another thread) could still be queued ahead of it.
    pub fn close(&self) {
        let mut q = self.state.interim.lock().unwrap_or_else(|p| p.into_inner());
        if q.request == self.request {
            q.open = false;
        }
    }

    /// Sends one informational response (`bytes`: its status line, headers and blank
    /// line). Returns false, sending nothing, once its request's final response has
    /// started.
    ///
    /// An app running inline on the I/O thread holds that thread until it returns, so
    /// queued bytes would wait for the final response: there, when hyper has nothing
    /// unwritten, they are written to the socket at once (without blocking; a remainder
    /// is queued, still ahead of hyper's next bytes).
    pub fn send(&self, bytes: &[u8]) -> bool {
        let state = &self.state;
        {
            let mut q = state.interim.lock().unwrap_or_else(|p| p.into_inner());
            if !q.open || q.request != self.request {
                return false;
            }
            let mut rest = bytes;
            if self.fd >= 0
                && IN_CALL.with(|c| c.get())
                && q.bytes.is_empty()
                && !state.write_pending.load(Ordering::Acquire)
            {
                // SAFETY: a non-blocking send of a valid buffer on the connection's
                // socket, which this thread owns while the inline call runs.
                let n = unsafe {
                    libc::send(
                        self.fd,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                rest = &rest[usize::try_from(n).unwrap_or(0).min(rest.len())..];
                if rest.is_empty() {
                    return true;
                }
            }
            q.bytes.extend_from_slice(rest);
            state.interim_pending.store(true, Ordering::Release);
        }
        state.interim_waker.wake();
        true
    }
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
    /// The state of a connection whose requests run at most `calls` at a time.
    pub fn with_call_limit(calls: Option<usize>) -> Self {
        Self {
            call_slots: calls.map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
            ..Self::default()
        }
    }

    pub(crate) fn call_slots(&self) -> Option<&Arc<tokio::sync::Semaphore>> {
        self.call_slots.as_ref()
    }

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
        ferricorn_core::request::latin1(&self.last_request_line.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Ready once hyper has nothing unwritten that it tried to write (always, on a
    /// connection whose socket [`IdleIo`] does not wrap: there nothing sets the flag).
    pub(crate) fn poll_written(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.write_pending.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.flush_waker.register(cx.waker());
        if self.write_pending.load(Ordering::Acquire) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
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

    /// The app is handed a body the client sends only once hyper answers `100 Continue`
    /// (when the body is first read).
    pub(crate) fn expect_continue(&self) {
        self.continue_unread.store(true, Ordering::Release);
    }

    /// The body is being read (hyper has sent `100 Continue`).
    pub(crate) fn continue_read(&self) {
        self.continue_unread.store(false, Ordering::Release);
    }

    pub(crate) fn continue_unread(&self) -> bool {
        self.continue_unread.load(Ordering::Acquire)
    }

    pub fn request_started(&self) {
        self.continue_unread.store(false, Ordering::Relaxed);
        self.busy.store(true, Ordering::Release);
    }

    /// Informational responses may be sent for the request now being handled; the
    /// number identifies it.
    pub(crate) fn open_interim(&self) -> u64 {
        let mut q = self.interim.lock().unwrap_or_else(|p| p.into_inner());
        q.open = true;
        q.request += 1;
        q.request
    }

    /// The final response exists: informational responses are no longer sent.
    pub(crate) fn close_interim(&self) {
        self.interim.lock().unwrap_or_else(|p| p.into_inner()).open = false;
    }

    pub(crate) fn register_interim_waker(&self, waker: &std::task::Waker) {
        self.interim_waker.register(waker);
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
    head_timeout: Duration,
    opened: Instant,
    /// The idle generation `since` was taken for, and when that generation began (as
    /// far as this reader could tell: the first time it waited in it).
    since_gen: u64,
    since: Instant,
    data_since: u64,
    timer: Option<Pin<Box<Sleep>>>,
    scanner: HeadScanner,
    /// Informational response bytes taken from `ConnState`, partly written.
    interim: Vec<u8>,
    interim_written: usize,
    /// The client's address, for the warning about a head refused here.
    peer: Option<std::net::IpAddr>,
    /// A read returned Pending while a request was in progress, so no idle timer was
    /// armed; see `poll_flush`.
    parked_busy: bool,
    /// This connection's share of `LARGE_HEADS` (its unfinished head past `FREE_HEAD`).
    head_reserved: usize,
}

/// Bytes of an unfinished request head any connection may hold. Gunicorn's limits allow
/// heads of ~800 KiB (100 fields of 8190 bytes); real ones are a few KiB.
const FREE_HEAD: usize = 64 << 10;
/// What all of a worker's connections together may hold beyond `FREE_HEAD` each, so
/// that a thousand clients sending large heads and never finishing them cannot take
/// ~1 GB (the parser's buffer grows with the head). A head that would go past it is
/// refused with 431; one or a few large heads at a time are served as Gunicorn would.
const LARGE_HEADS_BUDGET: usize = 64 << 20;
static LARGE_HEADS: AtomicUsize = AtomicUsize::new(0);

/// Takes `n` bytes of `LARGE_HEADS`, unless that would go past the budget.
fn reserve_large_head(n: usize) -> bool {
    LARGE_HEADS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|total| *total <= LARGE_HEADS_BUDGET)
        })
        .is_ok()
}

impl<T> IdleIo<T> {
    /// `idle`: the keep-alive timeout (`None`: no idle timer); `head_timeout`: how long a
    /// request head may take, from the connection's start for the first request, from
    /// the end of the previous response for the others.
    pub fn new(
        inner: T,
        state: Arc<ConnState>,
        idle: Option<Duration>,
        head_timeout: Duration,
        line_limit: usize,
        field_limit: usize,
    ) -> Self {
        let opened = Instant::now();
        Self {
            inner,
            state,
            idle,
            head_timeout,
            opened,
            since_gen: 0,
            since: opened,
            data_since: 0,
            timer: None,
            scanner: HeadScanner::with_limits(line_limit, field_limit),
            interim: Vec::new(),
            interim_written: 0,
            peer: None,
            parked_busy: false,
            head_reserved: 0,
        }
    }

    pub fn with_peer(mut self, peer: Option<std::net::IpAddr>) -> Self {
        self.peer = peer;
        self
    }
}

impl<T> Drop for IdleIo<T> {
    fn drop(&mut self) {
        release_large_head(&mut self.head_reserved);
    }
}

/// Keeps a connection's share of `LARGE_HEADS` (`reserved`) equal to its unfinished head
/// past `FREE_HEAD`. False when the worker has no room left for it: the head is refused.
fn account_large_head(scanner: &mut HeadScanner, reserved: &mut usize) -> bool {
    let big = scanner.unfinished_head_len().saturating_sub(FREE_HEAD);
    if big > *reserved {
        if !reserve_large_head(big - *reserved) {
            scanner.refuse(
                431,
                "Request Header Fields Too Large: too many large request heads at once",
            );
            release_large_head(reserved);
            return false;
        }
        *reserved = big;
    } else if big < *reserved {
        LARGE_HEADS.fetch_sub(*reserved - big, Ordering::AcqRel);
        *reserved = big;
    }
    true
}

fn release_large_head(reserved: &mut usize) {
    if *reserved > 0 {
        LARGE_HEADS.fetch_sub(*reserved, Ordering::AcqRel);
        *reserved = 0;
    }
}

impl<T: AsyncWrite + Unpin> IdleIo<T> {
    /// Writes queued informational responses; ready once none is left.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.interim.is_empty() {
            if !self.state.interim_pending.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            let mut q = self.state.interim.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut self.interim, &mut q.bytes);
            self.state.interim_pending.store(false, Ordering::Release);
            self.interim_written = 0;
        }
        while self.interim_written < self.interim.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.interim[self.interim_written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.interim_written += n;
        }
        self.interim.clear();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.state.upgraded.load(Ordering::Acquire) {
                    let state = &this.state;
                    this.scanner
                        .feed(&buf.filled()[before..], &mut |facts| state.push_head(facts));
                    let over_budget = (this.head_reserved > 0 || this.scanner.unfinished_head_len() > FREE_HEAD)
                        && !account_large_head(&mut this.scanner, &mut this.head_reserved);
                    // hyper would wait for the rest of a head that must be refused now:
                    // answer here (a small write to an idle socket, best effort), hide
                    // the bytes from hyper and end the connection. Only on an idle
                    // connection with nothing before the refused bytes: a request still
                    // to be read, in progress or answering keeps its bytes (the scanner
                    // has stopped, so later requests on it are refused by the front end).
                    let refused = this.scanner.reject.take().filter(|_| {
                        !state.busy.load(Ordering::Acquire)
                            && !state.interim_pending.load(Ordering::Acquire)
                            && state.heads.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
                    });
                    if let Some((status, detail)) = refused {
                        let page = crate::error_page::raw(status, &detail);
                        let _ = Pin::new(&mut this.inner).poll_write(cx, &page);
                        let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        // Gunicorn's wording (fail2ban-style filters match on it).
                        let ip = this.peer.map(|p| p.to_string()).unwrap_or_default();
                        ferricorn_core::warning!("Invalid request from ip={ip}: {detail}");
                        buf.set_filled(before);
                        this.state.mark_closed();
                        return Poll::Ready(Ok(()));
                    }
                    if over_budget {
                        // Behind a request still being answered: the parser must not
                        // buffer this head either, so the connection ends here.
                        let ip = this.peer.map(|p| p.to_string()).unwrap_or_default();
                        ferricorn_core::warning!("Invalid request from ip={ip}: too many large request heads at once");
                        buf.set_filled(before);
                        this.state.mark_closed();
                        return Poll::Ready(Ok(()));
                    }
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
                // A request in progress (its body has its own timeout) or a switched
                // protocol: no deadline here.
                if this.state.busy.load(Ordering::Acquire) || this.state.upgraded.load(Ordering::Acquire) {
                    this.parked_busy = true;
                    return Poll::Pending;
                }
                this.parked_busy = false;
                let gen = this.state.idle_gen.load(Ordering::Acquire);
                let start = if gen == 0 {
                    this.opened
                } else {
                    if this.since_gen != gen {
                        this.since_gen = gen;
                        this.since = Instant::now();
                    }
                    this.since
                };
                // Idle (no byte of the next request yet) or reading a head.
                let idle = this.idle.filter(|_| gen > 0 && this.data_since != gen);
                let deadline = start + idle.unwrap_or(this.head_timeout);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                // Every request moves the deadline later; moving the timer each time would
                // take it out of the timer wheel and put it back per request. It is moved
                // only when it must fire sooner; one that fires early is set again.
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if timer.deadline() >= deadline {
                        break;
                    }
                    timer.as_mut().reset(deadline);
                }
                if idle.is_some() {
                    // Idle too long: report EOF so hyper closes the connection cleanly.
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    )))
                }
            }
        }
    }
}

use std::future::Future;

impl<T> IdleIo<T> {
    /// Notes a write that could not finish (see `ConnState::write_pending`).
    fn track<R>(&self, p: Poll<R>) -> Poll<R> {
        if p.is_pending() {
            self.state.write_pending.store(true, Ordering::Release);
        }
        p
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let p = self.poll_interim(cx);
        ready!(self.track(p))?;
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = self.poll_interim(cx);
        ready!(self.track(p))?;
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes on every turn of its connection loop, also while the app runs:
    /// that is when queued informational responses go out.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = self.poll_interim(cx);
        ready!(self.track(p))?;
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        // hyper flushes its socket only once its own buffer is written out.
        if matches!(p, Poll::Ready(Ok(()))) && self.state.write_pending.swap(false, Ordering::AcqRel) {
            self.state.flush_waker.wake();
        }
        // A response that arrived after hyper's last read (an app answering from another
        // thread, as ASGI's loop does) ends the request here; hyper may not read again
        // until the client sends, so the idle timer would never be armed: poll once more.
        if self.parked_busy && !self.state.busy.load(Ordering::Acquire) {
            self.parked_busy = false;
            cx.waker().wake_by_ref();
        }
        self.track(p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
