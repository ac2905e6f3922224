//! The PEP 3333 environ, built in one pass over the request head.

use ferricorn_server::Request;
use http::{header, Version};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyString};

use super::early_hints::EarlyHintsFn;
use super::{InputStream, Shared};
use crate::pyhelpers::{ascii_str, LastStr};

use ferricorn_core::request::latin1;

/// Why a request cannot be handed to the app.
pub struct EnvironError {
    pub status: u16,
    pub detail: String,
}

/// The environ every request starts from: the values that never change, the usual value
/// of a few that may (`REQUEST_METHOD`, `QUERY_STRING`, `SERVER_PROTOCOL`,
/// `wsgi.url_scheme`, and `wsgi.input`: the empty stream of requests without a body), and a
/// placeholder for every key each request sets. A copy of it is one memcpy of a hash
/// table with room left for the request's headers (see `make_room`), where building the
/// dict key by key grows it three times.
pub fn template(
    py: Python<'_>,
    cfg: &super::WsgiConfig,
    errors: &Bound<'_, PyAny>,
    file_wrapper: &Bound<'_, PyAny>,
    no_hints: &Bound<'_, PyAny>,
    empty_input: &Bound<'_, PyAny>,
) -> PyResult<Py<PyDict>> {
    let env = PyDict::new(py);
    for key in [
        intern!(py, "PATH_INFO"),
        intern!(py, "RAW_URI"),
        intern!(py, "REQUEST_URI"),
        intern!(py, "SERVER_NAME"),
        intern!(py, "SERVER_PORT"),
        intern!(py, "REMOTE_ADDR"),
    ] {
        env.set_item(key, py.None())?;
    }
    env.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "GET"))?;
    env.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?;
    env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
    env.set_item(intern!(py, "SCRIPT_NAME"), cfg.script_name.as_str())?;
    env.set_item(
        intern!(py, "SERVER_SOFTWARE"),
        intern!(py, ferricorn_core::SERVER_SOFTWARE),
    )?;
    env.set_item(intern!(py, "wsgi.version"), (1, 0))?;
    env.set_item(intern!(py, "wsgi.errors"), errors)?;
    env.set_item(intern!(py, "wsgi.multithread"), cfg.multithread)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), cfg.multiprocess)?;
    env.set_item(intern!(py, "wsgi.run_once"), false)?;
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper)?;
    env.set_item(intern!(py, "wsgi.early_hints"), no_hints)?;
    env.set_item(intern!(py, "wsgi.input"), empty_input)?;
    make_room(py, &env)?;
    Ok(env.unbind())
}

/// Grows the template's hash table ahead of the keys every request adds. CPython copies
/// a dict by cloning its table at the same size (when at most a third of its entries are
/// deleted ones), so a template filled to the brim gives copies that must grow, a rehash
/// of every key, on the first header set. Placeholder keys are added one at a time until
/// the table grows once (its size, as `sys.getsizeof` reports it, changes), then deleted:
/// every copy has that room. The fewest placeholders leave the most room, since a deleted
/// entry keeps its slot in the copies. The contents are unchanged; only the table's size
/// differs.
/// Only a speed-up: an interpreter whose `sys.getsizeof` does not answer keeps the
/// template as it is.
fn make_room(py: Python<'_>, env: &Bound<'_, PyDict>) -> PyResult<()> {
    let size = |d: &Bound<'_, PyDict>| -> Option<usize> {
        let getsizeof = py.import("sys").and_then(|sys| sys.getattr("getsizeof")).ok()?;
        getsizeof.call1((d,)).and_then(|n| n.extract()).ok()
    };
    let Some(before) = size(env) else {
        return Ok(());
    };
    // Deleted entries must stay under a third of all for the copy to clone the table.
    let mut pads = Vec::new();
    for i in 0..env.len() / 2 {
        let pad = format!("ferricorn.pad.{i}");
        env.set_item(&pad, py.None())?;
        pads.push(pad);
        if size(env).is_none_or(|n| n != before) {
            break;
        }
    }
    for pad in &pads {
        env.del_item(pad)?;
    }
    Ok(())
}

static REMOTE_ADDR: LastStr = LastStr::new();

/// Copies of the template with `SERVER_NAME` and `SERVER_PORT` already set, one per
/// local address (a worker serves one or a few): two keys fewer to set per request.
#[derive(Default)]
pub struct LocalTemplates(std::sync::Mutex<Vec<(std::net::SocketAddr, Py<PyDict>)>>);

/// More local addresses than this (an unusual bind list) set the two keys per request.
const MAX_LOCAL_TEMPLATES: usize = 8;

impl LocalTemplates {
    fn get<'py>(
        &self,
        py: Python<'py>,
        base: &Bound<'py, PyDict>,
        addr: std::net::SocketAddr,
        text: &ferricorn_server::AddrText,
    ) -> PyResult<Bound<'py, PyDict>> {
        // Copying and setting items may run Python code, which lets another thread take
        // the GIL and come here: it must wait for the lock without holding the GIL.
        let mut kept = self.0.lock_py_attached(py).unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = kept.iter().find(|(a, _)| *a == addr) {
            return Ok(t.bind(py).clone());
        }
        // Setting keys the template already has keeps its table (and the room made for
        // the headers) as it is.
        let t = base.copy()?;
        t.set_item(intern!(py, "SERVER_NAME"), text.ip.as_str())?;
        t.set_item(intern!(py, "SERVER_PORT"), text.port.as_str())?;
        if kept.len() < MAX_LOCAL_TEMPLATES {
            kept.push((addr, t.clone().unbind()));
        }
        Ok(t)
    }
}

pub fn build<'py>(
    py: Python<'py>,
    shared: &Shared,
    req: &Request,
    input: Option<&Bound<'py, InputStream>>,
) -> PyResult<Result<Bound<'py, PyDict>, EnvironError>> {
    let head = &req.head;
    let cfg = &shared.cfg;
    let conn = &req.conn;
    let base = shared.environ_template.bind(py);
    let local = conn.local.zip(conn.local_text());
    let env = match local {
        Some((addr, text)) => shared.local_templates.get(py, base, addr, text)?.copy()?,
        None => base.copy()?,
    };

    let path = head.uri.path();
    let raw_uri = ferricorn_core::request::raw_target(&head.uri, head.version);
    // A trusted proxy may mount the app under a prefix with a `SCRIPT_NAME` header
    // (Gunicorn's forwarder_headers); otherwise the configured one applies.
    let forwarded_script = req
        .trusted_proxy
        .then(|| head.headers.get("script_name"))
        .flatten()
        .filter(|_| cfg.forwarder_headers.allows("SCRIPT_NAME"))
        .map(|v| latin1(v.as_bytes()));
    let script_name = forwarded_script.as_ref().unwrap_or(&cfg.script_name);
    let Some(path_info) = ferricorn_core::request::path_info(path, script_name) else {
        return Ok(Err(EnvironError {
            status: if forwarded_script.is_some() { 400 } else { 500 },
            detail: format!("Request path {path:?} does not start with SCRIPT_NAME {script_name:?}"),
        }));
    };

    match head.method {
        http::Method::GET => {} // the template's
        http::Method::POST => env.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "POST"))?,
        http::Method::HEAD => env.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "HEAD"))?,
        _ => env.set_item(intern!(py, "REQUEST_METHOD"), head.method.as_str())?,
    }
    if forwarded_script.is_some() {
        env.set_item(intern!(py, "SCRIPT_NAME"), script_name.as_str())?;
    }
    let path_info_str = ascii_str(py, &path_info)?;
    env.set_item(intern!(py, "PATH_INFO"), &path_info_str)?;
    match head.uri.query() {
        Some(q) if !q.is_ascii() => env.set_item(intern!(py, "QUERY_STRING"), latin1(q.as_bytes()))?,
        Some(q) => env.set_item(intern!(py, "QUERY_STRING"), ascii_str(py, q)?)?,
        None => {} // the template's ""
    }
    // Without a query or a SCRIPT_NAME the two are the same text: one str for both.
    let raw_uri = if *raw_uri == *path_info {
        path_info_str
    } else {
        ascii_str(py, &raw_uri)?
    };
    env.set_item(intern!(py, "RAW_URI"), &raw_uri)?;
    env.set_item(intern!(py, "REQUEST_URI"), raw_uri)?;
    // `intern!` caches the object; `PyString::intern` would look it up on every request.
    let protocol = match ferricorn_core::request::protocol_name(head.version) {
        "HTTP/1.0" => Some(intern!(py, "HTTP/1.0")),
        "HTTP/2.0" => Some(intern!(py, "HTTP/2.0")),
        _ => None, // the template's "HTTP/1.1"
    };
    if let Some(protocol) = protocol {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    }
    if head.version == Version::HTTP_2 && !head.headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the :authority pseudo-header.
        if let Some(authority) = head.uri.authority() {
            env.set_item(intern!(py, "HTTP_HOST"), authority.as_str())?;
        }
    }

    match local {
        Some(_) => {} // the local template's
        None => {
            // On a UNIX socket the only name we have is the one the client asked for.
            let host = head
                .headers
                .get(header::HOST)
                .map(|h| latin1(h.as_bytes()))
                .unwrap_or_default();
            let default_port = if req.https { "443" } else { "80" };
            let (name, port) = split_host(&host, default_port);
            env.set_item(intern!(py, "SERVER_NAME"), name)?;
            env.set_item(intern!(py, "SERVER_PORT"), port)?;
        }
    }
    match (req.client, conn.peer_text()) {
        (Some(client), Some(text)) if Some(client) == conn.peer => {
            env.set_item(intern!(py, "REMOTE_ADDR"), REMOTE_ADDR.get(py, &text.ip))?;
            if client.port() != 0 {
                let port = match conn_strings(conn) {
                    Some(c) => c
                        .remote_port
                        .get_or_init(py, || PyString::new(py, &text.port).unbind())
                        .bind(py)
                        .clone(),
                    None => ascii_str(py, &text.port)?,
                };
                env.set_item(intern!(py, "REMOTE_PORT"), port)?;
            }
        }
        (Some(peer), _) => {
            env.set_item(intern!(py, "REMOTE_ADDR"), peer.ip().to_string())?;
            if peer.port() != 0 {
                env.set_item(intern!(py, "REMOTE_PORT"), peer.port().to_string())?;
            }
        }
        (None, _) => {
            env.set_item(intern!(py, "REMOTE_ADDR"), intern!(py, ""))?;
        }
    }

    // mod_ssl's name: what Django/Flask client-certificate middleware look for.
    if let Some(cert) = conn.tls.as_ref().and_then(|t| t.client_certs.first()) {
        env.set_item(intern!(py, "SSL_CLIENT_CERT"), ferricorn_core::certificate_pem(cert))?;
    }
    if let Some((protocol, proxy)) = conn.proxy {
        env.set_item(intern!(py, "PROXY_PROTOCOL"), protocol)?;
        if let Some(p) = proxy {
            env.set_item(intern!(py, "PROXY_ADDR"), p.ip().to_string())?;
            env.set_item(intern!(py, "PROXY_PORT"), p.port().to_string())?;
        }
    }

    // Made on the first header without a precomputed key (many requests have none).
    let mut key = String::new();
    // HeaderMap's iterator yields a name's values one after the other: one walk, no
    // lookup per name.
    let mut headers = head.headers.iter().peekable();
    while let Some((name, first)) = headers.next() {
        let n = name.as_str();
        let repeated = headers.peek().is_some_and(|(next, _)| *next == name);
        let value = match first.to_str() {
            // A keep-alive connection's requests repeat their `Host`: the last one's str.
            Ok(v) if !repeated && name == header::HOST => match conn_strings(&req.conn) {
                Some(c) => c.host(py, first, v)?,
                None => ascii_str(py, v)?,
            },
            // One ASCII value, the common case: straight into a Python str.
            Ok(v) if !repeated => ascii_str(py, v)?,
            _ => {
                let mut value = latin1(first.as_bytes());
                while let Some((_, v)) = headers.next_if(|(next, _)| *next == name) {
                    value.push(',');
                    value.push_str(&latin1(v.as_bytes()));
                }
                PyString::new(py, &value)
            }
        };
        if name == header::CONTENT_TYPE {
            env.set_item(intern!(py, "CONTENT_TYPE"), value)?;
            continue;
        }
        if name == header::CONTENT_LENGTH {
            env.set_item(intern!(py, "CONTENT_LENGTH"), value)?;
            continue;
        }
        if let Some(k) = common_key(py, name) {
            env.set_item(k, value)?;
            continue;
        }
        if key.capacity() == 0 {
            key.reserve(64);
        }
        key.clear();
        key.push_str("HTTP_");
        key.extend(n.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
        env.set_item(key.as_str(), value)?;
    }

    if req.https {
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
    }
    // Without a body, the template's `EmptyInput` stays.
    if let Some(input) = input {
        env.set_item(intern!(py, "wsgi.input"), input)?;
    }
    if let Some(h) = &req.early_hints {
        let hints = match conn_strings(conn) {
            Some(c) => EarlyHintsFn::for_request(py, &c.early_hints, h)?,
            None => Bound::new(py, EarlyHintsFn::new(h.clone()))?,
        };
        env.set_item(intern!(py, "wsgi.early_hints"), hints)?;
    }
    Ok(Ok(env))
}

/// Bytes and the Python string made of them.
type KeptText = (Box<[u8]>, Py<PyString>);

/// Environ values a connection's requests repeat, kept as Python strings for its life.
struct ConnStrings {
    remote_port: pyo3::sync::PyOnceLock<Py<PyString>>,
    /// The last `Host` header and its str. A copy: a `HeaderValue` from the request
    /// shares hyper's read buffer, which would then be reallocated for every request and
    /// kept alive by every idle connection.
    host: std::sync::Mutex<Option<KeptText>>,
    /// The `wsgi.early_hints` callable its requests reuse (see `EarlyHintsFn::for_request`).
    early_hints: std::sync::Mutex<Option<Py<EarlyHintsFn>>>,
}

impl ConnStrings {
    fn new() -> Self {
        Self {
            remote_port: pyo3::sync::PyOnceLock::new(),
            host: std::sync::Mutex::new(None),
            early_hints: std::sync::Mutex::new(None),
        }
    }

    fn host<'py>(&self, py: Python<'py>, value: &http::HeaderValue, text: &str) -> PyResult<Bound<'py, PyString>> {
        // An HTTP/2 connection's requests run side by side on the app threads, and making
        // a str may let another thread take the GIL: wait for the lock without it.
        let mut last = self.host.lock_py_attached(py).unwrap_or_else(|e| e.into_inner());
        if let Some((v, s)) = &*last {
            if **v == *value.as_bytes() {
                return Ok(s.bind(py).clone());
            }
        }
        let s = ascii_str(py, text)?;
        *last = Some((value.as_bytes().into(), s.clone().unbind()));
        Ok(s)
    }
}

fn conn_strings(conn: &ferricorn_server::ConnInfo) -> Option<&ConnStrings> {
    conn.bridge_data(ConnStrings::new)
}

/// Interned environ keys for the headers most requests carry: no string to build and
/// no hash to compute for them.
fn common_key<'py>(py: Python<'py>, name: &header::HeaderName) -> Option<&'py Bound<'py, PyString>> {
    Some(match *name {
        header::HOST => intern!(py, "HTTP_HOST"),
        header::USER_AGENT => intern!(py, "HTTP_USER_AGENT"),
        header::ACCEPT => intern!(py, "HTTP_ACCEPT"),
        header::ACCEPT_ENCODING => intern!(py, "HTTP_ACCEPT_ENCODING"),
        header::ACCEPT_LANGUAGE => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        header::CONNECTION => intern!(py, "HTTP_CONNECTION"),
        header::COOKIE => intern!(py, "HTTP_COOKIE"),
        header::REFERER => intern!(py, "HTTP_REFERER"),
        header::AUTHORIZATION => intern!(py, "HTTP_AUTHORIZATION"),
        header::CACHE_CONTROL => intern!(py, "HTTP_CACHE_CONTROL"),
        header::ORIGIN => intern!(py, "HTTP_ORIGIN"),
        header::IF_NONE_MATCH => intern!(py, "HTTP_IF_NONE_MATCH"),
        header::IF_MODIFIED_SINCE => intern!(py, "HTTP_IF_MODIFIED_SINCE"),
        _ => match name.as_str() {
            "x-forwarded-for" => intern!(py, "HTTP_X_FORWARDED_FOR"),
            "x-forwarded-proto" => intern!(py, "HTTP_X_FORWARDED_PROTO"),
            "x-real-ip" => intern!(py, "HTTP_X_REAL_IP"),
            "x-request-id" => intern!(py, "HTTP_X_REQUEST_ID"),
            _ => return None,
        },
    })
}

fn split_host<'a>(host: &'a str, default_port: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':').unwrap_or(default_port);
            return (&host[..end + 2], port);
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (host, default_port),
    }
}
