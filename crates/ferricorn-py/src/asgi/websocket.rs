//! The ASGI `websocket` scope: `websocket.connect` / `accept` / `receive` / `send` /
//! `close` / `disconnect` over the front end's WebSocket session.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferricorn_server::websocket::{Handshake, WsIn, WsOut};
use ferricorn_server::{error_page, ResponseHead};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::mpsc;

use super::cycle::{done, is_done, message_type, push_headers, ready, resolve};
use super::{Event, LoopCtx, Mailbox, Reply};

/// Messages from the client, shared with the session task.
#[derive(Default)]
pub(crate) struct WsIo {
    incoming: VecDeque<WsIn>,
    closed: Option<(u16, String)>,
    /// `receive()` futures, oldest first; cancelled ones are skipped, never given a
    /// message (see `cycle::CycleIo::receive_waiters`).
    waiters: VecDeque<Py<PyAny>>,
    /// Bytes the app sent that the session has not written to the socket yet.
    queued: usize,
    /// The app's `send()` waiting for `queued` to fall to the high-water mark.
    send_waiter: Option<Py<PyAny>>,
}

pub(crate) struct WsShared {
    io: Mutex<WsIo>,
}

impl WsShared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            io: Mutex::new(WsIo::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WsIo> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum State {
    /// The handshake is not answered yet.
    Connecting,
    Open,
    Closed,
}

#[pyclass(module = "ferricorn")]
pub struct WsCycle {
    ctx: Arc<LoopCtx>,
    shared: Arc<WsShared>,
    reply: Option<Reply>,
    handshake: Option<Handshake>,
    out: Option<mpsc::UnboundedSender<WsOut>>,
    runtime: tokio::runtime::Handle,
    state: State,
    /// `websocket.connect` was the answer to a `receive()`: it is the first message,
    /// even for an app that accepts before it receives (as uvicorn delivers it).
    connect_delivered: bool,
    /// The websocket.http.response extension: the HTTP response the app answers the
    /// handshake with instead of accepting it, and its body so far.
    denial: Option<(ResponseHead, Vec<u8>)>,
}

impl WsCycle {
    pub(crate) fn new(
        ctx: Arc<LoopCtx>,
        shared: Arc<WsShared>,
        reply: Reply,
        handshake: Handshake,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            ctx,
            shared,
            reply: Some(reply),
            handshake: Some(handshake),
            out: None,
            runtime,
            state: State::Connecting,
            connect_delivered: false,
            denial: None,
        }
    }

    /// Refuses the handshake: with the app's own response (websocket.http.response),
    /// else with a 403, as Gunicorn and uvicorn do.
    fn deny(&mut self) {
        if let Some(reply) = self.reply.take() {
            let resp = match self.denial.take() {
                Some((head, body)) => head.into_response(ferricorn_server::ResponseBody::full(body.into())),
                None => error_page::response(403, "WebSocket connection denied", true),
            };
            let _ = reply.send(resp);
        }
        self.state = State::Closed;
    }

    fn denial_start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        if self.denial.is_some() {
            return Err(PyRuntimeError::new_err("websocket.http.response.start sent twice"));
        }
        let status: u16 = message
            .get_item(intern!(py, "status"))?
            .ok_or_else(|| PyValueError::new_err("websocket.http.response.start needs a status"))?
            .extract()?;
        if !(200..600).contains(&status) {
            return Err(PyValueError::new_err(format!(
                "invalid status {status} for a denial response"
            )));
        }
        let mut head = ResponseHead::new(status, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
        push_headers(&mut head, message)?;
        self.denial = Some((head, Vec::new()));
        Ok(())
    }

    fn denial_body(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        let Some((_, body)) = self.denial.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "websocket.http.response.body before websocket.http.response.start",
            ));
        };
        if let Some(b) = message.get_item(intern!(py, "body"))?.filter(|b| !b.is_none()) {
            body.extend_from_slice(
                b.cast::<PyBytes>()
                    .map_err(|_| pyo3::exceptions::PyTypeError::new_err("body must be bytes"))?
                    .as_bytes(),
            );
        }
        let more = match message.get_item(intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        if !more {
            self.deny();
        }
        Ok(())
    }

    fn accept(&mut self, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        let (Some(reply), Some(handshake)) = (self.reply.take(), self.handshake.take()) else {
            return Err(PyRuntimeError::new_err("websocket.accept sent twice"));
        };
        let subprotocol: Option<String> = match message.get_item(intern!(py, "subprotocol"))? {
            Some(s) if !s.is_none() => Some(s.extract()?),
            _ => None,
        };
        // Application headers go through the same policy as any response.
        let mut head = ResponseHead::new(200, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
        push_headers(&mut head, message)?;
        let extra = head
            .into_response(ferricorn_server::ResponseBody::empty())
            .headers()
            .clone();
        let extra = extra.into_iter().filter_map(|(k, v)| k.map(|k| (k, v))).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let mailbox = self.ctx.mailbox.clone();
        let options = self.ctx.websocket;
        let resp = handshake.accept(
            subprotocol.as_deref(),
            extra,
            options,
            rx,
            move |msg| push_incoming(&shared, &mailbox, msg),
            &self.runtime,
        );
        let _ = reply.send(resp);
        self.out = Some(tx);
        self.state = State::Open;
        Ok(())
    }
}

/// Bytes of application messages queued for the socket before `send()` waits.
const SEND_HIGH_WATER: usize = 1 << 20;

fn push_incoming(shared: &Arc<WsShared>, mailbox: &Mailbox, msg: WsIn) {
    let wake = {
        let mut io = shared.lock();
        match msg {
            WsIn::Closed(code, reason) => {
                io.closed = Some((code, reason));
                !io.waiters.is_empty() || io.send_waiter.is_some()
            }
            WsIn::Sent(n) => {
                io.queued = io.queued.saturating_sub(n);
                io.send_waiter.is_some() && io.queued <= SEND_HIGH_WATER
            }
            other => {
                io.incoming.push_back(other);
                !io.waiters.is_empty()
            }
        }
    };
    if wake {
        mailbox.post(Event::WsWake(shared.clone()));
    }
}

/// The next `receive()` message after `websocket.connect`, or `None` to wait.
fn next_message(py: Python<'_>, io: &mut WsIo) -> PyResult<Option<Py<PyAny>>> {
    let d = PyDict::new(py);
    if let Some(msg) = io.incoming.pop_front() {
        d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
        match msg {
            WsIn::Text(t) => d.set_item(intern!(py, "text"), t)?,
            WsIn::Binary(b) => d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?,
            WsIn::Closed(..) | WsIn::Sent(_) => {}
        }
        return Ok(Some(d.into_any().unbind()));
    }
    if let Some((code, reason)) = &io.closed {
        d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
        d.set_item(intern!(py, "code"), code)?;
        d.set_item(intern!(py, "reason"), reason)?;
        return Ok(Some(d.into_any().unbind()));
    }
    Ok(None)
}

/// On the loop thread: deliver what arrived to a waiting `receive()`.
pub(crate) fn wake(py: Python<'_>, shared: &Arc<WsShared>) {
    let mut ready_now = Vec::new();
    {
        let mut io = shared.lock();
        if io.queued <= SEND_HIGH_WATER || io.closed.is_some() {
            if let Some(fut) = io.send_waiter.take() {
                ready_now.push((fut, py.None()));
            }
        }
        while let Some(fut) = io.waiters.pop_front() {
            if is_done(py, &fut) {
                continue;
            }
            match next_message(py, &mut io) {
                Ok(Some(msg)) => ready_now.push((fut, msg)),
                Ok(None) => {
                    io.waiters.push_front(fut);
                    break;
                }
                Err(e) => {
                    ferricorn_core::error!("ASGI websocket receive failed: {e}");
                    break;
                }
            }
        }
    }
    for (fut, msg) in ready_now {
        resolve(py, fut, msg);
    }
}

#[pymethods]
impl WsCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            let d = PyDict::new(py);
            d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            return ready(py, d.into_any().unbind());
        }
        let mut io = self.shared.lock();
        if let Some(msg) = next_message(py, &mut io)? {
            return ready(py, msg);
        }
        if !matches!(self.state, State::Open) {
            // Denied or never accepted: nothing will ever arrive.
            let d = PyDict::new(py);
            d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
            d.set_item(intern!(py, "code"), 1006)?;
            d.set_item(intern!(py, "reason"), "")?;
            return ready(py, d.into_any().unbind());
        }
        let fut = self.ctx.create_future.bind(py).call0()?.unbind();
        io.waiters.push_back(fut.clone_ref(py));
        Ok(fut)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (message, kind) = message_type(message)?;
        let (message, kind) = (&message, kind.to_str()?);
        match (kind, &self.state) {
            ("websocket.accept", State::Connecting) if self.denial.is_none() => self.accept(message)?,
            ("websocket.http.response.start", State::Connecting) => self.denial_start(message)?,
            ("websocket.http.response.body", State::Connecting) => self.denial_body(message)?,
            ("websocket.close", State::Connecting) => self.deny(),
            ("websocket.send", State::Open) => {
                let out = if let Some(text) = message.get_item(intern!(py, "text"))?.filter(|t| !t.is_none()) {
                    WsOut::Text(text.extract()?)
                } else if let Some(b) = message.get_item(intern!(py, "bytes"))?.filter(|b| !b.is_none()) {
                    WsOut::Binary(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()).to_vec())
                } else {
                    return Err(PyValueError::new_err("websocket.send needs text or bytes"));
                };
                let n = match &out {
                    WsOut::Text(t) => t.len(),
                    WsOut::Binary(b) => b.len(),
                    WsOut::Close(..) => 0,
                };
                // Counted before it is queued: the session counts it down once written,
                // which may happen before this thread runs again.
                self.shared.lock().queued += n;
                if self.out.as_ref().is_none_or(|tx| tx.send(out).is_err()) {
                    return Err(pyo3::exceptions::PyOSError::new_err("websocket closed"));
                }
                // Backpressure, as uvicorn's: past the high-water mark the app's send()
                // waits until the client has taken enough (a subscriber that reads
                // nothing cannot make the worker queue without bound).
                let mut io = self.shared.lock();
                if io.queued > SEND_HIGH_WATER && io.closed.is_none() {
                    let fut = self.ctx.create_future.bind(py).call0()?.unbind();
                    io.send_waiter = Some(fut.clone_ref(py));
                    return Ok(fut);
                }
            }
            ("websocket.close", State::Open) => {
                let code: u16 = match message.get_item(intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract()?,
                    _ => 1000,
                };
                let reason: String = match message.get_item(intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract()?,
                    _ => String::new(),
                };
                if let Some(tx) = self.out.take() {
                    let _ = tx.send(WsOut::Close(code, reason));
                }
                self.state = State::Closed;
            }
            ("websocket.send" | "websocket.close", State::Closed) => {
                return Err(pyo3::exceptions::PyOSError::new_err("websocket closed"));
            }
            (other, _) => {
                return Err(PyValueError::new_err(format!(
                    "unexpected ASGI message {other:?} in this state"
                )))
            }
        }
        done(py)
    }

    #[pyo3(signature = (traceback, _cancelled = false))]
    fn app_failed(&mut self, traceback: &str, _cancelled: bool) {
        ferricorn_core::error!("Exception in ASGI application\n{}", traceback.trim_end());
        // Before the handshake was answered, the failure is the server's 500 (uvicorn's
        // and Gunicorn's answer), not a refusal.
        if matches!(self.state, State::Connecting) && self.denial.is_none() {
            if let Some(reply) = self.reply.take() {
                let _ = reply.send(error_page::response(500, "", true));
            }
            self.state = State::Closed;
            return;
        }
        self.finish(1011);
    }

    fn app_returned(&mut self) {
        self.finish(1000);
    }
}

impl WsCycle {
    /// The app is done: deny a handshake it never answered, close an open socket.
    fn finish(&mut self, code: u16) {
        match self.state {
            State::Connecting => self.deny(),
            State::Open => {
                if let Some(tx) = self.out.take() {
                    let _ = tx.send(WsOut::Close(code, String::new()));
                }
                self.state = State::Closed;
            }
            State::Closed => {}
        }
    }
}
