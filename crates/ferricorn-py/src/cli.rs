//! `ferricorn [OPTIONS] [APP_MODULE]`: settings resolution and start-up, in Gunicorn's
//! order: defaults (with `PORT`, `WEB_CONCURRENCY`...), the config file, then
//! `GUNICORN_CMD_ARGS` / `FERRICORN_CMD_ARGS`, then the command line.

use std::collections::HashMap;
use std::ffi::OsString;

use ferricorn_core::bind::BindAddr;
use ferricorn_core::log::Level;
use ferricorn_core::settings::{self, ArgsOutcome, Kind, Settings, Source, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::hooks::Hooks;
use crate::launcher::{self, Boot};
use crate::pyhelpers::{format_exception, helpers, is_app_import_error, set_environ};

/// Start-up failed; the message is printed as one line (or a traceback) and the process
/// exits with `code`.
pub struct Fatal {
    pub code: i32,
    pub message: String,
}

impl Fatal {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// A command-line error: exit code 2, as argparse (and so Gunicorn) uses, except for
    /// a value out of range, which Gunicorn's validators report with exit code 1.
    fn args(e: settings::SettingError) -> Self {
        Self {
            code: if matches!(e, settings::SettingError::OutOfRange { .. }) {
                1
            } else {
                2
            },
            message: format!("Error: {e}"),
        }
    }
}

pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let _ = START_DIR.set(std::env::current_dir().unwrap_or_default());
    match run(py, argv) {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            f.code
        }
    }
}

/// The outcome of settings resolution.
pub struct Resolved {
    pub settings: Settings,
    pub objects: HashMap<String, Py<PyAny>>,
}

fn args_from_env(py: Python<'_>) -> Result<Vec<OsString>, Fatal> {
    for var in ["FERRICORN_CMD_ARGS", "GUNICORN_CMD_ARGS"] {
        if let Ok(val) = std::env::var(var) {
            if val.trim().is_empty() {
                continue;
            }
            let parts: Vec<String> = py
                .import("shlex")
                .and_then(|m| m.getattr("split")?.call1((val.as_str(),))?.extract())
                .map_err(|e| Fatal::usage(format!("Error: could not parse {var}: {e}")))?;
            return Ok(parts.into_iter().map(OsString::from).collect());
        }
    }
    Ok(Vec::new())
}

/// Resolves every setting from all sources.
pub fn resolve(py: Python<'_>, argv: &[String]) -> Result<Result<Resolved, i32>, Fatal> {
    let cli: Vec<OsString> = argv.iter().skip(1).map(OsString::from).collect();
    // Parse the command line on its own first: --help/--version and usage errors come
    // before anything else, and it names the config file.
    let mut cli_only = Settings::new();
    match cli_only.apply_args(&cli, Source::CommandLine).map_err(Fatal::args)? {
        ArgsOutcome::Help(text) => {
            print!("{text}");
            return Ok(Err(0));
        }
        ArgsOutcome::Version => {
            println!("ferricorn (version {})", ferricorn_core::VERSION);
            return Ok(Err(0));
        }
        ArgsOutcome::Run => {}
    }
    let env_args = args_from_env(py)?;
    let mut env_only = Settings::new();
    env_only.apply_args(&env_args, Source::EnvArgs).map_err(Fatal::args)?;

    let mut settings = Settings::new();
    settings
        .apply_env_defaults(&|k| std::env::var(k).ok())
        .map_err(|e| Fatal::usage(format!("Error: {e}")))?;

    // As in Gunicorn, the config file (a relative `-c` path, or the default
    // `./gunicorn.conf.py`) is found from the directory ferricorn started in: `--chdir`
    // applies once the settings are resolved.
    let config_path = if cli_only.source("config") == Source::CommandLine {
        cli_only.str("config").map(str::to_string)
    } else if env_only.source("config") == Source::EnvArgs {
        env_only.str("config").map(str::to_string)
    } else if std::path::Path::new("ferricorn.conf.py").exists() {
        Some("ferricorn.conf.py".to_string())
    } else if std::path::Path::new("gunicorn.conf.py").exists() {
        Some("gunicorn.conf.py".to_string())
    } else {
        None
    };
    let mut objects = HashMap::new();
    if config_path.as_deref() == Some("ferricorn.conf.py") {
        // The file actually read, for --print-config (the default names gunicorn.conf.py).
        let _ = settings.set("config", Value::Str("./ferricorn.conf.py".into()), Source::Default);
    }
    if let Some(path) = &config_path {
        load_config_file(py, path, &mut settings, &mut objects)?;
    }
    settings.apply_args(&env_args, Source::EnvArgs).map_err(Fatal::args)?;
    settings.apply_args(&cli, Source::CommandLine).map_err(Fatal::args)?;
    if settings.app_uri.is_none() {
        settings.app_uri = env_only.app_uri.clone();
    }
    Ok(Ok(Resolved { settings, objects }))
}

fn load_config_file(
    py: Python<'_>,
    path: &str,
    settings: &mut Settings,
    objects: &mut HashMap<String, Py<PyAny>>,
) -> Result<(), Fatal> {
    let plain = path.strip_prefix("file:").unwrap_or(path);
    if !path.starts_with("python:") && !std::path::Path::new(plain).exists() {
        // Gunicorn's words: `Error: 'PATH' doesn't exist` (the path's Python repr).
        return Err(Fatal::usage(format!("Error: '{path}' doesn't exist")));
    }
    if path.starts_with("python:") {
        // Gunicorn has the working directory on sys.path before it imports the module.
        let _ = helpers(py).and_then(|h| h.getattr("prepend_path")?.call1((".",)).map(|_| ()));
    }
    let ns = helpers(py)
        .and_then(|h| h.getattr("exec_config")?.call1((path,)))
        .map_err(|e| {
            if path.starts_with("python:") {
                // Gunicorn imports a module config outside its file loader's handler:
                // the error reaches its generic one-line "Error: ...".
                return Fatal::usage(format!("Error: {}", e.value(py)));
            }
            Fatal::usage(format!(
                "Failed to read config file: {path}\n{}",
                format_exception(py, &e)
            ))
        })?;
    let ns = ns
        .cast_into::<PyDict>()
        .map_err(|_| Fatal::usage("Error: config file did not produce a namespace"))?;
    for (k, v) in ns.iter() {
        let Ok(name) = k.extract::<String>() else { continue };
        if name.starts_with('_') {
            continue;
        }
        let Some(def) = settings::lookup(&name) else {
            // Gunicorn ignores every other top-level name, and real configs are full of
            // helpers (`host`, `port`, `worker = "sync"`). A name one or two letters away
            // from a setting may be a typo (`workerz = 4`): it gets a warning.
            let is_plain = !v.is_callable() && !v.is_instance_of::<pyo3::types::PyModule>();
            if !is_plain || name.len() < 4 {
                continue;
            }
            let Some((near, dist)) = settings::nearest(&name) else {
                continue;
            };
            if dist > 2 {
                continue;
            }
            // Only a warning: Gunicorn ignores these names, and configs use them as
            // helpers (`log_level = "info"; loglevel = log_level`).
            ferricorn_core::warning!("Ignoring {name:?} in {path}: not a setting (did you mean {near:?}?)");
            continue;
        };
        let v = if def.section.ends_with("Hooks") && !v.is_none() {
            resolve_hook(py, def.name, &v)?
        } else {
            v
        };
        let value = py_to_value(def, &v).map_err(|e| Fatal::usage(format!("Error: {e}")))?;
        if matches!(def.kind, Kind::Python) {
            objects.insert(name.clone(), v.clone().unbind());
        }
        settings
            .set(def.name, value, Source::ConfigFile)
            .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    }
    Ok(())
}

/// A hook's callable (imported when given as `"module.func"`), its arity checked.
fn resolve_hook<'py>(py: Python<'py>, name: &str, v: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>, Fatal> {
    helpers(py)
        .and_then(|h| h.getattr("resolve_hook")?.call1((name, v)))
        .map_err(|e| {
            let repr = v.repr().map(|r| r.to_string()).unwrap_or_default();
            let why = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
            Fatal::usage(format!("Error: Invalid value for {name}: {repr}: {why}"))
        })
}

/// How `--print-config` shows a Python object: callables as Gunicorn does, `<qualname()>`.
fn python_repr(v: &Bound<'_, PyAny>) -> String {
    if v.is_callable() {
        if let Ok(q) = v.getattr("__qualname__").and_then(|q| q.extract::<String>()) {
            return format!("<{q}()>");
        }
    }
    v.repr().map(|r| r.to_string()).unwrap_or_default()
}

/// Converts a config-file value to a setting value, validating it as the CLI would.
fn py_to_value(def: &settings::Def, v: &Bound<'_, PyAny>) -> Result<Value, settings::SettingError> {
    let invalid = |why: &str| settings::SettingError::Invalid {
        name: def.name.to_string(),
        value: v.repr().map(|r| r.to_string()).unwrap_or_default(),
        why: why.to_string(),
    };
    if v.is_none() {
        return Ok(match def.kind {
            Kind::List => Value::List(Vec::new()),
            Kind::Flag | Kind::NegFlag => Value::Bool(false),
            _ => Value::None,
        });
    }
    match def.kind {
        Kind::Python => {
            if def.section.ends_with("Hooks") && !v.is_callable() {
                return Err(invalid("must be callable"));
            }
            Ok(Value::Python(python_repr(v)))
        }
        Kind::Flag | Kind::NegFlag => match v.extract::<bool>() {
            Ok(b) => Ok(Value::Bool(b)),
            Err(_) => match v.extract::<String>() {
                Ok(s) => settings::parse_bool(&s)
                    .map(Value::Bool)
                    .ok_or_else(|| invalid("not a boolean")),
                Err(_) => Err(invalid("not a boolean")),
            },
        },
        Kind::List => {
            if let Ok(s) = v.extract::<String>() {
                return Ok(Value::List(vec![s]));
            }
            let items: Vec<String> = v
                .extract()
                .map_err(|_| invalid("must be a string or a list of strings"))?;
            Ok(Value::List(items))
        }
        Kind::Int { .. } | Kind::AutoInt => {
            if v.is_instance_of::<pyo3::types::PyBool>() {
                return Err(invalid("not an integer"));
            }
            let text = match v.extract::<i64>() {
                Ok(i) => i.to_string(),
                Err(_) => v.extract::<String>().map_err(|_| invalid("not an integer"))?,
            };
            def.parse(&text)
        }
        Kind::Str | Kind::Choice(_) => {
            if let Ok(s) = v.extract::<String>() {
                return def.parse(&s);
            }
            if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
                let items: Vec<String> = v.extract().map_err(|_| invalid("must be strings"))?;
                return def.parse(&items.join(","));
            }
            if let Ok(i) = v.extract::<i64>() {
                return def.parse(&i.to_string());
            }
            // Gunicorn accepts classes for worker_class/logger_class.
            if v.is_callable() {
                return Ok(Value::Python(python_repr(v)));
            }
            Err(invalid("must be a string"))
        }
    }
}

/// The directory ferricorn was started in: a relative `--chdir` is relative to it, however
/// many times it is applied (before and after the config file, as in Gunicorn).
static START_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn chdir(py: Python<'_>, dir: &str) -> Result<(), Fatal> {
    let base = START_DIR.get_or_init(|| std::env::current_dir().unwrap_or_default());
    let target = base.join(dir);
    std::env::set_current_dir(&target).map_err(|e| Fatal::usage(format!("Error: can't chdir to {dir:?}: {e}")))?;
    helpers(py)
        .and_then(|h| h.getattr("prepend_path")?.call1((".",)).map(|_| ()))
        .map_err(|e| Fatal::usage(format!("Error: {e}")))
}

fn run(py: Python<'_>, argv: Vec<String>) -> Result<i32, Fatal> {
    let Resolved { mut settings, objects } = match resolve(py, &argv)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    // Gunicorn changes directory right after reading its configuration: relative log
    // file paths (and everything after) are relative to `--chdir`.
    if let Some(dir) = settings.str("chdir").map(str::to_string) {
        chdir(py, &dir)?;
    } else {
        // The cwd is importable, as with `python -m` (Gunicorn prepends it too).
        let _ = helpers(py).and_then(|h| h.getattr("prepend_path")?.call1((".",)).map(|_| ()));
    }
    let level = settings.str("loglevel").and_then(Level::parse).unwrap_or(Level::Info);
    ferricorn_core::log::configure(level, settings.str("errorlog")).map_err(|e| {
        Fatal::usage(format!(
            "Error: can't open error log {:?}: {e}",
            settings.str("errorlog").unwrap_or("-")
        ))
    })?;
    ferricorn_core::log::configure_access(settings.str("accesslog")).map_err(|e| {
        Fatal::usage(format!(
            "Error: can't open access log {:?}: {e}",
            settings.str("accesslog").unwrap_or("-")
        ))
    })?;
    if settings.bool("syslog") {
        let prefix = settings
            .str("syslog_prefix")
            .or(settings.str("proc_name"))
            .or(settings.app_uri.as_deref())
            .unwrap_or("gunicorn")
            .to_string();
        ferricorn_core::syslog::configure(
            settings.str("syslog_addr").unwrap_or("udp://localhost:514"),
            settings.str("syslog_facility").unwrap_or("user"),
            &prefix,
            !settings.bool("disable_redirect_access_to_syslog"),
        )
        .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    }
    let logconfig_dict = objects.get("logconfig_dict").map(|o| o.bind(py).clone());
    let which = if logconfig_dict.is_some() {
        "logconfig_dict"
    } else if settings.str("logconfig_json").is_some_and(|s| !s.is_empty()) {
        "logconfig_json"
    } else {
        "logconfig"
    };
    crate::pylog::setup(
        py,
        settings.str("loglevel").unwrap_or("info"),
        logconfig_dict,
        settings.str("logconfig_json").filter(|s| !s.is_empty()),
        settings.str("logconfig").filter(|s| !s.is_empty()),
    )
    .map_err(|why| Fatal::usage(format!("Error: Invalid value for {which}: {why}")))?;
    // The config file has run: loggers it changed take the master's lines too.
    crate::pylog::route_customised(py);

    // Each entry goes to the front in turn, as Gunicorn inserts them: the last one
    // listed is searched first.
    for p in settings.comma_list("pythonpath").iter() {
        helpers(py)
            .and_then(|h| h.getattr("prepend_path")?.call1((p.as_str(),)).map(|_| ()))
            .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    }
    // Gunicorn's arbiter sets it for the app and the processes it starts.
    set_environ(py, "SERVER_SOFTWARE", ferricorn_core::SERVER_SOFTWARE)
        .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    for kv in settings.list("raw_env") {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Fatal::usage(format!(
                "Error: Invalid value for raw_env: {kv:?}: expected KEY=VALUE"
            )));
        };
        set_environ(py, k, v).map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    }

    // Gunicorn names processes after the app given on the command line only.
    if let Some(uri) = settings.app_uri.clone() {
        let _ = settings.set("default_proc_name", Value::Str(uri), Source::Default);
    }
    if settings.app_uri.is_none() {
        settings.app_uri = settings.str("wsgi_app").map(str::to_string);
    }
    warn_unimplemented(&settings);
    validate(&settings)?;
    ferricorn_core::metrics::set_statsd(statsd_client(&settings).map_err(|e| Fatal::usage(format!("Error: {e}")))?);
    if settings.bool("print_config") {
        print!("{}", settings.render());
    }
    if settings.bool("print_config") || settings.bool("check_config") {
        let Some(uri) = settings.app_uri.clone() else {
            return Err(Fatal::usage("Error: No application module specified."));
        };
        // What a real start checks before it binds, so a passing check means a start
        // that gets that far.
        ferricorn_arbiter::process::Identity::resolve(settings.str("user"), settings.str("group"))
            .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
        ferricorn_server::tls::alpn_for(settings.str("http_protocols").unwrap_or("h1"))
            .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
        return match load_app(py, &uri) {
            Ok(_) => Ok(0),
            Err(e) => Err(Fatal::usage(format!(
                "\nError while loading the application:\n\n{}",
                e.message
            ))),
        };
    }
    let Some(uri) = settings.app_uri.clone() else {
        return Err(Fatal::usage("Error: No application module specified."));
    };

    // After --print-config, whose listing belongs on the real stdout.
    if settings.bool("capture_output") && settings.str("errorlog").is_some_and(|e| e != "-") {
        ferricorn_core::log::capture_stdio(true);
    }
    let hooks = Hooks::new(py, &settings, objects).map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    launcher::start(
        py,
        Boot {
            settings,
            hooks,
            app_uri: uri,
            argv,
        },
    )
}

/// Settings ferricorn accepts (a Gunicorn config keeps working) but does not act on yet:
/// each one that is set gets one start-up warning naming it.
const NOT_IMPLEMENTED: &[&str] = &[
    "spew",
    "paste",
    "raw_paste_global_conf",
    "protocol",
    "uwsgi_allow_ips",
    "strip_header_spaces",
    "permit_obsolete_folding",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "dirty_apps",
    "dirty_workers",
    "dirty_timeout",
    "dirty_threads",
    "dirty_graceful_timeout",
    "on_dirty_starting",
    "dirty_post_fork",
    "dirty_worker_init",
    "dirty_worker_exit",
    "tmp_upload_dir",
];

fn warn_unimplemented(settings: &Settings) {
    for name in NOT_IMPLEMENTED {
        if settings.source(name) != Source::Default {
            ferricorn_core::warning!("Setting {name} is accepted but has no effect in ferricorn yet");
        }
    }
}

/// The StatsD client the settings ask for (also rebuilt on HUP).
pub fn statsd_client(
    settings: &Settings,
) -> Result<Option<ferricorn_core::metrics::Statsd>, ferricorn_core::metrics::StatsdError> {
    let Some(host) = settings.str("statsd_host").filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    ferricorn_core::metrics::Statsd::connect(
        host,
        settings.str("statsd_prefix").unwrap_or(""),
        settings.str("dogstatsd_tags").unwrap_or(""),
    )
    .map(Some)
}

/// `--metrics-bind HOST:PORT` (a name is resolved once, at start-up).
pub fn metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| "the host does not resolve".to_string())
}

/// Cross-setting checks that must fail at start-up with one line naming the setting.
fn validate(settings: &Settings) -> Result<(), Fatal> {
    for b in settings.list("bind") {
        BindAddr::parse(&b).map_err(|e| Fatal::usage(format!("Error: Invalid value for bind: {e}")))?;
    }
    for name in ["forwarded_allow_ips", "proxy_allow_ips"] {
        if let Err(why) = ferricorn_core::proxy::AllowList::parse(settings.str(name).unwrap_or("")) {
            return Err(Fatal::usage(format!("Error: Invalid value for {name}: {why}")));
        }
    }
    let builtin_loggers = [
        "gunicorn.glogging.Logger",
        "gunicorn.instrument.statsd.Statsd",
        "simple",
        "egg:gunicorn#simple",
    ];
    let logger_class = settings.get("logger_class");
    if let Value::Python(repr) = logger_class {
        return Err(Fatal::usage(format!(
            "Error: Invalid value for logger_class: {repr}: ferricorn writes its logs from Rust and cannot run a custom logger class; configure Python logging with logconfig_dict, --log-config-json or --log-config instead (they route every line)"
        )));
    }
    if let Some(lc) = settings.str("logger_class").filter(|lc| !builtin_loggers.contains(lc)) {
        return Err(Fatal::usage(format!(
            "Error: Invalid value for logger_class: {lc:?}: ferricorn writes its logs from Rust and cannot run a custom logger class; configure Python logging with logconfig_dict, --log-config-json or --log-config instead (they route every line)"
        )));
    }
    if let Some(addr) = settings.str("metrics_bind").filter(|a| !a.is_empty()) {
        metrics_addr(addr)
            .map_err(|why| Fatal::usage(format!("Error: Invalid value for metrics_bind: {addr:?}: {why}")))?;
    }
    ferricorn_core::static_files::StaticConfig::from_settings(settings)
        .map_err(|e| Fatal::usage(format!("Error: {e}")))?;
    let wc = settings.str("worker_class").unwrap_or("sync");
    if let Value::Python(repr) = settings.get("worker_class") {
        return Err(Fatal::usage(format!(
            "Error: Invalid value for worker_class: {repr}: custom worker classes cannot run on ferricorn's Rust workers; use sync, gthread or asgi"
        )));
    }
    let green = ["gevent", "eventlet", "tornado", "gevent_wsgi", "gevent_pywsgi"];
    if green
        .iter()
        .any(|g| wc == *g || wc.contains(&format!(".{g}")) || wc.starts_with(&format!("{g}.")))
    {
        return Err(Fatal::usage(format!(
            "Error: Invalid value for worker_class: {wc:?}: ferricorn does not run greenlet or tornado workers; its Rust I/O loop already keeps slow clients off your threads (use gthread with --threads N), and async code runs with -k asgi"
        )));
    }
    if crate::launcher::worker_interface(wc).is_none() {
        return Err(Fatal::usage(format!(
            "Error: Invalid value for worker_class: {wc:?}: supported worker classes are sync, gthread, asgi and uvicorn.workers.UvicornWorker"
        )));
    }
    Ok(())
}

/// An application that could not be loaded.
pub struct LoadError {
    /// 3: importing the module raised; 4: the app object could not be resolved.
    pub code: i32,
    pub message: String,
}

pub fn load_app(py: Python<'_>, uri: &str) -> Result<Py<PyAny>, LoadError> {
    let loaded = helpers(py).and_then(|h| h.getattr("load_app")?.call1((uri,)));
    match loaded {
        Ok(app) => Ok(app.unbind()),
        Err(e) if is_app_import_error(py, &e) => Err(LoadError {
            code: ferricorn_arbiter::APP_LOAD_ERROR,
            message: e.value(py).to_string(),
        }),
        Err(e) => Err(LoadError {
            code: ferricorn_arbiter::WORKER_BOOT_ERROR,
            message: format_exception(py, &e),
        }),
    }
}
