//! Access-log lines, written by the front end when a response body is finished (so the
//! byte count is exact), for every bridge and for the server's own error responses.

use std::sync::Arc;
use std::time::Instant;

use ferricorn_core::access_log::{AccessFormat, AccessRecord};
use http::{header, HeaderMap};

use crate::ConnInfo;

/// What a line needs, captured from the request before the app takes it.
pub(crate) struct Pending {
    format: Arc<AccessFormat>,
    start: Instant,
    method: http::Method,
    raw_uri: String,
    protocol: &'static str,
    path_info: String,
    query: String,
    remote: Option<String>,
    server_name: String,
    server_port: String,
    scheme: &'static str,
    request_headers: HeaderMap,
    response_headers: HeaderMap,
    status: u16,
    /// A server-written error page: logged as Gunicorn's error handler logs it, from an
    /// empty environ and a fresh response (no request headers, 0 bytes, `U` = None).
    error_page: bool,
    /// What a bridge read from the application's environ (see [`AccessEnviron`]).
    extra_environ: Vec<(String, String)>,
}

/// Environ entries for `{var}e` atoms, which a bridge attaches to a response's
/// extensions (see `AccessFormat::environ_keys`).
#[derive(Debug, Clone, Default)]
pub struct AccessEnviron(pub Vec<(String, String)>);

/// The request headers the default atoms read (`u`, `f`, `a`).
const DEFAULT_ATOM_HEADERS: [header::HeaderName; 3] = [header::AUTHORIZATION, header::REFERER, header::USER_AGENT];

impl Pending {
    pub fn begin<B>(
        format: Arc<AccessFormat>,
        req: &http::Request<B>,
        info: &ConnInfo,
        script_name: &str,
    ) -> Box<Self> {
        let request_headers = if format.wants_headers() {
            req.headers().clone()
        } else {
            let mut h = HeaderMap::new();
            for name in DEFAULT_ATOM_HEADERS {
                if let Some(v) = req.headers().get(&name) {
                    h.insert(name, v.clone());
                }
            }
            h
        };
        let uri = req.uri();
        let raw_uri = ferricorn_core::request::raw_target(uri, req.version());
        Box::new(Self {
            format,
            start: Instant::now(),
            method: req.method().clone(),
            raw_uri: raw_uri.into_owned(),
            protocol: ferricorn_core::request::protocol_name(req.version()),
            path_info: ferricorn_core::request::path_info(uri.path(), script_name)
                .unwrap_or_default()
                .into_owned(),
            query: ferricorn_core::request::latin1(uri.query().unwrap_or("").as_bytes()),
            remote: info.peer.map(|p| p.ip().to_string()),
            server_name: info.local.map(|l| l.ip().to_string()).unwrap_or_default(),
            server_port: info.local.map(|l| l.port().to_string()).unwrap_or_default(),
            scheme: info.scheme,
            request_headers,
            response_headers: HeaderMap::new(),
            status: 0,
            error_page: false,
            extra_environ: Vec::new(),
        })
    }

    pub fn response<B>(&mut self, resp: &http::Response<B>) {
        self.status = resp.status().as_u16();
        if resp.extensions().get::<crate::error_page::ServerErrorPage>().is_some() {
            self.error_page = true;
            self.path_info = "None".into();
            return;
        }
        if self.format.wants_headers() {
            self.response_headers = resp.headers().clone();
        }
        if let Some(extra) = resp.extensions().get::<AccessEnviron>() {
            self.extra_environ = extra.0.clone();
        }
    }

    pub fn finish(self, sent: u64) {
        let sent = if self.error_page { 0 } else { sent };
        let rec = AccessRecord {
            remote_addr: self.remote.clone(),
            method: self.method.as_str(),
            raw_uri: &self.raw_uri,
            protocol: self.protocol,
            path_info: &self.path_info,
            query: &self.query,
            status: self.status,
            sent: Some(sent),
            duration: self.start.elapsed(),
            request_headers: &self.request_headers,
            response_headers: &self.response_headers,
            scheme: self.scheme,
            server_name: &self.server_name,
            server_port: &self.server_port,
            pid: std::process::id(),
            minimal_environ: self.error_page,
            extra_environ: if self.error_page { &[] } else { &self.extra_environ },
        };
        ferricorn_core::log::write_access_record(&self.format, &rec);
    }
}

/// An access line for a request hyper refused while parsing (the front end never saw
/// it): only the request line is known, as in Gunicorn's error handler.
pub(crate) fn log_refused(format: &AccessFormat, request_line: &str, status: u16, info: &ConnInfo) {
    let mut parts = request_line.splitn(3, ' ');
    let method = parts.next().unwrap_or("-");
    let raw_uri = parts.next().unwrap_or("-");
    let protocol = parts.next().unwrap_or("-");
    let empty = HeaderMap::new();
    let rec = AccessRecord {
        remote_addr: info.peer.map(|p| p.ip().to_string()),
        method,
        raw_uri,
        protocol,
        path_info: "None",
        query: "",
        status,
        sent: Some(0),
        duration: std::time::Duration::ZERO,
        request_headers: &empty,
        response_headers: &empty,
        scheme: info.scheme,
        server_name: "",
        server_port: "",
        pid: std::process::id(),
        minimal_environ: true,
        extra_environ: &[],
    };
    ferricorn_core::log::write_access_record(format, &rec);
}
