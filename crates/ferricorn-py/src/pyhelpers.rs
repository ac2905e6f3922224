//! Small bridges to the pure-Python helpers in `ferricorn/_app.py`, and what both bridges
//! share: response bodies taken from Python `bytes` without a copy (`body_bytes`) and
//! immutable objects reused from request to request (`LastMade`).

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyString};

pub fn helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("ferricorn._app")
}

/// The full traceback of an exception, as Python prints it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    helpers(py)
        .and_then(|h| {
            h.getattr("format_exception")?
                .call1((err.value(py), err.traceback(py)))?
                .extract::<String>()
        })
        .unwrap_or_else(|_| err.to_string())
        .trim_end()
        .to_string()
}

pub fn is_app_import_error(py: Python<'_>, err: &PyErr) -> bool {
    helpers(py)
        .and_then(|h| h.getattr("AppImportError"))
        .map(|cls| err.get_type(py).is_subclass(&cls).unwrap_or(false))
        .unwrap_or(false)
}

pub fn set_environ(py: Python<'_>, key: &str, value: &str) -> PyResult<()> {
    py.import("os")?.getattr("environ")?.set_item(key, value)
}

pub fn get_environ(py: Python<'_>, key: &str) -> Option<String> {
    py.import("os")
        .ok()?
        .getattr("environ")
        .ok()?
        .call_method1("get", (key,))
        .ok()?
        .extract()
        .ok()
}

pub fn new_namespace<'py>(py: Python<'py>, items: &[(&str, Bound<'py, PyAny>)]) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    for (k, v) in items {
        kwargs.set_item(*k, v)?;
    }
    py.import("types")?.getattr("SimpleNamespace")?.call((), Some(&kwargs))
}

/// A `str` of text known to be ASCII, filled in place: `PyString::new` runs CPython's
/// UTF-8 decoder, which scans and validates the bytes again (about 100 instructions per
/// string, half a dozen strings per request). Anything not ASCII takes the decoder.
pub fn ascii_str<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyString>> {
    // CPython keeps the empty and one-character strings as singletons.
    if text.len() < 2 || !text.is_ascii() {
        return Ok(PyString::new(py, text));
    }
    let len = pyo3::ffi::Py_ssize_t::try_from(text.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("string too long"))?;
    // SAFETY: PyUnicode_New(len, 127) returns a new compact ASCII string of `len` 1-byte
    // characters (or NULL with an exception set); its data holds exactly `len` bytes and
    // is written here before the object is shared. `text` is ASCII, so every byte is a
    // valid character of that kind. For len 0 it may be the shared empty string, to which
    // nothing is written.
    unsafe {
        let obj = pyo3::ffi::PyUnicode_New(len, 127);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        std::ptr::copy_nonoverlapping(text.as_ptr(), pyo3::ffi::PyUnicode_1BYTE_DATA(obj), text.len());
        Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked())
    }
}

/// Bodies at least this large are sent from the `bytes` object's own buffer; smaller
/// ones are copied (cheaper than keeping the object alive until the write).
const SHARE_MIN: usize = 4096;

/// A `bytes` object kept alive for as long as the response needs its buffer. The pointer
/// and length are read once, with the GIL: a `bytes` buffer is immutable and lives as
/// long as the object, so reading it later needs no Python call. The object is released
/// without the GIL through pyo3's deferred reference pool (at the next GIL acquisition).
struct SharedBytes {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer is immutable and owned by the referenced object; `Py` is Send + Sync.
unsafe impl Send for SharedBytes {}
// SAFETY: as above: nothing in it is ever written.
unsafe impl Sync for SharedBytes {}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the buffer of `_owner`, alive while self is.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The body bytes of a response chunk: a large exact `bytes` object is shared, not
/// copied (a 1 MiB body is one memcpy and one allocation less per response).
pub fn body_bytes(b: &Bound<'_, PyBytes>) -> bytes::Bytes {
    let data = b.as_bytes();
    if data.len() < SHARE_MIN || !b.is_exact_instance_of::<PyBytes>() {
        return bytes::Bytes::copy_from_slice(data);
    }
    bytes::Bytes::from_owner(SharedBytes {
        ptr: data.as_ptr(),
        len: data.len(),
        _owner: b.clone().unbind(),
    })
}

/// The Python object made for a key that repeats from request to request (the server's
/// address and port, the client's address, the same for every request behind a proxy):
/// the last one made is reused while the key stays the same. Only immutable objects
/// (`str`, `tuple`) are shared this way. `make` runs under the lock and may let another
/// thread take the GIL, so the lock is waited for without holding the GIL.
pub struct LastMade<K, T>(std::sync::Mutex<Option<(K, Py<T>)>>);

/// `LastMade` for `str`s keyed by their text.
pub type LastStr = LastMade<String, PyString>;

impl<K, T> LastMade<K, T> {
    pub const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    pub fn get_or_make<'py, Q>(
        &self,
        py: Python<'py>,
        key: &Q,
        make: impl FnOnce() -> PyResult<Bound<'py, T>>,
    ) -> PyResult<Bound<'py, T>>
    where
        Q: ?Sized + PartialEq + ToOwned<Owned = K>,
        K: std::borrow::Borrow<Q>,
    {
        let Ok(mut last) = self.0.lock_py_attached(py) else {
            return make();
        };
        if let Some((k, obj)) = &*last {
            if k.borrow() == key {
                return Ok(obj.bind(py).clone());
            }
        }
        let obj = make()?;
        *last = Some((key.to_owned(), obj.clone().unbind()));
        Ok(obj)
    }
}

impl LastStr {
    pub fn get<'py>(&self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        let make = || Ok(PyString::new(py, text));
        self.get_or_make(py, text, make)
            .unwrap_or_else(|_: PyErr| PyString::new(py, text))
    }
}
