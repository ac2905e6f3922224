//! A StatsD / DogStatsD client with Gunicorn's wire format: `name:value|type[|@rate][|#tags]`.
//! Datagrams are sent on a non-blocking socket; when the kernel buffer is full the metric
//! is dropped rather than delaying a request.

use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;

#[derive(Debug, thiserror::Error)]
#[error("Invalid value for statsd_host: {value:?}: {why}")]
pub struct StatsdError {
    pub value: String,
    pub why: String,
}

enum Sock {
    Udp(UdpSocket),
    /// Sent with `send_to`, so a socket that appears after start-up (an agent started
    /// later) is picked up; Gunicorn drops metrics silently in that case.
    Unix(UnixDatagram, std::path::PathBuf),
    /// The host did not resolve at start-up: Gunicorn's client then sends nothing
    /// (its `connect` failed inside a `try`), and the server runs on.
    Off,
}

pub struct Statsd {
    sock: Sock,
    /// `prefix.` (empty when no prefix), so names are `prefix.gunicorn.requests`.
    prefix: String,
    /// `|#a:b,c` when DogStatsD tags are set.
    tags: String,
}

impl Statsd {
    /// `host:port`, `[v6]:port`, `host` (port 8125) or `unix://PATH` (`unix:PATH`).
    pub fn connect(addr: &str, prefix: &str, tags: &str) -> Result<Self, StatsdError> {
        let err = |why: String| StatsdError {
            value: addr.to_string(),
            why,
        };
        let unix = addr.strip_prefix("unix://").or_else(|| addr.strip_prefix("unix:"));
        let sock = if let Some(path) = unix {
            if path.is_empty() {
                return Err(err("no socket path".into()));
            }
            let s = UnixDatagram::unbound().map_err(|e| err(e.to_string()))?;
            s.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
            Sock::Unix(s, path.into())
        } else {
            let with_port = if addr.rsplit_once(':').is_some_and(|(h, p)| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']'))
            }) {
                addr.to_string()
            } else if addr.contains(':') && !addr.starts_with('[') {
                format!("[{addr}]:8125")
            } else {
                format!("{addr}:8125")
            };
            match with_port.to_socket_addrs().ok().and_then(|mut a| a.next()) {
                Some(target) => {
                    let local = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
                    let s = UdpSocket::bind(local).map_err(|e| err(e.to_string()))?;
                    s.connect(target).map_err(|e| err(e.to_string()))?;
                    s.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
                    Sock::Udp(s)
                }
                None => {
                    crate::warning!("statsd_host {addr:?} does not resolve: no metrics will be sent");
                    Sock::Off
                }
            }
        };
        // Gunicorn: `sub(r"^(.+[^.]+)\.*$", r"\1.", prefix)`.
        let prefix = prefix.trim_end_matches('.');
        let tags = tags.trim();
        Ok(Self {
            sock,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}.")
            },
            tags: if tags.is_empty() {
                String::new()
            } else {
                format!("|#{tags}")
            },
        })
    }

    /// A metric whose value is already text (custom metrics from hooks: `str(value)`, as
    /// Gunicorn formats it). `kind` is `c`, `g`, `h` or `ms`.
    pub fn send_text(&self, name: &str, value: &str, kind: &str) {
        let kind = if kind == "c" { "c|@1.0" } else { kind };
        self.send(name, value, kind);
    }

    fn send(&self, name: &str, value: &str, kind: &str) {
        let line = format!("{}{name}:{value}|{kind}{}", self.prefix, self.tags);
        // Fire and forget: a full buffer or an absent listener must never cost a request.
        let _ = match &self.sock {
            Sock::Udp(s) => s.send(line.as_bytes()),
            Sock::Unix(s, path) => s.send_to(line.as_bytes(), path),
            Sock::Off => Ok(0),
        };
    }

    /// A counter, with Gunicorn's explicit sample rate.
    pub fn incr(&self, name: &str, value: u64) {
        self.send(name, &value.to_string(), "c|@1.0");
    }

    pub fn gauge(&self, name: &str, value: u64) {
        self.send(name, &value.to_string(), "g");
    }

    /// A timer; the value is printed as Python prints a float (`12.0`, `0.25`).
    pub fn timing_ms(&self, name: &str, ms: f64) {
        self.send(name, &format!("{ms:?}"), "ms");
    }

    pub fn histogram(&self, name: &str, value: u64) {
        self.send(name, &value.to_string(), "h");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_with_prefix_and_tags() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let s = Statsd::connect(&addr, "app.", "env:prod,team:web").unwrap();
        s.incr("gunicorn.requests", 1);
        s.timing_ms("gunicorn.request.duration", 1.5);
        s.gauge("gunicorn.workers", 0);
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        assert_eq!(
            got,
            [
                "app.gunicorn.requests:1|c|@1.0|#env:prod,team:web",
                "app.gunicorn.request.duration:1.5|ms|#env:prod,team:web",
                "app.gunicorn.workers:0|g|#env:prod,team:web",
            ]
        );
    }

    #[test]
    fn bad_addresses() {
        // Gunicorn starts without metrics when the host does not resolve.
        let off = Statsd::connect("no-such-host.invalid:8125", "", "").unwrap();
        assert!(matches!(off.sock, Sock::Off));
        off.incr("x", 1);
        assert!(Statsd::connect("unix://", "", "").is_err());
        assert!(Statsd::connect("unix:", "", "").is_err());
        assert!(matches!(
            Statsd::connect("unix:/no/such/socket", "", "").map(|s| s.sock),
            Ok(Sock::Unix(_, p)) if p == std::path::Path::new("/no/such/socket")
        ));
        // Resolved lazily: the agent may start after us.
        assert!(Statsd::connect("unix:///no/such/socket", "", "").is_ok());
    }
}
