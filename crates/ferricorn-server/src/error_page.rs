//! The small HTML error responses the server writes itself, in Gunicorn's shape.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// Marks a response the server wrote itself (the access log shows it as Gunicorn's
/// error handler does).
#[derive(Debug, Clone, Copy)]
pub struct ServerErrorPage;

/// The 500 for a request the application never answered (its thread or task is gone).
pub fn not_answered() -> Response<ResponseBody> {
    response(500, "the application did not respond", true)
}

/// A complete error response; `close` adds `Connection: close`.
pub fn response(status: u16, detail: &str, close: bool) -> Response<ResponseBody> {
    let (status, body) = page(status, StatusCode::INTERNAL_SERVER_ERROR, detail);
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.extensions_mut().insert(ServerErrorPage);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An error response as bytes, for the connection's reader to write itself when the
/// request never reaches hyper's parser (see `conn::IdleIo`): Gunicorn's `write_error`.
pub fn raw(status: u16, detail: &str) -> Vec<u8> {
    let (status, body) = page(status, StatusCode::BAD_REQUEST, detail);
    format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes()
}

/// The status (`fallback` for a code out of range) and Gunicorn's HTML page for it.
fn page(status: u16, fallback: StatusCode, detail: &str) -> (StatusCode, String) {
    let status = StatusCode::from_u16(status).unwrap_or(fallback);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html>\n  <head>\n    <title>{reason}</title>\n  </head>\n  <body>\n    <h1><p>{reason}</p></h1>\n    {}\n  </body>\n</html>\n",
        escape(detail)
    );
    (status, body)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_page_is_a_complete_response() {
        let raw = String::from_utf8(super::raw(414, "Request Line is <too> large")).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 414 URI Too Long\r\nConnection: close\r\n"),
            "{head}"
        );
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(
            body.contains("<title>URI Too Long</title>") && body.contains("&lt;too&gt;"),
            "{body}"
        );
    }
}
