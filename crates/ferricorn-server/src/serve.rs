//! A worker's event loop: accept, serve connections, drain on shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferricorn_core::access_log::AccessFormat;
use ferricorn_core::proxy::{AllowList, ProxyMode};
use ferricorn_core::request::Limits;
use http::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify, Semaphore};

use crate::conn::{ConnState, IdleIo};
use crate::{App, ConnInfo, Listener};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Keep-alive idle timeout; `None` disables keep-alive.
    pub keepalive: Option<Duration>,
    /// Time allowed for a request head to arrive on a new connection.
    pub header_timeout: Duration,
    pub limits: Limits,
    pub worker_connections: usize,
    pub graceful_timeout: Duration,
    /// Bodies up to this size are read before the app is called.
    pub prebuffer: usize,
    pub body_read_timeout: Option<Duration>,
    pub permit_unconventional_method: bool,
    /// `--header-map`: what becomes of headers with `_` in their name.
    pub underscore_headers: UnderscoreHeaders,
    /// Stop gracefully after this many requests (0 = never).
    pub max_requests: u64,
    /// Peers trusted to set the scheme (`forwarded_allow_ips`).
    pub forwarded_allow: AllowList,
    /// `secure_scheme_headers`: header and the value that means https.
    pub secure_scheme_headers: Vec<(HeaderName, String)>,
    /// The access-log format, when the access log is on.
    pub access_log: Option<Arc<AccessFormat>>,
    /// The mount prefix, removed from the path for the `U` atom.
    pub script_name: String,
    /// TLS on TCP listeners (`--certfile`/`--keyfile`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub http2: Http2Options,
    /// `--proxy-protocol` and the peers allowed to send it (`--proxy-allow-from`).
    pub proxy_protocol: ProxyMode,
    pub proxy_allow: AllowList,
    /// `--static-map`: directories served before the app is called.
    pub static_files: Option<Arc<crate::static_files::StaticFiles>>,
    /// Log `METHOD path` at debug level for every request.
    pub log_requests: bool,
    /// `--max-queued`: requests in progress beyond `app_threads` before new ones get
    /// 503 (and surplus connections are refused with 503 instead of left in the
    /// backlog); `None` = unlimited.
    pub max_queued: Option<usize>,
    /// How many requests the application runs at once (`--threads`).
    pub app_threads: usize,
    /// How many requests of one HTTP/2 connection run at once; its other streams wait
    /// (`None`: no limit). For WSGI, where a request holds an app thread until its
    /// response is written: a client that opens many streams and never opens their
    /// flow-control windows would otherwise hold every thread from one connection.
    pub h2_calls_per_connection: Option<usize>,
    /// `--request-deadline`: a response not started by then is answered 504.
    pub request_deadline: Option<Duration>,
    /// Serve a client that shut down its sending side after its request (as Gunicorn's
    /// workers do) instead of taking the EOF for a disconnect. Off for ASGI, where the EOF
    /// is what tells a long poll or a stream that its client left (as in uvicorn).
    pub half_close: bool,
    /// `--forwarded-header`: RFC 7239 `Forwarded` from trusted peers.
    pub forwarded_header: bool,
    /// `--http2-cleartext prior-knowledge|both`: HTTP/2 without TLS for trusted peers.
    pub h2c_prior_knowledge: bool,
    /// Serve HTTP/2 after an HTTP/1.1 `Upgrade: h2c` from a trusted peer.
    pub h2c_upgrade: bool,
    /// `--forwarder-headers`: headers with `_` a trusted proxy may set.
    pub forwarder_headers: ferricorn_core::proxy::ForwarderHeaders,
    /// The other workers' load, to spread connections among them (`None`: one worker).
    pub balance: Option<Arc<dyn crate::balance::AcceptBalance>>,
}

/// HTTP/2 (over TLS, negotiated with ALPN `h2`).
#[derive(Debug, Clone)]
pub struct Http2Options {
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
}

impl Default for Http2Options {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            initial_window_size: 65535,
            max_frame_size: 16384,
            max_header_list_size: 65536,
        }
    }
}

/// A TCP connection: PROXY header (when enabled), then TLS (when configured), then HTTP.
async fn serve_tcp(stream: tokio::net::TcpStream, mut info: ConnInfo, shared: Arc<Shared>) {
    let cfg = &shared.config;
    if cfg.proxy_protocol != ProxyMode::Off {
        // h2c is for trusted peers: the proxy itself, not the client its header names.
        let h2c = cfg.h2c_prior_knowledge && cfg.forwarded_allow.allows(info.peer.map(|p| p.ip()));
        let Some(stream) = crate::proxy_io::accept(stream, cfg.proxy_protocol, &cfg.proxy_allow, &mut info).await
        else {
            return;
        };
        match cfg.tls.clone() {
            Some(tls) => serve_tls(stream, tls, info, shared.clone()).await,
            None => serve_cleartext(stream, h2c, info, shared.clone()).await,
        }
        return;
    }
    match cfg.tls.clone() {
        Some(tls) => serve_tls(stream, tls, info, shared.clone()).await,
        None if cfg.h2c_prior_knowledge && cfg.forwarded_allow.allows(info.peer.map(|p| p.ip())) => {
            if starts_with_h2_preface(&stream, cfg.header_timeout).await {
                serve_h2(stream, info, shared.clone()).await;
            } else {
                serve_connection(stream, info, shared.clone()).await;
            }
        }
        None => serve_connection(stream, info, shared.clone()).await,
    }
}

/// A UNIX-socket connection (its peers are trusted, as by Gunicorn): PROXY header
/// (when enabled), then HTTP/1.1, or HTTP/2 with prior knowledge when enabled.
async fn serve_unix(stream: tokio::net::UnixStream, mut info: ConnInfo, shared: Arc<Shared>) {
    let cfg = &shared.config;
    let stream = if cfg.proxy_protocol != ProxyMode::Off {
        match crate::proxy_io::accept(stream, cfg.proxy_protocol, &cfg.proxy_allow, &mut info).await {
            Some(s) => s,
            None => return,
        }
    } else {
        crate::proxy_io::Prefixed::new(stream)
    };
    let h2c = cfg.h2c_prior_knowledge;
    serve_cleartext(stream, h2c, info, shared.clone()).await;
}

/// HTTP/1.1, or HTTP/2 when `h2c` allows prior knowledge and the preface comes.
async fn serve_cleartext<S>(mut stream: crate::proxy_io::Prefixed<S>, h2c: bool, info: ConnInfo, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2c && stream.starts_with(H2_PREFACE, shared.config.header_timeout).await {
        serve_h2(stream, info, shared).await;
    } else {
        serve_connection(stream, info, shared).await;
    }
}

/// The first bytes every HTTP/2 connection starts with (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext connection opens with the HTTP/2 preface (h2c with prior
/// knowledge). Only peeks: the bytes stay for whichever protocol serves them.
async fn starts_with_h2_preface(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 24];
    let check = async {
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // A prefix of the preface so far: wait for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, check).await.unwrap_or(false)
}

/// A TLS handshake that takes longer than this is dropped (slow or hostile client).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_tls<S>(stream: S, tls: Arc<rustls::ServerConfig>, mut info: ConnInfo, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        // Scanners and broken clients fail handshakes all the time: not a worker error.
        Ok(Err(e)) => {
            ferricorn_core::debug!("TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            ferricorn_core::debug!("TLS handshake timed out");
            return;
        }
    };
    info.scheme = "https";
    // Raw writes on the socket (a last-resort 500) would break the TLS stream.
    info.fd = -1;
    let session = stream.get_ref().1;
    info.tls = Some(Arc::new(crate::TlsSession {
        client_certs: session
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
            .unwrap_or_default(),
        version: session.protocol_version().map_or(0, u16::from),
        cipher_suite: session.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite())),
    }));
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(stream, info, shared).await;
    } else {
        serve_connection(stream, info, shared).await;
    }
}

pub(crate) async fn serve_h2<S>(stream: S, info: ConnInfo, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    let state = Arc::new(ConnState::with_call_limit(cfg.h2_calls_per_connection));
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let service = service_fn(move |req| crate::front::handle(req, svc_shared.clone(), info.clone(), state.clone()));
    let mut builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2.max_concurrent_streams)
        .initial_stream_window_size(cfg.http2.initial_window_size)
        .max_frame_size(cfg.http2.max_frame_size)
        .max_header_list_size(cfg.http2.max_header_list_size);
    if let Some(idle) = cfg.keepalive {
        builder.keep_alive_interval(idle.max(Duration::from_secs(10)));
    }
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        _ = shared.stopped.fired() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            keepalive: Some(Duration::from_secs(2)),
            header_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            worker_connections: 1000,
            graceful_timeout: Duration::from_secs(30),
            prebuffer: 64 * 1024,
            body_read_timeout: None,
            permit_unconventional_method: false,
            underscore_headers: UnderscoreHeaders::Keep,
            max_requests: 0,
            forwarded_allow: AllowList::parse("127.0.0.1,::1").unwrap_or_default(),
            secure_scheme_headers: ferricorn_core::proxy::default_secure_scheme_headers(),
            access_log: None,
            script_name: String::new(),
            tls: None,
            http2: Http2Options::default(),
            proxy_protocol: ProxyMode::Off,
            proxy_allow: AllowList::parse("127.0.0.1,::1").unwrap_or_default(),
            static_files: None,
            log_requests: false,
            max_queued: None,
            app_threads: 1,
            h2_calls_per_connection: None,
            request_deadline: None,
            forwarder_headers: ferricorn_core::proxy::ForwarderHeaders::parse("SCRIPT_NAME,PATH_INFO"),
            balance: None,
            h2c_prior_knowledge: false,
            h2c_upgrade: false,
            forwarded_header: false,
            half_close: true,
        }
    }
}

/// Why `serve` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// SIGTERM (or a stop request): in-flight requests were drained.
    Graceful,
    /// SIGINT or SIGQUIT: stop now.
    Quick,
    /// `max_requests` reached; drained like `Graceful`.
    MaxRequests,
    /// The master timed out an app call (SIGABRT, handled by the embedding): answer
    /// 500 to calls in flight and stop now.
    Abort,
}

/// `--header-map`: a name spelled with `_` could pass for one spelled with `-` once
/// mapped (a client spoofing a proxy's header), so it is removed or refused before the
/// app sees the request, for every interface (forwarder headers from a trusted proxy
/// excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// `dangerous`: passed to the app.
    Keep,
    /// `drop` (Gunicorn's default).
    Drop,
    /// `refuse`: 400.
    Refuse,
}

/// Ways to stop `serve` from outside (besides signals).
#[derive(Clone)]
pub struct StopSignal(watch::Sender<Option<ServeOutcome>>);

impl StopSignal {
    /// The first stop wins, except that a quick stop or an abort overrides a graceful one
    /// in progress (QUIT after TERM).
    pub fn stop(&self, how: ServeOutcome) {
        self.0.send_if_modified(|cur| {
            let escalate = *cur == Some(ServeOutcome::Graceful) && how != ServeOutcome::Graceful;
            if cur.is_none() || escalate {
                *cur = Some(how);
                true
            } else {
                false
            }
        });
    }
}

pub(crate) struct Shared {
    pub config: ServerConfig,
    pub app: Arc<dyn App>,
    pub server_header: HeaderValue,
    stop: StopSignal,
    stop_rx: watch::Receiver<Option<ServeOutcome>>,
    requests: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) drained: Notify,
    /// A connection ended (for a worker waiting to accept, see `balance`).
    pub(crate) connection_ended: Notify,
    stopping: AtomicBool,
    /// Fired once the worker stops: every connection winds down.
    pub(crate) stopped: crate::event::Event,
    /// Fired if the worker aborts: requests still waiting for their app get a 500.
    pub(crate) aborted: crate::event::Event,
    pub admissions: crate::overload::Admissions,
}

/// Put in a request's extensions so that a WebSocket handshake can register its session.
#[derive(Clone)]
pub(crate) struct SessionGuardFactory(pub Arc<Shared>);

/// Keeps a worker's graceful drain waiting while a connection that left hyper (an
/// upgraded WebSocket) is still open, and tells it when the worker stops.
pub struct SessionGuard {
    shared: Arc<Shared>,
}

impl SessionGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.connection_opened();
        Self { shared }
    }

    /// Resolves when the worker starts stopping.
    pub async fn stopping(&self) {
        let mut rx = self.shared.stop_rx.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.connection_closed();
    }
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Counts a request; true when it reached `--max-requests` (the worker then stops).
    pub fn request_done(&self) -> bool {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.config.max_requests;
        if max > 0 && n >= max {
            self.stop.stop(ServeOutcome::MaxRequests);
            return true;
        }
        false
    }
}

/// Runs a worker's server until a signal or `max_requests` stops it. Builds its own
/// single-threaded runtime: call it only in a forked worker, never in the master.
/// `on_ready` runs inside the runtime, before the first accept, with a handle to stop it.
pub fn serve(
    listeners: Vec<Listener>,
    app: Arc<dyn App>,
    config: ServerConfig,
    on_ready: impl FnOnce(StopSignal),
) -> std::io::Result<ServeOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (tx, stop_rx) = watch::channel(None);
    let stop = StopSignal(tx);
    let shared = Arc::new(Shared {
        config,
        app,
        server_header: HeaderValue::from_static(ferricorn_core::SERVER_HEADER),
        stop: stop.clone(),
        stop_rx,
        requests: AtomicU64::new(0),
        connections: AtomicUsize::new(0),
        drained: Notify::new(),
        connection_ended: Notify::new(),
        stopping: AtomicBool::new(false),
        stopped: Default::default(),
        aborted: Default::default(),
        admissions: Default::default(),
    });
    let outcome = rt.block_on(run(listeners, shared, stop, on_ready))?;
    // Connection tasks still running (Quick stop, or a drain that timed out) are dropped here.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(outcome)
}

async fn run(
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    stop: StopSignal,
    on_ready: impl FnOnce(StopSignal),
) -> std::io::Result<ServeOutcome> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let permits = Arc::new(Semaphore::new(
        shared.config.worker_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut accept_tasks = Vec::new();
    for l in listeners {
        accept_tasks.push(tokio::spawn(accept_loop(l, shared.clone(), permits.clone())?));
    }
    on_ready(stop.clone());

    let mut stop_rx = shared.stop_rx.clone();
    let outcome = tokio::select! {
        _ = term.recv() => ServeOutcome::Graceful,
        _ = int.recv() => ServeOutcome::Quick,
        _ = quit.recv() => ServeOutcome::Quick,
        r = stop_rx.wait_for(Option::is_some) => r.ok().and_then(|v| *v).unwrap_or(ServeOutcome::Graceful),
    };
    stop.stop(outcome);
    shared.stopping.store(true, Ordering::Relaxed);
    shared.stopped.fire();
    if let Some(b) = &shared.config.balance {
        b.withdraw();
    }
    if matches!(outcome, ServeOutcome::Quick | ServeOutcome::Abort) {
        for t in &accept_tasks {
            t.abort();
        }
    } else {
        // The accept loops see the stop, take what is queued (graceful stop) and close
        // their listeners; none may outlive this.
        for mut t in accept_tasks {
            if tokio::time::timeout(Duration::from_secs(1), &mut t).await.is_err() {
                t.abort();
            }
        }
    }
    // A quick stop ends calls in flight as a timeout does: Gunicorn's sync worker
    // answers them 500 (its SystemExit goes through the error handler).
    if matches!(outcome, ServeOutcome::Quick | ServeOutcome::Abort) {
        shared.aborted.fire();
        // Let the 500s for calls in flight reach the wire.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if matches!(outcome, ServeOutcome::Quick | ServeOutcome::Abort) {
        return Ok(outcome);
    }
    let drain = async {
        while shared.open_connections() > 0 {
            let notified = shared.drained.notified();
            if shared.open_connections() == 0 {
                break;
            }
            notified.await;
        }
    };
    let mut escalated = shared.stop_rx.clone();
    let quick = tokio::select! {
        _ = drain => None,
        _ = tokio::time::sleep(shared.config.graceful_timeout) => {
            ferricorn_core::warning!("graceful timeout reached with {} connection(s) open", shared.open_connections());
            None
        }
        _ = int.recv() => Some(ServeOutcome::Quick),
        _ = quit.recv() => Some(ServeOutcome::Quick),
        // A quick stop or an abort during the drain (the signal thread's QUIT/INT/ABRT).
        r = escalated.wait_for(|v| matches!(v, Some(ServeOutcome::Quick | ServeOutcome::Abort))) => {
            Some(r.ok().and_then(|v| *v).unwrap_or(ServeOutcome::Quick))
        }
    };
    if let Some(how) = quick {
        // As for a quick stop from the start: calls in flight get their 500.
        shared.aborted.fire();
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(how);
    }
    Ok(outcome)
}

/// At most this many queued connections are taken on a graceful stop (a listen backlog).
const MAX_DRAINED: usize = 2048;

enum L {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl L {
    /// A connection the kernel has already queued, without waiting for the reactor:
    /// `None` when the queue is empty.
    fn accept_queued(&self) -> Option<(Stream, ConnInfo)> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let fd = match self {
            L::Tcp(l) => l.as_raw_fd(),
            L::Unix(l) => l.as_raw_fd(),
        };
        // SAFETY: accept4 on our own listening socket; a new descriptor or -1.
        let conn = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            return None;
        }
        match self {
            L::Tcp(_) => {
                // SAFETY: a fresh descriptor we own from here on.
                let s = unsafe { std::net::TcpStream::from_raw_fd(conn) };
                let peer = s.peer_addr().ok();
                let s = tokio::net::TcpStream::from_std(s).ok()?;
                let _ = s.set_nodelay(true);
                let info = ConnInfo::new(peer, s.local_addr().ok(), conn);
                Some((Stream::Tcp(s), info))
            }
            L::Unix(_) => {
                // SAFETY: as above.
                let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(conn) };
                let s = tokio::net::UnixStream::from_std(s).ok()?;
                let info = ConnInfo::new(None, None, conn);
                Some((Stream::Unix(s), info))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<(Stream, ConnInfo)> {
        match self {
            L::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                let local = s.local_addr().ok();
                let info = ConnInfo::new(Some(peer), local, std::os::fd::AsRawFd::as_raw_fd(&s));
                (Stream::Tcp(s), info)
            }),
            L::Unix(l) => l.accept().await.map(|(s, _)| {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
                let info = ConnInfo::new(None, None, fd);
                (Stream::Unix(s), info)
            }),
        }
    }
}

/// Serves an accepted connection on its own task; without a connection slot it is
/// refused (503), unless `must_serve` (connections taken while draining).
fn dispatch(
    stream: Stream,
    info: ConnInfo,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    must_serve: bool,
    shared: &Arc<Shared>,
) {
    if permit.is_none() && !must_serve {
        // TLS would need a handshake first: such clients just see a close, as do those
        // beyond a bound on refusals in progress (a flood must not exhaust descriptors).
        let Some(refusal) = crate::overload::Refusal::begin() else {
            return;
        };
        if shared.config.tls.is_none() || matches!(stream, Stream::Unix(_)) {
            tokio::spawn(async move {
                match stream {
                    Stream::Tcp(s) => crate::overload::refuse_connection(s).await,
                    Stream::Unix(s) => crate::overload::refuse_connection(s).await,
                }
                drop(refusal);
            });
        }
        return;
    }
    shared.connection_opened();
    let shared = shared.clone();
    tokio::spawn(async move {
        match stream {
            Stream::Tcp(s) => serve_tcp(s, info, shared.clone()).await,
            Stream::Unix(s) => serve_unix(s, info, shared.clone()).await,
        }
        drop(permit);
        shared.connection_closed();
    });
}

fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let l = match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            L::Tcp(tokio::net::TcpListener::from_std(l)?)
        }
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            L::Unix(tokio::net::UnixListener::from_std(l)?)
        }
    };
    Ok(async move {
        let shed = shared.config.max_queued.is_some();
        let mut stop_rx = shared.stop_rx.clone();
        if let Some(b) = &shared.config.balance {
            b.publish(shared.open_connections());
        }
        loop {
            crate::balance::defer_to_less_loaded(&shared, &mut stop_rx).await;
            // Shedding load: never wait for a connection slot; a connection that finds
            // none is answered 503. Otherwise wait, so the connection stays in the
            // kernel backlog where another worker may take it.
            let permit = if shed {
                permits.clone().try_acquire_owned().ok()
            } else {
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                    _ = stop_rx.wait_for(Option::is_some) => break,
                }
            };
            let accepted = tokio::select! {
                a = l.accept() => a,
                _ = stop_rx.wait_for(Option::is_some) => break,
            };
            let permit = permit.or_else(|| permits.clone().try_acquire_owned().ok());
            match accepted {
                Ok((stream, info)) => dispatch(stream, info, permit, false, &shared),
                Err(e) => {
                    drop(permit);
                    // EMFILE and friends: back off instead of spinning.
                    ferricorn_core::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // A graceful stop (TERM: a server stop, a HUP, a TTOU): the connections the
        // kernel has already queued were sent by clients (or a load balancer) that expect
        // an answer. Take those, and only those, and serve them with `Connection: close`
        // before this copy of the socket closes. (A worker retiring after --max-requests
        // leaves them to the other workers.)
        if *stop_rx.borrow() == Some(ServeOutcome::Graceful) {
            for _ in 0..MAX_DRAINED {
                let Some((stream, info)) = l.accept_queued() else { break };
                // Over the limit or not, these get served: refusing them now loses them.
                dispatch(stream, info, permits.clone().try_acquire_owned().ok(), true, &shared);
            }
        }
    })
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn serve_connection<S>(stream: S, info: ConnInfo, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    let state = Arc::new(ConnState::default());
    let io = IdleIo::new(
        stream,
        state.clone(),
        cfg.keepalive,
        cfg.header_timeout,
        cfg.limits.request_line,
        cfg.limits.field_size,
    )
    .with_peer(info.peer.map(|p| p.ip()));
    let conn_state = state.clone();
    let info = Arc::new(info);
    let info_for_log = info.clone();
    let svc_shared = shared.clone();
    let service = service_fn(move |req| crate::front::handle(req, svc_shared.clone(), info.clone(), state.clone()));
    let max_head = cfg
        .limits
        .request_line
        .max(8190)
        .saturating_add(
            cfg.limits
                .fields
                .saturating_mul(cfg.limits.field_size.saturating_add(2)),
        )
        .saturating_add(4);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(cfg.keepalive.is_some())
        .half_close(cfg.half_close)
        // The head timeout is IdleIo's (one timer per connection, not two per request).
        .header_read_timeout(None)
        .max_headers(cfg.limits.fields)
        .max_buf_size(max_head.clamp(8192, 4 << 20));
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // Polled on every turn of the connection: the stop is checked second, with one
        // atomic load once its waker is registered.
        biased;
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.is_parse() || e.is_parse_too_large() {
                    let ip = info_for_log.peer.map(|p| p.ip().to_string()).unwrap_or_default();
                    ferricorn_core::warning!("Invalid request from ip={ip}: {e}");
                    let line = conn_state.last_request_line();
                    if let (Some(format), false) = (&shared.config.access_log, line.is_empty()) {
                        let status = if e.is_parse_too_large() { 431 } else { 400 };
                        crate::access::log_refused(format, &line, status, &info_for_log);
                    }
                }
            }
            return;
        }
        _ = shared.stopped.fired() => {}
    }
    // An idle connection may have a request on its way: one just accepted (a load
    // balancer sent it to us), or a keep-alive one a proxy is reusing at this instant.
    // Serve what arrives during a short grace, with `Connection: close`, rather than
    // close under it (nginx would count that as a failure of this upstream). hyper's
    // graceful shutdown would close an idle connection at once.
    if conn_state.is_idle() {
        let grace = IDLE_CONNECTION_GRACE.min(shared.config.graceful_timeout);
        if tokio::time::timeout(grace, conn.as_mut()).await.is_ok() {
            return;
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// How long an idle connection gets to deliver a request once the worker is stopping.
const IDLE_CONNECTION_GRACE: Duration = Duration::from_secs(2);
