//! The error log, in Gunicorn's format: `[2026-01-01 12:00:00 +0000] [pid] [LEVEL] message`.
//!
//! Deliberately tiny: one global level and one destination (stderr or an append-mode
//! file, reopened on USR1). Lines are written with a single `write(2)` so lines from
//! the master and its workers never interleave mid-line.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            // Gunicorn's names only: anything else (`warn` too) is info there.
            "warning" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FD: AtomicI32 = AtomicI32::new(2);
static PATH: Mutex<Option<String>> = Mutex::new(None);
/// The access log: -1 = off, 1 = stdout, else an owned file.
static ACCESS_FD: AtomicI32 = AtomicI32::new(-1);
static ACCESS_PATH: Mutex<Option<String>> = Mutex::new(None);

/// Sets the level and destination (`None` or `-` = stderr).
pub fn configure(level: Level, path: Option<&str>) -> std::io::Result<()> {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let path = path.filter(|p| *p != "-").map(str::to_string);
    *PATH.lock().unwrap_or_else(|p| p.into_inner()) = path;
    reopen()
}

/// Changes the level only (HUP with a new `loglevel`).
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Enables the access log (`-` = stdout); `None` turns it off.
pub fn configure_access(path: Option<&str>) -> std::io::Result<()> {
    *ACCESS_PATH.lock().unwrap_or_else(|p| p.into_inner()) = path.map(str::to_string);
    reopen_access()
}

pub fn access_enabled() -> bool {
    ACCESS_FD.load(Ordering::Relaxed) >= 0 || crate::syslog::takes_access() || SINK.get().is_some()
}

fn reopen_access() -> std::io::Result<()> {
    let path = ACCESS_PATH.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let new_fd = match path.as_deref() {
        None => -1,
        Some("-") => 1,
        Some(p) => std::os::fd::IntoRawFd::into_raw_fd(OpenOptions::new().create(true).append(true).open(p)?),
    };
    let old = ACCESS_FD.swap(new_fd, Ordering::Relaxed);
    if old > 2 {
        // SAFETY: `old` came from `into_raw_fd` above and is owned by this module.
        unsafe { libc::close(old) };
    }
    Ok(())
}

/// Writes one access-log line (the newline is added) in a single `write(2)`.
pub fn write_access(line: &str) {
    if let Some(sink) = SINK.get() {
        sink.access_line(line);
        return;
    }
    write_access_direct(line);
}

/// Writes to the access log itself, bypassing any sink.
pub fn write_access_direct(line: &str) {
    crate::syslog::access_line(line);
    let fd = ACCESS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    write_fd(fd, buf.as_bytes());
}

fn write_fd(fd: RawFd, bytes: &[u8]) {
    // SAFETY: the descriptor is owned by this module (or is stdio); ManuallyDrop keeps
    // the temporary File from closing it.
    let mut f = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let _ = f.write_all(bytes);
}

static CAPTURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--capture-output`: the process's stdout and stderr go to the error log file (kept on
/// every reopen).
pub fn capture_stdio(on: bool) {
    CAPTURE.store(on, Ordering::Relaxed);
    redirect_stdio();
}

fn redirect_stdio() {
    let fd = FD.load(Ordering::Relaxed);
    if CAPTURE.load(Ordering::Relaxed) && fd > 2 {
        // SAFETY: dup2 onto the standard descriptors, which stay open for the process.
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
}

/// Reopens the log files (USR1, log rotation).
pub fn reopen() -> std::io::Result<()> {
    reopen_access()?;
    let path = PATH.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(path) = path else {
        FD.store(2, Ordering::Relaxed);
        return Ok(());
    };
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let new_fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    let old = FD.swap(new_fd, Ordering::Relaxed);
    if old > 2 {
        // SAFETY: `old` was obtained from `into_raw_fd` above and is owned by this module.
        unsafe { libc::close(old) };
    }
    redirect_stdio();
    Ok(())
}

/// The log files written (error log, access log), for the master to give to the
/// workers' user as Gunicorn does.
pub fn file_paths() -> Vec<String> {
    [&PATH, &ACCESS_PATH]
        .iter()
        .filter_map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .filter(|p| p != "-")
        .collect()
}

/// The descriptor log lines go to (for `wsgi.errors` and stdio capture).
pub fn fd() -> RawFd {
    FD.load(Ordering::Relaxed)
}

/// The threshold lines are written at.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        n if n >= Level::Critical as u8 => Level::Critical,
        n if n >= Level::Error as u8 => Level::Error,
        n if n >= Level::Warning as u8 => Level::Warning,
        n if n >= Level::Info as u8 => Level::Info,
        _ => Level::Debug,
    }
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// `[2026-01-01 12:00:00 +0000]`, in local time like Gunicorn.
pub fn timestamp(fmt: &[u8]) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: localtime_r/strftime write only into the buffers we pass, which are sized
    // for them; `fmt` is NUL-terminated by the callers.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr().cast(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// StatsD's `gunicorn.log.<level>` counters count every warning and worse, whatever
/// `loglevel` lets through (as Gunicorn's Statsd logger does).
pub fn count(level: Level) {
    match level {
        Level::Warning => crate::metrics::log_line("warning"),
        Level::Error => crate::metrics::log_line("error"),
        Level::Critical => crate::metrics::log_line("critical"),
        _ => {}
    }
}

/// Where lines go instead when a Python logging configuration owns the loggers.
pub trait Sink: Send + Sync {
    fn error_line(&self, level: Level, msg: &str);
    fn access_line(&self, msg: &str);
    /// One request for the access log; a sink that wants the line renders `format`.
    fn access_record(&self, format: &crate::access_log::AccessFormat, rec: &crate::access_log::AccessRecord<'_>) {
        self.access_line(&format.render(rec));
    }
    /// Whether access records go through the sink (or straight to the access log).
    fn routes_access(&self) -> bool {
        true
    }
}

static SINK: std::sync::OnceLock<Box<dyn Sink>> = std::sync::OnceLock::new();
static ACCESS_ROUTED: AtomicBool = AtomicBool::new(false);

/// Routes every error and access line through `sink` from now on (in this process and
/// the workers it forks). `level` should be the sink's own threshold, so lines it would
/// drop are never formatted (or handed to it) at all.
pub fn set_sink(sink: Box<dyn Sink>, level: Level) {
    let routes_access = sink.routes_access();
    if SINK.set(sink).is_ok() {
        LEVEL.store(level as u8, Ordering::Relaxed);
        ACCESS_ROUTED.store(routes_access, Ordering::Relaxed);
    }
}

/// Whether access records go to a Python logger (which gets every atom).
pub fn access_routed() -> bool {
    ACCESS_ROUTED.load(Ordering::Relaxed)
}

/// The sink takes access records from now on (a logger customised after it was set).
pub fn set_access_routed() {
    ACCESS_ROUTED.store(true, Ordering::Relaxed);
}

/// The access log entry for one request: through the sink, or rendered here.
pub fn write_access_record(format: &crate::access_log::AccessFormat, rec: &crate::access_log::AccessRecord<'_>) {
    match SINK.get() {
        Some(sink) => sink.access_record(format, rec),
        None => write_access_direct(&format.render(rec)),
    }
}

/// Whether a sink (a Python logging configuration) owns the lines.
pub fn has_sink() -> bool {
    SINK.get().is_some()
}

pub fn write(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    if let Some(sink) = SINK.get() {
        sink.error_line(level, msg);
        return;
    }
    write_direct(level, msg);
}

/// Writes to the error log itself, bypassing any sink (the sink's own default handler).
pub fn write_direct(level: Level, msg: &str) {
    let line = format!(
        "[{}] [{}] [{}] {}\n",
        timestamp(b"%Y-%m-%d %H:%M:%S %z\0"),
        std::process::id(),
        level.name(),
        msg
    );
    write_raw(line.as_bytes());
    crate::syslog::error_line(level, msg);
}

/// Writes bytes to the log destination in one call.
pub fn write_raw(bytes: &[u8]) {
    write_fd(FD.load(Ordering::Relaxed), bytes);
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        {
            let lvl = $lvl;
            $crate::log::count(lvl);
            if $crate::log::enabled(lvl) { $crate::log::write(lvl, &format!($($arg)*)) }
        }
    };
}
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! warning { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warning, $($arg)*) }; }
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
/// Gunicorn's `log.exception(...)`: an ERROR line, counted as `gunicorn.log.exception`.
#[macro_export]
macro_rules! exception {
    ($($arg:tt)*) => {{
        $crate::metrics::log_line("exception");
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::write($crate::log::Level::Error, &format!($($arg)*))
        }
    }};
}
#[macro_export]
macro_rules! critical { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Critical, $($arg)*) }; }
