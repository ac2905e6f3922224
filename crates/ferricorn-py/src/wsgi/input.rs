//! `wsgi.input`: the request body as a binary file, read from Rust with the GIL released
//! while waiting for the client.

use bytes::{Buf, BytesMut};
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

    /// Reads one more chunk into the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        let res = if body.is_complete() {
            body.read_chunk_blocking()
        } else {
            py.detach(|| super::waiting_for_client(|| body.read_chunk_blocking()))
        };
        match res {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Ok(None) => {
                self.eof = true;
                Ok(false)
            }
            Err(e) => {
                self.eof = true;
                let msg = e.to_string();
                self.error = Some(e);
                Err(PyOSError::new_err(msg))
            }
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
        match size_arg(size)? {
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
