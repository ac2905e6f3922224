//! One request on an application thread: environ, app call, response, `close()`.

use bytes::BytesMut;
use ferricorn_server::pipe::Disconnected;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::environ;
use super::file::FileWrapper;
use super::input::InputStream;
use super::response::{Handover, StartResponse};
use super::Shared;
use crate::pyhelpers::format_exception;
use ferricorn_server::Request;

/// A response the I/O thread started inline and an app thread must finish: the app
/// returned something other than a list (a generator, a file wrapper...).
pub(crate) struct Continuation {
    result: Py<PyAny>,
    responder: Py<StartResponse>,
    input: Option<Py<InputStream>>,
    method: http::Method,
    uri: http::Uri,
    /// For `post_request`: the hook's request object and the environ.
    hook_args: Option<(Py<PyAny>, Py<PyAny>)>,
    /// The request's HTTP/2 call slot, held until the app thread has finished it.
    call_slot: Option<Box<tokio::sync::OwnedSemaphorePermit>>,
}

impl Continuation {
    pub(crate) fn keep_call_slot(&mut self, slot: Option<Box<tokio::sync::OwnedSemaphorePermit>>) {
        self.call_slot = slot;
    }
}

/// How Gunicorn 27 names a request in "Error handling request GET /path".
struct Target<'a>(&'a http::Method, &'a http::Uri);

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Runs one request. `inline` (on the I/O thread) stops after the app call unless the
/// response is complete, and hands the rest back as a continuation. Also returns the
/// request's `start_response` (`None` if it could not be made).
pub(crate) fn run<'py>(
    py: Python<'py>,
    shared: &Shared,
    req: &mut Request,
    handover: Handover,
    inline: bool,
) -> (Option<Bound<'py, StartResponse>>, Option<Continuation>) {
    let hints = req.early_hints.clone();
    let responder = match Bound::new(
        py,
        StartResponse::new(
            handover,
            shared.cfg.high_water,
            hints,
            req.head.method == http::Method::HEAD,
        ),
    ) {
        Ok(r) => r,
        Err(e) => {
            let target = Target(&req.head.method, &req.head.uri);
            ferricorn_core::exception!("Error handling request {target}\n{}", format_exception(py, &e));
            return (None, None);
        }
    };
    let cont = match serve(py, shared, req, &responder, inline) {
        Ok(cont) => cont,
        Err(e) => {
            let target = Target(&req.head.method, &req.head.uri);
            ferricorn_core::exception!("Error handling request {target}\n{}", format_exception(py, &e));
            responder.borrow_mut().send_error(500, "");
            None
        }
    };
    (Some(responder), cont)
}

/// Finishes a response started inline.
pub(crate) fn resume(py: Python<'_>, shared: &Shared, cont: Continuation) {
    let Continuation {
        result,
        responder,
        input,
        method,
        uri,
        hook_args,
        call_slot,
    } = cont;
    // Freed when this function returns: the response is finished, or the client left.
    let _call_slot = call_slot;
    let input = input.as_ref().map(|i| i.bind(py));
    let target = Target(&method, &uri);
    if let Err(e) = finish(py, shared, result.bind(py), responder.bind(py), input, &target) {
        ferricorn_core::exception!("Error handling request {target}\n{}", format_exception(py, &e));
        responder.bind(py).borrow_mut().send_error(500, "");
    }
    if let (Some(hooks), Some((req, environ))) = (&shared.cfg.hooks, hook_args) {
        hooks.post_request(py, req.bind(py), environ.bind(py), responder.bind(py));
    }
}

fn serve(
    py: Python<'_>,
    shared: &Shared,
    req: &mut Request,
    responder: &Bound<'_, StartResponse>,
    inline: bool,
) -> PyResult<Option<Continuation>> {
    let body = std::mem::replace(&mut req.body, ferricorn_server::RequestBody::empty());
    let req = &*req;
    let uri = &Target(&req.head.method, &req.head.uri);
    // A request without a body keeps the environ template's `EmptyInput`.
    let input = if body.is_complete() && body.received() == 0 {
        None
    } else {
        Some(Bound::new(py, InputStream::new(body))?)
    };
    let input = input.as_ref();
    let environ = match environ::build(py, shared, req, input)? {
        Ok(env) => env,
        Err(e) => {
            ferricorn_core::error!("Error handling request {uri}: {}", e.detail);
            responder.borrow_mut().send_error(e.status, &e.detail);
            return Ok(None);
        }
    };
    if !shared.cfg.access_environ.is_empty() {
        responder
            .borrow_mut()
            .capture_environ(environ.clone().unbind(), shared.cfg.access_environ.clone());
    }
    // As in Gunicorn, a `pre_request` that raises fails the request like the app would
    // (a 500), and `post_request` still runs.
    let (hook_req, pre_failed) = match &shared.cfg.hooks {
        Some(hooks) => {
            let r = hooks.request_object(py, req)?;
            let failed = hooks.pre_request(py, &r).err();
            (Some(r), failed)
        }
        None => (None, None),
    };
    let post = |py: Python<'_>| {
        if let (Some(hooks), Some(r)) = (&shared.cfg.hooks, &hook_req) {
            hooks.post_request(py, r, &environ, responder);
        }
    };
    if let Some(e) = pre_failed {
        fail(py, &e, responder, input, uri);
        post(py);
        return Ok(None);
    }
    let result = match shared.app.bind(py).call1((environ.clone(), responder)) {
        Ok(r) => r,
        Err(e) => {
            fail(py, &e, responder, input, uri);
            post(py);
            return Ok(None);
        }
    };
    if inline {
        match send_list(&result, responder) {
            Ok(true) => {
                post(py);
                return Ok(None);
            }
            Ok(false) => {
                return Ok(Some(Continuation {
                    result: result.unbind(),
                    responder: responder.clone().unbind(),
                    input: input.map(|i| i.clone().unbind()),
                    method: req.head.method.clone(),
                    uri: req.head.uri.clone(),
                    hook_args: hook_req.map(|r| (r.unbind(), environ.clone().into_any().unbind())),
                    call_slot: None,
                }))
            }
            Err(e) => {
                fail(py, &e, responder, input, uri);
                post(py);
                return Ok(None);
            }
        }
    }
    finish(py, shared, &result, responder, input, uri)?;
    post(py);
    Ok(None)
}

/// Consumes the app's iterable and always calls its `close()`.
fn finish(
    py: Python<'_>,
    shared: &Shared,
    result: &Bound<'_, PyAny>,
    responder: &Bound<'_, StartResponse>,
    input: Option<&Bound<'_, InputStream>>,
    uri: &Target<'_>,
) -> PyResult<()> {
    let outcome = consume(py, shared, result, responder);
    if let Err(e) = &outcome {
        fail(py, e, responder, input, uri);
    }
    // PEP 3333: close() is called whatever happened, including a client disconnect.
    if !result.is_exact_instance_of::<PyList>()
        && !result.is_exact_instance_of::<PyTuple>()
        && result.hasattr(pyo3::intern!(py, "close"))?
    {
        if let Err(e) = result.call_method0(pyo3::intern!(py, "close")) {
            ferricorn_core::error!(
                "Error closing the response iterable for {uri}\n{}",
                format_exception(py, &e)
            );
        }
    }
    Ok(())
}

/// The app raised: answer 500 (or the body's own error) if nothing was sent yet,
/// otherwise cut the response short.
fn fail(
    py: Python<'_>,
    err: &PyErr,
    responder: &Bound<'_, StartResponse>,
    input: Option<&Bound<'_, InputStream>>,
    uri: &Target<'_>,
) {
    // The app may have handed its input to a thread that is reading it now: then no body
    // error is known.
    let body_error = input.and_then(|i| i.try_borrow().ok()?.error().cloned());
    let mut r = responder.borrow_mut();
    match body_error {
        Some(be) if !r.headers_sent() => {
            ferricorn_core::warning!("Invalid request body for {uri}: {be}");
            r.send_error(be.status(), &be.to_string());
        }
        _ => {
            ferricorn_core::exception!("Error handling request {uri}\n{}", format_exception(py, err));
            r.send_error(500, "");
        }
    }
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(b),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the application must yield bytes, not {}",
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))),
    }
}

/// The common case: an exact list (or tuple) of bytes, sent in one piece. Returns false
/// when the result is anything else (subclasses may have a `close()` to call).
fn send_list(result: &Bound<'_, PyAny>, responder: &Bound<'_, StartResponse>) -> PyResult<bool> {
    let seq = if let Ok(l) = result.cast_exact::<PyList>() {
        l.as_sequence().clone()
    } else if let Ok(t) = result.cast_exact::<PyTuple>() {
        t.as_sequence().clone()
    } else {
        return Ok(false);
    };
    if responder.borrow().headers_sent() {
        return Ok(false);
    }
    let n = seq.len()?;
    let data = if n == 1 {
        crate::pyhelpers::body_bytes(as_bytes(&seq.get_item(0)?)?)
    } else {
        let mut buf = BytesMut::new();
        for i in 0..n {
            buf.extend_from_slice(as_bytes(&seq.get_item(i)?)?.as_bytes());
        }
        buf.freeze()
    };
    responder.borrow_mut().finish_full(data)?;
    Ok(true)
}

fn consume(
    py: Python<'_>,
    shared: &Shared,
    result: &Bound<'_, PyAny>,
    responder: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    if send_list(result, responder)? {
        return Ok(());
    }
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if shared.cfg.sendfile
            && responder.borrow().started()
            && super::file::stream_file(py, &wrapper.borrow(), responder)?
        {
            return Ok(());
        }
    }
    for item in result.try_iter()? {
        let item = item?;
        let chunk = crate::pyhelpers::body_bytes(as_bytes(&item)?);
        if let Err(Disconnected) = responder.borrow_mut().write_chunk(py, chunk)? {
            return Ok(());
        }
    }
    responder.borrow_mut().finish()
}
