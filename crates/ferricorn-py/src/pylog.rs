//! Between ferricorn's logs and Python's `logging`: the `gunicorn.error` and
//! `gunicorn.access` loggers write into the Rust logs by default, and a logging
//! configuration (`logconfig_dict`, `--log-config-json`, `--log-config`) makes the Rust
//! logs write through those loggers instead (python/ferricorn/_logging.py).

use ferricorn_core::log::{Level, Sink};
use pyo3::prelude::*;

fn level_from_py(levelno: i32) -> Level {
    match levelno {
        n if n >= 50 => Level::Critical,
        n if n >= 40 => Level::Error,
        n if n >= 30 => Level::Warning,
        n if n >= 20 => Level::Info,
        _ => Level::Debug,
    }
}

fn level_to_py(level: Level) -> i32 {
    level as i32
}

/// The default handler of `gunicorn.error`.
#[pyfunction]
pub fn _write_log(levelno: i32, msg: &str) {
    let level = level_from_py(levelno);
    // Lines of ferricorn's own that came through a sink were counted when first logged.
    if !ferricorn_core::log::has_sink() {
        ferricorn_core::log::count(level);
    }
    ferricorn_core::log::write_direct(level, msg);
}

/// The default handler of `gunicorn.access`.
#[pyfunction]
pub fn _write_access(msg: &str) {
    ferricorn_core::log::write_access_direct(msg);
}

struct PySink {
    error: Py<PyAny>,
    access: Py<PyAny>,
}

impl Sink for PySink {
    fn error_line(&self, level: Level, msg: &str) {
        Python::attach(|py| {
            // `%` in ferricorn's own messages must not be taken for format directives.
            let _ = self.error.bind(py).call_method1("log", (level_to_py(level), "%s", msg));
        });
    }

    fn access_line(&self, msg: &str) {
        Python::attach(|py| {
            let _ = self.access.bind(py).call_method1("info", ("%s", msg));
        });
    }
}

/// Creates the two loggers; applies a logging configuration when one is set, and then
/// routes ferricorn's own lines through it. `Err` is a one-line reason.
pub fn setup(
    py: Python<'_>,
    loglevel: &str,
    logconfig_dict: Option<Bound<'_, PyAny>>,
    logconfig_json: Option<&str>,
    logconfig: Option<&str>,
) -> Result<(), String> {
    let routed = py
        .import("ferricorn._logging")
        .and_then(|m| {
            m.getattr("setup")?
                .call1((loglevel, logconfig_dict, logconfig_json, logconfig))
        })
        .map_err(|e| e.value(py).str().map(|s| s.to_string()).unwrap_or_default())?;
    if routed.is_none() {
        return Ok(());
    }
    let (error, access): (Py<PyAny>, Py<PyAny>) = routed.extract().map_err(|e: PyErr| e.to_string())?;
    // The configured logger's threshold, so that debug lines (one per request at debug
    // level) are not built and sent through Python only to be dropped there.
    let level = error
        .bind(py)
        .call_method0("getEffectiveLevel")
        .and_then(|l| l.extract::<i32>())
        .map(level_from_py)
        .unwrap_or(Level::Info);
    ferricorn_core::log::set_sink(Box::new(PySink { error, access }), level);
    Ok(())
}
