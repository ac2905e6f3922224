//! `environ["wsgi.early_hints"]`, Gunicorn's callable for `103 Early Hints`.

use ferricorn_server::{EarlyHints, ResponseHead};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyString, PyTuple};

/// `early_hints([("Link", "</app.css>; rel=preload; as=style")])` writes
/// `HTTP/1.1 103 Early Hints` with those headers. It may be called several times; as in
/// Gunicorn it does nothing once the response has started, on HTTP/1.0, and (hyper has
/// no way to send a 1xx there) on HTTP/2. Headers are checked like response headers.
///
/// A connection's requests reuse one such object (see `for_request`): the request it
/// sends hints for is set again for each of them.
#[pyclass(module = "ferricorn", frozen)]
pub struct EarlyHintsFn(std::sync::Mutex<Option<EarlyHints>>);

impl EarlyHintsFn {
    /// One that never sends (HTTP/1.0, HTTP/2).
    pub fn none() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    pub fn new(hints: EarlyHints) -> Self {
        Self(std::sync::Mutex::new(Some(hints)))
    }

    /// The callable for the request `hints` belongs to: `kept` (the one the connection's
    /// previous request had) when nothing else refers to it any more, else a new one,
    /// which then becomes `kept`. An object an app kept from an earlier request is never
    /// changed: it stays bound to its own request, whose hints are refused.
    pub fn for_request<'py>(
        py: Python<'py>,
        kept: &std::sync::Mutex<Option<Py<EarlyHintsFn>>>,
        hints: &EarlyHints,
    ) -> PyResult<Bound<'py, EarlyHintsFn>> {
        // Making an object may run the garbage collector, and so any Python code: never
        // under the lock, which is waited for without the GIL.
        if let Ok(kept) = kept.lock_py_attached(py) {
            if let Some(obj) = &*kept {
                // The GIL is held: the count cannot change while the object is updated.
                // SAFETY: a live object.
                if unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) } == 1 {
                    *obj.get().0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hints.clone());
                    return Ok(obj.bind(py).clone());
                }
            }
        }
        let obj = Bound::new(py, Self::new(hints.clone()))?;
        let old = kept
            .lock_py_attached(py)
            .ok()
            .and_then(|mut k| k.replace(obj.clone().unbind()));
        drop(old);
        Ok(obj)
    }
}

#[pymethods]
impl EarlyHintsFn {
    fn __call__(&self, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let hints = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(hints) = hints else { return Ok(()) };
        let mut head = ResponseHead::new(103, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let not_a_list = || PyTypeError::new_err("early hints must be a list of (name, value) tuples");
        for item in headers.try_iter().map_err(|_| not_a_list())? {
            let item = item?;
            let pair = item.cast::<PyTuple>().map_err(|_| not_a_list())?;
            if pair.len() != 2 {
                return Err(not_a_list());
            }
            let name = text_bytes(&pair.get_item(0)?)?;
            let value = text_bytes(&pair.get_item(1)?)?;
            head.push(&name, value.trim_ascii())
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        let bytes = head.interim_bytes().map_err(|e| PyValueError::new_err(e.to_string()))?;
        hints.send(&bytes);
        Ok(())
    }
}

/// A header name or value as str (latin-1) or bytes, as Gunicorn accepts both here.
fn text_bytes(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let s = v
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("early hint names and values must be str or bytes"))?
        .to_str()?;
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| PyValueError::new_err("early hint is not latin-1")))
        .collect()
}
