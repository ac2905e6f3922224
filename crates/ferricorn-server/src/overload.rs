//! Load shedding (`--max-queued`): a worker that already holds as many requests as it
//! can run plus the allowed queue answers the next one with 503 and `Retry-After` at
//! once, instead of letting it wait behind the others until the client gives up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ResponseBody;

/// Requests admitted to the application whose response has not ended (the place is held
/// by the response body; a request abandoned by its client or cut by the deadline frees
/// it then, though its application call may still run).
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    in_progress: Arc<AtomicUsize>,
}

/// Held by a request's response body; frees the place when the response ends.
pub(crate) struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admissions {
    /// A place for one more request, or `None` when `limit` are already in progress.
    pub fn admit(&self, limit: usize) -> Option<Admission> {
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.in_progress.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission(self.in_progress.clone()))
    }
}

/// Connections being refused at once, at most `MAX_REFUSALS`.
static REFUSING: AtomicUsize = AtomicUsize::new(0);
const MAX_REFUSALS: usize = 256;

/// A refusal in progress; `begin` is `None` when too many are (then just close).
pub(crate) struct Refusal(());

impl Refusal {
    pub fn begin() -> Option<Self> {
        if REFUSING.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS {
            REFUSING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(()))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        REFUSING.fetch_sub(1, Ordering::AcqRel);
    }
}

const BODY: &str = "<html>\n  <head>\n    <title>Service Unavailable</title>\n  </head>\n  <body>\n    <h1><p>Service Unavailable</p></h1>\n    The server is overloaded; retry shortly.\n  </body>\n</html>\n";

/// The 503 for a request that found the worker full.
pub(crate) fn overloaded() -> Response<ResponseBody> {
    let mut resp = crate::error_page::response(503, "The server is overloaded; retry shortly.", false);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A connection beyond `--worker-connections`: read what the client sent (so closing
/// does not reset the connection and lose the answer), answer 503, close gracefully.
pub(crate) async fn refuse_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: {}\r\nContent-Type: text/html\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        ferricorn_core::SERVER_HEADER,
        BODY.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Drain until the client closes (bounded), so unread bytes never turn into a RST.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit() {
        let a = Admissions::default();
        let one = a.admit(2).unwrap();
        let two = a.admit(2).unwrap();
        assert!(a.admit(2).is_none());
        drop(one);
        let three = a.admit(2);
        assert!(three.is_some());
        drop((two, three));
        assert_eq!(a.in_progress.load(Ordering::Acquire), 0);
    }
}
