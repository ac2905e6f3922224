//! Gunicorn's request-hardening rules, checked on a request head that hyper has already
//! parsed. hyper enforces the byte-level grammar (tokens, CR/LF/NUL in values, obs-fold,
//! whitespace before the colon, chunk syntax); this module adds the semantic rules Gunicorn
//! 27 applies on top, each mapped to the status Gunicorn answers.

use std::borrow::Cow;

use http::{header, HeaderMap, Method, Uri, Version};

/// A request the server refuses before the application sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}: {detail}")]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "Bad Request", detail)
    }
    fn new(status: u16, reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            detail: detail.into(),
        }
    }
}

/// Request-size limits (`--limit-request-*`), already normalised the way Gunicorn does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Max bytes in the request line; 0 = unlimited. (HTTP/1 lines are measured raw by
    /// the server's framing scanner.)
    pub request_line: usize,
    /// Max header lines.
    pub fields: usize,
    /// Max bytes of one header line (name + value).
    pub field_size: usize,
    /// Max body bytes; 0 = unlimited.
    pub body: u64,
}

impl Limits {
    /// Apply Gunicorn's normalisation of the raw setting values.
    pub fn from_settings(line: i64, fields: i64, field_size: i64, body: i64) -> Self {
        let request_line = if line <= 0 { 0 } else { line.min(8190) as usize };
        let fields = if fields <= 0 || fields > 32768 {
            32768
        } else {
            fields as usize
        };
        // Gunicorn documents 0 as unlimited but replaces it with 8190; we do the same.
        let field_size = if field_size <= 0 { 8190 } else { field_size as usize };
        let body = body.max(0) as u64;
        Self {
            request_line,
            fields,
            field_size,
            body,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_settings(4094, 100, 8190, 0)
    }
}

/// What the front end must do with an accepted request beyond serving it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The connection must close after this response (e.g. a compressed transfer coding).
    pub force_close: bool,
    /// The client sent `Expect: 100-continue` on HTTP/1.1.
    pub expects_continue: bool,
    /// A body follows the head: `Transfer-Encoding`, or a `Content-Length` other than 0.
    pub has_body: bool,
    /// The request carries an `Upgrade` header.
    pub upgrade: bool,
}

fn is_http10(v: Version) -> bool {
    v == Version::HTTP_10 || v == Version::HTTP_09
}

/// The request target as the client wrote it (`RAW_URI`, the access log's request line):
/// origin form, authority form (CONNECT) or absolute form on HTTP/1.x; on HTTP/2, where
/// hyper rebuilds an absolute URI from the pseudo-headers, the `:path`.
pub fn raw_target(uri: &Uri, version: Version) -> Cow<'_, str> {
    let path_and_query = || Cow::Borrowed(uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str()));
    match (uri.scheme(), uri.authority()) {
        _ if version == Version::HTTP_2 => path_and_query(),
        (None, None) => path_and_query(),
        (None, Some(a)) => Cow::Borrowed(a.as_str()),
        _ => Cow::Owned(uri.to_string()),
    }
}

/// `repr()` of a str as Python writes it in Gunicorn's messages (`'get'`).
fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Checks the request line and headers; `Err` carries the status to answer with.
pub fn check_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    limits: &Limits,
    permit_unconventional_method: bool,
) -> Result<Accepted, Rejection> {
    let m = method.as_str();
    if !permit_unconventional_method {
        if !(3..=20).contains(&m.len()) {
            return Err(Rejection::bad_request(format!("Invalid HTTP method: {}", py_repr(m))));
        }
        if m.bytes().any(|b| b.is_ascii_lowercase() || b == b'#') {
            return Err(Rejection::bad_request(format!("Invalid HTTP method: {}", py_repr(m))));
        }
    }

    let line_len = m.len() + 1 + uri_len(uri) + 9;
    if limits.request_line > 0 && line_len > limits.request_line {
        return Err(Rejection::new(
            414,
            "URI Too Long",
            format!("Request Line is too large ({line_len} > {})", limits.request_line),
        ));
    }
    let is_asterisk = uri.path() == "*" && uri.scheme().is_none() && uri.authority().is_none();
    let is_authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if is_asterisk && method != Method::OPTIONS {
        return Err(Rejection::bad_request("'*' target is only allowed with OPTIONS"));
    }
    if is_authority_form && method != Method::CONNECT {
        return Err(Rejection::bad_request(
            "authority-form target is only allowed with CONNECT",
        ));
    }

    // One walk notes what the checks below need (a lookup per name would hash each).
    let (mut hosts, mut types, mut lengths) = (0usize, 0usize, 0usize);
    let (mut content_length, mut chunked, mut expect, mut upgrade) = (None, false, false, false);
    for (name, value) in headers {
        // Gunicorn counts the line as sent, its CRLF included. HTTP/1 heads are measured
        // raw by the server's framing scanner (which passes `usize::MAX` here); for
        // HTTP/2 this is the line HTTP/1 would have had: `name: value\r\n`.
        if name.as_str().len() + value.len() + 4 > limits.field_size {
            return Err(Rejection::new(
                431,
                "Request Header Fields Too Large",
                "limit request headers fields size",
            ));
        }
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_TYPE {
            types += 1;
        } else if name == header::CONTENT_LENGTH {
            lengths += 1;
            content_length = content_length.or(Some(value));
        } else if name == header::TRANSFER_ENCODING {
            chunked = true;
        } else if name == header::EXPECT {
            expect = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
    }
    if headers.len() > limits.fields {
        return Err(Rejection::new(
            431,
            "Request Header Fields Too Large",
            "limit request headers fields",
        ));
    }

    for (name, count) in [
        (header::HOST, hosts),
        (header::CONTENT_TYPE, types),
        (header::CONTENT_LENGTH, lengths),
    ] {
        if count > 1 {
            return Err(Rejection::bad_request(format!("duplicate {name} header")));
        }
    }

    let mut accepted = Accepted {
        has_body: chunked || content_length.is_some_and(|v| v.as_bytes() != b"0"),
        upgrade,
        ..Accepted::default()
    };
    if let Some(cl) = content_length {
        let b = cl.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err(Rejection::bad_request("invalid Content-Length"));
        }
        if chunked {
            return Err(Rejection::bad_request("Content-Length and Transfer-Encoding together"));
        }
        if limits.body > 0 {
            let len: u64 = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if len > limits.body {
                return Err(Rejection::new(
                    413,
                    "Payload Too Large",
                    format!("body larger than {} bytes", limits.body),
                ));
            }
        }
    }
    if chunked {
        if is_http10(version) {
            return Err(Rejection::bad_request("Transfer-Encoding on HTTP/1.0"));
        }
        accepted.force_close = check_transfer_encoding(headers)?;
    }

    // Gunicorn: any expectation but 100-continue is refused, whatever the version; a
    // 100-continue on HTTP/1.0 is ignored (RFC 9110 10.1.1).
    for v in expect.then(|| headers.get_all(header::EXPECT)).into_iter().flatten() {
        if !v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(Rejection::new(417, "Expectation Failed", "unsupported Expect"));
        }
        accepted.expects_continue = !is_http10(version);
    }
    Ok(accepted)
}

/// Returns whether the connection must be closed afterwards.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<bool, Rejection> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let s = v
            .to_str()
            .map_err(|_| Rejection::bad_request("invalid Transfer-Encoding"))?;
        // An empty element (`,chunked`) is an unknown coding to Gunicorn: 501.
        for c in s.split(',') {
            codings.push(c.trim_matches([' ', '\t']).to_ascii_lowercase());
        }
    }
    let mut force_close = false;
    let mut seen_chunked = false;
    for c in &codings {
        match c.as_str() {
            "chunked" => {
                if seen_chunked {
                    return Err(Rejection::bad_request("chunked applied twice"));
                }
                seen_chunked = true;
            }
            "identity" if seen_chunked => return Err(Rejection::bad_request("identity after chunked")),
            "identity" => {}
            "gzip" | "deflate" | "compress" => {
                if seen_chunked {
                    return Err(Rejection::bad_request("coding after chunked"));
                }
                force_close = true;
            }
            other => {
                return Err(Rejection::new(
                    501,
                    "Not Implemented",
                    format!("unsupported transfer coding: {other:?}"),
                ));
            }
        }
    }
    if !seen_chunked {
        return Err(Rejection::bad_request("Transfer-Encoding without final chunked"));
    }
    Ok(force_close)
}

fn uri_len(uri: &Uri) -> usize {
    match (uri.scheme(), uri.authority()) {
        (None, None) => uri.path_and_query().map_or(0, |p| p.as_str().len()),
        (None, Some(a)) => a.as_str().len(),
        _ => uri.to_string().len(),
    }
}

/// `SERVER_PROTOCOL` / the access log's `H`: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
pub fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 | Version::HTTP_09 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// WSGI "native strings" are latin-1: one char per byte.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// `PATH_INFO`: the percent-decoded path (as latin-1) with `script_name` removed from the
/// front. `None` when the path is outside `script_name` (Gunicorn answers 500).
pub fn path_info<'a>(path: &'a str, script_name: &str) -> Option<Cow<'a, str>> {
    // `OPTIONS *`: Gunicorn's PATH_INFO is the target itself, whatever SCRIPT_NAME is.
    if path == "*" {
        return Some(Cow::Borrowed("*"));
    }
    // Most paths have nothing to decode: ASCII without `%` is its own latin-1 decoding.
    let decoded = if path.is_ascii() && !path.contains('%') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(latin1(
            &percent_encoding::percent_decode(path.as_bytes()).collect::<Vec<u8>>(),
        ))
    };
    if script_name.is_empty() {
        return Some(decoded);
    }
    let rest = decoded.strip_prefix(script_name)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(match decoded {
        Cow::Borrowed(d) => Cow::Borrowed(&d[script_name.len()..]),
        Cow::Owned(ref d) => Cow::Owned(d[script_name.len()..].to_string()),
    })
}

/// Trailer fields Gunicorn refuses in a chunked request body.
pub fn forbidden_trailer(name: &str) -> bool {
    const FORBIDDEN: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "trailer",
        "authorization",
        "te",
    ];
    FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, target: &str, version: Version, hs: &[(&str, &str)]) -> Result<Accepted, Rejection> {
        let mut headers = HeaderMap::new();
        for (k, v) in hs {
            headers.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        check_head(
            &method,
            &target.parse().unwrap(),
            version,
            &headers,
            &Limits::default(),
            false,
        )
    }
    fn status(r: Result<Accepted, Rejection>) -> u16 {
        r.err().map_or(200, |e| e.status)
    }
    const V11: Version = Version::HTTP_11;

    #[test]
    fn methods() {
        assert_eq!(status(check("GET", "/", V11, &[])), 200);
        assert_eq!(status(check("get", "/", V11, &[])), 400);
        assert_eq!(status(check("GE", "/", V11, &[])), 400);
        assert_eq!(status(check("G#T", "/", V11, &[])), 400);
        assert_eq!(status(check("PROPFIND", "/", V11, &[])), 200);
    }

    #[test]
    fn targets() {
        assert_eq!(status(check("OPTIONS", "*", V11, &[])), 200);
        assert_eq!(status(check("GET", "*", V11, &[])), 400);
        assert_eq!(status(check("CONNECT", "example.com:443", V11, &[])), 200);
        assert_eq!(status(check("GET", "example.com:443", V11, &[])), 400);
        assert_eq!(status(check("GET", "http://example.com/x", V11, &[])), 200);
        let long = format!("/{}", "a".repeat(5000));
        assert_eq!(status(check("GET", &long, V11, &[])), 414);
    }

    #[test]
    fn framing() {
        assert_eq!(
            status(check(
                "POST",
                "/",
                V11,
                &[("content-length", "5"), ("content-length", "5")]
            )),
            400
        );
        assert_eq!(status(check("POST", "/", V11, &[("content-length", "+5")])), 400);
        assert_eq!(
            status(check(
                "POST",
                "/",
                V11,
                &[("content-length", "5"), ("transfer-encoding", "chunked")]
            )),
            400
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", "chunked")])),
            200
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", "chunked, chunked")])),
            400
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", "foo, chunked")])),
            501
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", "chunked, gzip")])),
            400
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", "chunked, identity")])),
            400
        );
        assert!(
            check("POST", "/", V11, &[("transfer-encoding", "gzip, chunked")])
                .unwrap()
                .force_close
        );
        assert_eq!(
            status(check(
                "POST",
                "/",
                Version::HTTP_10,
                &[("transfer-encoding", "chunked")]
            )),
            400
        );
        assert_eq!(status(check("GET", "/", V11, &[("host", "a"), ("host", "b")])), 400);
        assert_eq!(
            status(check("GET", "/", V11, &[("content-type", "a"), ("content-type", "a")])),
            400
        );
        // The duplicate reported is the first of host, content-type, content-length.
        let dup = check(
            "POST",
            "/",
            V11,
            &[
                ("content-length", "1"),
                ("content-length", "1"),
                ("host", "a"),
                ("host", "a"),
            ],
        );
        assert!(matches!(dup, Err(r) if r.detail.contains("host")));
        // What the front end reads from the same walk.
        let body = |hs: &[(&str, &str)]| check("POST", "/", V11, hs).unwrap().has_body;
        assert!(!body(&[]));
        assert!(!body(&[("content-length", "0")]));
        assert!(body(&[("content-length", "3")]));
        assert!(body(&[("transfer-encoding", "chunked")]));
        assert!(check("GET", "/", V11, &[("upgrade", "websocket")]).unwrap().upgrade);
        assert!(!check("GET", "/", V11, &[("connection", "upgrade")]).unwrap().upgrade);
    }

    #[test]
    fn expect_and_limits() {
        assert!(
            check("POST", "/", V11, &[("expect", "100-continue")])
                .unwrap()
                .expects_continue
        );
        assert_eq!(status(check("POST", "/", V11, &[("expect", "200-ok")])), 417);
        assert_eq!(
            status(check("POST", "/", Version::HTTP_10, &[("expect", "200-ok")])),
            417
        );
        let ignored = check("POST", "/", Version::HTTP_10, &[("expect", "100-continue")]).unwrap();
        assert!(!ignored.expects_continue);
        assert!(
            check(
                "POST",
                "/",
                V11,
                &[("expect", "100-continue"), ("expect", "100-Continue")]
            )
            .unwrap()
            .expects_continue
        );
        assert_eq!(
            status(check("POST", "/", V11, &[("transfer-encoding", ",chunked")])),
            501
        );
        let big = "x".repeat(9000);
        assert_eq!(status(check("GET", "/", V11, &[("x-big", &big)])), 431);
        let many: Vec<(String, &str)> = (0..101).map(|i| (format!("x-h{i}"), "v")).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(status(check("GET", "/", V11, &refs)), 431);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "100".parse().unwrap());
        let limits = Limits::from_settings(4094, 100, 8190, 10);
        let r = check_head(&Method::POST, &"/".parse().unwrap(), V11, &headers, &limits, false);
        assert_eq!(r.unwrap_err().status, 413);
    }

    #[test]
    fn path_info_decoding() {
        assert_eq!(path_info("/caf%C3%A9", "").unwrap(), "/caf\u{c3}\u{a9}");
        assert_eq!(path_info("/app/x", "/app").unwrap(), "/x");
        assert_eq!(path_info("/app", "/app").unwrap(), "");
        assert_eq!(path_info("/apple", "/app"), None);
        assert_eq!(path_info("*", "").unwrap(), "*");
        assert_eq!(path_info("*", "/app").unwrap(), "*");
        // Nothing to decode: the path itself, borrowed, with or without SCRIPT_NAME.
        assert!(matches!(path_info("/plain/x", ""), Some(Cow::Borrowed("/plain/x"))));
        assert!(matches!(path_info("/app/x", "/app"), Some(Cow::Borrowed("/x"))));
        assert_eq!(path_info("/app/a%20b", "/app").unwrap(), "/a b");
        // SCRIPT_NAME is matched against the decoded path.
        assert_eq!(path_info("/a%2Fpp/x", "/a/pp").unwrap(), "/x");
        assert_eq!(path_info("/apple%20x", "/app"), None);
        assert_eq!(path_info("/x%2fy", "").unwrap(), "/x/y");
    }

    #[test]
    fn limit_normalisation() {
        assert_eq!(
            Limits::from_settings(0, 0, 0, 0),
            Limits {
                request_line: 0,
                fields: 32768,
                field_size: 8190,
                body: 0
            }
        );
        assert_eq!(Limits::from_settings(10000, 50, 20000, 5).request_line, 8190);
    }
}
