//! Gunicorn's server hooks. The config file's callables are called at the same moments
//! as in Gunicorn, with `server` and `worker` objects that carry the attributes user hooks
//! touch (`cfg`, `log`, `pid`, `age`, `ppid`, `num_workers`).

use std::collections::HashMap;

use ferricorn_core::log::Level;
use ferricorn_core::settings::{Settings, Value, REGISTRY};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::pyhelpers::{format_exception, new_namespace};

/// `server.log` / `worker.log`: Gunicorn's logger methods, writing to ferricorn's error log.
#[pyclass(module = "ferricorn", frozen)]
pub struct Log;

fn fmt_msg(msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> String {
    let text = msg.str().map(|s| s.to_string()).unwrap_or_default();
    if args.is_empty() {
        return text;
    }
    let formatted = if args.len() == 1 {
        msg.rem(args.get_item(0).ok())
    } else {
        msg.rem(args)
    };
    formatted.and_then(|f| f.str().map(|s| s.to_string())).unwrap_or(text)
}

/// Gunicorn's Statsd logger turns `log.info(msg, extra={"metric": name, "value": v,
/// "mtype": "gauge"|"counter"|"histogram"|"timer"})` into a metric.
fn emit_metric(kw: Option<&Bound<'_, PyDict>>) {
    let Some(client) = ferricorn_core::metrics::statsd() else {
        return;
    };
    let Some(extra) = kw.and_then(|k| k.get_item("extra").ok().flatten()) else {
        return;
    };
    let get = |key: &str| extra.get_item(key).ok().filter(|v| !v.is_none());
    let (Some(metric), Some(value), Some(kind)) = (get("metric"), get("value"), get("mtype")) else {
        return;
    };
    let (Ok(metric), Ok(kind)) = (metric.extract::<String>(), kind.extract::<String>()) else {
        return;
    };
    // Gunicorn formats the value with `str()`: `5`, `2.5`, `-3` go out as written.
    let Ok(value) = value.str().map(|s| s.to_string()) else {
        return;
    };
    let code = match kind.as_str() {
        "gauge" => "g",
        "counter" => "c",
        "histogram" => "h",
        "timer" => "ms",
        _ => return,
    };
    client.send_text(&metric, &value, code);
}

/// Gunicorn's `log.<level>(msg, *args, extra=...)`: the metric in `extra`, if any, and
/// the line unless the message is empty (a metric-only call).
fn log_call(level: Level, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
    emit_metric(kw);
    if !msg.is_none() && msg.is_truthy().unwrap_or(true) {
        ferricorn_core::log::count(level);
        if ferricorn_core::log::enabled(level) {
            ferricorn_core::log::write(level, &fmt_msg(msg, args));
        }
    }
}

#[pymethods]
impl Log {
    #[pyo3(signature = (msg, *args, **kw))]
    fn debug(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
        log_call(Level::Debug, msg, args, kw);
    }
    #[pyo3(signature = (msg, *args, **kw))]
    fn info(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
        log_call(Level::Info, msg, args, kw);
    }
    #[pyo3(signature = (msg, *args, **kw))]
    fn warning(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
        log_call(Level::Warning, msg, args, kw);
    }
    #[pyo3(signature = (msg, *args, **kw))]
    fn error(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
        log_call(Level::Error, msg, args, kw);
    }
    #[pyo3(signature = (msg, *args, **kw))]
    fn critical(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>, kw: Option<&Bound<'_, PyDict>>) {
        log_call(Level::Critical, msg, args, kw);
    }
    #[pyo3(signature = (msg, *args, **kw))]
    fn exception(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kw: Option<&Bound<'_, PyDict>>,
    ) {
        emit_metric(kw);
        let tb = py
            .import("traceback")
            .and_then(|t| t.getattr("format_exc")?.call0()?.extract::<String>())
            .unwrap_or_default();
        // Gunicorn counts `gunicorn.log.exception` here, not `.error`.
        ferricorn_core::metrics::log_line("exception");
        ferricorn_core::log::write(
            ferricorn_core::log::Level::Error,
            &format!("{}\n{}", fmt_msg(msg, args), tb.trim_end()),
        );
    }
    fn reopen_files(&self) {
        let _ = ferricorn_core::log::reopen();
    }
}

/// The config file's Python objects plus the resolved settings, as hooks see them.
pub struct Hooks {
    objects: HashMap<String, Py<PyAny>>,
    cfg: Py<PyAny>,
    server: Py<PyAny>,
    max_requests: i64,
    timeout: i64,
}

/// Gunicorn's `proc_name`: the setting, else the app named on the command line.
fn proc_name(settings: &Settings) -> String {
    settings
        .str("proc_name")
        .or(settings.str("default_proc_name"))
        .unwrap_or("gunicorn")
        .to_string()
}

pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None | Value::Python(_) => py.None().into_bound(py),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::List(l) => PyList::new(py, l)?.into_any(),
    })
}

/// Calls `hook` (if defined) as hook `name`; an exception is logged, not raised. For
/// threads that took the hook object out of [`Hooks`].
pub fn call_logged<'py, A: pyo3::call::PyCallArgs<'py>>(
    py: Python<'py>,
    name: &str,
    hook: Option<&Py<PyAny>>,
    args: A,
) -> bool {
    let Some(hook) = hook else {
        return true;
    };
    match hook.bind(py).call1(args) {
        Ok(_) => true,
        // Gunicorn's arbiter words a failing worker_exit its own way.
        Err(e) if name == "worker_exit" => {
            ferricorn_core::warning!("Exception during worker exit:\n{}", format_exception(py, &e));
            false
        }
        Err(e) => {
            ferricorn_core::error!("Exception in {name} hook:\n{}", format_exception(py, &e));
            false
        }
    }
}

/// The computed attributes of Gunicorn's `Config` that hooks read besides the settings:
/// `address`, `uid`, `gid`, `is_ssl`, `env`, `worker_class_str`, `proc_name`, and
/// `settings` (name -> an object with `name`, `value` and `get()`).
fn cfg_properties<'py>(
    py: Python<'py>,
    settings: &Settings,
    items: &[(&'static str, Bound<'py, PyAny>)],
) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
    let address = PyList::empty(py);
    for bind in settings.list("bind") {
        match ferricorn_core::bind::BindAddr::parse(&bind) {
            Ok(ferricorn_core::bind::BindAddr::Tcp { host, port }) => {
                address.append((host.to_string(), port))?;
            }
            Ok(ferricorn_core::bind::BindAddr::TcpName { host, port }) => address.append((host, port))?,
            Ok(ferricorn_core::bind::BindAddr::Unix(path)) => address.append(path.display().to_string())?,
            Ok(ferricorn_core::bind::BindAddr::Fd(fd)) => address.append(fd)?,
            Err(_) => {}
        }
    }
    let identity = ferricorn_arbiter::process::Identity::resolve(settings.str("user"), settings.str("group")).ok();
    let uid = identity
        .as_ref()
        .and_then(|i| i.uid)
        .unwrap_or_else(nix::unistd::geteuid)
        .as_raw();
    let gid = identity
        .as_ref()
        .and_then(|i| i.gid)
        .unwrap_or_else(nix::unistd::getegid)
        .as_raw();
    let env = pyo3::types::PyDict::new(py);
    for (k, v) in settings.list("raw_env").iter().filter_map(|kv| kv.split_once('=')) {
        env.set_item(k, v)?;
    }
    let configured = settings.str("worker_class").unwrap_or("sync");
    let worker_class_str = if settings.int("threads") > 1 && configured == "sync" {
        "gthread"
    } else {
        configured
    };
    let setting_type = py.eval(
        c"type('Setting', (), {'__init__': lambda self, name, value: self.__dict__.update(name=name, value=value), 'get': lambda self: self.value, '__repr__': lambda self: f'<Setting {self.name}={self.value!r}>'})",
        None,
        None,
    )?;
    let all = pyo3::types::PyDict::new(py);
    for (name, value) in items {
        all.set_item(*name, setting_type.call1((*name, value))?)?;
    }
    let certified = settings.str("certfile").is_some_and(|c| !c.is_empty());
    Ok(vec![
        ("address", address.into_any()),
        ("uid", uid.into_pyobject(py)?.into_any()),
        ("gid", gid.into_pyobject(py)?.into_any()),
        ("is_ssl", certified.into_pyobject(py)?.to_owned().into_any()),
        ("env", env.into_any()),
        ("worker_class_str", worker_class_str.into_pyobject(py)?.into_any()),
        ("proc_name", proc_name(settings).into_pyobject(py)?.into_any()),
        ("settings", all.into_any()),
    ])
}

impl Hooks {
    pub fn new(py: Python<'_>, settings: &Settings, objects: HashMap<String, Py<PyAny>>) -> PyResult<Self> {
        let mut items: Vec<(&str, Bound<'_, PyAny>)> = Vec::new();
        for def in REGISTRY.iter() {
            let v = match objects.get(def.name) {
                Some(obj) if matches!(settings.get(def.name), Value::Python(_)) => obj.bind(py).clone(),
                _ => value_to_py(py, settings.get(def.name))?,
            };
            items.push((def.name, v));
        }
        for (name, value) in cfg_properties(py, settings, &items)? {
            items.retain(|(n, _)| *n != name);
            items.push((name, value));
        }
        let cfg = new_namespace(py, &items)?;
        let log = Bound::new(py, Log)?.into_any();
        let server = new_namespace(
            py,
            &[
                ("cfg", cfg.clone()),
                ("log", log),
                ("pid", std::process::id().into_pyobject(py)?.into_any()),
                ("num_workers", settings.int("workers").into_pyobject(py)?.into_any()),
                ("app", py.None().into_bound(py)),
                ("reexec_pid", 0i32.into_pyobject(py)?.into_any()),
                ("master_pid", 0i32.into_pyobject(py)?.into_any()),
                ("master_name", "Master".into_pyobject(py)?.into_any()),
                ("proc_name", proc_name(settings).into_pyobject(py)?.into_any()),
                ("timeout", settings.int("timeout").into_pyobject(py)?.into_any()),
                // pid -> worker, kept by the master as workers come and go.
                ("WORKERS", pyo3::types::PyDict::new(py).into_any()),
            ],
        )?;
        crate::pyhelpers::helpers(py)?.call_method1("add_server_methods", (&server,))?;
        Ok(Self {
            objects,
            cfg: cfg.unbind(),
            server: server.unbind(),
            max_requests: settings.int("max_requests"),
            timeout: settings.int("timeout"),
        })
    }

    /// A Python-valued setting from the config file (hooks, dicts).
    pub fn object<'py>(&self, py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
        self.objects.get(name).map(|o| o.bind(py).clone())
    }

    pub fn has(&self, name: &str) -> bool {
        self.objects.contains_key(name)
    }

    pub fn server<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.server.bind(py).clone()
    }

    /// A `worker` object for the hooks that take one.
    pub fn worker<'py>(&self, py: Python<'py>, pid: u32, age: u64) -> PyResult<Bound<'py, PyAny>> {
        new_namespace(
            py,
            &[
                ("pid", pid.into_pyobject(py)?.into_any()),
                ("ppid", nix::unistd::getppid().as_raw().into_pyobject(py)?.into_any()),
                ("age", age.into_pyobject(py)?.into_any()),
                ("cfg", self.cfg.bind(py).clone()),
                ("log", Bound::new(py, Log)?.into_any()),
                ("alive", true.into_pyobject(py)?.to_owned().into_any()),
                // True once post_worker_init has run, as in Gunicorn's init_process.
                ("booted", false.into_pyobject(py)?.to_owned().into_any()),
                ("aborted", false.into_pyobject(py)?.to_owned().into_any()),
                // Requests served; counted when request hooks are defined (the only
                // code that can look at it).
                ("nr", 0u64.into_pyobject(py)?.into_any()),
                // Gunicorn: `cfg.max_requests or sys.maxsize`, and the arbiter hands
                // its workers half the timeout (they notify twice per period).
                (
                    "max_requests",
                    (if self.max_requests > 0 {
                        self.max_requests
                    } else {
                        i64::MAX
                    })
                    .into_pyobject(py)?
                    .into_any(),
                ),
                ("timeout", (self.timeout as f64 / 2.0).into_pyobject(py)?.into_any()),
                // Heartbeats go through shared memory: there is nothing to notify.
                ("notify", py.eval(c"lambda: None", None, None)?.into_any()),
            ],
        )
    }

    /// The master's `server.WORKERS` as workers start and end.
    pub fn track_worker(&self, py: Python<'_>, pid: i32, worker: Option<Bound<'_, PyAny>>) {
        let Ok(map) = self.server.bind(py).getattr("WORKERS") else {
            return;
        };
        let _ = match worker {
            Some(w) => map.set_item(pid, w),
            None => map.del_item(pid),
        };
    }

    /// Calls hook `name` if the config file defined it; an exception is logged, not raised.
    pub fn call<'py, A: pyo3::call::PyCallArgs<'py>>(&self, py: Python<'py>, name: &str, args: A) -> bool {
        call_logged(py, name, self.objects.get(name), args)
    }

    /// Calls a hook whose exception must propagate (e.g. `on_starting` stops start-up).
    pub fn call_strict<'py, A: pyo3::call::PyCallArgs<'py>>(
        &self,
        py: Python<'py>,
        name: &str,
        args: A,
    ) -> PyResult<()> {
        if let Some(hook) = self.objects.get(name) {
            hook.bind(py).call1(args)?;
        }
        Ok(())
    }

    pub fn set_server_app(&self, py: Python<'_>, app: &Py<PyAny>) {
        let _ = self.server.bind(py).setattr("app", app.bind(py));
    }
}
