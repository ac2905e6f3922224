//! Between ferricorn's logs and Python's `logging`: the `gunicorn.error` and
//! `gunicorn.access` loggers write into the Rust logs by default, and a logging
//! configuration (`logconfig_dict`, `--log-config-json`, `--log-config`) makes the Rust
//! logs write through those loggers instead (python/ferricorn/_logging.py).

use ferricorn_core::access_log::{AccessFormat, AccessRecord, AtomValue};
use ferricorn_core::log::{Level, Sink};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The default handler of `gunicorn.error`. Not counted for StatsD: ferricorn's own
/// lines were counted when logged, and Gunicorn counts only its logger's own calls, not
/// an application's records on `gunicorn.error`.
#[pyfunction]
pub fn _write_log(levelno: i32, msg: &str) {
    ferricorn_core::log::write_direct(level_from_py(levelno), msg);
}

/// The default handler of `gunicorn.error` with a formatter someone set on it: the
/// formatted record is the whole line.
#[pyfunction]
pub fn _write_log_line(line: &str) {
    let mut bytes = String::with_capacity(line.len() + 1);
    bytes.push_str(line);
    bytes.push('\n');
    ferricorn_core::log::write_raw(bytes.as_bytes());
}

/// The default handler of `gunicorn.access`.
#[pyfunction]
pub fn _write_access(msg: &str) {
    ferricorn_core::log::write_access_direct(msg);
}

struct PySink {
    error: Py<PyAny>,
    access: Py<PyAny>,
    /// `ferricorn._logging.access`.
    access_fn: Py<PyAny>,
}

/// ferricorn's own error lines go through `gunicorn.error` (else straight to the log).
/// Flags, not fields: the sink is set once, and a logger can be customised later (the
/// config file changes one, the app the other).
static ROUTE_ERROR: AtomicBool = AtomicBool::new(false);
/// Access records go through `gunicorn.access` (else straight to the access log).
static ROUTE_ACCESS: AtomicBool = AtomicBool::new(false);

impl Sink for PySink {
    fn error_line(&self, level: Level, msg: &str) {
        if !ROUTE_ERROR.load(Ordering::Relaxed) {
            ferricorn_core::log::write_direct(level, msg);
            return;
        }
        Python::attach(|py| {
            // `%` in ferricorn's own messages must not be taken for format directives.
            let _ = self.error.bind(py).call_method1("log", (level_to_py(level), "%s", msg));
        });
    }

    fn access_line(&self, msg: &str) {
        if !ROUTE_ACCESS.load(Ordering::Relaxed) {
            ferricorn_core::log::write_access_direct(msg);
            return;
        }
        Python::attach(|py| {
            let _ = self.access.bind(py).call_method1("info", ("%s", msg));
        });
    }

    /// As Gunicorn logs a request: `access_log.info(access_log_format, atoms)`, so
    /// filters and formatters can read `record.args["U"]`.
    fn access_record(&self, format: &AccessFormat, rec: &AccessRecord<'_>) {
        if !ROUTE_ACCESS.load(Ordering::Relaxed) || format.is_json() {
            self.access_line(&format.render(rec));
            return;
        }
        Python::attach(|py| {
            let atoms = PyDict::new(py);
            for (key, value) in ferricorn_core::access_log::atoms(rec) {
                let _ = match value {
                    AtomValue::Str(s) => atoms.set_item(key, s),
                    AtomValue::Int(n) => atoms.set_item(key, n),
                    // Only `B` (nothing sent) is None in Gunicorn; other missing atoms
                    // read as `-` through SafeAtoms.
                    AtomValue::Missing if key == "B" => atoms.set_item(key, py.None()),
                    AtomValue::Missing => Ok(()),
                };
            }
            let _ = self
                .access_fn
                .bind(py)
                .call1((self.access.bind(py), format.source(), atoms));
        });
    }

    fn routes_access(&self) -> bool {
        ROUTE_ACCESS.load(Ordering::Relaxed)
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
    route(py, error, access, true, true).map_err(|e| e.to_string())
}

/// Sends ferricorn's lines through the two loggers (those that `route_*` name) from now
/// on, in this process and the workers it forks later.
fn route(py: Python<'_>, error: Py<PyAny>, access: Py<PyAny>, route_error: bool, route_access: bool) -> PyResult<()> {
    let access_fn = py.import("ferricorn._logging")?.getattr("access")?.unbind();
    // The configured logger's threshold, so that debug lines (one per request at debug
    // level) are not built and sent through Python only to be dropped there.
    let level = if route_error {
        error
            .bind(py)
            .call_method0("getEffectiveLevel")
            .and_then(|l| l.extract::<i32>())
            .map(level_from_py)
            .unwrap_or(Level::Info)
    } else {
        ferricorn_core::log::level()
    };
    let sink = PySink {
        error,
        access,
        access_fn,
    };
    ROUTE_ERROR.store(route_error, Ordering::Relaxed);
    ROUTE_ACCESS.store(route_access, Ordering::Relaxed);
    ferricorn_core::log::set_sink(Box::new(sink), level);
    Ok(())
}

/// After the config file ran (master) or the app was loaded (worker): a logger that
/// code changed (a filter on `gunicorn.access`, a handler, a level...) gets ferricorn's
/// own lines from now on, as Gunicorn's lines go through those loggers. Nothing to do
/// when a logging configuration already routes everything.
pub fn route_customised(py: Python<'_>) {
    if ROUTE_ERROR.load(Ordering::Relaxed) && ROUTE_ACCESS.load(Ordering::Relaxed) {
        return;
    }
    let Ok(changed) = py
        .import("ferricorn._logging")
        .and_then(|m| m.getattr("customised")?.call0()?.extract::<(bool, bool)>())
    else {
        return;
    };
    if changed == (false, false) {
        return;
    }
    // The sink exists (the master routed one logger): switch the other on too.
    if ferricorn_core::log::has_sink() {
        if changed.0 {
            ROUTE_ERROR.store(true, Ordering::Relaxed);
            let level = py
                .import("logging")
                .and_then(|l| {
                    l.getattr("getLogger")?
                        .call1(("gunicorn.error",))?
                        .call_method0("getEffectiveLevel")
                })
                .and_then(|l| l.extract::<i32>());
            if let Ok(level) = level {
                ferricorn_core::log::set_level(level_from_py(level));
            }
        }
        if changed.1 {
            ROUTE_ACCESS.store(true, Ordering::Relaxed);
            ferricorn_core::log::set_access_routed();
        }
        return;
    }
    let logger = |name: &str| -> PyResult<Py<PyAny>> {
        Ok(py.import("logging")?.getattr("getLogger")?.call1((name,))?.unbind())
    };
    let (Ok(error), Ok(access)) = (logger("gunicorn.error"), logger("gunicorn.access")) else {
        return;
    };
    if let Err(e) = route(py, error, access, changed.0, changed.1) {
        ferricorn_core::warning!("cannot route log lines through Python logging: {e}");
    }
}
