//! The request path shared by every bridge: validate, read small bodies, call the app,
//! finish the response headers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use ferricorn_core::request::{check_head, Accepted};
use http::{header, HeaderValue, Response};
use hyper::body::Incoming;

use crate::access::Pending;
use crate::body::RequestBody;
use crate::conn::{ClientGone, ConnState, EarlyHints};
use crate::serve::Shared;
use crate::{error_page, BoxFuture, ConnInfo, Reply, Request, ResponseBody};

/// Serves one request. Everything up to the app call runs when hyper hands the request
/// over; the future returned holds only what is left once the response exists (a
/// future made by an `async fn` would also keep the 264-byte request it was given, for
/// as long as it lives, in the space hyper keeps per connection).
pub(crate) fn handle(
    mut req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    state: Arc<ConnState>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static {
    state.request_started();
    let meter = ferricorn_core::metrics::enabled().then(|| crate::body::Meter::start(req.method().clone()));
    let cfg = &shared.config;
    if cfg.log_requests {
        ferricorn_core::debug!("{} {}", req.method(), req.uri().path());
    }
    // HTTP/1.0 has no chunked encoding: see `http10_connection`.
    let http10 = (req.version() == http::Version::HTTP_10).then(|| Http10 {
        // `--keep-alive 0`: hyper closes every connection whatever the client asks.
        // A `close` beside it wins, as hyper closes then.
        keep_alive: shared.config.keepalive.is_some()
            && crate::has_token(req.headers(), header::CONNECTION, "keep-alive")
            && !crate::has_token(req.headers(), header::CONNECTION, "close"),
        head: req.method() == http::Method::HEAD,
    });
    // hyper leaves HTTP/1's bodiless responses (HEAD, 204, 304) to its encoder, but its
    // HTTP/2 server sends whatever the body holds: see `discard_content`.
    let h2 = req.version() == http::Version::HTTP_2;
    let head = req.method() == http::Method::HEAD;
    let access = cfg
        .access_log
        .as_ref()
        .map(|f| Pending::begin(f.clone(), &req, &info, &cfg.script_name));
    // Every HTTP/1 head is seen by the framing scanner before hyper parses it. No facts
    // means the scanner stopped on this connection (a body it could not follow or that
    // broke a framing rule): the bytes after it cannot be trusted to be framed as a proxy
    // in front framed them, so nothing more is served on it.
    let framing_error: Option<(u16, std::borrow::Cow<'static, str>)> = match state.next_head() {
        Some(facts) => facts.framing_error(),
        None if req.version() < http::Version::HTTP_2 => Some((400, "the request could not be framed reliably".into())),
        None => None,
    }
    .or_else(|| {
        // The scanner reads ahead of hyper: the broken body is usually this request's
        // own (read with its head), or one before it on the connection.
        state
            .body_violation()
            .map(|v| (400, format!("invalid chunked body: {v}").into()))
    });
    let h2c = framing_error.is_none()
        && cfg.h2c_upgrade
        && info.tls.is_none()
        && crate::h2c_upgrade::requested(&req)
        && cfg.forwarded_allow.allows(info.peer.map(|p| p.ip()));
    let switched = if h2c {
        crate::h2c_upgrade::upgrade(&mut req, &shared, &info)
    } else {
        None
    };
    let started = match (framing_error, switched) {
        (Some((status, detail)), _) => Started::Done(reject(&info, status, &detail)),
        (None, Some(resp)) => Started::Done(resp),
        (None, None) => start(req, &shared, info, &state),
    };
    async move {
        let mut resp = match started {
            Started::Done(resp) => resp,
            Started::Waiting(wait) => wait.await,
        };
        if let Some(h) = http10 {
            http10_connection(&mut resp, h);
        }
        if h2
            && (head
                || matches!(
                    resp.status(),
                    http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
                ))
        {
            resp.body_mut().discard_content();
        }
        finish(&mut resp, &shared, state, access, meter);
        Ok(resp)
    }
}

/// What an HTTP/1.0 request said about its connection.
#[derive(Clone, Copy)]
struct Http10 {
    keep_alive: bool,
    head: bool,
}

/// An HTTP/1.0 client gets an HTTP/1.0 response that says whether the connection stays
/// open, as Gunicorn's does: `keep-alive` when it asked for it and the response's end is
/// known without closing (a length, or no body), `close` otherwise. hyper, given a 1.1
/// response, would promise keep-alive and then end a body of unknown length by closing.
fn http10_connection(resp: &mut Response<ResponseBody>, h: Http10) {
    *resp.version_mut() = http::Version::HTTP_10;
    let status = resp.status();
    let bodyless = h.head || status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED;
    let delimited = bodyless
        || resp.headers().contains_key(header::CONTENT_LENGTH)
        || hyper::body::Body::size_hint(resp.body()).exact().is_some();
    let closing = crate::has_token(resp.headers(), header::CONNECTION, "close");
    let value = if h.keep_alive && delimited && !closing {
        "keep-alive"
    } else {
        "close"
    };
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static(value));
}

/// The server's part of every response: `Connection: close` when the worker stops,
/// `Server`, the access log and metrics, the connection's bookkeeping.
fn finish(
    resp: &mut Response<ResponseBody>,
    shared: &Shared,
    state: Arc<ConnState>,
    access: Option<Box<Pending>>,
    meter: Option<crate::body::Meter>,
) {
    // The response that reaches --max-requests is the worker's last on this
    // connection: say so, as Gunicorn's force_close() does, so the client does not
    // send another request to a worker on its way out.
    let last = shared.request_done();
    if last || shared.stopping() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp.headers_mut()
        .entry(header::SERVER)
        .or_insert_with(|| shared.server_header.clone());
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        state.mark_upgraded();
    }
    if let Some(mut access) = access {
        access.response(resp);
        resp.body_mut().log_on_finish(access);
    }
    if let Some(mut meter) = meter {
        meter.status = resp.status().as_u16();
        resp.body_mut().measure(meter);
    }
    resp.body_mut().attach(state);
}

/// What the front end made of a request: its response, or a future of it.
// Not boxed: `Done` is the path that allocates nothing; it is moved once into the
// request's future.
#[allow(clippy::large_enum_variant)]
enum Started {
    Done(Response<ResponseBody>),
    /// A body to read first, or an app that answers later. Boxed: hyper keeps the space
    /// for the request future for the connection's whole life, so what a wait holds (the
    /// request, the deadline, the admission) lives in an allocation freed with the
    /// request instead of on every idle connection. A request answered during the call
    /// (inline WSGI) needs no allocation at all.
    Waiting(BoxFuture<Response<ResponseBody>>),
}

/// A request that passed the head checks, on its way to the app.
struct Checked {
    head: http::request::Parts,
    info: Arc<ConnInfo>,
    accepted: Accepted,
    scheme: &'static str,
    client: Option<std::net::SocketAddr>,
    trusted_proxy: bool,
}

/// Checks the head, then calls the app, without waiting for anything unless the body
/// must be read first or the app answers later.
fn start(req: hyper::Request<Incoming>, shared: &Arc<Shared>, info: Arc<ConnInfo>, state: &Arc<ConnState>) -> Started {
    let cfg = &shared.config;
    let (mut head, incoming) = req.into_parts();
    // An HTTP/1 head's request line and header lines were measured as sent by the
    // framing scanner.
    let h1_limits;
    let limits = if head.version < http::Version::HTTP_2 {
        h1_limits = ferricorn_core::request::Limits {
            request_line: 0,
            field_size: usize::MAX,
            ..cfg.limits
        };
        &h1_limits
    } else {
        &cfg.limits
    };
    if head.version == http::Version::HTTP_2 {
        if let Err(detail) = h2_head(&mut head) {
            return Started::Done(reject(&info, 400, detail));
        }
    }
    let mut accepted = match check_head(
        &head.method,
        &head.uri,
        head.version,
        &head.headers,
        limits,
        cfg.permit_unconventional_method,
    ) {
        Ok(a) => a,
        Err(rej) => return Started::Done(reject(&info, rej.status, &rej.detail)),
    };
    // HTTP/2 frames bodies itself: one may come without Content-Length (RFC 9113
    // §8.1), and only the stream's end says there is none.
    if head.version == http::Version::HTTP_2 {
        accepted.has_body = !hyper::body::Body::is_end_stream(&incoming);
    }
    // hyper turns any 2xx answer to CONNECT into a tunnel and writes nothing, so the
    // app (which Gunicorn would call) could never answer it: refuse it plainly.
    if head.method == http::Method::CONNECT {
        return Started::Done(reject(&info, 501, "CONNECT is not supported"));
    }
    let trusted_proxy = cfg.forwarded_allow.allows(info.peer.map(|p| p.ip()));
    if cfg.underscore_headers != crate::UnderscoreHeaders::Keep {
        let unsafe_name = |k: &http::HeaderName| cfg.forwarder_headers.is_unsafe_underscore(k.as_str(), trusted_proxy);
        if let Some(name) = head.headers.keys().find(|k| unsafe_name(k)) {
            if cfg.underscore_headers == crate::UnderscoreHeaders::Refuse {
                return Started::Done(reject(&info, 400, &format!("invalid header name {name}")));
            }
            let names: Vec<http::HeaderName> = head.headers.keys().filter(|k| unsafe_name(k)).cloned().collect();
            for name in names {
                head.headers.remove(name);
            }
        }
    }
    if let Some(files) = &cfg.static_files {
        if let Some(resp) = files.serve(&head) {
            return Started::Done(resp);
        }
    }
    let mut scheme = info.scheme;
    if trusted_proxy {
        match ferricorn_core::proxy::forwarded_scheme(&head.headers, &cfg.secure_scheme_headers) {
            Ok(Some(s)) => scheme = s,
            Ok(None) => {}
            Err(rej) => return Started::Done(reject(&info, rej.status, &rej.detail)),
        }
    }
    let mut client = info.peer;
    if trusted_proxy && cfg.forwarded_header {
        let values = head.headers.get_all(header::FORWARDED).iter().map(|v| v.as_bytes());
        if let Some(fwd) = ferricorn_core::proxy::forwarded(values) {
            scheme = fwd.scheme.unwrap_or(scheme);
            client = fwd.client.or(client);
        }
    }
    let checked = Checked {
        head,
        info,
        accepted,
        scheme,
        client,
        trusted_proxy,
    };
    if !accepted.has_body {
        return call_app(checked, RequestBody::empty(), shared, state);
    }
    let mut body = RequestBody::streaming(incoming, cfg.limits.body, cfg.body_read_timeout);
    // With `Expect: 100-continue` the body is left for the app: hyper sends 100 only
    // when the app starts reading.
    if accepted.expects_continue {
        if let Some(refused) = refuse_body(&mut body, &checked.info, state) {
            return Started::Done(refused);
        }
        state.expect_continue();
        return call_app(checked, body, shared, state);
    }
    // Small bodies are read here, on the I/O thread, so a client trickling its upload
    // never holds an application thread.
    let (shared, state) = (shared.clone(), state.clone());
    Started::Waiting(Box::pin(async move {
        let cfg = &shared.config;
        if let Err(e) = body.prebuffer(cfg.prebuffer, cfg.header_timeout).await {
            return reject(&checked.info, e.status(), &e.to_string());
        }
        if let Some(refused) = refuse_body(&mut body, &checked.info, &state) {
            return refused;
        }
        match call_app(checked, body, &shared, &state) {
            Started::Done(resp) => resp,
            Started::Waiting(wait) => wait.await,
        }
    }))
}

/// What RFC 9113 asks of an HTTP/2 request head beyond what hyper checks: `Cookie`
/// fields split into several are joined with "; " before the head reaches an
/// application written for HTTP/1 (§8.2.3: cookie parsers read a "," join as one
/// cookie); a `Host` that names another authority than `:authority` makes the request
/// malformed (§8.3.1: which one a proxy routed on and which one the app sees must not
/// differ); so do values with leading or trailing whitespace (§8.2.1).
#[inline(never)]
fn h2_head(head: &mut http::request::Parts) -> Result<(), &'static str> {
    if let (Some(authority), Some(host)) = (head.uri.authority(), head.headers.get(header::HOST)) {
        if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
            return Err("Host header does not match :authority");
        }
    }
    let padded = |v: &http::HeaderValue| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    };
    if head.headers.values().any(padded) {
        return Err("Invalid header value: leading or trailing whitespace");
    }
    if let http::header::Entry::Occupied(mut cookies) = head.headers.entry(header::COOKIE) {
        if cookies.iter().nth(1).is_some() {
            let mut joined = Vec::new();
            for (i, v) in cookies.iter().enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(v.as_bytes());
            }
            // Each piece was a valid value: so is their join.
            if let Ok(v) = http::HeaderValue::from_bytes(&joined) {
                cookies.insert(v);
            }
        }
    }
    Ok(())
}

/// Bytes hyper decoded without complaint, but Gunicorn refuses (and a proxy in front
/// might frame differently): never hand such a body to the app. Otherwise the body
/// keeps watching its framing while the app reads it.
fn refuse_body(body: &mut RequestBody, info: &ConnInfo, state: &Arc<ConnState>) -> Option<Response<ResponseBody>> {
    if let Some(v) = state.body_violation() {
        return Some(reject(info, 400, &format!("Invalid chunked body: {v}")));
    }
    body.watch_framing(state.clone());
    None
}

/// Hands the request to the app, once its HTTP/2 connection has a free call slot (see
/// `ServerConfig::h2_calls_per_connection`).
fn call_app(checked: Checked, body: RequestBody, shared: &Arc<Shared>, state: &Arc<ConnState>) -> Started {
    let Some(slots) = state.call_slots() else {
        return call_app_now(checked, body, shared, state, None);
    };
    match slots.clone().try_acquire_owned() {
        Ok(slot) => call_app_now(checked, body, shared, state, Some(slot)),
        Err(_) => wait_for_slot(checked, body, shared, state, slots.clone()),
    }
}

/// The connection's call slots are all taken: the request waits for one. Out of line, so
/// that building this future costs the common path nothing (its captures were copied
/// ahead of the branch).
#[cold]
#[inline(never)]
fn wait_for_slot(
    checked: Checked,
    body: RequestBody,
    shared: &Arc<Shared>,
    state: &Arc<ConnState>,
    slots: Arc<tokio::sync::Semaphore>,
) -> Started {
    let (shared, state) = (shared.clone(), state.clone());
    let deadline = shared
        .config
        .request_deadline
        .map(|d| (d, deadline_label(&checked.head)));
    // A stream reset while it waits here drops this future: the app never runs.
    Started::Waiting(Box::pin(async move {
        let work = async {
            let Ok(slot) = slots.acquire_owned().await else {
                return error_page::response(503, "The connection is closing", true);
            };
            match call_app_now(checked, body, &shared, &state, Some(slot)) {
                Started::Done(resp) => resp,
                Started::Waiting(wait) => wait.await,
            }
        };
        // `--request-deadline` counts the wait for a slot too.
        let Some((limit, log_as)) = deadline else {
            return work.await;
        };
        match tokio::time::timeout(limit, work).await {
            Ok(resp) => resp,
            Err(_) => deadline_exceeded(&log_as),
        }
    }))
}

/// How a request is named in the `--request-deadline` warning.
fn deadline_label(head: &http::request::Parts) -> String {
    format!("{} {}", head.method, head.uri.path())
}

/// `--request-deadline` passed before the app answered: 504, and a warning naming the
/// request (the call goes on; its answer is dropped).
fn deadline_exceeded(log_as: &str) -> Response<ResponseBody> {
    ferricorn_core::warning!("Request deadline exceeded: {log_as}");
    error_page::response(504, "The application did not answer in time.", true)
}

fn call_app_now(
    checked: Checked,
    body: RequestBody,
    shared: &Arc<Shared>,
    state: &Arc<ConnState>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Started {
    let cfg = &shared.config;
    let admission = match cfg.max_queued {
        Some(queued) => match shared.admissions.admit(cfg.app_threads + queued) {
            Some(a) => Some(a),
            None => return Started::Done(crate::overload::overloaded()),
        },
        None => None,
    };
    let Checked {
        mut head,
        info,
        accepted,
        scheme,
        client,
        trusted_proxy,
    } = checked;
    // A WebSocket session outlives hyper's connection: it registers with the drain. Only
    // an upgrade request can start one (and filling the extensions map costs every other
    // request an allocation).
    if accepted.upgrade {
        head.extensions
            .insert(crate::serve::SessionGuardFactory(shared.clone()));
    }
    let log_as = if cfg.request_deadline.is_some() {
        deadline_label(&head)
    } else {
        String::new()
    };
    // 1xx responses need HTTP/1.1 (RFC 9110 15.2); hyper's HTTP/2 server cannot send them.
    let fd = info.fd;
    let early_hints = (head.version == http::Version::HTTP_11).then(|| EarlyHints {
        request: state.open_interim(),
        state: state.clone(),
        fd,
    });
    let mut ending = Ending {
        hints_enabled: early_hints.is_some(),
        admission,
        force_close: accepted.force_close,
        expects_continue: accepted.expects_continue && head.version == http::Version::HTTP_11,
    };
    let request = Request {
        head,
        client_gone: ClientGone(state.clone()),
        https: scheme == "https",
        body,
        conn: info,
        trusted_proxy,
        client,
        early_hints,
        call_slot: slot.map(Box::new),
    };
    match shared.app.call(request) {
        Reply::Ready(resp) => Started::Done(ending.apply(resp, state)),
        Reply::Later(call) => wait(Answer::Future(call), ending, shared, state, log_as),
        Reply::Channel(rx) => wait(Answer::Channel(rx), ending, shared, state, log_as),
    }
}

fn wait(answer: Answer, ending: Ending, shared: &Arc<Shared>, state: &Arc<ConnState>, log_as: String) -> Started {
    let deadline = shared
        .config
        .request_deadline
        .map(|d| (Box::pin(tokio::time::sleep(d)), log_as));
    Started::Waiting(Box::pin(WaitForApp {
        answer,
        ending,
        shared: shared.clone(),
        state: state.clone(),
        deadline,
        abort: None,
    }))
}

/// Where the app's response will come from.
enum Answer {
    Future(BoxFuture<Response<ResponseBody>>),
    Channel(tokio::sync::oneshot::Receiver<Response<ResponseBody>>),
}

impl Answer {
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Response<ResponseBody>> {
        match self {
            Answer::Future(f) => f.as_mut().poll(cx),
            Answer::Channel(rx) => Pin::new(rx).poll(cx).map(crate::answered),
        }
    }
}

/// What is left to do once the app's response is there.
struct Ending {
    hints_enabled: bool,
    admission: Option<crate::overload::Admission>,
    force_close: bool,
    /// `Expect: 100-continue` on HTTP/1.1: if the app answers without reading the body,
    /// the client may never send it (or send it late), and hyper closes the connection
    /// after the response: say so in it.
    expects_continue: bool,
}

impl Ending {
    fn apply(&mut self, mut resp: Response<ResponseBody>, state: &ConnState) -> Response<ResponseBody> {
        if self.hints_enabled {
            state.close_interim();
        }
        if let Some(a) = self.admission.take() {
            resp.body_mut().hold(a);
        }
        if self.force_close || (self.expects_continue && state.continue_unread()) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Waits for a response the app gives later, answering in its place if the worker is
/// aborted or `--request-deadline` passes first. Written out by hand: a request whose
/// app runs on another thread or in a batch always waits, and the `select!` of an async
/// block moved the response through each of its states.
struct WaitForApp {
    answer: Answer,
    ending: Ending,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    /// `--request-deadline`: its timer, and the request for the log.
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, String)>,
    abort: crate::event::Registration,
}

impl WaitForApp {
    fn response(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Response<ResponseBody>> {
        if self.ending.hints_enabled {
            self.state.register_interim_waker(cx.waker());
        }
        if let Poll::Ready(resp) = self.answer.poll(cx) {
            return Poll::Ready(resp);
        }
        // The worker is being aborted (timeout): answer what has not started, as Gunicorn
        // does, instead of leaving the client with a reset.
        if self.shared.aborted.register(&mut self.abort, cx.waker()) {
            return Poll::Ready(error_page::response(500, "", true));
        }
        if let Some((sleep, log_as)) = &mut self.deadline {
            // The call goes on (its answer is dropped); `--timeout` still recycles a
            // worker whose call never returns.
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(deadline_exceeded(log_as));
            }
        }
        Poll::Pending
    }
}

impl Future for WaitForApp {
    type Output = Response<ResponseBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let resp = std::task::ready!(this.response(cx));
        this.shared.aborted.unregister(&mut this.abort);
        Poll::Ready(this.ending.apply(resp, &this.state))
    }
}

impl Drop for WaitForApp {
    fn drop(&mut self) {
        self.shared.aborted.unregister(&mut self.abort);
    }
}

fn reject(info: &ConnInfo, status: u16, detail: &str) -> Response<ResponseBody> {
    let ip = info.peer.map(|p| p.ip().to_string()).unwrap_or_default();
    ferricorn_core::warning!("Invalid request from ip={ip}: {detail}");
    error_page::response(status, detail, true)
}
