//! The front end over real loopback sockets, with pure-Rust apps: raw bytes in, raw
//! bytes out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferricorn_server::{serve, App, Listener, Reply, Request, ResponseBody, ServeOutcome, ServerConfig, StopSignal};

/// Answers "hello", or echoes the body on POST (read on a blocking thread, as a bridge would).
struct Echo;

impl App for Echo {
    fn call(&self, req: Request) -> Reply {
        Reply::Later(Box::pin(async move {
            if req.head.method == http::Method::POST {
                let mut body = req.body;
                let data = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    while let Ok(Some(chunk)) = body.read_chunk_blocking() {
                        out.extend_from_slice(&chunk);
                    }
                    out
                })
                .await
                .unwrap_or_default();
                return http::Response::new(ResponseBody::full(Bytes::from(data)));
            }
            http::Response::new(ResponseBody::full(Bytes::from_static(b"hello")))
        }))
    }
}

struct Server {
    addr: SocketAddr,
    stop: StopSignal,
    done: mpsc::Receiver<ServeOutcome>,
}

impl Server {
    fn start(config: ServerConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let out = serve(vec![Listener::Tcp(listener)], Arc::new(Echo), config, move |stop| {
                ready_tx.send(stop).unwrap();
            })
            .unwrap();
            let _ = done_tx.send(out);
        });
        let stop = ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Server { addr, stop, done }
    }

    fn exchange(&self, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.stop(ServeOutcome::Graceful);
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

#[test]
fn hello_has_server_and_date() {
    let srv = Server::start(ServerConfig::default());
    let out = srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("server: ferricorn\r\n"), "{out}");
    assert!(out.contains("date: "), "{out}");
    assert!(out.ends_with("hello"), "{out}");
}

#[test]
fn rejections_close_the_connection() {
    let srv = Server::start(ServerConfig::default());
    for (req, status) in [
        (&b"get / HTTP/1.1\r\nHost: x\r\n\r\n"[..], "400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
            "501",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n",
            "417",
        ),
    ] {
        let out = srv.exchange(req);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status} ")),
            "{}: {out}",
            String::from_utf8_lossy(req)
        );
        assert!(out.contains("connection: close"), "{out}");
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    assert!(srv.exchange(long.as_bytes()).starts_with("HTTP/1.1 414 "));
}

/// hyper folds these away before the front end sees the request; the raw-byte scanner
/// (`framing.rs`) still catches them, so the answer is Gunicorn's 400 and nothing is
/// smuggled behind them.
#[test]
fn smuggling_shapes_get_400() {
    let srv = Server::start(ServerConfig::default());
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let out = srv.exchange(req);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    }
}

#[test]
fn pipelined_requests_and_chunked_echo() {
    let srv = Server::start(ServerConfig::default());
    let out = srv.exchange(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert!(out.contains("\r\n\r\nabcde"), "{out}");
}

#[test]
fn body_limit_gives_413() {
    let mut cfg = ServerConfig::default();
    cfg.limits.body = 4;
    let srv = Server::start(cfg);
    let out = srv.exchange(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789");
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    let out =
        srv.exchange(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
}

#[test]
fn idle_keepalive_connection_is_closed() {
    let cfg = ServerConfig {
        keepalive: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let srv = Server::start(cfg);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let n = s.read(&mut buf).unwrap();
    assert_eq!(n, 0, "server should close the idle connection");
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
}

/// A head trickled byte by byte does not hold the connection past the head timeout,
/// on the first request and on a keep-alive one; a slow but timely head is served.
#[test]
fn trickled_heads_are_cut_at_the_head_timeout() {
    let cfg = ServerConfig {
        keepalive: Some(Duration::from_secs(5)),
        header_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    let srv = Server::start(cfg);
    let trickle = |s: &mut TcpStream, bytes: &[u8], pause: Duration| -> bool {
        for b in bytes {
            if s.write_all(&[*b]).is_err() {
                return false;
            }
            std::thread::sleep(pause);
        }
        true
    };
    let read_some = |s: &mut TcpStream| -> Vec<u8> {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    };
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for keepalive_first in [false, true] {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if keepalive_first {
            s.write_all(head).unwrap();
            assert!(read_some(&mut s).starts_with(b"HTTP/1.1 200"));
        }
        let t = Instant::now();
        // 27 bytes at 50 ms: 1.35 s, over the 0.6 s allowed; the idle timeout (5 s) never applies.
        trickle(&mut s, head, Duration::from_millis(50));
        let got = read_some(&mut s);
        assert!(
            got.is_empty(),
            "a late head was served: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(t.elapsed() < Duration::from_secs(3), "cut after {:?}", t.elapsed());
    }
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(trickle(&mut s, head, Duration::from_millis(5)));
    assert!(read_some(&mut s).starts_with(b"HTTP/1.1 200"));
}

#[test]
fn graceful_stop_finishes_and_returns() {
    let srv = Server::start(ServerConfig::default());
    assert!(srv
        .exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .contains("200 OK"));
    srv.stop.stop(ServeOutcome::Graceful);
    assert_eq!(
        srv.done.recv_timeout(Duration::from_secs(5)).unwrap(),
        ServeOutcome::Graceful
    );
}
