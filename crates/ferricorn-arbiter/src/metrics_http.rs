//! The master's Prometheus endpoint (`--metrics-bind`), answered from the master loop.
//!
//! The master must stay single-threaded (it forks), so there is no server thread: the
//! listening socket joins the loop's `poll()`, and each scrape is answered in one short,
//! bounded exchange (a scraper that stalls is cut off after a fraction of a second).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The listener's fd, closed in forked workers by `signals::reset_in_child`.
pub(crate) static LISTENER_FD: AtomicI32 = AtomicI32::new(-1);

const MAX_REQUEST: usize = 8192;
/// All the scrapes answered in one loop iteration, reads and writes together: the master
/// loop waits for nothing longer (a trickling client is cut off).
const TICK_BUDGET: Duration = Duration::from_millis(250);
/// Scrapes answered per loop iteration at most, so signals are never starved.
const PER_TICK: usize = 8;

pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let domain = socket2::Domain::for_address(addr);
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())?;
        sock.listen(64)?;
        sock.set_nonblocking(true)?;
        let listener: TcpListener = sock.into();
        LISTENER_FD.store(listener.as_raw_fd(), Ordering::Relaxed);
        Ok(Self { listener })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers the scrapes waiting in the accept queue.
    pub fn serve_pending(&self, render: &dyn Fn() -> String) {
        let deadline = std::time::Instant::now() + TICK_BUDGET;
        for _ in 0..PER_TICK {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, render, deadline) {
                        ferricorn_core::debug!("metrics scrape failed: {e}");
                    }
                }
                Err(_) => return,
            }
        }
    }
}

fn answer(mut stream: TcpStream, render: &dyn Fn() -> String, deadline: std::time::Instant) -> std::io::Result<()> {
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    stream.set_nonblocking(false)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "Not Found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "Method Not Allowed\n".into()),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.set_write_timeout(Some(left()?.max(Duration::from_millis(50))))?;
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    Ok(())
}
