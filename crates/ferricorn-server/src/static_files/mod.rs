//! Static files served from Rust (`--static-map`), before the application is called.
//!
//! A request under a mapped prefix is answered here completely: path checks, validators,
//! conditional requests, byte ranges and pre-compressed variants. Everything else (and,
//! with `--static-fallthrough`, files that are missing) goes on to the application.

mod cache;
pub(crate) mod chunks;
mod conditional;
mod open;
mod path;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use ferricorn_core::static_files::{is_hashed_name, StaticConfig};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::ResponseBody;
use chunks::{FileChunks, Piece, Source};
use conditional::{Precondition, Ranges, Validators};
use path::{Refused, RelPath};

/// The relative file path a URL path under a mount decodes to (for the fuzz targets).
#[doc(hidden)]
pub fn decode_path(rest: &str, dotfiles: bool) -> Option<String> {
    path::decode(rest, dotfiles).ok().map(|p| p.rel)
}

/// The codings a `.br`/`.zst`/`.gz` sibling may provide, in order of preference.
const VARIANTS: [(&str, &str); 3] = [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")];

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What a path segment must escape in a `Location` header.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The mapped directories of one worker, opened once at start-up.
#[derive(Debug)]
pub struct StaticFiles {
    cfg: StaticConfig,
    roots: Vec<open::Root>,
    cache_control: Vec<HeaderValue>,
    small: cache::SmallFiles,
}

impl StaticFiles {
    /// Opens every mapped directory; `None` when nothing is mapped.
    pub fn open(cfg: StaticConfig) -> std::io::Result<Option<Self>> {
        if cfg.is_empty() {
            return Ok(None);
        }
        let roots = cfg
            .mounts
            .iter()
            .map(|m| open::Root::open(&m.dir))
            .collect::<std::io::Result<Vec<_>>>()?;
        let cache_control = cfg
            .mounts
            .iter()
            .map(|m| HeaderValue::from_str(&format!("public, max-age={}", m.max_age)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        Ok(Some(Self {
            cfg,
            roots,
            cache_control,
            small: cache::SmallFiles::default(),
        }))
    }

    /// The response for a request under a mapped prefix, or `None` when the request is
    /// the application's.
    pub(crate) fn serve(&self, head: &http::request::Parts) -> Option<Response<ResponseBody>> {
        let url_path = head.uri.path();
        let (index, rest) = self
            .cfg
            .mounts
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.strip(url_path).map(|rest| (i, rest)))?;
        let found = match path::decode(rest, self.cfg.dotfiles) {
            Ok(rel) => self.lookup(index, head, &rel),
            // Never handed to the app: it would see a path that escapes the mount.
            Err(Refused::Hostile) => return Some(not_found()),
            Err(Refused::Hidden) => None,
        };
        match found {
            Some(r) => Some(r),
            None if self.cfg.fallthrough => None,
            None => Some(not_found()),
        }
    }

    /// The response for an existing file; `None` when there is none to serve.
    fn lookup(&self, index: usize, head: &http::request::Parts, rel: &RelPath) -> Option<Response<ResponseBody>> {
        let root = &self.roots[index];
        let follow = self.cfg.follow_symlinks;
        let file = root.open_file(&rel.rel, follow).ok()?;
        let meta = file.metadata().ok()?;
        let (file, meta, rel_name, name) = if meta.is_dir() {
            let index_name = self.cfg.index.as_ref()?;
            let index_rel = if rel.rel == "." {
                index_name.clone()
            } else {
                format!("{}/{index_name}", rel.rel)
            };
            let (file, meta) = open_regular(root, &index_rel, follow)?;
            if !rel.dir_request {
                let prefix = &self.cfg.mounts[index].prefix;
                return Some(redirect_to_slash(head, prefix, &rel.rel));
            }
            (file, meta, index_rel, index_name.as_str())
        } else if meta.is_file() && !rel.dir_request {
            (file, meta, rel.rel.clone(), rel.name())
        } else {
            return None;
        };
        if head.method != Method::GET && head.method != Method::HEAD {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(resp);
        }
        let content_type = content_type(name);
        let (file, meta, coding) = match self.variant(root, head, &rel_name, name) {
            Some((f, m, coding)) => (f, m, Some(coding)),
            None => (file, meta, None),
        };
        let cache_control = if self.cfg.immutable && is_hashed_name(name) {
            HeaderValue::from_static(IMMUTABLE)
        } else {
            self.cache_control[index].clone()
        };
        Some(respond(
            head,
            file,
            &meta,
            content_type,
            coding,
            cache_control,
            &self.small,
        ))
    }

    /// A pre-compressed sibling the client accepts (`app.js.br` for `app.js`).
    fn variant(
        &self,
        root: &open::Root,
        head: &http::request::Parts,
        rel_name: &str,
        name: &str,
    ) -> Option<(File, std::fs::Metadata, &'static str)> {
        if VARIANTS.iter().any(|(_, ext)| name.ends_with(ext)) {
            return None;
        }
        let accept = head.headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
        VARIANTS
            .iter()
            .filter(|(coding, _)| accepts(accept, coding))
            .find_map(|(coding, ext)| {
                open_regular(root, &format!("{rel_name}{ext}"), self.cfg.follow_symlinks).map(|(f, m)| (f, m, *coding))
            })
    }
}

fn open_regular(root: &open::Root, rel: &str, follow: bool) -> Option<(File, std::fs::Metadata)> {
    let file = root.open_file(rel, follow).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta))
}

/// Whether `Accept-Encoding` admits `coding` with a non-zero quality.
fn accepts(accept: &str, coding: &str) -> bool {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if name.eq_ignore_ascii_case(coding) || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip")) {
            return !q_zero;
        }
        if name == "*" {
            star = Some(!q_zero);
        }
    }
    star.unwrap_or(false)
}

/// `text/javascript` per RFC 9239, and a charset on `text/*` types.
fn content_type(name: &str) -> HeaderValue {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let mime = match ext.to_ascii_lowercase().as_str() {
        "js" | "mjs" | "cjs" => "text/javascript",
        "map" => "application/json",
        _ => mime_guess::from_ext(ext)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    };
    // JSON has no charset parameter (RFC 8259); nginx's types agree.
    if mime.starts_with("text/") {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8")).unwrap_or(HeaderValue::from_static("text/plain"))
    } else {
        HeaderValue::from_static(mime)
    }
}

/// Distinct boundaries per response, without a random-number generator.
static BOUNDARY_SEQ: AtomicU64 = AtomicU64::new(0);

fn respond(
    head: &http::request::Parts,
    file: File,
    meta: &std::fs::Metadata,
    content_type: HeaderValue,
    coding: Option<&'static str>,
    cache_control: HeaderValue,
    small: &cache::SmallFiles,
) -> Response<ResponseBody> {
    let len = meta.len();
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
    let mtime = mtime.unwrap_or_default();
    // No inode in the tag (unlike Apache's default), so replicas behind a load balancer
    // agree on it.
    let etag = format!(
        "\"{:x}.{:x}-{:x}{}\"",
        mtime.as_secs(),
        mtime.subsec_nanos(),
        len,
        coding.map(|c| format!("-{c}")).unwrap_or_default()
    );
    let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime.as_secs()));
    let v = Validators {
        etag: &etag,
        mtime: mtime.as_secs(),
    };
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let (status, pieces, body_len) = match conditional::evaluate(&head.headers, &v) {
        Precondition::NotModified => {
            return finish(builder.status(StatusCode::NOT_MODIFIED), None, None);
        }
        Precondition::Failed => return plain(StatusCode::PRECONDITION_FAILED, "Precondition Failed"),
        Precondition::Proceed => {
            builder = builder.header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Some(c) = coding {
                builder = builder.header(header::CONTENT_ENCODING, c);
            }
            let ranges = if head.method == Method::GET {
                conditional::ranges(&head.headers, &v, len)
            } else {
                Ranges::Full
            };
            match ranges {
                Ranges::Full => {
                    builder = builder.header(header::CONTENT_TYPE, content_type);
                    (StatusCode::OK, vec![Piece::File { offset: 0, len }], len)
                }
                Ranges::Unsatisfiable => {
                    let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return resp;
                }
                Ranges::Partial(ranges) if ranges.len() == 1 => {
                    let (a, b) = ranges[0];
                    builder = builder
                        .header(header::CONTENT_TYPE, content_type)
                        .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
                    let piece = Piece::File {
                        offset: a,
                        len: b - a + 1,
                    };
                    (StatusCode::PARTIAL_CONTENT, vec![piece], b - a + 1)
                }
                Ranges::Partial(ranges) => {
                    let boundary = format!(
                        "{:016x}{:08x}",
                        mtime.as_nanos() as u64 ^ meta.ino().rotate_left(17),
                        BOUNDARY_SEQ.fetch_add(1, Ordering::Relaxed) as u32
                    );
                    let (pieces, total) = multipart(&ranges, len, &boundary, &content_type);
                    builder = builder.header(
                        header::CONTENT_TYPE,
                        format!("multipart/byteranges; boundary={boundary}"),
                    );
                    (StatusCode::PARTIAL_CONTENT, pieces, total)
                }
            }
        }
    };
    let body = (head.method != Method::HEAD).then(|| FileChunks::new(source(file, meta, small), pieces));
    finish(builder.status(status), Some(body_len), body)
}

fn source(file: File, meta: &std::fs::Metadata, small: &cache::SmallFiles) -> Source {
    if meta.len() > cache::MAX_FILE {
        return Source::File(file);
    }
    if let Some(data) = small.get(meta) {
        return Source::Memory(data);
    }
    match chunks::read_whole(&file, meta.len()) {
        Some(data) => {
            small.insert(meta, data.clone());
            Source::Memory(data)
        }
        None => Source::File(file),
    }
}

/// The parts of a `multipart/byteranges` body and its total length.
fn multipart(ranges: &[(u64, u64)], len: u64, boundary: &str, content_type: &HeaderValue) -> (Vec<Piece>, u64) {
    let ct = content_type.to_str().unwrap_or("application/octet-stream");
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut total = 0;
    for &(a, b) in ranges {
        let part_head = format!("\r\n--{boundary}\r\nContent-Type: {ct}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n");
        total += part_head.len() as u64 + (b - a + 1);
        pieces.push(Piece::Bytes(Bytes::from(part_head)));
        pieces.push(Piece::File {
            offset: a,
            len: b - a + 1,
        });
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    total += tail.len() as u64;
    pieces.push(Piece::Bytes(Bytes::from(tail)));
    (pieces, total)
}

fn finish(
    builder: http::response::Builder,
    content_length: Option<u64>,
    body: Option<FileChunks>,
) -> Response<ResponseBody> {
    let builder = match content_length {
        Some(n) => builder.header(header::CONTENT_LENGTH, n),
        None => builder,
    };
    let body = body.map(ResponseBody::file).unwrap_or_else(ResponseBody::empty);
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"))
}

/// Built from the mount and the normalised path, never the raw one: `///docs` must not
/// become `Location: ///docs/`, which a browser reads as the host `docs`.
fn redirect_to_slash(head: &http::request::Parts, prefix: &str, rel: &str) -> Response<ResponseBody> {
    let encoded: String = rel
        .split('/')
        .filter(|seg| *seg != ".")
        .map(|seg| percent_encoding::utf8_percent_encode(seg, PATH_SEGMENT).to_string())
        .map(|seg| format!("/{seg}"))
        .collect();
    let mut location = format!("{prefix}{encoded}/");
    if let Some(q) = head.uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn not_found() -> Response<ResponseBody> {
    plain(StatusCode::NOT_FOUND, "Not Found")
}

/// A short text answer, kept out of the error-page path (these are not request errors).
fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let body = Bytes::from_static(text.as_bytes());
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip, deflate, br, zstd", "zstd"));
        assert!(!accepts("gzip;q=0, br", "gzip"));
        assert!(accepts("x-gzip", "gzip"));
        assert!(accepts("*", "br"));
        assert!(!accepts("*, br;q=0", "br"));
        assert!(!accepts("identity", "gzip"));
        assert!(!accepts("", "gzip"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("a.json"), "application/json");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type("x.woff2"), "font/woff2");
    }

    #[test]
    fn multipart_lengths_add_up() {
        let ct = HeaderValue::from_static("text/plain");
        let (pieces, total) = multipart(&[(0, 1), (4, 5)], 10, "B", &ct);
        let sum: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::File { len, .. } => *len,
            })
            .sum();
        assert_eq!(sum, total);
        assert_eq!(pieces.len(), 5);
    }
}
