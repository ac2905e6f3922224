//! `wsgi.file_wrapper`: iterable in blocks like any WSGI iterable, and recognised by the
//! bridge, which then streams the file from Rust without holding the GIL.

use pyo3::prelude::*;

#[pyclass(module = "ferricorn")]
pub struct FileWrapper {
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        Self {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let data = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        if data.is_truthy()? {
            Ok(Some(data.unbind()))
        } else {
            Ok(None)
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// Streams a wrapped file with `pread` (GIL released while reading) when it has a real
/// descriptor. Returns false when it has none, so the caller iterates the wrapper.
pub fn stream_file(
    py: Python<'_>,
    wrapper: &FileWrapper,
    responder: &Bound<'_, super::response::StartResponse>,
) -> PyResult<bool> {
    let f = wrapper.filelike.bind(py);
    let Ok(fd) = f.call_method0("fileno").and_then(|n| n.extract::<i32>()) else {
        return Ok(false);
    };
    let mut offset: i64 = f.call_method0("tell").and_then(|t| t.extract()).unwrap_or(0);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: `fd` stays open for the call: the file object is alive and we hold a
        // reference to it; the buffer is ours.
        let n = py.detach(|| unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) });
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if n == 0 {
            break;
        }
        offset += n as i64;
        let chunk = bytes::Bytes::copy_from_slice(&buf[..n as usize]);
        if responder.borrow_mut().write_chunk(py, chunk)?.is_err() {
            return Ok(true);
        }
    }
    responder.borrow_mut().finish()?;
    Ok(true)
}
