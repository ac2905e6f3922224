//! `--bind` address forms, as Gunicorn accepts them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp {
        host: IpAddr,
        port: u16,
    },
    /// A host name to resolve at bind time (e.g. `localhost:8000`).
    TcpName {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    Fd(i32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid bind address {addr:?}: {why}")]
pub struct BindError {
    pub addr: String,
    pub why: &'static str,
}

impl BindAddr {
    pub fn parse(s: &str) -> Result<Self, BindError> {
        let err = |why| BindError {
            addr: s.to_string(),
            why,
        };
        if let Some(path) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err(err("empty unix socket path"));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            let n: i32 = fd.parse().map_err(|_| err("fd:// needs a file descriptor number"))?;
            if n < 0 {
                return Err(err("fd:// needs a non-negative file descriptor"));
            }
            return Ok(BindAddr::Fd(n));
        }
        let s2 = s.strip_prefix("tcp://").unwrap_or(s);
        let (host, port) = if let Some(rest) = s2.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(|| err("missing ']' in IPv6 address"))?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "8000",
                None => return Err(err("unexpected text after ']'")),
            };
            (host, port)
        } else {
            match s2.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (s2, "8000"),
            }
        };
        let port: u16 = port.parse().map_err(|_| err("port must be a number 0-65535"))?;
        if host.is_empty() {
            return Ok(BindAddr::Tcp {
                host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            });
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(BindAddr::Tcp { host: ip, port }),
            Err(_) if host.contains(':') => Err(err("IPv6 addresses must be written [addr]:port")),
            Err(_) => Ok(BindAddr::TcpName {
                host: host.to_string(),
                port,
            }),
        }
    }
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp {
                host: IpAddr::V6(h),
                port,
            } => write!(f, "http://[{h}]:{port}"),
            BindAddr::Tcp { host, port } => write!(f, "http://{host}:{port}"),
            BindAddr::TcpName { host, port } => write!(f, "http://{host}:{port}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BindAddr::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            BindAddr::parse("127.0.0.1:9000").unwrap(),
            BindAddr::Tcp {
                host: "127.0.0.1".parse().unwrap(),
                port: 9000
            }
        );
        assert_eq!(
            BindAddr::parse("[::1]:81").unwrap(),
            BindAddr::Tcp {
                host: "::1".parse().unwrap(),
                port: 81
            }
        );
        assert_eq!(
            BindAddr::parse("tcp://10.0.0.1").unwrap(),
            BindAddr::Tcp {
                host: "10.0.0.1".parse().unwrap(),
                port: 8000
            }
        );
        assert_eq!(
            BindAddr::parse(":5000").unwrap(),
            BindAddr::Tcp {
                host: "0.0.0.0".parse().unwrap(),
                port: 5000
            }
        );
        assert_eq!(
            BindAddr::parse("unix:/tmp/x.sock").unwrap(),
            BindAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            BindAddr::parse("unix:///tmp/x.sock").unwrap(),
            BindAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(BindAddr::parse("fd://3").unwrap(), BindAddr::Fd(3));
        assert!(matches!(
            BindAddr::parse("localhost:80").unwrap(),
            BindAddr::TcpName { .. }
        ));
    }

    #[test]
    fn rejects() {
        assert!(BindAddr::parse("127.0.0.1:http").is_err());
        assert!(BindAddr::parse("[::1:80").is_err());
        assert!(BindAddr::parse("fd://x").is_err());
        assert!(BindAddr::parse("unix:").is_err());
        assert!(BindAddr::parse("127.0.0.1:70000").is_err());
    }
}
