//! WebSockets (RFC 6455) for the bridges: the handshake answer and a session task that
//! owns the upgraded connection. Framing, masking, ping/pong and close handshakes are
//! tungstenite's; a bridge only sees whole messages in and out.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::ResponseBody;

/// What the client sent.
#[derive(Debug)]
pub enum WsIn {
    Text(String),
    Binary(Bytes),
    /// The session is over: the client's close code and reason, 1006 when the connection
    /// dropped, 1009 when a message was too big, 1007 for invalid UTF-8 and 1002 for a
    /// protocol error.
    Closed(u16, String),
    /// An application message of this many bytes went out to the socket (the sender's
    /// backpressure counts down with it).
    Sent(usize),
}

/// A session's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct WsOptions {
    /// `--websocket-max-message-size` (None: no limit); larger messages close with 1009.
    pub max_message_size: Option<usize>,
    /// The server pings the client this long after the last pong (uvicorn's
    /// `--ws-ping-interval`): an idle session keeps its proxies' idle timers from
    /// cutting it, and a client that vanished without a FIN is noticed.
    pub ping_interval: Option<Duration>,
    /// A ping unanswered this long closes the session with 1011 (uvicorn's
    /// `--ws-ping-timeout`); None: wait for ever.
    pub ping_timeout: Option<Duration>,
}

/// What the application sends.
#[derive(Debug)]
pub enum WsOut {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// A WebSocket opening handshake found on a request (RFC 6455 §4.2.1).
pub struct Handshake {
    key: HeaderValue,
    pub subprotocols: Vec<String>,
    upgrade: OnUpgrade,
    guard: Option<crate::serve::SessionGuardFactory>,
}

/// A WebSocket upgrade that RFC 6455 §4.2.2 says to refuse: a version other than 13
/// gets 426 naming the version supported, a missing or malformed key 400 (as Gunicorn's
/// and uvicorn's ASGI workers answer; the app would otherwise get it as plain HTTP).
pub fn refusal(head: &http::request::Parts) -> Option<Response<ResponseBody>> {
    use base64::Engine;
    let h = &head.headers;
    if head.method != http::Method::GET
        || !crate::has_token(h, header::UPGRADE, "websocket")
        || !crate::has_token(h, header::CONNECTION, "upgrade")
    {
        return None;
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut resp = crate::error_page::response(426, "Unsupported WebSocket version", true);
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Some(resp);
    }
    let key_ok = h.get(header::SEC_WEBSOCKET_KEY).is_some_and(|k| {
        base64::engine::general_purpose::STANDARD
            .decode(k.as_bytes())
            .is_ok_and(|raw| raw.len() == 16)
    });
    (!key_ok).then(|| crate::error_page::response(400, "Missing or invalid Sec-WebSocket-Key", true))
}

impl Handshake {
    /// Takes the handshake out of a request head, if it is one.
    pub fn take(head: &mut http::request::Parts) -> Option<Self> {
        let h = &head.headers;
        if head.method != http::Method::GET
            || !crate::has_token(h, header::UPGRADE, "websocket")
            || !crate::has_token(h, header::CONNECTION, "upgrade")
            || h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
        {
            return None;
        }
        let key = h.get(header::SEC_WEBSOCKET_KEY)?.clone();
        let subprotocols = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let upgrade = head.extensions.remove::<OnUpgrade>()?;
        let guard = head.extensions.remove::<crate::serve::SessionGuardFactory>();
        Some(Self {
            key,
            subprotocols,
            upgrade,
            guard,
        })
    }

    /// The 101 answer; `extra` are application headers (validated by the caller).
    pub fn accept(
        self,
        subprotocol: Option<&str>,
        extra: Vec<(http::HeaderName, HeaderValue)>,
        options: WsOptions,
        out: mpsc::UnboundedReceiver<WsOut>,
        on_in: impl Fn(WsIn) + Send + 'static,
        runtime: &tokio::runtime::Handle,
    ) -> Response<ResponseBody> {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        for (k, v) in extra {
            h.append(k, v);
        }
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        let guard = self.guard.map(|f| crate::serve::SessionGuard::new(f.0));
        runtime.spawn(session(self.upgrade, options, out, on_in, guard));
        resp
    }
}

async fn session(
    upgrade: OnUpgrade,
    options: WsOptions,
    mut out: mpsc::UnboundedReceiver<WsOut>,
    on_in: impl Fn(WsIn),
    guard: Option<crate::serve::SessionGuard>,
) {
    let stopping = async {
        match &guard {
            Some(g) => g.stopping().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    let Ok(upgraded) = upgrade.await else {
        on_in(WsIn::Closed(1006, String::new()));
        return;
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = options.max_message_size;
    config.max_frame_size = options.max_message_size;
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    // One timer for the keepalive, moved rather than made per message: the next ping
    // while no pong is awaited, else the pong's deadline.
    let mut keepalive = Keepalive::new(options);
    let timer = tokio::time::sleep_until(keepalive.deadline.unwrap_or_else(Instant::now));
    tokio::pin!(timer);
    let (code, reason) = loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => on_in(WsIn::Text(t.as_str().to_string())),
                Some(Ok(Message::Binary(b))) => on_in(WsIn::Binary(b)),
                Some(Ok(Message::Pong(_))) => {
                    if keepalive.ponged() {
                        timer.as_mut().reset(keepalive.deadline.unwrap_or_else(Instant::now));
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {
                    // tungstenite queued the pong; push it out.
                    let _ = ws.flush().await;
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = ws.flush().await;
                    break frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.as_str().to_owned()));
                }
                // A broken message is answered with its close code (RFC 6455 §7.4.1), as
                // uvicorn's `websockets` does, instead of a dropped connection.
                Some(Err(WsError::Capacity(_))) => break refuse(&mut ws, 1009, "message too big").await,
                Some(Err(WsError::Utf8(_))) => break refuse(&mut ws, 1007, "invalid UTF-8").await,
                Some(Err(WsError::Protocol(p))) if !matches!(p, ProtocolError::ResetWithoutClosingHandshake) => {
                    break refuse(&mut ws, 1002, "protocol error").await
                }
                Some(Err(_)) | None => break (1006, String::new()),
            },
            () = &mut timer, if keepalive.deadline.is_some() => {
                if keepalive.awaiting_pong {
                    break refuse(&mut ws, 1011, "keepalive ping timeout").await;
                }
                keepalive.pinged();
                // Bounded: a client that reads nothing must not hold the session here.
                let ping = ws.send(Message::Ping(Bytes::from_static(b"ferricorn")));
                let limit = options.ping_timeout.unwrap_or(Duration::from_secs(3600));
                if !matches!(tokio::time::timeout(limit, ping).await, Ok(Ok(()))) {
                    break (1006, String::new());
                }
                timer.as_mut().reset(keepalive.deadline.unwrap_or_else(Instant::now));
            }
            // The worker is stopping: "going away" (RFC 6455 §7.4.1), and the app hears
            // about it; the drain waits for this session (up to the graceful timeout).
            _ = &mut stopping => {
                let _ = ws.close(Some(close_frame(1001, "server shutting down"))).await;
                on_in(WsIn::Closed(1001, String::new()));
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(m)) = ws.next().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            msg = out.recv() => match msg {
                Some(WsOut::Text(t)) => {
                    let n = t.len();
                    if ws.send(Message::text(t)).await.is_err() {
                        break (1006, String::new());
                    }
                    on_in(WsIn::Sent(n));
                }
                Some(WsOut::Binary(b)) => {
                    let n = b.len();
                    if ws.send(Message::binary(b)).await.is_err() {
                        break (1006, String::new());
                    }
                    on_in(WsIn::Sent(n));
                }
                Some(WsOut::Close(code, reason)) => {
                    let _ = ws.close(Some(close_frame(code, &reason))).await;
                    // Wait briefly for the client's close frame, as RFC 6455 asks.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(m)) = ws.next().await {
                            if matches!(m, Message::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    break (code, String::new());
                }
                // The application is done with the socket: a normal closure.
                None => {
                    let _ = ws.close(Some(close_frame(1000, ""))).await;
                    break (1000, String::new());
                }
            },
        }
    };
    on_in(WsIn::Closed(code, reason));
}

/// When the session pings next, or gives up on a pong.
struct Keepalive {
    options: WsOptions,
    awaiting_pong: bool,
    deadline: Option<Instant>,
}

impl Keepalive {
    fn new(options: WsOptions) -> Self {
        Self {
            options,
            awaiting_pong: false,
            deadline: options.ping_interval.map(|d| Instant::now() + d),
        }
    }

    /// A ping went out.
    fn pinged(&mut self) {
        self.awaiting_pong = self.options.ping_timeout.is_some();
        self.deadline = match self.options.ping_timeout {
            Some(t) => Some(Instant::now() + t),
            None => self.options.ping_interval.map(|d| Instant::now() + d),
        };
    }

    /// A pong came in; true if the deadline moved.
    fn ponged(&mut self) -> bool {
        if !self.awaiting_pong {
            return false;
        }
        self.awaiting_pong = false;
        self.deadline = self.options.ping_interval.map(|d| Instant::now() + d);
        true
    }
}

/// Closes the session after a message the client broke: the close frame goes out (within
/// a bound, the client may not be reading), and the app hears `code`.
async fn refuse<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(close_frame(code, reason)))).await;
    (code, String::new())
}

/// A close frame; the reason is cut to the 123 bytes a control frame has room for after
/// the code (RFC 6455 §5.5), at a character boundary, as Gunicorn cuts it. A longer one
/// made a frame the client must fail with 1002.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    const MAX_REASON: usize = 123;
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::close_frame;

    #[test]
    fn close_reason_fits_a_control_frame() {
        assert_eq!(close_frame(1000, &"r".repeat(200)).reason.len(), 123);
        // 'é' is two bytes: 61 of them (122 bytes) fit, the 62nd would split at 123.
        let cut = close_frame(1000, &"é".repeat(100));
        assert_eq!(cut.reason.as_str(), "é".repeat(61));
        assert_eq!(close_frame(4000, "bye").reason.as_str(), "bye");
    }
}
