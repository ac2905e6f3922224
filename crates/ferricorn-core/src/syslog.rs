//! `--log-syslog`: error and access lines also go to syslog, in the bytes Python's
//! `SysLogHandler` writes for Gunicorn: `<PRI>gunicorn.PREFIX.error: [PID] message\0`.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::log::Level;

/// Gunicorn's facility names and numbers.
const FACILITIES: [(&str, u8); 22] = [
    ("auth", 4),
    ("authpriv", 10),
    ("cron", 9),
    ("daemon", 3),
    ("ftp", 11),
    ("kern", 0),
    ("lpr", 6),
    ("mail", 2),
    ("news", 7),
    ("security", 4),
    ("syslog", 5),
    ("user", 1),
    ("uucp", 8),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
    ("console", 14),
];

/// Lines are written from the I/O thread (access lines): a syslog that stalls must cost
/// lost lines, never a stalled worker. Datagram sockets are non-blocking; streams get a
/// short send timeout and at most one reconnect attempt a second.
const STREAM_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

enum Transport {
    Udp(UdpSocket),
    /// Reconnected after a failure (journald or rsyslog restarted).
    Dgram(Mutex<UnixDatagram>, std::path::PathBuf),
    /// Stream transports reconnect after a failed write.
    Tcp(Mutex<Option<TcpStream>>, std::net::SocketAddr),
    Stream(Mutex<Option<UnixStream>>, std::path::PathBuf),
}

struct Syslog {
    transport: Transport,
    facility: u8,
    error_tag: String,
    /// `None` with `--disable-redirect-access-to-syslog`.
    access_tag: Option<String>,
    /// The second of the last reconnect attempt.
    last_reconnect: std::sync::atomic::AtomicU64,
}

static SYSLOG: OnceLock<Syslog> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("Invalid value for {setting}: {value:?}: {why}")]
pub struct SyslogError {
    pub setting: &'static str,
    pub value: String,
    pub why: String,
}

fn err(setting: &'static str, value: &str, why: impl Into<String>) -> SyslogError {
    SyslogError {
        setting,
        value: value.to_string(),
        why: why.into(),
    }
}

/// `patience`: seconds at start-up, where a slow network must not fail the start, but
/// only the send timeout when reconnecting from the I/O thread.
fn tcp_connect(addr: &std::net::SocketAddr, patience: std::time::Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, patience)?;
    s.set_write_timeout(Some(STREAM_SEND_TIMEOUT))?;
    Ok(s)
}

fn unix_connect(path: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_write_timeout(Some(STREAM_SEND_TIMEOUT))?;
    Ok(s)
}

/// Gunicorn's `parse_syslog_address`: `unix://PATH[#dgram|#stream]`, `udp://HOST[:PORT]`,
/// `tcp://HOST[:PORT]` (port 514 by default).
fn connect(addr: &str) -> Result<Transport, SyslogError> {
    let e = |why: String| err("syslog_addr", addr, why);
    if let Some(rest) = addr.strip_prefix("unix://") {
        let (path, kind) = match rest.split_once('#') {
            Some((p, k)) => (p, Some(k)),
            None => (rest, None),
        };
        if kind != Some("stream") {
            let s = UnixDatagram::unbound().map_err(|x| e(x.to_string()))?;
            match s.connect(path) {
                Ok(()) => {
                    s.set_nonblocking(true).map_err(|x| e(x.to_string()))?;
                    return Ok(Transport::Dgram(Mutex::new(s), path.into()));
                }
                // Python tries a datagram socket first, then a stream one.
                Err(x) if kind == Some("dgram") || x.raw_os_error() != Some(libc::EPROTOTYPE) => {
                    return Err(e(x.to_string()))
                }
                Err(_) => {}
            }
        }
        let s = unix_connect(Path::new(path)).map_err(|x| e(x.to_string()))?;
        return Ok(Transport::Stream(Mutex::new(Some(s)), path.into()));
    }
    let (tcp, rest) = match (addr.strip_prefix("udp://"), addr.strip_prefix("tcp://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err(e("expected unix://PATH, udp://HOST:PORT or tcp://HOST:PORT".into())),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| e("unclosed '['".into()))?;
        (h.to_string(), after.strip_prefix(':').unwrap_or(""))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (rest.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host.to_lowercase()
    };
    let port: u16 = if port.is_empty() {
        514
    } else {
        port.parse()
            .map_err(|_| e(format!("{port:?} is not a valid port number")))?
    };
    let target = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|x| e(x.to_string()))?
        .next()
        .ok_or_else(|| e("the host does not resolve".into()))?;
    if tcp {
        let s = tcp_connect(&target, std::time::Duration::from_secs(5)).map_err(|x| e(x.to_string()))?;
        Ok(Transport::Tcp(Mutex::new(Some(s)), target))
    } else {
        let s = UdpSocket::bind(if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }).map_err(|x| e(x.to_string()))?;
        s.connect(target).map_err(|x| e(x.to_string()))?;
        s.set_nonblocking(true).map_err(|x| e(x.to_string()))?;
        Ok(Transport::Udp(s))
    }
}

/// Turns syslog on for this process and the workers it forks.
pub fn configure(addr: &str, facility: &str, prefix: &str, redirect_access: bool) -> Result<(), SyslogError> {
    let facility = FACILITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(facility))
        .map(|(_, v)| *v)
        .ok_or_else(|| err("syslog_facility", facility, "unknown facility name"))?;
    let transport = connect(addr)?;
    let prefix = prefix.replace(':', ".");
    let _ = SYSLOG.set(Syslog {
        transport,
        facility,
        error_tag: format!("gunicorn.{prefix}.error"),
        access_tag: redirect_access.then(|| format!("gunicorn.{prefix}.access")),
        last_reconnect: Default::default(),
    });
    Ok(())
}

/// Access lines go to syslog (which turns the access log on, as in Gunicorn).
pub fn takes_access() -> bool {
    SYSLOG.get().is_some_and(|s| s.access_tag.is_some())
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Debug => 7,
        Level::Info => 6,
        Level::Warning => 4,
        Level::Error => 3,
        Level::Critical => 2,
    }
}

pub fn error_line(level: Level, msg: &str) {
    if let Some(s) = SYSLOG.get() {
        s.send(level, &s.error_tag, msg);
    }
}

pub fn access_line(msg: &str) {
    if let Some(s) = SYSLOG.get() {
        if let Some(tag) = &s.access_tag {
            s.send(Level::Info, tag, msg);
        }
    }
}

impl Syslog {
    /// At most one reconnect attempt a second, so a dead syslog costs no connect per line.
    fn may_reconnect(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reconnect.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }

    /// One line on a stream transport, reconnecting (at most once a second) after a
    /// failed write.
    fn write_stream<S: Write>(
        &self,
        conn: &Mutex<Option<S>>,
        bytes: &[u8],
        connect: impl FnOnce() -> std::io::Result<S>,
    ) {
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_mut().is_none_or(|c| c.write_all(bytes).is_err()) && self.may_reconnect() {
            *guard = connect().ok();
            if let Some(c) = guard.as_mut() {
                let _ = c.write_all(bytes);
            }
        }
    }

    fn send(&self, level: Level, tag: &str, msg: &str) {
        let pri = (self.facility << 3) | severity(level);
        let bytes = format!("<{pri}>{tag}: [{}] {msg}\0", std::process::id());
        let bytes = bytes.as_bytes();
        // Logging must never fail the caller: lost lines are the price of a down syslog.
        match &self.transport {
            Transport::Udp(s) => {
                let _ = s.send(bytes);
            }
            Transport::Dgram(sock, path) => {
                let mut sock = sock.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(err) = sock.send(bytes) {
                    if err.kind() != std::io::ErrorKind::WouldBlock && self.may_reconnect() {
                        if let Ok(fresh) = UnixDatagram::unbound() {
                            if fresh.connect(path).is_ok() && fresh.set_nonblocking(true).is_ok() {
                                let _ = fresh.send(bytes);
                                *sock = fresh;
                            }
                        }
                    }
                }
            }
            Transport::Tcp(conn, addr) => self.write_stream(conn, bytes, || tcp_connect(addr, STREAM_SEND_TIMEOUT)),
            Transport::Stream(conn, path) => self.write_stream(conn, bytes, || unix_connect(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(connect("udp://127.0.0.1:5514").is_ok());
        assert!(connect("udp://localhost").is_ok());
        assert!(connect("udp://[::1]:5514").is_ok());
        assert!(connect("udp://127.0.0.1:port").is_err());
        assert!(connect("syslog.example:514").is_err());
        assert!(connect("unix:///no/such/dev/log").is_err());
    }
}
