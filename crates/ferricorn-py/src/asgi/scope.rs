//! The ASGI `http` scope, built in one pass over the request head.

use ferricorn_server::Request;
use http::Version;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::LoopCtx;
use crate::pyhelpers::{LastMade, LastStr};
use std::net::SocketAddr;

pub fn websocket_scope<'py>(
    py: Python<'py>,
    ctx: &LoopCtx,
    req: &Request,
    subprotocols: &[String],
) -> PyResult<Bound<'py, PyDict>> {
    let scope = http_scope(py, ctx, req)?;
    scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    scope.set_item(intern!(py, "scheme"), if req.https { "wss" } else { "ws" })?;
    scope.set_item(intern!(py, "subprotocols"), PyList::new(py, subprotocols)?)?;
    scope.del_item(intern!(py, "method"))?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    if let Some(t) = &req.conn.tls {
        extensions.set_item(intern!(py, "tls"), tls_extension(py, t)?)?;
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// The ASGI TLS extension (asgiref's "TLS" spec): the client's chain as PEM, leaf first.
fn tls_extension<'py>(py: Python<'py>, t: &ferricorn_server::TlsSession) -> PyResult<Bound<'py, PyDict>> {
    let ext = PyDict::new(py);
    let chain: Vec<String> = t
        .client_certs
        .iter()
        .map(|c| ferricorn_core::certificate_pem(c))
        .collect();
    ext.set_item("server_cert", py.None())?;
    ext.set_item("client_cert_chain", PyList::new(py, chain)?)?;
    ext.set_item("client_cert_name", py.None())?;
    ext.set_item("client_cert_error", py.None())?;
    ext.set_item("tls_version", t.version)?;
    ext.set_item("cipher_suite", t.cipher_suite)?;
    Ok(ext)
}

/// What every `http` scope starts as: the constant keys, the usual value of those a
/// request changes only sometimes (`http_version` "1.1", `method` "GET", `scheme`
/// "http", an empty `query_string`: each set per request cost ~200 instructions), and a
/// placeholder for each key a request sets, so that a copy has a hash table of the final
/// size (building the dict key by key grows it twice). Also the two `extensions` dicts: without and with
/// early hints (HTTP/1.1). Their values are empty dicts, shared by every request.
pub fn templates(py: Python<'_>, root_path: &str) -> PyResult<(Py<PyDict>, [Py<PyDict>; 2])> {
    let scope = PyDict::new(py);
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    scope.set_item(intern!(py, "method"), intern!(py, "GET"))?;
    scope.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
    for key in [
        intern!(py, "path"),
        intern!(py, "raw_path"),
        intern!(py, "headers"),
        intern!(py, "client"),
        intern!(py, "server"),
        intern!(py, "state"),
        intern!(py, "extensions"),
    ] {
        scope.set_item(key, py.None())?;
    }
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, b""))?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    let plain = PyDict::new(py);
    plain.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
    plain.set_item(intern!(py, "http.response.zerocopysend"), PyDict::new(py))?;
    plain.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
    let hints = plain.copy()?;
    hints.set_item(intern!(py, "http.response.early_hint"), PyDict::new(py))?;
    Ok((scope.unbind(), [plain.unbind(), hints.unbind()]))
}

static CLIENT_IP: LastStr = LastStr::new();
/// `scope["server"]`: the same tuple for every request on a listener.
static SERVER: LastMade<SocketAddr, PyTuple> = LastMade::new();

pub fn http_scope<'py>(py: Python<'py>, ctx: &LoopCtx, req: &Request) -> PyResult<Bound<'py, PyDict>> {
    let head = &req.head;
    let scope = ctx.scope_template.bind(py).copy()?;
    // The template holds HTTP/1.1, GET, http and an empty query string.
    match head.version {
        Version::HTTP_10 => scope.set_item(intern!(py, "http_version"), intern!(py, "1.0"))?,
        Version::HTTP_2 => scope.set_item(intern!(py, "http_version"), intern!(py, "2"))?,
        _ => {}
    }
    match head.method {
        http::Method::GET => {}
        http::Method::POST => scope.set_item(intern!(py, "method"), intern!(py, "POST"))?,
        _ => scope.set_item(intern!(py, "method"), head.method.as_str())?,
    }
    if req.https {
        scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
    }
    let raw_path = head.uri.path();
    // ASGI: `path` is the full path below the server, so it includes `root_path`.
    if ctx.root_path.is_empty() && !raw_path.contains('%') {
        scope.set_item(intern!(py, "path"), crate::pyhelpers::ascii_str(py, raw_path)?)?;
    } else {
        let decoded: Vec<u8> = percent_encoding::percent_decode(raw_path.as_bytes()).collect();
        let path = format!("{}{}", ctx.root_path, String::from_utf8_lossy(&decoded));
        scope.set_item(intern!(py, "path"), path)?;
    }
    if ctx.root_path.is_empty() {
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path.as_bytes()))?;
    } else {
        // As uvicorn: `raw_path` is `path` before decoding, so it has the prefix too.
        let full = [ctx.root_path.as_bytes(), raw_path.as_bytes()].concat();
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &full))?;
    }
    if let Some(q) = head.uri.query() {
        scope.set_item(intern!(py, "query_string"), PyBytes::new(py, q.as_bytes()))?;
    }
    let headers = PyList::empty(py);
    for (name, value) in &head.headers {
        let pair = PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?;
        headers.append(pair)?;
    }
    if head.version == Version::HTTP_2 && !head.headers.contains_key(http::header::HOST) {
        if let Some(authority) = head.uri.authority() {
            headers.append(PyTuple::new(
                py,
                [
                    PyBytes::new(py, b"host"),
                    PyBytes::new(py, authority.as_str().as_bytes()),
                ],
            )?)?;
        }
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    // A trusted proxy's `X-Forwarded-For` names the client, as uvicorn's proxy headers
    // (which Gunicorn's UvicornWorker turns on with `forwarded_allow_ips`) do.
    match forwarded_for(ctx, req) {
        Some(host) => scope.set_item(intern!(py, "client"), (host, 0))?,
        None => set_client(py, &scope, req)?,
    }
    match (req.conn.local, req.conn.local_text()) {
        (Some(l), Some(t)) => {
            let server = SERVER.get_or_make(py, &l, || (t.ip.as_str(), l.port()).into_pyobject(py))?;
            scope.set_item(intern!(py, "server"), server)?
        }
        _ => scope.set_item(intern!(py, "server"), py.None())?,
    }
    // Each request gets a shallow copy of the lifespan state, as the spec asks.
    scope.set_item(intern!(py, "state"), ctx.state.bind(py).copy()?)?;
    // Advertised extensions: pathsend (Starlette's FileResponse then hands the file to
    // the server instead of reading it into Python), zerocopysend, trailers, and early
    // hints where the protocol can carry them (HTTP/1.1).
    let extensions = ctx.extensions_templates[usize::from(req.early_hints.is_some())]
        .bind(py)
        .copy()?;
    if let Some(t) = &req.conn.tls {
        extensions.set_item(intern!(py, "tls"), tls_extension(py, t)?)?;
    }
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// The TCP (or PROXY protocol) peer, or what a trusted `Forwarded` header said.
fn set_client(py: Python<'_>, scope: &Bound<'_, PyDict>, req: &Request) -> PyResult<()> {
    // The connection's addresses as text are made once per connection (see ConnInfo).
    match (req.client, req.conn.peer_text()) {
        (Some(p), Some(t)) if Some(p) == req.conn.peer => {
            scope.set_item(intern!(py, "client"), (CLIENT_IP.get(py, &t.ip), p.port()))
        }
        (Some(p), _) => scope.set_item(intern!(py, "client"), (p.ip().to_string(), p.port())),
        (None, _) => scope.set_item(intern!(py, "client"), py.None()),
    }
}

/// uvicorn's rule for `X-Forwarded-For` from a trusted peer: the right-most address that
/// is not itself a trusted proxy (the left-most when all are, or when any peer is).
fn forwarded_for(ctx: &LoopCtx, req: &Request) -> Option<String> {
    if !req.trusted_proxy || req.client != req.conn.peer {
        return None;
    }
    let value = req.head.headers.get("x-forwarded-for")?.to_str().ok()?;
    let hosts: Vec<&str> = value.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    let first = *hosts.first()?;
    if ctx.forwarded_allow.allows_any() {
        return Some(first.to_string());
    }
    let untrusted = hosts.iter().rev().find(|h| {
        h.parse::<std::net::IpAddr>()
            .map_or(true, |ip| !ctx.forwarded_allow.allows(Some(ip)))
    });
    Some(untrusted.copied().unwrap_or(first).to_string())
}
