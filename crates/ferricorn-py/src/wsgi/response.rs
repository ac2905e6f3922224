//! `start_response` and `write()`, and the response state they share with the bridge.

use bytes::Bytes;
use ferricorn_server::pipe::{self, Disconnected};
use ferricorn_server::ResponseBody;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

type Reply = tokio::sync::oneshot::Sender<Response<ResponseBody>>;

/// Headers the server owns; an application's values are dropped (as in Gunicorn).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "server",
    "date",
];

#[pyclass(module = "ferricorn")]
pub struct StartResponse {
    status: Option<(StatusCode, Option<String>)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    content_length: Option<u64>,
    close: bool,
    reply: Option<Reply>,
    pipe: Option<pipe::Sender>,
    high_water: usize,
}

impl StartResponse {
    pub fn new(reply: Reply, high_water: usize) -> Self {
        Self {
            status: None,
            headers: Vec::new(),
            content_length: None,
            close: false,
            reply: Some(reply),
            pipe: None,
            high_water,
        }
    }

    pub fn headers_sent(&self) -> bool {
        self.reply.is_none()
    }

    pub fn started(&self) -> bool {
        self.status.is_some()
    }

    fn build(&mut self, mut body: ResponseBody) -> Response<ResponseBody> {
        let (status, reason) = self.status.take().unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, None));
        if let Some(len) = self.content_length {
            body.limit(len);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.reserve(self.headers.len());
        for (k, v) in self.headers.drain(..) {
            h.append(k, v);
        }
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(r) = reason {
            if let Ok(p) = hyper::ext::ReasonPhrase::try_from(r.into_bytes()) {
                resp.extensions_mut().insert(p);
            }
        }
        resp
    }

    fn send(&mut self, body: ResponseBody) {
        let resp = self.build(body);
        if let Some(reply) = self.reply.take() {
            // The connection may be gone already; nothing else to do then.
            let _ = reply.send(resp);
        }
    }

    /// Sends the whole response in one piece (the app returned a list, or nothing).
    pub fn finish_full(&mut self, data: Bytes) -> PyResult<()> {
        if !self.started() {
            return Err(PyAssertionError::new_err(
                "the application returned without calling start_response",
            ));
        }
        self.send(ResponseBody::full(data));
        Ok(())
    }

    /// Queues a body chunk; the headers go out with the first non-empty one.
    pub fn write_chunk(&mut self, py: Python<'_>, data: Bytes) -> PyResult<Result<(), Disconnected>> {
        if !self.headers_sent() {
            if !self.started() {
                return Err(PyAssertionError::new_err("write() called before start_response()"));
            }
            if data.is_empty() {
                return Ok(Ok(()));
            }
            let (tx, rx) = pipe::channel(self.high_water);
            self.send(ResponseBody::stream(rx));
            self.pipe = Some(tx);
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
        let resp = ferricorn_server::error_page::response(status, detail, true);
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(resp);
        }
    }

    fn set_headers(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let status_str = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?
            .to_str()?;
        let (code, reason) = parse_status(status_str)?;
        let mut list = Vec::new();
        let mut content_length = None;
        let mut close = false;
        for item in headers
            .try_iter()
            .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?
        {
            let item = item?;
            let tuple = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            if tuple.len() != 2 {
                return Err(PyTypeError::new_err("each header must be a (name, value) tuple"));
            }
            let name_obj = tuple.get_item(0)?;
            let value_obj = tuple.get_item(1)?;
            let name = name_obj
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("header names must be str"))?
                .to_str()?;
            let value = value_obj
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err(format!("value of header {name:?} must be str")))?
                .to_str()?;
            let hname = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
            let bytes = latin1_bytes(value)
                .ok_or_else(|| PyValueError::new_err(format!("invalid value for header {name:?}")))?;
            if bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(PyValueError::new_err(format!("invalid value for header {name:?}")));
            }
            let hvalue = HeaderValue::from_bytes(&bytes)
                .map_err(|_| PyValueError::new_err(format!("invalid value for header {name:?}")))?;
            if hname == header::CONTENT_LENGTH {
                let n: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| PyValueError::new_err(format!("invalid Content-Length {value:?}")))?;
                content_length = Some(n);
            }
            if HOP_BY_HOP.contains(&hname.as_str()) {
                if hname == header::CONNECTION && value.eq_ignore_ascii_case("close") {
                    close = true;
                }
                continue;
            }
            list.push((hname, hvalue));
        }
        self.status = Some((code, reason));
        self.headers = list;
        self.content_length = content_length;
        self.close = close;
        Ok(())
    }
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn parse_status(s: &str) -> PyResult<(StatusCode, Option<String>)> {
    let bad = || PyValueError::new_err(format!("invalid status {s:?}: expected 'NNN reason'"));
    let code = s
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
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
    let status = StatusCode::from_bytes(code.as_bytes()).map_err(|_| bad())?;
    if status.as_u16() < 200 {
        return Err(PyValueError::new_err(format!(
            "invalid status {s:?}: informational responses cannot be sent this way"
        )));
    }
    let canonical = status.canonical_reason().unwrap_or("");
    let reason = (!reason.is_empty() && reason != canonical).then(|| reason.to_string());
    Ok((status, reason))
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
        slf.getattr("write")
    }

    fn write(mut slf: PyRefMut<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        let chunk = Bytes::copy_from_slice(bytes.as_bytes());
        let py = slf.py();
        match slf.write_chunk(py, chunk)? {
            Ok(()) => Ok(()),
            Err(Disconnected) => Err(PyOSError::new_err("client disconnected")),
        }
    }
}
