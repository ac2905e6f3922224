//! Gunicorn's access log: the same `%(atom)s` format language, the same atoms, the same
//! escaping, rendered in Rust from what the front end saw (no GIL, no environ).

use std::fmt::Write;
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;

/// Gunicorn's default (Apache combined).
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Atom { key: String, spec: String },
}

/// A compiled `--access-logformat`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessFormat {
    /// The format as configured (Python loggers get it as the record's `msg`).
    source: String,
    segments: Vec<Segment>,
    /// Whether any atom needs request or response headers (to skip copying them).
    wants_headers: bool,
    /// `--access-log-json`: one JSON object per line instead of the format.
    json: bool,
}

/// Everything one access-log line can show.
pub struct AccessRecord<'a> {
    pub remote_addr: Option<String>,
    pub method: &'a str,
    pub raw_uri: &'a str,
    pub protocol: &'a str,
    pub path_info: &'a str,
    pub query: &'a str,
    pub status: u16,
    pub sent: Option<u64>,
    pub duration: Duration,
    pub request_headers: &'a HeaderMap,
    pub response_headers: &'a HeaderMap,
    pub scheme: &'a str,
    pub server_name: &'a str,
    pub server_port: &'a str,
    pub pid: u32,
    /// Gunicorn's error handler logs from a minimal environ: `u`, `f`, `a` and most
    /// `{var}e` atoms are `-` (request headers for `{name}i` are still there).
    pub minimal_environ: bool,
    /// Environ entries read from the application's environ for `{var}e` atoms the record
    /// does not know itself (see [`AccessFormat::environ_keys`]): lower-case name, `str()`
    /// of the value.
    pub extra_environ: &'a [(String, String)],
}

impl AccessFormat {
    pub fn compile(format: &str) -> Self {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut chars = format.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            match chars.peek().map(|(_, c)| *c) {
                Some('%') => {
                    chars.next();
                    text.push('%');
                }
                Some('(') => {
                    let rest = &format[i + 2..];
                    let Some(close) = rest.find(')') else {
                        text.push_str(&format[i..]);
                        break;
                    };
                    let key = rest[..close].to_string();
                    // Conversion spec: flags, width, precision, then one letter.
                    let after = &rest[close + 1..];
                    let spec_len = after
                        .find(|ch: char| ch.is_ascii_alphabetic())
                        .map_or(after.len(), |p| p + 1);
                    let spec = after[..spec_len].to_string();
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Atom { key, spec });
                    let consumed = 2 + close + 1 + spec_len;
                    while chars.peek().is_some_and(|(j, _)| *j < i + consumed) {
                        chars.next();
                    }
                }
                _ => text.push('%'),
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        let wants_headers = segments
            .iter()
            .any(|s| matches!(s, Segment::Atom { key, .. } if key.starts_with('{')));
        Self {
            source: format.to_string(),
            segments,
            wants_headers,
            json: false,
        }
    }

    /// The `{var}e` names (lower case) this format shows: the WSGI bridge reads them
    /// from the environ it passed to the app, as Gunicorn logs that dict after the app
    /// ran (with what middleware set or changed: `REMOTE_USER`, a request id, the
    /// `REMOTE_ADDR` of a proxy fix...). The record's own values stand in where there
    /// is no environ (ASGI, the server's error pages).
    pub fn environ_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for s in &self.segments {
            let Segment::Atom { key, .. } = s else { continue };
            if key == "h" && !keys.iter().any(|k| k == "remote_addr") {
                keys.push("remote_addr".into());
                continue;
            }
            let lower = key.to_ascii_lowercase();
            let Some(name) = lower.strip_prefix('{').and_then(|k| k.strip_suffix("}e")) else {
                continue;
            };
            if !keys.iter().any(|k| k == name) {
                keys.push(name.to_string());
            }
        }
        keys
    }

    /// Headers are needed for this format's atoms, or for the whole atom dict a Python
    /// access logger gets.
    pub fn wants_headers(&self) -> bool {
        self.wants_headers || crate::log::access_routed()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// `--access-log-json`: the default atoms as named JSON fields.
    pub fn json() -> Self {
        Self {
            source: String::new(),
            segments: Vec::new(),
            wants_headers: false,
            json: true,
        }
    }

    pub fn render(&self, rec: &AccessRecord<'_>) -> String {
        if self.json {
            return render_json(rec);
        }
        let mut out = String::with_capacity(160);
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Atom { key, spec } => {
                    let value = atom(rec, key);
                    format_value(&mut out, &value, spec);
                }
            }
        }
        out
    }
}

/// The fields of Gunicorn's default format (and a few more), with JSON types: the same
/// values the atoms give (`h u t r m U q H s B f a D p`), missing ones as `null`.
fn render_json(rec: &AccessRecord<'_>) -> String {
    fn opt(v: AtomValue) -> Option<String> {
        match v {
            AtomValue::Str(s) if s != "-" => Some(s),
            AtomValue::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
    let text = |k: &str| opt(atom(rec, k));
    let mut out = String::with_capacity(320);
    out.push('{');
    let mut field = |name: &str, value: Option<String>, quoted: bool| {
        if out.len() > 1 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\": ");
        match value {
            None => out.push_str("null"),
            Some(v) if quoted => json_string(&mut out, &v),
            Some(v) => out.push_str(&v),
        }
    };
    field("time", Some(crate::log::timestamp(b"%Y-%m-%dT%H:%M:%S%z\0")), true);
    field("remote_addr", text("h"), true);
    field("user", text("u"), true);
    field("request", text("r"), true);
    field("method", text("m"), true);
    field("path", text("U"), true);
    field("query", Some(rec.query.to_string()), true);
    field("protocol", text("H"), true);
    field("status", Some(rec.status.to_string()), false);
    field("bytes", rec.sent.map(|n| n.to_string()), false);
    field("referer", text("f"), true);
    field("user_agent", text("a"), true);
    field("duration_us", text("D"), false);
    field("pid", Some(rec.pid.to_string()), false);
    out.push('}');
    out
}

/// A JSON string literal (RFC 8259 escaping).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub enum AtomValue {
    Str(String),
    Int(u64),
    Missing,
}

/// Every atom of a record, keyed as Gunicorn's `Logger.atoms()` keys them (`{name}i`,
/// `{name}o`, `{var}e` in lower case), for a Python access logger's `record.args`.
pub fn atoms(rec: &AccessRecord<'_>) -> Vec<(String, AtomValue)> {
    let mut out: Vec<(String, AtomValue)> = [
        "h", "l", "u", "t", "r", "s", "m", "U", "q", "H", "b", "B", "f", "a", "T", "D", "M", "L", "p",
    ]
    .iter()
    .map(|k| {
        let v = match atom(rec, k) {
            // Gunicorn's `s` is the status text; `B` is None when nothing was sent.
            AtomValue::Int(n) if *k == "s" => AtomValue::Str(n.to_string()),
            AtomValue::Str(s) if *k == "B" && s == "None" => AtomValue::Missing,
            v => v,
        };
        (k.to_string(), v)
    })
    .collect();
    // A repeated header: its last value for `{name}i` (Gunicorn builds a dict from the
    // list), all of them joined for the environ's `HTTP_*`.
    for name in rec.request_headers.keys() {
        let n = name.as_str();
        if let Some(v) = last_header(rec.request_headers, n) {
            out.push((format!("{{{n}}}i"), AtomValue::Str(v)));
        }
        if let Some(v) = header(rec.request_headers, n) {
            out.push((format!("{{http_{}}}e", n.replace('-', "_")), AtomValue::Str(v)));
        }
    }
    for name in rec.response_headers.keys() {
        if let Some(v) = last_header(rec.response_headers, name.as_str()) {
            out.push((format!("{{{name}}}o"), AtomValue::Str(v)));
        }
    }
    for var in ENVIRON_VARS {
        if let Some(v) = environ(rec, var) {
            out.push((format!("{{{}}}e", var.to_ascii_lowercase()), AtomValue::Str(v)));
        }
    }
    for (name, v) in rec.extra_environ {
        out.push((format!("{{{name}}}e"), AtomValue::Str(v.clone())));
    }
    out
}

/// The environ variables an access record knows besides the `HTTP_*` headers.
const ENVIRON_VARS: [&str; 11] = [
    "REQUEST_METHOD",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "PATH_INFO",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "wsgi.url_scheme",
    "SERVER_NAME",
    "SERVER_PORT",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
];

fn atom(rec: &AccessRecord<'_>, key: &str) -> AtomValue {
    use AtomValue::*;
    let secs = rec.duration.as_secs();
    let micros = rec.duration.subsec_micros();
    match key {
        // Gunicorn's `h` is the environ's REMOTE_ADDR, which a proxy-fix middleware may
        // have rewritten.
        "h" => match rec.extra_environ.iter().find(|(k, _)| k == "remote_addr") {
            Some((_, v)) => Str(v.clone()),
            None => rec.remote_addr.clone().map_or(Missing, Str),
        },
        "l" => Str("-".into()),
        "u" | "f" | "a" if rec.minimal_environ => Str("-".into()),
        "u" => basic_auth_user(rec.request_headers).map_or(Str("-".into()), Str),
        "t" => Str(crate::log::timestamp(b"[%d/%b/%Y:%H:%M:%S %z]\0")),
        "r" => Str(format!("{} {} {}", rec.method, rec.raw_uri, rec.protocol)),
        "m" => Str(rec.method.into()),
        "U" => Str(rec.path_info.into()),
        "q" => Str(rec.query.into()),
        "H" => Str(rec.protocol.into()),
        "s" => Int(u64::from(rec.status)),
        "B" => rec.sent.map_or(Str("None".into()), Int),
        "b" => rec.sent.map_or(Str("-".into()), |n| Str(n.to_string())),
        "f" => header(rec.request_headers, "referer").map_or(Str("-".into()), Str),
        "a" => header(rec.request_headers, "user-agent").map_or(Str("-".into()), Str),
        "T" => Int(secs),
        "M" => Int(secs * 1000 + u64::from(micros / 1000)),
        "D" => Int(secs * 1_000_000 + u64::from(micros)),
        "L" => Str(format!("{secs}.{micros:06}")),
        "p" => Str(format!("<{}>", rec.pid)),
        k if k.starts_with('{') => {
            // Gunicorn's SafeAtoms lowers the whole key: `{User-Agent}I`, `{REQUEST_METHOD}E`.
            let lower = k.to_ascii_lowercase();
            let inner = &lower[1..];
            if let Some(name) = inner.strip_suffix("}i") {
                last_header(rec.request_headers, name).map_or(Missing, Str)
            } else if let Some(name) = inner.strip_suffix("}o") {
                last_header(rec.response_headers, name).map_or(Missing, Str)
            } else if let Some(name) = inner.strip_suffix("}e") {
                if let Some((_, v)) = rec.extra_environ.iter().find(|(k, _)| k == name) {
                    return Str(v.clone());
                }
                let var = if name.starts_with("wsgi.") {
                    name.to_string()
                } else {
                    name.to_ascii_uppercase()
                };
                environ(rec, &var).map_or(Missing, Str)
            } else {
                Missing
            }
        }
        _ => Missing,
    }
}

/// A header as the environ holds it: repeated values joined with `,`.
fn header(h: &HeaderMap, name: &str) -> Option<String> {
    let mut values = h.get_all(name).iter();
    let mut out = latin1(values.next()?.as_bytes());
    for v in values {
        out.push(',');
        out.push_str(&latin1(v.as_bytes()));
    }
    Some(out)
}

/// Gunicorn builds a dict from the header list, so the last value of a repeated header wins.
fn last_header(h: &HeaderMap, name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    h.get_all(name.as_str())
        .iter()
        .next_back()
        .map(|v| latin1(v.as_bytes()))
}

fn environ(rec: &AccessRecord<'_>, name: &str) -> Option<String> {
    const MINIMAL: [&str; 5] = [
        "REQUEST_METHOD",
        "RAW_URI",
        "SERVER_PROTOCOL",
        "QUERY_STRING",
        "REMOTE_ADDR",
    ];
    if rec.minimal_environ && !MINIMAL.contains(&name) {
        return None;
    }
    Some(match name {
        "REQUEST_METHOD" => rec.method.into(),
        "RAW_URI" | "REQUEST_URI" => rec.raw_uri.into(),
        "SERVER_PROTOCOL" => rec.protocol.into(),
        "PATH_INFO" => rec.path_info.into(),
        "QUERY_STRING" => rec.query.into(),
        "REMOTE_ADDR" => rec.remote_addr.clone()?,
        "wsgi.url_scheme" => rec.scheme.into(),
        "SERVER_NAME" => rec.server_name.into(),
        "SERVER_PORT" => rec.server_port.into(),
        "CONTENT_TYPE" => header(rec.request_headers, "content-type")?,
        "CONTENT_LENGTH" => header(rec.request_headers, "content-length")?,
        other => {
            let h = other.strip_prefix("HTTP_")?.replace('_', "-");
            header(rec.request_headers, &h)?
        }
    })
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn basic_auth_user(h: &HeaderMap) -> Option<String> {
    let v = h.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, creds) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(creds.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    // An empty user is `-`, as Gunicorn's `u` (a CLF field never left empty).
    Some(text.split_once(':').map_or(text.clone(), |(u, _)| u.to_string())).filter(|u| !u.is_empty())
}

/// Python `%`-formatting of one value (flags, width, precision, `s`/`r`/`d`
/// conversions); strings get Gunicorn's `"` escaping.
fn format_value(out: &mut String, value: &AtomValue, spec: &str) {
    let conv = spec.chars().last().unwrap_or('s');
    let body = &spec[..spec.len().saturating_sub(1)];
    let flags_end = body
        .find(|c: char| !matches!(c, '-' | '0' | '+' | ' ' | '#'))
        .unwrap_or(body.len());
    let flags = &body[..flags_end];
    let (width, precision): (usize, Option<usize>) = match body[flags_end..].split_once('.') {
        Some((w, p)) => (w.parse().unwrap_or(0), Some(p.parse::<usize>().unwrap_or(0))),
        None => (body[flags_end..].parse().unwrap_or(0), None),
    };
    let left = flags.contains('-');
    let number = match (value, conv) {
        (AtomValue::Int(n), 'd' | 'i' | 'u') => Some(*n as i64),
        (AtomValue::Str(s), 'd' | 'i' | 'u') => s.parse::<i64>().ok(),
        _ => None,
    };
    let mut text = if let Some(n) = number {
        let sign = if n < 0 {
            "-"
        } else if flags.contains('+') {
            "+"
        } else if flags.contains(' ') {
            " "
        } else {
            ""
        };
        let digits = n.unsigned_abs().to_string();
        let digits = match precision {
            Some(p) if p > digits.len() => format!("{}{digits}", "0".repeat(p - digits.len())),
            _ => digits,
        };
        let zeros = if flags.contains('0') && !left {
            width.saturating_sub(sign.len() + digits.len())
        } else {
            0
        };
        format!("{sign}{}{digits}", "0".repeat(zeros))
    } else {
        match (value, conv) {
            (AtomValue::Int(n), 'r' | 'a') => n.to_string(),
            (AtomValue::Str(s), 'r' | 'a') => python_repr(s),
            (AtomValue::Missing, 'r' | 'a') => "'-'".to_string(),
            (AtomValue::Int(n), _) => n.to_string(),
            (AtomValue::Str(s), _) => s.replace('"', "\\\""),
            (AtomValue::Missing, _) => "-".to_string(),
        }
    };
    if let (Some(p), 's' | 'r' | 'a') = (precision, conv) {
        if let Some((cut, _)) = text.char_indices().nth(p) {
            text.truncate(cut);
        }
    }
    let pad = width.saturating_sub(text.chars().count());
    if pad > 0 && !left {
        out.extend(std::iter::repeat_n(' ', pad));
    }
    let _ = out.write_str(&text);
    if pad > 0 && left {
        out.extend(std::iter::repeat_n(' ', pad));
    }
}

/// Python's `repr()` of a `str` (the quotes it picks and the escapes it writes).
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(req: &'a HeaderMap, resp: &'a HeaderMap) -> AccessRecord<'a> {
        AccessRecord {
            remote_addr: Some("127.0.0.1".into()),
            method: "GET",
            raw_uri: "/a%20b?x=1",
            protocol: "HTTP/1.1",
            path_info: "/a b",
            query: "x=1",
            status: 200,
            sent: Some(14),
            duration: Duration::from_micros(1_234_567),
            request_headers: req,
            response_headers: resp,
            scheme: "http",
            server_name: "127.0.0.1",
            server_port: "8000",
            pid: 42,
            minimal_environ: false,
            extra_environ: &[],
        }
    }

    #[test]
    fn default_format_matches_gunicorn_shape() {
        let mut req = HeaderMap::new();
        req.insert("user-agent", "curl/8 \"x\"".parse().unwrap());
        req.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        let resp = HeaderMap::new();
        let line = AccessFormat::compile(DEFAULT_FORMAT).render(&record(&req, &resp));
        let (head, tail) = line.split_once('[').unwrap();
        assert_eq!(head, "127.0.0.1 - user ");
        let tail = &tail[tail.find(']').unwrap() + 1..];
        assert_eq!(tail, r#" "GET /a%20b?x=1 HTTP/1.1" 200 14 "-" "curl/8 \"x\"""#);
    }

    #[test]
    fn conversion_specs_follow_python() {
        let req = HeaderMap::new();
        let resp = HeaderMap::new();
        let rec = record(&req, &resp);
        let line = |f: &str| AccessFormat::compile(f).render(&rec);
        assert_eq!(line("%(m).1s|%(m)5s|%(m)-5s|"), "G|  GET|GET  |");
        assert_eq!(line("%(T)03d|%(s)+d|%(s)06d|%(T).3d"), "001|+200|000200|001");
        assert_eq!(line("%(h)r %(m)r"), "'127.0.0.1' 'GET'");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a'\"b\n"), "'a\\'\"b\\n'");
    }

    #[test]
    fn every_atom() {
        let mut req = HeaderMap::new();
        req.append("x-req", "1".parse().unwrap());
        req.append("x-req", "2".parse().unwrap());
        let mut resp = HeaderMap::new();
        resp.insert("content-type", "text/plain".parse().unwrap());
        let f = AccessFormat::compile("%(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(T)s %(M)s %(D)s %(L)s %(p)s %({X-Req}i)s %({content-type}o)s %({wsgi.url_scheme}e)s %({nope}i)s %(zz)s %(s)5d|%%");
        assert_eq!(
            f.render(&record(&req, &resp)),
            "GET /a b x=1 HTTP/1.1 200 14 1 1234 1234567 1.234567 <42> 2 text/plain http - -   200|%"
        );
        assert!(f.wants_headers());
    }

    #[test]
    fn repeated_headers_and_key_case() {
        let mut req = HeaderMap::new();
        req.append("referer", "a".parse().unwrap());
        req.append("referer", "b".parse().unwrap());
        req.append("authorization", "Basic OnB3".parse().unwrap()); // ":pw": no user
        let resp = HeaderMap::new();
        // `f` is the environ's HTTP_REFERER (values joined); `{...}i` the last value; keys
        // in any case, as Gunicorn's SafeAtoms lowers them.
        let f = AccessFormat::compile("%(u)s %(f)s %({Referer}I)s %({http_referer}e)s %({REQUEST_METHOD}E)s");
        assert_eq!(f.render(&record(&req, &resp)), "- a,b b a,b GET");
        let atoms = atoms(&record(&req, &resp));
        let get = |k: &str| atoms.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        assert!(matches!(get("s"), Some(AtomValue::Str(s)) if s == "200"));
        assert!(matches!(get("{referer}i"), Some(AtomValue::Str(s)) if s == "b"));
        assert!(matches!(get("{request_method}e"), Some(AtomValue::Str(s)) if s == "GET"));
    }
}
