//! `wsgi.errors`: a text stream that writes to the error log.

use pyo3::prelude::*;

#[pyclass(module = "ferricorn", frozen)]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, data: &str) -> usize {
        ferricorn_core::log::write_raw(data.as_bytes());
        data.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            let line = line?;
            ferricorn_core::log::write_raw(line.extract::<String>()?.as_bytes());
        }
        Ok(())
    }

    fn flush(&self) {}

    // The rest of a writable text stream's surface, as Gunicorn's `wsgi.errors` (an
    // `io` stream) has it: libraries probe these before writing (`isatty()` for colours).
    fn isatty(&self) -> bool {
        false
    }

    fn fileno(&self) -> i32 {
        ferricorn_core::log::fd()
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    fn seekable(&self) -> bool {
        false
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }
}
