//! `wsgi.input`: the request body as a binary file, read from Rust with the GIL released
//! while waiting for the client.

use bytes::{Buf, Bytes, BytesMut};
use ferricorn_server::{BodyError, RequestBody};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

#[pyclass(module = "ferricorn")]
pub struct InputStream {
    body: Option<RequestBody>,
    buf: BytesMut,
    eof: bool,
    error: Option<BodyError>,
}

impl InputStream {
    pub fn new(body: RequestBody) -> Self {
        let eof = body.is_complete() && body.received() == 0;
        Self {
            body: Some(body),
            buf: BytesMut::new(),
            eof,
            error: None,
        }
    }

    /// The error the body hit, so the bridge can answer 400/413 instead of 500.
    pub fn error(&self) -> Option<&BodyError> {
        self.error.as_ref()
    }

    /// The body's next chunk; `None` at its end.
    fn next_chunk(&mut self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        if self.eof {
            return Ok(None);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let res = if body.is_complete() {
            body.read_chunk_blocking()
        } else {
            py.detach(|| super::waiting_for_client(|| body.read_chunk_blocking()))
        };
        match res {
            Ok(Some(chunk)) => Ok(Some(chunk)),
            Ok(None) => {
                self.eof = true;
                Ok(None)
            }
            Err(e) => {
                self.eof = true;
                let msg = e.to_string();
                self.error = Some(e);
                Err(PyOSError::new_err(msg))
            }
        }
    }

    /// Reads one more chunk into the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        match self.next_chunk(py)? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `read(n)` (all with `None`) with nothing buffered: the chunks go straight into the
    /// `bytes` object, copied once instead of through the buffer. What the last chunk
    /// holds beyond `n` is buffered.
    fn read_direct<'py>(&mut self, py: Python<'py>, want: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = want.unwrap_or(usize::MAX);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut have = 0;
        while have < want {
            match self.next_chunk(py) {
                Ok(Some(chunk)) => {
                    have += chunk.len();
                    parts.push(chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    // What arrived before the error stays readable, as with the buffer.
                    for p in &parts {
                        self.buf.extend_from_slice(p);
                    }
                    return Err(e);
                }
            }
        }
        if have > want {
            if let Some(last) = parts.last_mut() {
                let keep = last.split_off(last.len() - (have - want));
                self.buf.extend_from_slice(&keep);
            }
            have = want;
        }
        match parts.as_slice() {
            [one] => Ok(PyBytes::new(py, one)),
            _ => PyBytes::new_with(py, have, |out| {
                let mut at = 0;
                for p in &parts {
                    out[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                Ok(())
            }),
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        self.buf.advance(n);
        out
    }

    fn read_line<'py>(&mut self, py: Python<'py>, limit: Option<usize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            scanned = self.buf.len();
            if let Some(l) = limit {
                if self.buf.len() >= l {
                    return Ok(self.take(py, l));
                }
            }
            if !self.fill(py)? {
                return Ok(self.take(py, self.buf.len()));
            }
        }
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok((n >= 0).then_some(n as usize))
        }
    }
}

#[pymethods]
impl InputStream {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        if self.buf.is_empty() {
            return self.read_direct(py, size);
        }
        match size {
            None => {
                while self.fill(py)? {}
                Ok(self.take(py, self.buf.len()))
            }
            Some(n) => {
                while self.buf.len() < n && self.fill(py)? {}
                Ok(self.take(py, n))
            }
        }
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size)?;
        self.read_line(py, limit)
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|h| *h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&mut self) {}
}

/// `wsgi.input` of every request without a body: at its end from the start and without
/// state, so one object serves all of them, on every thread at once. An `InputStream`
/// could not be shared: its methods borrow it mutably, and Python code they may run (a
/// size's `__index__`, a garbage collection) lets another thread in, whose read would
/// find it already borrowed.
#[pyclass(module = "ferricorn", frozen)]
pub struct EmptyInput;

#[pymethods]
impl EmptyInput {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        size_arg(size)?;
        Ok(PyBytes::new(py, b""))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        size_arg(size)?;
        Ok(PyBytes::new(py, b""))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyList>> {
        size_arg(hint)?;
        Ok(PyList::empty(py))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<Py<PyBytes>> {
        None
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}
