//! One request on an application thread: environ, app call, response, `close()`.

use bytes::{Bytes, BytesMut};
use ferricorn_server::pipe::Disconnected;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::environ;
use super::file::FileWrapper;
use super::input::InputStream;
use super::response::StartResponse;
use super::{Job, Shared};
use crate::pyhelpers::format_exception;

pub(crate) fn run(py: Python<'_>, shared: &Shared, job: Job) {
    let Job { req, reply } = job;
    let uri = req.head.uri.to_string();
    let responder = match Bound::new(py, StartResponse::new(reply, shared.cfg.high_water)) {
        Ok(r) => r,
        Err(e) => {
            ferricorn_core::error!("Error handling request {uri}\n{}", format_exception(py, &e));
            return;
        }
    };
    if let Err(e) = serve(py, shared, req, &responder, &uri) {
        ferricorn_core::error!("Error handling request {uri}\n{}", format_exception(py, &e));
        responder.borrow_mut().send_error(500, "Internal Server Error");
    }
}

fn serve(
    py: Python<'_>,
    shared: &Shared,
    mut req: ferricorn_server::Request,
    responder: &Bound<'_, StartResponse>,
    uri: &str,
) -> PyResult<()> {
    let body = std::mem::replace(&mut req.body, ferricorn_server::RequestBody::empty());
    let input = Bound::new(py, InputStream::new(body))?;
    let environ = match environ::build(py, shared, &req, input.clone())? {
        Ok(env) => env,
        Err(e) => {
            ferricorn_core::error!("Error handling request {uri}: {}", e.detail);
            responder.borrow_mut().send_error(e.status, &e.detail);
            return Ok(());
        }
    };
    drop(req);
    let result = match shared.app.bind(py).call1((environ, responder)) {
        Ok(r) => r,
        Err(e) => {
            fail(py, &e, responder, &input, uri);
            return Ok(());
        }
    };
    let outcome = consume(py, shared, &result, responder);
    if let Err(e) = &outcome {
        fail(py, e, responder, &input, uri);
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
fn fail(py: Python<'_>, err: &PyErr, responder: &Bound<'_, StartResponse>, input: &Bound<'_, InputStream>, uri: &str) {
    let body_error = input.borrow().error().cloned();
    let mut r = responder.borrow_mut();
    match body_error {
        Some(be) if !r.headers_sent() => {
            ferricorn_core::warning!("Invalid request body for {uri}: {be}");
            r.send_error(be.status(), &be.to_string());
        }
        _ => {
            ferricorn_core::error!("Error handling request {uri}\n{}", format_exception(py, err));
            r.send_error(500, "Internal Server Error");
        }
    }
}

fn as_bytes<'a>(item: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the application must yield bytes, not {}",
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))),
    }
}

fn consume(
    py: Python<'_>,
    shared: &Shared,
    result: &Bound<'_, PyAny>,
    responder: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    // The common case: a list (or tuple) of bytes, sent in one piece.
    let seq = result
        .cast::<PyList>()
        .map(|l| l.as_sequence().clone())
        .or_else(|_| result.cast::<PyTuple>().map(|t| t.as_sequence().clone()));
    if let Ok(seq) = seq {
        if !responder.borrow().headers_sent() {
            let n = seq.len()?;
            let mut buf = BytesMut::new();
            for i in 0..n {
                buf.extend_from_slice(as_bytes(&seq.get_item(i)?)?);
            }
            return responder.borrow_mut().finish_full(buf.freeze());
        }
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
        let chunk = Bytes::copy_from_slice(as_bytes(&item)?);
        if let Err(Disconnected) = responder.borrow_mut().write_chunk(py, chunk)? {
            return Ok(());
        }
    }
    responder.borrow_mut().finish()
}
