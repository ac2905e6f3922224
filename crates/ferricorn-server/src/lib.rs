//! ferricorn-server: the HTTP front end shared by every application bridge.
//!
//! It owns all socket I/O: accepting, HTTP/1.1 parsing (hyper), Gunicorn's request
//! rules, keep-alive, body streaming in both directions and graceful drain. An
//! application bridge (WSGI, ASGI, or a pure-Rust app in tests) implements [`App`] and
//! only ever sees a validated request.

/// Writing through a read-side wrapper (`IdleIo`, `Prefixed`) is plain delegation to
/// its `inner` stream.
macro_rules! delegate_async_write {
    ($ty:ident<$p:ident>) => {
        impl<$p: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<$p> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

mod access;
pub use access::AccessEnviron;
mod balance;
pub mod body;
mod conn;
pub mod error_page;
mod event;
mod framing;
mod front;
#[doc(hidden)]
pub mod fuzzing;
mod h2c_upgrade;
pub mod listener;
mod overload;
pub mod pipe;
mod proxy_io;
pub mod response_head;
mod serve;
pub mod static_files;
pub mod tls;
pub mod websocket;

pub use balance::AcceptBalance;
pub use body::{BodyError, RequestBody, ResponseBody};
pub use conn::{in_call, ClientGone, EarlyHints};
pub use listener::Listener;
pub use response_head::{HeadError, ResponseHead};
pub use serve::{serve, Http2Options, ServeOutcome, ServerConfig, StopSignal, UnderscoreHeaders};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// What the bridge knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer; `None` on a UNIX socket.
    pub peer: Option<SocketAddr>,
    /// The listener's address; `None` on a UNIX socket.
    pub local: Option<SocketAddr>,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// The connection's socket, for last-resort writes when the I/O loop is stuck.
    pub fd: std::os::fd::RawFd,
    /// From a PROXY header: its protocol (`TCP4`...) and the address the client
    /// connected to (Gunicorn's `PROXY_ADDR`/`PROXY_PORT`).
    pub proxy: Option<(&'static str, Option<SocketAddr>)>,
    /// The TLS session, on TLS connections.
    pub tls: Option<Arc<TlsSession>>,
    /// `peer` and `local` as text, made on first use: formatting addresses costs more
    /// than the rest of a small request's environ, and a keep-alive connection's
    /// requests all share them.
    texts: [std::sync::OnceLock<Option<AddrText>>; 2],
    /// What the app bridge keeps for the connection's life (see [`Self::bridge_data`]).
    bridge: BridgeData,
}

/// See [`ConnInfo::bridge_data`]. A copy of a `ConnInfo` starts without it.
#[derive(Default)]
struct BridgeData(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl Clone for BridgeData {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for BridgeData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeData")
    }
}

/// An address's IP and port as text.
#[derive(Debug, Clone)]
pub struct AddrText {
    pub ip: String,
    pub port: String,
}

impl ConnInfo {
    /// A plain-HTTP connection (TLS and PROXY details are filled in later).
    pub fn new(peer: Option<SocketAddr>, local: Option<SocketAddr>, fd: std::os::fd::RawFd) -> Self {
        Self {
            peer,
            local,
            scheme: "http",
            fd,
            proxy: None,
            tls: None,
            texts: Default::default(),
            bridge: Default::default(),
        }
    }

    /// Data the app bridge keeps for the connection's life, made by `init` on first use
    /// (values every request on the connection repeats, such as the peer's port as a
    /// Python string). `None` if the connection already holds data of another type.
    pub fn bridge_data<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.bridge.0.get_or_init(|| Box::new(init())).downcast_ref()
    }

    /// `peer` as text (once the PROXY header, if any, has set it).
    pub fn peer_text(&self) -> Option<&AddrText> {
        Self::text(&self.texts[0], self.peer)
    }

    pub fn local_text(&self) -> Option<&AddrText> {
        Self::text(&self.texts[1], self.local)
    }

    fn text(cell: &std::sync::OnceLock<Option<AddrText>>, addr: Option<SocketAddr>) -> Option<&AddrText> {
        cell.get_or_init(|| {
            addr.map(|a| AddrText {
                ip: a.ip().to_string(),
                port: a.port().to_string(),
            })
        })
        .as_ref()
    }
}

/// What the app may learn about a TLS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsSession {
    /// The client's certificate chain (DER, leaf first), when it sent one.
    pub client_certs: Vec<Vec<u8>>,
    /// The protocol version as on the wire (`0x0303` TLS 1.2, `0x0304` TLS 1.3).
    pub version: u16,
    /// The IANA cipher suite number.
    pub cipher_suite: u16,
}

/// A request that passed every check of the front end.
pub struct Request {
    pub head: http::request::Parts,
    /// Resolves when the client disconnects.
    pub client_gone: conn::ClientGone,
    /// The scheme is https: the connection's, or what a trusted proxy asserted (a flag,
    /// not the scheme's name: the request moves between threads by value, and its size
    /// is paid in every move; see [`Request::scheme`]).
    pub https: bool,
    pub body: RequestBody,
    pub conn: Arc<ConnInfo>,
    /// The peer is in `--forwarded-allow-ips`: its `forwarder_headers` may be used.
    pub trusted_proxy: bool,
    /// The client: the TCP (or PROXY protocol) peer, or what a trusted `Forwarded`
    /// header says (`--forwarded-header`); port 0 when unknown.
    pub client: Option<SocketAddr>,
    /// Sends `103 Early Hints` before the response (HTTP/1.1 requests only).
    pub early_hints: Option<conn::EarlyHints>,
    /// The request's place among its HTTP/2 connection's calls (see
    /// `ServerConfig::h2_calls_per_connection`): a bridge keeps it while a thread works
    /// for the request (a reset stream does not free a place its call still uses).
    pub call_slot: Option<Box<tokio::sync::OwnedSemaphorePermit>>,
}

impl Request {
    /// `"http"` or `"https"`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What [`App::call`] gives back.
// Not boxed: `Ready` is the path that exists to spare the request its allocations, and
// the value is moved once, straight into the response being finished.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// The response, finished during the call itself (a bridge's refusal, an app written
    /// in Rust): no future, no channel, nothing left to wait for.
    Ready(http::Response<ResponseBody>),
    /// The response to come from the bridge's own execution context.
    Later(BoxFuture<http::Response<ResponseBody>>),
    /// The response a bridge will send on this channel from its own thread or task (a
    /// sender dropped unanswered is answered with a 500): `Later` without a boxed future.
    Channel(tokio::sync::oneshot::Receiver<http::Response<ResponseBody>>),
}

/// The response sent on `rx`; a sender dropped unanswered (the bridge's thread or task
/// is gone) is answered with a 500.
pub async fn answer(rx: tokio::sync::oneshot::Receiver<http::Response<ResponseBody>>) -> http::Response<ResponseBody> {
    answered(rx.await)
}

/// Whether a comma-separated header (`Connection`, `Upgrade`) lists `token`, in any case.
pub fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// What a bridge sent on its oneshot, or the 500 for a sender dropped unanswered.
pub(crate) fn answered(
    sent: Result<http::Response<ResponseBody>, tokio::sync::oneshot::error::RecvError>,
) -> http::Response<ResponseBody> {
    sent.unwrap_or_else(|_| error_page::not_answered())
}

/// An application bridge. `call` must not block on the client or on other requests: it
/// either finishes the response at once or hands the request to the bridge's own
/// execution context and returns a future of the response.
pub trait App: Send + Sync + 'static {
    fn call(&self, req: Request) -> Reply;
}
