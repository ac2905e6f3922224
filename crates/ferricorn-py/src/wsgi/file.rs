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

/// The `io` classes whose descriptor holds exactly the bytes `read()` returns (a
/// `GzipFile`'s `fileno()` is the compressed file's; a wrapper object's may be anything).
fn is_plain_file(f: &Bound<'_, PyAny>) -> PyResult<bool> {
    static TYPES: pyo3::sync::PyOnceLock<Py<pyo3::types::PyTuple>> = pyo3::sync::PyOnceLock::new();
    let py = f.py();
    let types = TYPES.get_or_try_init(py, || -> PyResult<_> {
        let io = py.import("io")?;
        let names = ["FileIO", "BufferedReader", "BufferedRandom", "TextIOWrapper"];
        let types = names.iter().map(|n| io.getattr(*n)).collect::<PyResult<Vec<_>>>()?;
        Ok(pyo3::types::PyTuple::new(py, types)?.unbind())
    })?;
    f.is_instance(types.bind(py).as_any())
}

/// Streams a wrapped file with `pread` (GIL released while reading) when it is a plain
/// file with a descriptor that can be read at an offset. Returns false otherwise (a pipe,
/// a socket, a compressed file...), having sent nothing, so the caller iterates the
/// wrapper over `read()` as PEP 3333 asks.
pub fn stream_file(
    py: Python<'_>,
    wrapper: &FileWrapper,
    responder: &Bound<'_, super::response::StartResponse>,
) -> PyResult<bool> {
    let f = wrapper.filelike.bind(py);
    if !is_plain_file(f)? {
        return Ok(false);
    }
    let Ok(fd) = f.call_method0("fileno").and_then(|n| n.extract::<i32>()) else {
        return Ok(false);
    };
    let Ok(mut offset) = f.call_method0("tell").and_then(|t| t.extract::<i64>()) else {
        return Ok(false);
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = true;
    loop {
        // SAFETY: `fd` stays open for the call: the file object is alive and we hold a
        // reference to it; the buffer is ours.
        let n = py.detach(|| unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) });
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if first && e.raw_os_error() == Some(libc::ESPIPE) {
                return Ok(false);
            }
            return Err(e.into());
        }
        first = false;
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
