//! The `ferricorn._ferricorn` extension: the only crate that touches Python.
//!
//! - [`cli`]: `main(argv)`, settings resolution (CLI, config file, env), start-up.
//! - [`launcher`]: forking workers with CPython's fork protocol; the worker's life.
//! - [`hooks`]: Gunicorn's server hooks, called with objects shaped like Gunicorn's.
//! - [`wsgi`]: the PEP 3333 bridge, run on a pool of application threads.

use pyo3::prelude::*;

mod asgi;
mod cli;
mod header_cache;
mod hooks;
mod launcher;
mod pyhelpers;
mod pylog;
mod reloader;
mod replies;
mod wsgi;

/// Runs ferricorn with the given command line; returns the process exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    cli::main(py, argv)
}

/// The settings reference in Markdown, generated from the registry (`make docs`).
#[pyfunction]
fn settings_markdown() -> String {
    ferricorn_core::settings::markdown_reference()
}

#[pymodule(gil_used = true)]
fn _ferricorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", ferricorn_core::VERSION)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(settings_markdown, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::_write_log, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::_write_access, m)?)?;
    m.add_function(wrap_pyfunction!(pylog::_write_log_line, m)?)?;
    m.add_class::<wsgi::FileWrapper>()?;
    m.add_class::<wsgi::InputStream>()?;
    m.add_class::<wsgi::EmptyInput>()?;
    m.add_class::<wsgi::ErrorStream>()?;
    m.add_class::<asgi::Drain>()?;
    m.add_class::<asgi::LoopPulse>()?;
    Ok(())
}
