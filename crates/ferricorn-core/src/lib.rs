//! ferricorn-core: everything that needs neither an async runtime nor Python.
//!
//! - [`settings`]: the single settings registry (CLI flags, env, defaults, validation, docs).
//! - [`bind`]: parsing of `--bind` addresses.
//! - [`request`]: Gunicorn's request-hardening rules, applied on top of hyper's parser.

pub mod access_log;
pub mod bind;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod request;
pub mod settings;
pub mod static_files;
pub mod syslog;

/// The version reported by `--version`, `Server:` and `SERVER_SOFTWARE`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The product token used in `Server:` and `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("ferricorn/", env!("CARGO_PKG_VERSION"));
