//! The HTTP/1.1 `Upgrade: h2c` path to cleartext HTTP/2 (RFC 7540 3.2), which hyper's
//! server does not offer.
//!
//! After `101 Switching Protocols` the request that carried the upgrade must be answered
//! on HTTP/2 stream 1. hyper's HTTP/2 server only answers streams the client opens, so
//! the upgrade request is re-encoded as the HEADERS frame the client would have sent
//! for it and spliced into the byte stream right after the client's connection preface
//! and first SETTINGS frame: the server sees an ordinary stream 1, the client gets its
//! response on stream 1. The request's `HTTP2-Settings` are not applied: the client
//! repeats its settings in the SETTINGS frame of its preface.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};

use crate::serve::Shared;
use crate::{ConnInfo, ResponseBody};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
/// A header block must fit one frame of the default size (no CONTINUATION frames).
const MAX_BLOCK: usize = 16_384;

/// Hop-by-hop fields of the HTTP/1.1 request that have no place in HTTP/2 (RFC 9113 8.2.2).
const CONNECTION_FIELDS: [&str; 7] = [
    "connection",
    "upgrade",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "host",
];

/// The request asks to upgrade to h2c and can be: `Upgrade: h2c`, one `HTTP2-Settings`
/// named in `Connection`, and no body (a body would have to be read before switching).
pub(crate) fn requested(req: &hyper::Request<Incoming>) -> bool {
    let h = req.headers();
    req.version() == http::Version::HTTP_11
        && crate::has_token(h, header::UPGRADE, "h2c")
        && crate::has_token(h, header::CONNECTION, "http2-settings")
        && h.get_all("http2-settings").iter().count() == 1
        && !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
}

/// Answers `101` and serves HTTP/2 on the connection once hyper hands it over; `None`
/// when the request cannot be re-encoded (the upgrade is then ignored, as RFC 9110
/// allows, and the request is served on HTTP/1.1).
pub(crate) fn upgrade(
    req: &mut hyper::Request<Incoming>,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
) -> Option<Response<ResponseBody>> {
    let frame = headers_frame(req)?;
    let on_upgrade = hyper::upgrade::on(req);
    let shared = shared.clone();
    let mut info = (**info).clone();
    // The HTTP/2 connection outlives hyper's HTTP/1 one: the drain waits for it.
    let guard = crate::serve::SessionGuard::new(shared.clone());
    tokio::spawn(async move {
        let _guard = guard;
        match on_upgrade.await {
            Ok(upgraded) => {
                info.fd = -1;
                let io = Spliced::new(TokioIo::new(upgraded), frame);
                crate::serve::serve_h2(io, info, shared).await;
            }
            Err(e) => ferricorn_core::debug!("h2c upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    Some(resp)
}

/// The request as an HTTP/2 HEADERS frame on stream 1 with END_STREAM and END_HEADERS,
/// every field a literal without indexing (no HPACK state to share with the server).
fn headers_frame(req: &hyper::Request<Incoming>) -> Option<Vec<u8>> {
    let mut block = Vec::with_capacity(256);
    let authority = req
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    literal(&mut block, b":method", req.method().as_str().as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", path.as_bytes());
    literal(&mut block, b":authority", authority);
    for (name, value) in req.headers() {
        let n = name.as_str();
        if CONNECTION_FIELDS.contains(&n) || (n == "te" && value.as_bytes() != b"trailers") {
            continue;
        }
        literal(&mut block, n.as_bytes(), value.as_bytes());
    }
    if block.len() > MAX_BLOCK {
        return None;
    }
    let len = block.len() as u32;
    let mut frame = Vec::with_capacity(FRAME_HEAD + block.len());
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.push(0x1); // HEADERS
    frame.push(0x4 | 0x1); // END_HEADERS | END_STREAM
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&block);
    Some(frame)
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    string(out, name);
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// RFC 7541 5.1: an integer in an `n`-bit prefix of a byte starting with `flags`.
fn integer(out: &mut Vec<u8>, mut v: usize, n: u32, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Reads the client's preface and first frame, then yields `frame`, then the rest.
pub(crate) struct Spliced<T> {
    inner: T,
    /// The client's bytes up to the end of its first frame, while not yet complete.
    head: Vec<u8>,
    /// Bytes to hand out before reading again.
    out: Vec<u8>,
    out_pos: usize,
    frame: Option<Vec<u8>>,
}

impl<T> Spliced<T> {
    fn new(inner: T, frame: Vec<u8>) -> Self {
        Self {
            inner,
            head: Vec::with_capacity(64),
            out: Vec::new(),
            out_pos: 0,
            frame: Some(frame),
        }
    }

    /// Where the client's first frame ends in `head`, once it is all there. A client
    /// that does not start with the preface gets its bytes passed on unchanged, for
    /// the HTTP/2 server to refuse.
    fn first_frame_end(&self) -> Option<usize> {
        let h = &self.head;
        let n = h.len().min(PREFACE.len());
        if h[..n] != PREFACE[..n] {
            return Some(h.len());
        }
        if h.len() < PREFACE.len() + FRAME_HEAD {
            return None;
        }
        let f = &h[PREFACE.len()..];
        let len = (usize::from(f[0]) << 16) | (usize::from(f[1]) << 8) | usize::from(f[2]);
        let end = PREFACE.len() + FRAME_HEAD + len;
        (h.len() >= end).then_some(end)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Spliced<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                return Poll::Ready(Ok(()));
            }
            let Some(frame) = this.frame.as_ref() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.head.extend_from_slice(rb.filled());
            if let Some(end) = this.first_frame_end() {
                let rest = this.head.split_off(end);
                let mut out = std::mem::take(&mut this.head);
                if out.starts_with(PREFACE) {
                    out.extend_from_slice(frame);
                }
                out.extend_from_slice(&rest);
                this.out = out;
                this.out_pos = 0;
                this.frame = None;
            }
        }
    }
}

delegate_async_write!(Spliced<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers() {
        let mut v = Vec::new();
        integer(&mut v, 10, 5, 0);
        assert_eq!(v, [10]);
        v.clear();
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        integer(&mut v, 1337, 5, 0);
        assert_eq!(v, [31, 154, 10]);
    }

    #[tokio::test]
    async fn splices_after_the_first_frame() {
        use tokio::io::AsyncReadExt;
        let settings = [0u8, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let mut client = PREFACE.to_vec();
        client.extend_from_slice(&settings);
        client.extend_from_slice(b"WINDOW");
        let mut io = Spliced::new(&client[..], b"FRAME".to_vec());
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        let mut want = PREFACE.to_vec();
        want.extend_from_slice(&settings);
        want.extend_from_slice(b"FRAME");
        want.extend_from_slice(b"WINDOW");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn no_preface_passes_through() {
        use tokio::io::AsyncReadExt;
        let mut io = Spliced::new(&b"GET / HTTP/1.1\r\n\r\n"[..], b"FRAME".to_vec());
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }
}
