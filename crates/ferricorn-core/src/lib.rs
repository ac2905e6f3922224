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
pub mod shared_array;
pub mod static_files;
pub mod syslog;

/// A DER certificate as PEM text (for `SSL_CLIENT_CERT` and the ASGI TLS extension).
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The version reported by `--version`, `Server:` and `SERVER_SOFTWARE`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The product token used in `Server:` and `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("ferricorn/", env!("CARGO_PKG_VERSION"));

/// The `Server` response header: the product without its version, as Gunicorn sends
/// `gunicorn` (a version there is what scanners flag); `SERVER_SOFTWARE` keeps it.
pub const SERVER_HEADER: &str = "ferricorn";
