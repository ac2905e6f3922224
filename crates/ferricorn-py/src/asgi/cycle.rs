//! One HTTP request/response cycle: `receive()` and `send()`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferricorn_server::pipe::{self, Disconnected};
use ferricorn_server::{error_page, EarlyHints, HeadError, RequestBody, ResponseBody, ResponseHead};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::{Event, LoopCtx, Mailbox, Reply};
use crate::header_cache;

/// An awaitable that is already complete: `await` returns its value without a trip
/// through the event loop (most `receive()` and `send()` calls).
#[pyclass(module = "ferricorn")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }
}

pub(crate) fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// A complete awaitable whose result is `None`: what most `send()` calls return. It holds
/// no state, so one object serves every call; its iterator ends without raising
/// (returning NULL with no exception set is how a C iterator says it is exhausted).
#[pyclass(module = "ferricorn", frozen)]
pub struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }
}

static DONE: pyo3::sync::PyOnceLock<Py<Done>> = pyo3::sync::PyOnceLock::new();

pub(crate) fn done(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(DONE.get_or_try_init(py, || Py::new(py, Done))?.clone_ref(py).into_any())
}

/// Request-side state, shared by the I/O thread (body reads, disconnects) and the loop.
#[derive(Default)]
pub(crate) struct CycleIo {
    chunks: VecDeque<Bytes>,
    body_done: bool,
    /// The body ended before its end (the client left, or broke its framing): after the
    /// chunks read so far the app gets `http.disconnect`, never a last `more_body: False`.
    body_broken: bool,
    request_complete_sent: bool,
    disconnected: bool,
    response_done: bool,
    /// The pipe has room again after `send()` had to wait.
    drained: bool,
    /// `receive()` futures in the order they were made. A message goes to the first one
    /// still pending: a future whose task was cancelled (`wait_for` timing out) gets
    /// nothing, so no chunk is lost to it; a disconnect goes to all of them.
    receive_waiters: VecDeque<Py<PyAny>>,
    send_waiter: Option<Py<PyAny>>,
    /// What a disconnect watcher needs, until one is started. Most apps never wait for
    /// `http.disconnect`, so the watcher task is spawned only when one does.
    watch: Option<(ferricorn_server::ClientGone, tokio::runtime::Handle)>,
    /// The app's task, until the response is done: cancelled after the grace period
    /// if its client leaves.
    task: Option<Py<PyAny>>,
}

/// Held by the bridge's response future: dropped before the response started (the
/// client left, or the request deadline passed), it reports the client gone.
pub(crate) struct GoneOnDrop(pub Option<(Arc<CycleShared>, Arc<Mailbox>)>);

impl GoneOnDrop {
    /// The response started: a later disconnect is the response body's business.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        if let Some((shared, mailbox)) = self.0.take() {
            shared.client_gone(&mailbox);
        }
    }
}

pub(crate) struct CycleShared {
    io: Mutex<CycleIo>,
    want_body: tokio::sync::Notify,
    /// The response is complete (ends the disconnect watcher).
    done: tokio::sync::Notify,
}

impl CycleShared {
    /// Takes the request body: complete bodies are queued at once; others are read on
    /// the I/O thread, one chunk each time the app asks for more.
    /// Marks the client gone and wakes what the app awaits.
    pub(crate) fn client_gone(self: &Arc<Self>, mailbox: &Mailbox) {
        self.lock().disconnected = true;
        mailbox.post(Event::Wake(self.clone()));
    }

    /// Until the response is done, watches for the client going away.
    async fn watch_disconnect(self: Arc<Self>, gone: ferricorn_server::ClientGone, mailbox: Arc<Mailbox>) {
        let done = self.done.notified();
        tokio::pin!(done);
        // Registered before the check, so a response finishing in between still wakes us.
        done.as_mut().enable();
        if self.lock().response_done {
            return;
        }
        tokio::select! {
            _ = gone.wait() => self.client_gone(&mailbox),
            _ = done => {}
        }
    }

    pub(crate) fn new(mut body: RequestBody, mailbox: &Arc<Mailbox>, gone: ferricorn_server::ClientGone) -> Arc<Self> {
        let shared = Arc::new(Self {
            io: Mutex::new(CycleIo {
                watch: tokio::runtime::Handle::try_current().ok().map(|rt| (gone, rt)),
                ..CycleIo::default()
            }),
            want_body: tokio::sync::Notify::new(),
            done: tokio::sync::Notify::new(),
        });
        if body.is_complete() {
            let mut io = shared.lock();
            while let Ok(Some(chunk)) = body.read_chunk_blocking() {
                io.chunks.push_back(chunk);
            }
            io.body_done = true;
        } else {
            tokio::spawn(pump_body(body, shared.clone(), mailbox.clone()));
        }
        shared
    }

    fn lock(&self) -> MutexGuard<'_, CycleIo> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On the loop thread, once the app's task exists. A client that left already
    /// starts its grace period now.
    pub(crate) fn set_task(&self, py: Python<'_>, ctx: &LoopCtx, task: Py<PyAny>) {
        let mut io = self.lock();
        if io.response_done {
            return;
        }
        io.task = Some(task);
        if io.disconnected {
            cancel_after_grace(py, ctx, &mut io);
        }
    }
}

/// Schedules the cancellation of the app's task (once), as Gunicorn's
/// `asgi_disconnect_grace_period`; the task may still finish on its own meanwhile.
fn cancel_after_grace(py: Python<'_>, ctx: &LoopCtx, io: &mut CycleIo) {
    if let Some(task) = io.task.take() {
        if let Err(e) = ctx.cancel_later.bind(py).call1((task,)) {
            ferricorn_core::debug!("could not schedule the ASGI task's cancellation: {e}");
        }
    }
}

async fn pump_body(mut body: RequestBody, shared: Arc<CycleShared>, mailbox: Arc<Mailbox>) {
    loop {
        // A response done before the app read the body (it refused an upload): the body
        // is dropped, so hyper stops waiting for it and closes the connection, instead
        // of holding it open for a `100 Continue` body nobody will read.
        let done = shared.done.notified();
        let want = shared.want_body.notified();
        tokio::pin!(done, want);
        done.as_mut().enable();
        if shared.lock().response_done {
            return;
        }
        tokio::select! {
            _ = &mut want => {}
            _ = &mut done => return,
        }
        let next = body.read_chunk().await;
        let done = !matches!(next, Ok(Some(_)));
        let wake = {
            let mut io = shared.lock();
            match next {
                Ok(Some(chunk)) => io.chunks.push_back(chunk),
                Ok(None) => io.body_done = true,
                // A broken or abandoned upload: the app sees the disconnect.
                Err(_) => {
                    io.body_broken = true;
                    io.disconnected = true;
                }
            }
            !io.receive_waiters.is_empty()
        };
        if wake {
            mailbox.post(Event::Wake(shared.clone()));
        }
        if done {
            return;
        }
    }
}

enum Incoming {
    Body(Bytes, bool),
    Disconnect,
}

/// The next `receive()` message, or `None` when the app must wait.
fn next_message(io: &mut CycleIo) -> Option<Incoming> {
    if !io.request_complete_sent {
        if let Some(chunk) = io.chunks.pop_front() {
            let more = !(io.body_done && io.chunks.is_empty());
            io.request_complete_sent = !more;
            return Some(Incoming::Body(chunk, more));
        }
        if io.body_done {
            io.request_complete_sent = true;
            return Some(Incoming::Body(Bytes::new(), false));
        }
        return io.body_broken.then_some(Incoming::Disconnect);
    }
    (io.disconnected || io.response_done).then_some(Incoming::Disconnect)
}

fn message_dict(py: Python<'_>, msg: Incoming) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    match msg {
        Incoming::Body(body, more) => {
            d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            d.set_item(intern!(py, "body"), PyBytes::new(py, &body))?;
            d.set_item(intern!(py, "more_body"), more)?;
        }
        Incoming::Disconnect => d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?,
    }
    Ok(d.into_any().unbind())
}

/// Whether an asyncio future is done already (a cancelled task leaves its future so).
pub(crate) fn is_done(py: Python<'_>, fut: &Py<PyAny>) -> bool {
    fut.bind(py)
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

pub(crate) fn resolve(py: Python<'_>, fut: Py<PyAny>, value: Py<PyAny>) {
    // A cancelled task leaves a cancelled future behind: nothing to resolve then.
    if is_done(py, &fut) {
        return;
    }
    let fut = fut.bind(py);
    if let Err(e) = fut.call_method1(intern!(py, "set_result"), (value,)) {
        ferricorn_core::debug!("could not resolve an ASGI future: {e}");
    }
}

/// On the loop thread: resolve what the app awaits, now that the I/O state changed.
pub(crate) fn wake(py: Python<'_>, ctx: &LoopCtx, shared: &Arc<CycleShared>) {
    let (recv, send) = {
        let mut io = shared.lock();
        if io.disconnected && !io.response_done {
            cancel_after_grace(py, ctx, &mut io);
        }
        let mut recv = Vec::new();
        while let Some(fut) = io.receive_waiters.pop_front() {
            if is_done(py, &fut) {
                continue;
            }
            match next_message(&mut io) {
                Some(msg) => recv.push((fut, msg)),
                None => {
                    io.receive_waiters.push_front(fut);
                    if !io.request_complete_sent {
                        shared.want_body.notify_one();
                    }
                    break;
                }
            }
        }
        let send = if io.drained || io.disconnected {
            io.send_waiter.take()
        } else {
            None
        };
        (recv, send)
    };
    for (fut, msg) in recv {
        match message_dict(py, msg) {
            Ok(value) => resolve(py, fut, value),
            Err(e) => ferricorn_core::error!("ASGI receive failed: {e}"),
        }
    }
    if let Some(fut) = send {
        resolve(py, fut, py.None());
    }
}

#[pyclass(module = "ferricorn")]
pub struct HttpCycle {
    ctx: Arc<LoopCtx>,
    shared: Arc<CycleShared>,
    reply: Option<Reply>,
    head: Option<ResponseHead>,
    pipe: Option<pipe::Sender>,
    finished: bool,
    head_request: bool,
    early_hints: Option<EarlyHints>,
    /// `http.response.start` asked for trailers: the response ends with them.
    expect_trailers: bool,
    /// The last body message was sent; only trailers may follow.
    body_done: bool,
    trailers: http::HeaderMap,
}

impl HttpCycle {
    pub(crate) fn new(
        ctx: Arc<LoopCtx>,
        shared: Arc<CycleShared>,
        reply: Reply,
        head_request: bool,
        early_hints: Option<EarlyHints>,
    ) -> Self {
        Self {
            ctx,
            shared,
            reply: Some(reply),
            head: None,
            pipe: None,
            finished: false,
            head_request,
            early_hints,
            expect_trailers: false,
            body_done: false,
            trailers: http::HeaderMap::new(),
        }
    }

    fn respond(&mut self, resp: http::Response<ResponseBody>) {
        if let Some(h) = &self.early_hints {
            h.close();
        }
        if let Some(reply) = self.reply.take() {
            self.ctx.replies.send(reply, resp);
        }
    }

    fn end(&mut self) {
        self.finished = true;
        let waiting = {
            let mut io = self.shared.lock();
            io.response_done = true;
            io.task = None;
            !io.receive_waiters.is_empty()
        };
        self.shared.done.notify_waiters();
        if waiting {
            // A receive() is parked until the response is done: it gets http.disconnect.
            self.ctx.mailbox.post(Event::Wake(self.shared.clone()));
        }
    }

    fn start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        if self.head.is_some() || self.reply.is_none() {
            return Err(PyRuntimeError::new_err("http.response.start sent twice"));
        }
        let py = message.py();
        let status: u16 = message
            .get_item(intern!(py, "status"))?
            .ok_or_else(|| PyValueError::new_err("http.response.start needs a status"))?
            .extract()?;
        let mut head = ResponseHead::new(status, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
        push_headers(&mut head, message)?;
        self.head = Some(head);
        self.expect_trailers = match message.get_item(intern!(py, "trailers"))? {
            Some(t) => t.is_truthy()?,
            None => false,
        };
        Ok(())
    }

    /// `http.response.informational` (Gunicorn's message: `status`, `headers`) and
    /// `http.response.early_hint` (`links`, each a `Link` value): a 1xx before the final
    /// response, on HTTP/1.1. Dropped on HTTP/1.0 and HTTP/2, as the scope says.
    fn informational(&mut self, message: &Bound<'_, PyDict>, kind: &str) -> PyResult<()> {
        let py = message.py();
        if self.head.is_some() || self.reply.is_none() {
            return Err(PyRuntimeError::new_err(format!("{kind} after http.response.start")));
        }
        let status: u16 = match message.get_item(intern!(py, "status"))? {
            Some(s) if kind == "http.response.informational" => s.extract()?,
            _ => 103,
        };
        let mut head = ResponseHead::new(status, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
        push_headers(&mut head, message)?;
        if let Some(links) = message.get_item(intern!(py, "links"))? {
            for link in links.try_iter()? {
                head.push(b"link", &header_bytes(&link?)?)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
            }
        }
        let bytes = head
            .interim_bytes()
            .map_err(|e| PyValueError::new_err(format!("{kind}: {e}")))?;
        if let Some(hints) = &self.early_hints {
            hints.send(&bytes);
        }
        Ok(())
    }

    /// `http.response.trailers`, after the last body message of a response started with
    /// `trailers: True`.
    fn trailers(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        if !self.expect_trailers || !self.body_done || self.finished {
            return Err(PyRuntimeError::new_err(
                "http.response.trailers needs trailers=True in http.response.start and follows the last body",
            ));
        }
        if let Some(headers) = message.get_item(intern!(py, "headers"))? {
            for pair in headers.try_iter()? {
                let pair = pair?;
                let name = header_bytes(&pair.get_item(0)?)?;
                let value = header_bytes(&pair.get_item(1)?)?;
                let bad = || PyValueError::new_err(format!("invalid trailer {:?}", String::from_utf8_lossy(&name)));
                let name = http::HeaderName::from_bytes(&name).map_err(|_| bad())?;
                let value = http::HeaderValue::from_bytes(&value).map_err(|_| bad())?;
                // Framing and routing fields never come from a trailer (RFC 9110 6.5.1),
                // nor connection-specific ones (HTTP/2 resets a stream that has them).
                const CONNECTION_SPECIFIC: [&str; 5] =
                    ["connection", "keep-alive", "upgrade", "proxy-connection", "te"];
                if !ferricorn_core::request::forbidden_trailer(name.as_str())
                    && !CONNECTION_SPECIFIC.contains(&name.as_str())
                {
                    self.trailers.append(name, value);
                }
            }
        }
        let more = match message.get_item(intern!(py, "more_trailers"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        if !more {
            if let Some(tx) = &self.pipe {
                tx.set_trailers(std::mem::take(&mut self.trailers));
            }
            self.finish_stream();
        }
        Ok(())
    }

    /// ASGI's zerocopysend extension: `count` bytes (default: to the end) of the open
    /// `file` from `offset` (default: its current position). A whole response in one
    /// message is read by the I/O thread like pathsend; otherwise the bytes are read
    /// here and go the way of `http.response.body`.
    fn zerocopysend(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Option<Py<PyAny>>> {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::fs::FileExt;
        let os_err = |e: std::io::Error| pyo3::exceptions::PyOSError::new_err(e.to_string());
        let fileobj = message
            .get_item(intern!(py, "file"))?
            .ok_or_else(|| PyValueError::new_err("http.response.zerocopysend needs a file"))?;
        let fd: i32 = fileobj.call_method0(intern!(py, "fileno"))?.extract()?;
        // A duplicate, so the app may close its file as soon as send() returns.
        // SAFETY: fcntl only reads `fd`; a bad one gives -1.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(os_err(std::io::Error::last_os_error()));
        }
        // SAFETY: `dup` is a new descriptor that nothing else owns.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(dup) });
        let size = file.metadata().map_err(os_err)?.len();
        let offset: u64 = match message.get_item(intern!(py, "offset"))? {
            Some(o) if !o.is_none() => o.extract()?,
            // SAFETY: lseek on a descriptor we own; it only reads the shared position.
            _ => u64::try_from(unsafe { libc::lseek(dup, 0, libc::SEEK_CUR) }).unwrap_or(0),
        };
        let available = size.saturating_sub(offset);
        let count: u64 = match message.get_item(intern!(py, "count"))? {
            Some(c) if !c.is_none() => c.extract::<u64>()?.min(available),
            _ => available,
        };
        let more = match message.get_item(intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        if self.reply.is_some() && !more && !self.expect_trailers && !self.head_request {
            let head = self
                .head
                .take()
                .ok_or_else(|| PyRuntimeError::new_err("http.response.zerocopysend before http.response.start"))?;
            let mut resp = head.into_response(ResponseBody::from_file(file, offset, count));
            if !resp.headers().contains_key(http::header::CONTENT_LENGTH) {
                resp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(count));
            }
            self.respond(resp);
            self.end();
            return Ok(None);
        }
        let mut buf = vec![0u8; usize::try_from(count).unwrap_or(usize::MAX)];
        py.detach(|| file.read_exact_at(&mut buf, offset)).map_err(os_err)?;
        self.body_bytes(py, Bytes::from(buf), more)
    }

    /// Queues body bytes; `Some(future)` when the app must wait for the client.
    fn body(&mut self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Option<Py<PyAny>>> {
        let body = match message.get_item(intern!(py, "body"))? {
            Some(b) if !b.is_none() => match b.cast::<PyBytes>() {
                Ok(bytes) => crate::pyhelpers::body_bytes(bytes),
                // uvicorn and Gunicorn take any bytes-like body: copied once into bytes.
                Err(_)
                    if b.is_instance_of::<pyo3::types::PyByteArray>()
                        || b.is_instance_of::<pyo3::types::PyMemoryView>() =>
                {
                    let copied = py.get_type::<PyBytes>().call1((&b,))?;
                    crate::pyhelpers::body_bytes(copied.cast::<PyBytes>()?)
                }
                Err(_) => return Err(PyTypeError::new_err("body must be bytes")),
            },
            _ => Bytes::new(),
        };
        let more = match message.get_item(intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        self.body_bytes(py, body, more)
    }

    fn body_bytes(&mut self, py: Python<'_>, body: Bytes, more_body: bool) -> PyResult<Option<Py<PyAny>>> {
        if self.finished || self.body_done {
            return Err(PyRuntimeError::new_err(
                "http.response.body sent after the response completed",
            ));
        }
        // With trailers to come, the last body message does not end the response.
        let more = more_body || self.expect_trailers;
        if self.expect_trailers && !more_body {
            self.body_done = true;
        }
        if self.reply.is_some() {
            let head = self
                .head
                .take()
                .ok_or_else(|| PyRuntimeError::new_err("http.response.body before http.response.start"))?;
            if !more {
                self.respond(head.into_response(ResponseBody::full(body)));
                self.end();
                return Ok(None);
            }
            let (tx, rx) = pipe::channel(self.ctx.high_water);
            let shared = self.shared.clone();
            let mailbox = self.ctx.mailbox.clone();
            tx.on_close(move || {
                shared.lock().disconnected = true;
                mailbox.post(Event::Wake(shared));
            });
            self.respond(head.into_response(ResponseBody::stream(rx)));
            self.pipe = Some(tx);
        }
        let Some(tx) = self.pipe.as_ref() else { return Ok(None) };
        // Sends after a disconnect are dropped quietly, as uvicorn does; `receive()`
        // reports the disconnect to apps that care.
        if self.head_request {
            if !more {
                self.finish_stream();
            }
            return Ok(None);
        }
        if tx.send_now(body) == Err(Disconnected) {
            // ASGI 2.4: a send on a closed connection raises an OSError, so the app
            // stops producing.
            self.finish_stream();
            return Err(pyo3::exceptions::PyOSError::new_err("client disconnected"));
        }
        if !more {
            self.finish_stream();
            return Ok(None);
        }
        if tx.is_full() {
            let fut = self.ctx.create_future.bind(py).call0()?.unbind();
            {
                let mut io = self.shared.lock();
                io.drained = false;
                io.send_waiter = Some(fut.clone_ref(py));
            }
            let shared = self.shared.clone();
            let mailbox = self.ctx.mailbox.clone();
            tx.on_drain(move || {
                shared.lock().drained = true;
                mailbox.post(Event::Wake(shared));
            });
            return Ok(Some(fut));
        }
        Ok(None)
    }

    /// ASGI's pathsend extension: the body is a file, read by the I/O thread in Rust.
    fn pathsend(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        if self.reply.is_none() || self.finished {
            return Err(PyRuntimeError::new_err(
                "http.response.pathsend after the response started",
            ));
        }
        let path: std::path::PathBuf = message
            .get_item(intern!(py, "path"))?
            .ok_or_else(|| PyValueError::new_err("http.response.pathsend needs a path"))?
            .extract()?;
        if !path.is_absolute() {
            return Err(PyValueError::new_err("http.response.pathsend needs an absolute path"));
        }
        let head = self
            .head
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("http.response.pathsend before http.response.start"))?;
        // O_NONBLOCK: a FIFO must not block the loop in open(); only regular files go.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?
        };
        let meta = file
            .metadata()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(PyValueError::new_err("http.response.pathsend needs a regular file"));
        }
        let len = meta.len();
        let body = if self.head_request {
            ResponseBody::empty()
        } else {
            ResponseBody::from_file(file, 0, len)
        };
        let mut resp = head.into_response(body);
        if !resp.headers().contains_key(http::header::CONTENT_LENGTH) {
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
        self.respond(resp);
        self.end();
        Ok(())
    }

    fn finish_stream(&mut self) {
        if let Some(tx) = self.pipe.take() {
            tx.finish();
        }
        self.end();
    }
}

/// An ASGI message sent by the app: the dict and its `type`.
pub(crate) fn message_type<'py>(message: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyString>)> {
    let py = message.py();
    let message = message
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?;
    let kind = message
        .get_item(intern!(py, "type"))?
        .ok_or_else(|| PyValueError::new_err("an ASGI message needs a type"))?
        .cast_into::<PyString>()
        .map_err(|_| PyTypeError::new_err("an ASGI message type must be a str"))?;
    Ok((message.clone(), kind))
}

/// The `headers` of an ASGI message, through the shared response-header policy.
pub(crate) fn push_headers(head: &mut ResponseHead, message: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = message.py();
    if let Some(headers) = message.get_item(intern!(py, "headers"))? {
        let invalid = |e: HeadError| PyValueError::new_err(e.to_string());
        for pair in headers.try_iter()? {
            let pair = pair?;
            // The usual shape, a tuple of two bytes (literals, mostly): read in place and
            // parsed once per object (see header_cache).
            if let Ok(t) = pair.cast::<PyTuple>() {
                if t.len() == 2 {
                    let (name, value) = (t.get_borrowed_item(0)?, t.get_borrowed_item(1)?);
                    if let (Ok(n), Ok(v)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) {
                        let (n, v) = (n.as_bytes(), v.as_bytes());
                        header_cache::push(head, t, &name, &value, v.len(), || Ok(n.into()), || Ok(v.into()))?;
                        continue;
                    }
                }
            }
            let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
            head.push(&header_bytes(&name)?, &header_bytes(&value)?)
                .map_err(invalid)?;
        }
    }
    Ok(())
}

fn header_bytes(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    // Lenient like uvicorn: str is accepted and encoded as latin-1.
    let s: String = v
        .extract()
        .map_err(|_| PyTypeError::new_err("header names and values must be bytes"))?;
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| PyValueError::new_err("header is not latin-1")))
        .collect()
}

#[pymethods]
impl HttpCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut io = self.shared.lock();
        if let Some(msg) = next_message(&mut io) {
            drop(io);
            return ready(py, message_dict(py, msg)?);
        }
        let fut = self.ctx.create_future.bind(py).call0()?.unbind();
        io.receive_waiters.push_back(fut.clone_ref(py));
        if !io.request_complete_sent {
            self.shared.want_body.notify_one();
        } else if let Some((gone, rt)) = io.watch.take() {
            // Waiting for `http.disconnect`: from now on the client's leaving matters.
            rt.spawn(self.shared.clone().watch_disconnect(gone, self.ctx.mailbox.clone()));
        }
        Ok(fut)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (message, kind) = message_type(message)?;
        let (message, kind) = (&message, kind.to_str()?);
        match kind {
            "http.response.start" => self.start(message)?,
            "http.response.pathsend" => self.pathsend(message)?,
            "http.response.informational" | "http.response.early_hint" => self.informational(message, kind)?,
            "http.response.trailers" => self.trailers(message)?,
            "http.response.zerocopysend" => {
                if let Some(fut) = self.zerocopysend(py, message)? {
                    return Ok(fut);
                }
            }
            "http.response.body" => {
                if let Some(fut) = self.body(py, message)? {
                    return Ok(fut);
                }
            }
            other => return Err(PyValueError::new_err(format!("unexpected ASGI message type {other:?}"))),
        }
        done(py)
    }

    /// The app raised: 500 if nothing was sent, else cut the response short. Only the
    /// cancellation the server made after the client left is not the app's error to log
    /// (uvicorn logs every exception; it never cancels).
    #[pyo3(signature = (traceback, cancelled = false))]
    fn app_failed(&mut self, traceback: &str, cancelled: bool) {
        if cancelled && self.shared.lock().disconnected {
            ferricorn_core::debug!("ASGI application stopped after the client disconnected");
        } else {
            ferricorn_core::exception!("Exception in ASGI application\n{}", traceback.trim_end());
        }
        if self.reply.is_some() {
            self.respond(error_page::response(500, "", true));
        } else if let Some(tx) = self.pipe.take() {
            tx.abort();
        }
        self.end();
    }

    fn app_returned(&mut self) {
        if self.reply.is_some() {
            ferricorn_core::error!("ASGI callable returned without starting response.");
            self.respond(error_page::response(500, "", true));
        } else if let Some(tx) = self.pipe.take() {
            ferricorn_core::error!("ASGI callable returned without completing response.");
            tx.abort();
        }
        self.end();
    }
}
