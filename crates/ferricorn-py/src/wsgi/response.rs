//! `start_response` and `write()`, and the response state they share with the bridge.

use bytes::Bytes;
use ferricorn_server::pipe::{self, Disconnected};
use ferricorn_server::ResponseBody;
use ferricorn_server::ResponseHead;
use std::borrow::Cow;

use crate::header_cache;
use crate::replies::{Replies, ReplyTx};
use http::Response;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::sync::Arc;

/// Where the final response goes when it is handed over.
pub(crate) enum Handover {
    /// To the I/O thread waiting on the other end (a call on an app thread), through
    /// the batches of `replies`.
    Channel(ReplyTx, Arc<Replies>),
    /// Into `kept`, for the I/O thread that runs the call inline to take when it returns.
    Keep,
}

#[pyclass(module = "ferricorn")]
pub struct StartResponse {
    head: Option<ResponseHead>,
    reply: Option<Handover>,
    kept: Option<Response<ResponseBody>>,
    /// The request's early-hints queue, closed when the response is handed over.
    hints: Option<ferricorn_server::EarlyHints>,
    pipe: Option<pipe::Sender>,
    /// Bytes (at most 4 GiB: a u32 keeps the object small, see the size test).
    high_water: u32,
    /// What `post_request` hooks see: the status line, the app's header list, bytes sent.
    pub status: Option<Py<PyString>>,
    pub headers: Option<Py<PyAny>>,
    pub sent: u64,
    /// The request is HEAD: no body goes out, whatever the app writes.
    head_request: bool,
    /// The most body bytes the response may carry (its `Content-Length`; 0 for HEAD,
    /// 1xx, 204 and 304). `write()` drops what goes past it, as Gunicorn's does: once
    /// hyper has what it will send it lets the body go, and a write after that must not
    /// look like a client that left.
    body_cap: Option<u64>,
    /// The environ and the names the access log reads from it (`{var}e` atoms, and
    /// REMOTE_ADDR for `h`), read when the response is handed over. Boxed: one pointer,
    /// so the object stays within pymalloc's 512-byte blocks (past them every
    /// `StartResponse` came from `malloc`).
    access_environ: Option<Box<AccessCapture>>,
}

/// The environ and the names the access log reads from it.
type AccessCapture = (Py<PyDict>, Arc<[String]>);

impl StartResponse {
    pub(crate) fn new(
        reply: Handover,
        high_water: usize,
        hints: Option<ferricorn_server::EarlyHints>,
        head_request: bool,
    ) -> Self {
        Self {
            head: None,
            reply: Some(reply),
            kept: None,
            hints,
            pipe: None,
            high_water: u32::try_from(high_water).unwrap_or(u32::MAX),
            status: None,
            headers: None,
            sent: 0,
            head_request,
            body_cap: None,
            access_environ: None,
        }
    }

    /// Reads `keys` from `environ` for the access log when the response goes out.
    pub(crate) fn capture_environ(&mut self, environ: Py<PyDict>, keys: Arc<[String]>) {
        self.access_environ = Some(Box::new((environ, keys)));
    }

    pub fn headers_sent(&self) -> bool {
        self.reply.is_none()
    }

    pub fn started(&self) -> bool {
        self.head.is_some()
    }

    fn build(&mut self, body: ResponseBody) -> Response<ResponseBody> {
        match self.head.take() {
            Some(head) => head.into_response(body),
            None => ferricorn_server::error_page::response(500, "", true),
        }
    }

    fn send(&mut self, body: ResponseBody) {
        let resp = self.build(body);
        self.hand_over(resp);
    }

    /// The one way the final response leaves the app's thread: early hints close first.
    fn hand_over(&mut self, mut resp: Response<ResponseBody>) {
        if let Some(h) = self.hints.take() {
            h.close();
        }
        if let Some(capture) = self.access_environ.take() {
            let (environ, keys) = *capture;
            let found = Python::attach(|py| access_environ(environ.bind(py), &keys));
            resp.extensions_mut().insert(ferricorn_server::AccessEnviron(found));
        }
        match self.reply.take() {
            // The connection may be gone already; nothing else to do then.
            Some(Handover::Channel(reply, replies)) => replies.send(reply, resp),
            Some(Handover::Keep) => self.kept = Some(resp),
            None => {}
        }
    }

    /// The response handed over during an inline call.
    pub fn take_kept(&mut self) -> Option<Response<ResponseBody>> {
        self.kept.take()
    }

    /// An inline call returned before handing its response over: an app thread will,
    /// through `reply`.
    pub(crate) fn hand_over_later(&mut self, reply: ReplyTx, replies: Arc<Replies>) {
        if self.reply.is_some() {
            self.reply = Some(Handover::Channel(reply, replies));
        }
    }

    /// Sends the whole response in one piece (the app returned a list, or nothing).
    pub fn finish_full(&mut self, data: Bytes) -> PyResult<()> {
        if !self.started() {
            return Err(PyAssertionError::new_err(
                "the application returned without calling start_response",
            ));
        }
        self.sent += data.len() as u64;
        self.send(ResponseBody::full(data));
        Ok(())
    }

    /// Queues a body chunk; the headers go out with the first non-empty one.
    pub fn write_chunk(&mut self, py: Python<'_>, mut data: Bytes) -> PyResult<Result<(), Disconnected>> {
        // The headers go out with the first non-empty write (PEP 3333), even when none
        // of it can be sent.
        let written = !data.is_empty();
        if let Some(cap) = self.body_cap {
            let left = cap.saturating_sub(self.sent);
            if (data.len() as u64) > left {
                data.truncate(left as usize);
            }
        }
        self.sent += data.len() as u64;
        if !self.headers_sent() {
            if !self.started() {
                return Err(PyAssertionError::new_err("write() called before start_response()"));
            }
            if !written {
                return Ok(Ok(()));
            }
            let (tx, rx) = pipe::channel(self.high_water as usize);
            self.send(ResponseBody::stream(rx));
            self.pipe = Some(tx);
        }
        if data.is_empty() {
            // Nothing to send (an empty write, or past the body's end): hyper may have
            // let the body go already.
            return Ok(Ok(()));
        }
        let Some(tx) = self.pipe.as_ref() else {
            return Ok(Err(Disconnected));
        };
        if super::on_io_thread() {
            // The consumer is this very thread: queue without waiting.
            return Ok(tx.send_now(data));
        }
        if tx.is_full() {
            Ok(py.detach(|| super::waiting_for_client(|| tx.send(data))))
        } else {
            Ok(tx.send(data))
        }
    }

    /// Ends a streamed (or empty) response normally.
    pub fn finish(&mut self) -> PyResult<()> {
        match self.pipe.take() {
            Some(tx) => {
                tx.finish();
                Ok(())
            }
            None if !self.headers_sent() => self.finish_full(Bytes::new()),
            None => Ok(()),
        }
    }

    /// Ends a streamed response with an error, so the client sees it truncated.
    pub fn abort(&mut self) {
        if let Some(tx) = self.pipe.take() {
            tx.abort();
        }
    }

    /// Replaces whatever was set with an error page, if nothing was sent yet.
    pub fn send_error(&mut self, status: u16, detail: &str) {
        if self.headers_sent() {
            self.abort();
            return;
        }
        self.hand_over(ferricorn_server::error_page::response(status, detail, true));
    }

    fn set_headers(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?;
        let (code, reason) = parse_status(status.to_str()?)?;
        let mut head = ResponseHead::new(code, Some(&reason)).map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The usual list is walked by index; any other iterable through an iterator.
        if let Ok(list) = headers.cast_exact::<PyList>() {
            for item in list.iter() {
                push_header(&mut head, &item)?;
            }
        } else {
            for item in headers.try_iter().map_err(|_| not_a_list())? {
                push_header(&mut head, &item?)?;
            }
        }
        self.body_cap = if self.head_request || code < 200 || code == 204 || code == 304 {
            Some(0)
        } else {
            head.content_length()
        };
        self.head = Some(head);
        self.status = Some(status.clone().unbind());
        self.headers = Some(headers.clone().unbind());
        Ok(())
    }
}

fn not_a_list() -> PyErr {
    PyTypeError::new_err("headers must be a list of (name, value) tuples")
}

/// One `(name, value)` item of the app's header list.
fn push_header(head: &mut ResponseHead, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let converted;
    let tuple = match item.cast::<PyTuple>() {
        Ok(t) => t,
        // Gunicorn takes any pair: `[name, value]` lists work there too.
        Err(_) => {
            let list = item.cast::<PyList>().map_err(|_| not_a_list())?;
            converted = PyTuple::new(item.py(), list.iter())?;
            &converted
        }
    };
    if tuple.len() != 2 {
        return Err(not_a_list());
    }
    let name_obj = tuple.get_borrowed_item(0)?;
    let value_obj = tuple.get_borrowed_item(1)?;
    let name = name_obj
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("header names must be str"))?;
    let value = value_obj
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("value of header {:?} must be str", name.to_string_lossy())))?;
    header_cache::push(
        head,
        tuple,
        &name_obj,
        &value_obj,
        value.len()?,
        || Ok(Cow::Borrowed(name.to_str()?.as_bytes())),
        || {
            // PEP 3333: header values are latin-1 "native strings".
            let v = value.to_str()?;
            if v.is_ascii() {
                return Ok(Cow::Borrowed(v.as_bytes()));
            }
            latin1_bytes(v)
                .map(Cow::Owned)
                .ok_or_else(|| PyValueError::new_err(format!("invalid value for header {:?}", name.to_string_lossy())))
        },
    )
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// The code and the reason's bytes: a native string, so latin-1 (as Gunicorn writes it).
fn parse_status(s: &str) -> PyResult<(u16, Cow<'_, [u8]>)> {
    let bad = || PyValueError::new_err(format!("invalid status {s:?}: expected 'NNN reason'"));
    let code: u16 = s
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let rest = &s[3..];
    let reason = match rest.strip_prefix(' ') {
        Some(r) => r,
        None if rest.is_empty() => "",
        None => return Err(bad()),
    };
    if reason.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(bad());
    }
    if !(200..=999).contains(&code) {
        return Err(PyValueError::new_err(format!(
            "invalid status {s:?}: informational responses cannot be sent this way"
        )));
    }
    let reason = if reason.is_ascii() {
        Cow::Borrowed(reason.as_bytes())
    } else {
        Cow::Owned(latin1_bytes(reason).ok_or_else(bad)?)
    };
    Ok((code, reason))
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut this = slf.borrow_mut();
            match exc_info.filter(|e| !e.is_none()) {
                // PEP 3333: once headers are out it is too late to change the status;
                // re-raise the original error.
                Some(info) if this.headers_sent() => return Err(PyErr::from_value(info.get_item(1)?)),
                Some(_) => {}
                None if this.started() => return Err(PyAssertionError::new_err("Response headers already set!")),
                None => {}
            }
            this.set_headers(status, headers)?;
        }
        write_callable(slf)
    }

    fn write(slf: PyRefMut<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        write_bytes(slf, data)
    }
}

fn write_bytes(mut slf: PyRefMut<'_, StartResponse>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let bytes = data
        .cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
    let chunk = crate::pyhelpers::body_bytes(bytes);
    let py = slf.py();
    match slf.write_chunk(py, chunk)? {
        Ok(()) => Ok(()),
        Err(Disconnected) => Err(PyOSError::new_err("client disconnected")),
    }
}

/// The function behind the `write` callable of every response (see `write_callable`).
#[pyfunction]
#[pyo3(name = "write")]
fn write_function(responder: PyRefMut<'_, StartResponse>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    write_bytes(responder, data)
}

static WRITE_FUNCTION: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

unsafe extern "C" {
    // CPython's API (not the limited one, which this module is not built for).
    fn PyMethod_New(func: *mut pyo3::ffi::PyObject, slf: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject;
}

/// The `write` callable `start_response` returns: `write_function` bound to this
/// response. Made directly, where looking up the `write` attribute finds the method
/// through the type and binds it: ~300 instructions per request.
fn write_callable<'py>(slf: &Bound<'py, StartResponse>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let func = WRITE_FUNCTION.get_or_try_init(py, || {
        pyo3::wrap_pyfunction!(write_function, py).map(|f| f.into_any().unbind())
    })?;
    // SAFETY: both are live objects and the GIL is held; `PyMethod_New` returns a new
    // reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, PyMethod_New(func.as_ptr(), slf.as_ptr())) }
}

/// The environ entries named in `keys` (lower case, as Gunicorn's access atoms name
/// them), each as `str()` of its value.
fn access_environ(environ: &Bound<'_, PyDict>, keys: &[String]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    // CGI names are upper case, `wsgi.*` and most middleware keys lower case: look those
    // up directly, and walk the dict only for a name found under neither.
    let mut missing = false;
    for key in keys {
        let hit = [key.to_ascii_uppercase(), key.clone()]
            .into_iter()
            .find_map(|k| environ.get_item(k).ok().flatten());
        match hit.map(|v| v.str().map(|s| s.to_string_lossy().into_owned())) {
            Some(Ok(text)) => found.push((key.clone(), text)),
            Some(Err(_)) => {}
            None => missing = true,
        }
    }
    if !missing {
        return found;
    }
    for (k, v) in environ.iter() {
        let Ok(name) = k.str().map(|s| s.to_string_lossy().to_lowercase()) else {
            continue;
        };
        if keys.contains(&name) && !found.iter().any(|(f, _)| *f == name) {
            if let Ok(text) = v.str() {
                found.push((name, text.to_string_lossy().into_owned()));
            }
        }
    }
    found
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn start_response_fits_a_pymalloc_block() {
        // One per request. The Python object is this plus CPython's 16-byte header and
        // pyo3's 24 bytes (borrow flag, thread checker); pymalloc serves up to 512 bytes,
        // `malloc` the rest (~180 instructions more per request, measured).
        let size = std::mem::size_of::<super::StartResponse>();
        assert!(size + 16 + 24 <= 512, "StartResponse is {size} bytes");
    }
}
