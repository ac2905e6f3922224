//! The PROXY protocol (v1/v2), read before TLS or HTTP: the client address it carries
//! applies to every request on the connection (Gunicorn applies it to the first only).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use ferricorn_core::proxy::{parse_proxy_header, AllowList, ProxyMode, ProxyParse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::ConnInfo;

/// A stream that first replays bytes already read from it.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

delegate_async_write!(Prefixed<S>);

impl<S: AsyncRead + Unpin> Prefixed<S> {
    pub fn new(inner: S) -> Self {
        Self {
            prefix: Bytes::new(),
            inner,
        }
    }

    /// Whether the stream opens with `expected`, reading (and keeping for whoever reads
    /// next) only as much as it takes to tell.
    pub async fn starts_with(&mut self, expected: &[u8], timeout: Duration) -> bool {
        let check = async {
            loop {
                let n = self.prefix.len().min(expected.len());
                if self.prefix[..n] != expected[..n] {
                    return false;
                }
                if n == expected.len() {
                    return true;
                }
                let mut chunk = [0u8; 64];
                match self.inner.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(k) => {
                        let mut joined = Vec::with_capacity(self.prefix.len() + k);
                        joined.extend_from_slice(&self.prefix);
                        joined.extend_from_slice(&chunk[..k]);
                        self.prefix = Bytes::from(joined);
                    }
                }
            }
        };
        tokio::time::timeout(timeout, check).await.unwrap_or(false)
    }
}

/// Writes a refusal and closes gently: closing with unread input would make the kernel
/// send a reset that can destroy the answer before the client reads it, so what the
/// client still sends is read and dropped for a moment (bounded in time and bytes).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Time a peer gets to send its PROXY header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a PROXY header if the connection starts with one; updates `info`. `None`: the
/// connection was refused (not allowed, malformed, or too slow) and is done.
pub async fn accept<S>(mut stream: S, mode: ProxyMode, allow: &AllowList, info: &mut ConnInfo) -> Option<Prefixed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(256);
    let parsed = tokio::time::timeout(HEADER_TIMEOUT, async {
        loop {
            match parse_proxy_header(&buf, mode) {
                ProxyParse::Incomplete => {}
                done => return Some(done),
            }
            let mut chunk = [0u8; 256];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.is_empty() {
                continue;
            }
        }
    })
    .await
    .ok()
    .flatten()?;
    let ip = info.peer.map(|p| p.ip().to_string()).unwrap_or_default();
    match parsed {
        ProxyParse::Absent | ProxyParse::Incomplete => Some(Prefixed {
            prefix: Bytes::from(buf),
            inner: stream,
        }),
        ProxyParse::Invalid(why) => {
            ferricorn_core::warning!("Invalid PROXY header from ip={ip}: {why}");
            refuse(
                stream,
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
            None
        }
        ProxyParse::Header(h) => {
            if !allow.allows(info.peer.map(|p| p.ip())) {
                ferricorn_core::warning!("PROXY header from ip={ip}, which is not in proxy_allow_ips");
                refuse(
                    stream,
                    b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
                return None;
            }
            info.proxy = Some((h.protocol, h.destination));
            if let Some(src) = h.source {
                info.peer = Some(src);
            }
            let rest = Bytes::from(buf).slice(h.len..);
            Some(Prefixed {
                prefix: rest,
                inner: stream,
            })
        }
    }
}
