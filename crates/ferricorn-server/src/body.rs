//! Request and response bodies as the bridges see them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access::Pending;
use crate::conn::ConnState;
use crate::pipe::{Receiver, Recv};
use crate::static_files::chunks::FileChunks;

/// Why a request body could not be read; `status` is what the client should be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("malformed request body: {0}")]
    Malformed(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("client disconnected while sending the body")]
    Disconnected,
    #[error("timed out reading the request body")]
    Timeout,
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            BodyError::Malformed(_) | BodyError::Disconnected => 400,
            BodyError::TooLarge(_) => 413,
            BodyError::Timeout => 408,
        }
    }
}

/// A request body: whatever the front end already read, then the rest from the socket.
pub struct RequestBody {
    ready: VecDeque<Bytes>,
    incoming: Option<Incoming>,
    received: u64,
    limit: u64,
    error: Option<BodyError>,
    runtime: Option<tokio::runtime::Handle>,
    read_timeout: Option<Duration>,
    /// The connection, whose scanner reports framing violations in later chunks.
    framing: Option<Arc<ConnState>>,
}

impl RequestBody {
    pub fn empty() -> Self {
        Self {
            ready: VecDeque::new(),
            incoming: None,
            received: 0,
            limit: 0,
            error: None,
            runtime: None,
            read_timeout: None,
            framing: None,
        }
    }

    pub(crate) fn streaming(incoming: Incoming, limit: u64, read_timeout: Option<Duration>) -> Self {
        Self {
            ready: VecDeque::new(),
            incoming: Some(incoming),
            received: 0,
            limit,
            error: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
            read_timeout,
            framing: None,
        }
    }

    /// From now on, a framing violation the connection's scanner reports fails the body.
    pub(crate) fn watch_framing(&mut self, conn: Arc<ConnState>) {
        self.framing = Some(conn);
    }

    /// True once everything the client sent is in memory.
    pub fn is_complete(&self) -> bool {
        self.incoming.is_none()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Reads from the socket (on the runtime) until `max` bytes are queued or the body ends.
    /// `idle` bounds the wait for each piece when the body has no read timeout of its
    /// own (`--timeout 0`): a client that stops sending must not hold its connection,
    /// and its slot in `--worker-connections`, for ever.
    pub(crate) async fn prebuffer(&mut self, max: usize, idle: Duration) -> Result<(), BodyError> {
        let wait = self.read_timeout.unwrap_or(idle);
        let mut queued: usize = self.ready.iter().map(Bytes::len).sum();
        while queued < max {
            match self.next_frame_within(wait).await? {
                Some(chunk) => {
                    queued += chunk.len();
                    self.ready.push_back(chunk);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The next piece, or `Timeout` (the body is then failed) if none comes within `t`.
    async fn next_frame_within(&mut self, t: Duration) -> Result<Option<Bytes>, BodyError> {
        match tokio::time::timeout(t, self.next_frame()).await {
            Ok(r) => r,
            Err(_) => {
                self.incoming = None;
                Err(self.fail(BodyError::Timeout))
            }
        }
    }

    async fn next_frame(&mut self) -> Result<Option<Bytes>, BodyError> {
        if let Some(conn) = &self.framing {
            conn.continue_read();
        }
        loop {
            let Some(incoming) = self.incoming.as_mut() else {
                return Ok(None);
            };
            let frame = match std::future::poll_fn(|cx| Pin::new(&mut *incoming).poll_frame(cx)).await {
                None => {
                    self.incoming = None;
                    return Ok(None);
                }
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    self.incoming = None;
                    // A reset or closed socket under the body is the client leaving; hyper's
                    // chunk decoder reports bad framing as an `io::Error` too, of these kinds.
                    let io_failure = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .is_some_and(|io| {
                            !matches!(
                                io.kind(),
                                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                            )
                        });
                    let err = if e.is_incomplete_message() || e.is_closed() || io_failure {
                        BodyError::Disconnected
                    } else {
                        BodyError::Malformed(match std::error::Error::source(&e) {
                            Some(s) => s.to_string(),
                            None => e.to_string(),
                        })
                    };
                    return Err(self.fail(err));
                }
            };
            if let Some(v) = self.framing.as_ref().and_then(|c| c.body_violation()) {
                self.incoming = None;
                return Err(self.fail(BodyError::Malformed(format!("invalid chunked body: {v}"))));
            }
            match frame.into_data() {
                Ok(data) => {
                    self.received += data.len() as u64;
                    if self.limit > 0 && self.received > self.limit {
                        self.incoming = None;
                        return Err(self.fail(BodyError::TooLarge(self.limit)));
                    }
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        if let Some(bad) = trailers
                            .keys()
                            .find(|k| ferricorn_core::request::forbidden_trailer(k.as_str()))
                        {
                            let err = BodyError::Malformed(format!("forbidden trailer {bad}"));
                            self.incoming = None;
                            return Err(self.fail(err));
                        }
                    }
                }
            }
        }
    }

    fn fail(&mut self, err: BodyError) -> BodyError {
        self.error.get_or_insert(err).clone()
    }

    /// The next chunk of the body, on the runtime. `Ok(None)` is the end of the body.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        if let Some(chunk) = self.ready.pop_front() {
            return Ok(Some(chunk));
        }
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        self.next_frame().await
    }

    /// The next chunk of the body, blocking the calling thread (never a runtime thread)
    /// until it arrives. `Ok(None)` is the end of the body.
    pub fn read_chunk_blocking(&mut self) -> Result<Option<Bytes>, BodyError> {
        if let Some(chunk) = self.ready.pop_front() {
            return Ok(Some(chunk));
        }
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        if self.incoming.is_none() {
            return Ok(None);
        }
        let Some(rt) = self.runtime.clone() else {
            return Err(BodyError::Disconnected);
        };
        let timeout = self.read_timeout;
        rt.block_on(async {
            match timeout {
                Some(t) => self.next_frame_within(t).await,
                None => self.next_frame().await,
            }
        })
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.received > 0 {
            ferricorn_core::metrics::bytes_in(self.received);
        }
    }
}

/// A request being measured for the metrics (see `ferricorn_core::metrics`), from its
/// head to the end of its response. Dropping it records the request, so a request whose
/// handler is cancelled (the client left mid-call) is still counted, as 499, and the
/// in-flight gauge comes back down.
pub(crate) struct Meter {
    start: std::time::Instant,
    method: http::Method,
    pub status: u16,
}

impl Meter {
    pub fn start(method: http::Method) -> Self {
        ferricorn_core::metrics::request_started();
        Self {
            start: std::time::Instant::now(),
            method,
            status: 499,
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        ferricorn_core::metrics::request_finished(self.method.as_str(), self.status, self.start.elapsed());
    }
}

// The rare cases are boxed: a response moves between the bridge, the front end and
// hyper several times, and every move copies the whole value.
enum Kind {
    Full(Option<Bytes>),
    Stream(Receiver),
    File(Box<FileChunks>),
}

/// A response body: bytes in memory, or a stream fed by an application thread.
pub struct ResponseBody {
    kind: Kind,
    /// Bytes still allowed by the response's Content-Length; extra bytes are dropped.
    remaining: Option<u64>,
    /// Marks the connection idle again once the body is done (keep-alive timer).
    conn: Option<Arc<ConnState>>,
    /// Polls left before an abort is reported (see `poll_frame`).
    abort_delay: u8,
    /// Body bytes handed to hyper, for the access log.
    sent: u64,
    access: Option<Box<Pending>>,
    meter: Option<Box<Meter>>,
    /// The request's place under `--max-queued`, freed when the response ends.
    admission: Option<crate::overload::Admission>,
}

impl ResponseBody {
    fn of(kind: Kind) -> Self {
        Self {
            kind,
            remaining: None,
            conn: None,
            abort_delay: 2,
            sent: 0,
            access: None,
            meter: None,
            admission: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn full(data: Bytes) -> Self {
        Self::of(Kind::Full(Some(data)))
    }

    pub fn stream(rx: Receiver) -> Self {
        Self::of(Kind::Stream(rx))
    }

    /// `len` bytes of an open file from `offset`, read as hyper asks for more (ASGI's
    /// `http.response.pathsend` and `zerocopysend`).
    pub fn from_file(file: std::fs::File, offset: u64, len: u64) -> Self {
        use crate::static_files::chunks::{Piece, Source};
        Self::file(FileChunks::new(Source::File(file), vec![Piece::File { offset, len }]))
    }

    /// A static file (or ranges of it), read as hyper asks for more.
    pub(crate) fn file(chunks: FileChunks) -> Self {
        Self::of(Kind::File(Box::new(chunks)))
    }

    /// A response that must carry no content (HEAD, 204, 304 on HTTP/2): the headers
    /// end the stream, whatever the app produced or declared.
    pub(crate) fn discard_content(&mut self) {
        self.kind = Kind::Full(None);
        self.remaining = None;
    }

    /// Caps the body at `len` bytes (the Content-Length the application declared).
    pub fn limit(&mut self, len: u64) {
        self.remaining = Some(len);
        if let Kind::Full(Some(b)) = &mut self.kind {
            if b.len() as u64 > len {
                b.truncate(len as usize);
            }
        }
    }

    pub(crate) fn attach(&mut self, conn: Arc<ConnState>) {
        self.conn = Some(conn);
    }

    pub(crate) fn log_on_finish(&mut self, access: Box<Pending>) {
        self.access = Some(access);
    }

    pub(crate) fn measure(&mut self, meter: Meter) {
        self.meter = Some(Box::new(meter));
    }

    pub(crate) fn hold(&mut self, admission: crate::overload::Admission) {
        self.admission = Some(admission);
    }

    /// The body ends before the Content-Length the application declared.
    fn short(&self) -> bool {
        self.remaining.is_some_and(|r| r > 0)
    }

    /// Fails the body, which makes hyper close the connection: what an application's
    /// broken stream gets, and a body that ended short of its declared length (Gunicorn
    /// sends what it has and closes). hyper discards its unwritten buffer when a body
    /// fails, which would lose bytes the app already produced: the connection task is
    /// let run first until that buffer has reached the socket.
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if self.abort_delay > 0 {
            self.abort_delay -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(conn) = &self.conn {
            std::task::ready!(conn.poll_written(cx));
        }
        Poll::Ready(Some(Err(Aborted)))
    }

    fn cap(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        if let Some(rem) = self.remaining.as_mut() {
            if *rem == 0 {
                return None;
            }
            if chunk.len() as u64 > *rem {
                chunk.truncate(*rem as usize);
            }
            *rem -= chunk.len() as u64;
        }
        Some(chunk)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            access.finish(self.sent);
        }
        if self.meter.take().is_some() {
            ferricorn_core::metrics::bytes_out(self.sent);
        }
        if let Some(conn) = self.conn.take() {
            conn.response_done();
        }
    }
}

/// The application's response stream broke after the headers were sent.
#[derive(Debug, thiserror::Error)]
#[error("response aborted by the application")]
pub struct Aborted;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = &mut *self;
        loop {
            let short = this.short();
            let chunk = match &mut this.kind {
                Kind::Full(data) => match data.take() {
                    Some(d) if !d.is_empty() => d,
                    _ if short => return this.poll_abort(cx),
                    _ => return Poll::Ready(None),
                },
                Kind::Stream(rx) => match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Recv::End) if short => return this.poll_abort(cx),
                    Poll::Ready(Recv::End) => {
                        // hyper sends trailers on HTTP/2, and on HTTP/1.1 when the client
                        // sent `TE: trailers` and the response's `Trailer` header names them.
                        return Poll::Ready(rx.take_trailers().map(|t| Ok(Frame::trailers(t))));
                    }
                    Poll::Ready(Recv::Aborted) => return this.poll_abort(cx),
                    Poll::Ready(Recv::Chunk(c)) => c,
                },
                Kind::File(f) => match f.next_chunk() {
                    None => return Poll::Ready(None),
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        ferricorn_core::warning!("static file read failed: {e}");
                        return Poll::Ready(Some(Err(Aborted)));
                    }
                },
            };
            match this.cap(chunk) {
                Some(c) => {
                    this.sent += c.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(c))));
                }
                None if !matches!(this.kind, Kind::Stream(_)) => return Poll::Ready(None),
                // Past Content-Length: keep draining the stream so the producer finishes.
                None => continue,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            // A body that fell short of its declared length ends through `poll_abort`.
            Kind::Full(None) => !self.short(),
            // An empty body that declared a length still has to end the connection.
            Kind::Full(Some(b)) => b.is_empty() && !self.short(),
            Kind::File(f) => f.remaining() == 0,
            Kind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            // The declared length, even when the app gave fewer bytes: hyper frames the
            // response by this, and ends the connection when the bytes fall short
            // (framing the next response after a short body would desynchronise the
            // client).
            Kind::Full(Some(b)) => SizeHint::with_exact(self.remaining.unwrap_or(0).max(b.len() as u64)),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::File(f) => SizeHint::with_exact(f.remaining()),
            Kind::Stream(_) => match self.remaining {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
