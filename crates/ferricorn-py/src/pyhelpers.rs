//! Small bridges to the pure-Python helpers in `ferricorn/_app.py`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

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
