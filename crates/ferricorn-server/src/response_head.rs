//! The response head an application produces, with the server's policy applied once for
//! every bridge: header names and values are validated, hop-by-hop headers and the
//! server-owned `Server`/`Date` are dropped (as in Gunicorn), `Connection: close` is
//! honoured and the declared `Content-Length` caps the body.

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::ResponseBody;

/// Headers the server owns; an application's values are dropped. (`Server` and `Date`
/// are the server's only when the application sets none, as Gunicorn's ASGI worker
/// does: an application may hide the server's name.)
fn server_owned(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid header name {0:?}")]
    Name(String),
    #[error("invalid value for header {0:?}")]
    Value(String),
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("invalid status {0}")]
    Status(u16),
    #[error("conflicting Content-Length headers ({0} and {1})")]
    ConflictingLength(u64, u64),
}

#[derive(Debug)]
pub struct ResponseHead {
    status: StatusCode,
    /// Bytes (latin-1 text in WSGI), written as they are.
    reason: Option<Vec<u8>>,
    /// Built in place: the response takes this map as it is.
    headers: HeaderMap,
    content_length: Option<u64>,
    close: bool,
}

impl ResponseHead {
    /// `reason` is kept only when it differs from the canonical one; a code without one
    /// and without a reason gets an empty reason (`HTTP/1.1 599 `).
    pub fn new(status: u16, reason: Option<&[u8]>) -> Result<Self, HeadError> {
        let status = StatusCode::from_u16(status).map_err(|_| HeadError::Status(status))?;
        let canonical = status.canonical_reason().map(str::as_bytes);
        let reason = match reason.filter(|r| !r.is_empty()) {
            Some(r) if Some(r) != canonical => Some(r.to_vec()),
            None if canonical.is_none() => Some(Vec::new()),
            _ => None,
        };
        Ok(Self {
            status,
            reason,
            // Room for a typical app's headers plus what the front end adds (`Server`,
            // maybe `Connection`): growing a map rehashes it.
            headers: HeaderMap::with_capacity(6),
            content_length: None,
            close: false,
        })
    }

    pub fn push(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        let name = Self::parse_name(name)?;
        let value = Self::parse_value(&name, value)?;
        self.push_parsed(name, value)
    }

    /// A header name as an application gave it (any case).
    pub fn parse_name(name: &[u8]) -> Result<HeaderName, HeadError> {
        HeaderName::from_bytes(name).map_err(|_| HeadError::Name(String::from_utf8_lossy(name).into_owned()))
    }

    /// A header value: no control characters but tab (obs-text is allowed). Whitespace
    /// around it is not part of it (RFC 9110 5.5), and Gunicorn strips it too.
    pub fn parse_value(name: &HeaderName, value: &[u8]) -> Result<HeaderValue, HeadError> {
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Value(name.to_string()));
        }
        let value = value.trim_ascii();
        HeaderValue::from_bytes(value).map_err(|_| HeadError::Value(name.to_string()))
    }

    /// Adds a header already parsed by [`Self::parse_name`] and [`Self::parse_value`]
    /// (a bridge may cache those for the objects an application passes every time).
    pub fn push_parsed(&mut self, name: HeaderName, value: HeaderValue) -> Result<(), HeadError> {
        if name == header::CONTENT_LENGTH {
            let n = Self::parse_content_length(&value)?;
            return self.push_content_length(value, n);
        }
        if server_owned(name.as_str()) {
            if name == header::CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
                self.close = true;
            }
            return Ok(());
        }
        self.headers.append(name, value);
        Ok(())
    }

    /// The length a `Content-Length` value declares (surrounding whitespace allowed).
    pub fn parse_content_length(value: &HeaderValue) -> Result<u64, HeadError> {
        let v = std::str::from_utf8(value.as_bytes()).unwrap_or("").trim();
        v.parse().map_err(|_| HeadError::ContentLength(v.to_string()))
    }

    /// Adds a `Content-Length` header whose value [`Self::parse_content_length`] read as
    /// `n`. The header goes out once, in digits only (`+5` as `5`); a second one with
    /// another length is refused: a response framed two ways would desynchronise the
    /// connection for whatever request follows on it.
    #[inline]
    pub fn push_content_length(&mut self, value: HeaderValue, n: u64) -> Result<(), HeadError> {
        match self.content_length {
            Some(m) if m == n => return Ok(()),
            Some(m) => return Err(HeadError::ConflictingLength(m, n)),
            None => {}
        }
        let value = if value.as_bytes().iter().all(u8::is_ascii_digit) {
            value
        } else {
            HeaderValue::from(n)
        };
        self.content_length = Some(n);
        self.headers.append(header::CONTENT_LENGTH, value);
        Ok(())
    }

    /// The length the app declared with `Content-Length`, if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The head as an informational response (`HTTP/1.1 103 Early Hints` and its
    /// headers), for [`crate::EarlyHints`]. 100 and 101 belong to the server.
    pub fn interim_bytes(&self) -> Result<Vec<u8>, HeadError> {
        let code = self.status.as_u16();
        if !(102..200).contains(&code) {
            return Err(HeadError::Status(code));
        }
        let reason = self
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .or(self.status.canonical_reason().map(str::as_bytes))
            .unwrap_or(if code == 103 { b"Early Hints" } else { b"Informational" });
        let mut out = format!("HTTP/1.1 {code} ").into_bytes();
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(out)
    }

    pub fn into_response(self, mut body: ResponseBody) -> Response<ResponseBody> {
        if let Some(len) = self.content_length {
            body.limit(len);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        let h = resp.headers_mut();
        // RFC 9110 8.6: a 204 has no content and must not declare a length (Gunicorn
        // drops it too).
        if self.status == StatusCode::NO_CONTENT && self.content_length.is_some() {
            h.remove(header::CONTENT_LENGTH);
        }
        h.reserve(2);
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(r) = self.reason {
            if let Ok(p) = hyper::ext::ReasonPhrase::try_from(r) {
                resp.extensions_mut().insert(p);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_goes_out_once_and_in_digits() {
        let mut h = ResponseHead::new(200, None).unwrap();
        h.push(b"Content-Length", b"+5").unwrap();
        h.push(b"content-length", b"5").unwrap();
        assert!(matches!(
            h.push(b"Content-Length", b"3"),
            Err(HeadError::ConflictingLength(5, 3))
        ));
        let resp = h.into_response(ResponseBody::empty());
        let values: Vec<_> = resp.headers().get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["5"]);
    }

    #[test]
    fn policy() {
        let mut h = ResponseHead::new(200, Some(b"Fine")).unwrap();
        h.push(b"Content-Type", b"text/plain").unwrap();
        h.push(b"Server", b"evil").unwrap();
        h.push(b"Connection", b"close").unwrap();
        h.push(b"Content-Length", b"3").unwrap();
        assert!(h.push(b"Bad Name", b"x").is_err());
        assert!(h.push(b"X", b"a\r\nb").is_err());
        assert!(h.push(b"Content-Length", b"abc").is_err());
        let resp = h.into_response(ResponseBody::full(bytes::Bytes::from_static(b"hello")));
        assert_eq!(resp.headers()["server"], "evil");
        assert_eq!(resp.headers()["connection"], "close");
        assert!(ResponseHead::new(1000, None).is_err());
        let v = ResponseHead::parse_value(&header::CONTENT_TYPE, b" \ttext/plain  ").unwrap();
        assert_eq!(v, "text/plain");
    }

    #[test]
    fn reasons() {
        let phrase = |code, reason: Option<&[u8]>| {
            let resp = ResponseHead::new(code, reason)
                .unwrap()
                .into_response(ResponseBody::empty());
            resp.extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|p| p.as_bytes().to_vec())
        };
        assert_eq!(phrase(200, Some(b"OK")), None);
        assert_eq!(phrase(200, Some(b"")), None);
        assert_eq!(phrase(201, Some(b"Cr\xe9\xe9")), Some(b"Cr\xe9\xe9".to_vec()));
        // No canonical phrase: empty rather than hyper's `<none>`.
        assert_eq!(phrase(599, None), Some(Vec::new()));
        assert_eq!(phrase(599, Some(b"Custom")), Some(b"Custom".to_vec()));
    }

    #[test]
    fn no_content_declares_no_length() {
        let mut h = ResponseHead::new(204, None).unwrap();
        h.push(b"Content-Length", b"5").unwrap();
        h.push(b"X-Kept", b"yes").unwrap();
        let resp = h.into_response(ResponseBody::full(bytes::Bytes::from_static(b"hello")));
        assert!(resp.headers().get("content-length").is_none());
        assert_eq!(resp.headers()["x-kept"], "yes");
    }

    #[test]
    fn interim() {
        let mut h = ResponseHead::new(103, None).unwrap();
        h.push(b"Link", b"</a.css>; rel=preload").unwrap();
        assert_eq!(
            h.interim_bytes().unwrap(),
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        );
        assert!(ResponseHead::new(101, None).unwrap().interim_bytes().is_err());
        assert!(ResponseHead::new(200, None).unwrap().interim_bytes().is_err());
    }
}
