//! Trusting a front proxy: `forwarded_allow_ips` and `secure_scheme_headers`, as Gunicorn
//! applies them. Only a trusted peer (or any peer on a UNIX socket) may set the scheme.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::request::Rejection;

/// A comma-separated list of IPs and CIDRs, or `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    any: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl AllowList {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = AllowList::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                list.any = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?} has an invalid prefix length"))?,
                None => max,
            };
            if mask(ip, bits) != ip {
                return Err(format!("{item:?} has host bits set"));
            }
            list.nets.push((ip, bits));
        }
        Ok(list)
    }

    /// `None` is a UNIX-socket peer, always trusted.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        let Some(ip) = peer else { return true };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.any
            || self
                .nets
                .iter()
                .any(|(net, bits)| net.is_ipv4() == ip.is_ipv4() && mask(ip, *bits) == *net)
    }
}

fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Gunicorn's default `secure_scheme_headers`.
pub fn default_secure_scheme_headers() -> Vec<(HeaderName, String)> {
    [
        ("x-forwarded-protocol", "ssl"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-ssl", "on"),
    ]
    .into_iter()
    .map(|(k, v)| (HeaderName::from_static(k), v.to_string()))
    .collect()
}

/// The scheme a trusted proxy asserts, if any. Headers that disagree are a 400.
pub fn forwarded_scheme(
    headers: &HeaderMap,
    secure: &[(HeaderName, String)],
) -> Result<Option<&'static str>, Rejection> {
    let mut found: Option<&'static str> = None;
    for (name, expected) in secure {
        for value in headers.get_all(name) {
            let scheme = if value.as_bytes().eq_ignore_ascii_case(expected.as_bytes()) {
                "https"
            } else {
                "http"
            };
            match found {
                Some(prev) if prev != scheme => return Err(Rejection::bad_request("Contradictory scheme headers")),
                _ => found = Some(scheme),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let l = AllowList::parse("127.0.0.1, ::1, 10.0.0.0/8").unwrap();
        assert!(l.allows(Some("127.0.0.1".parse().unwrap())));
        assert!(l.allows(Some("10.2.3.4".parse().unwrap())));
        assert!(l.allows(Some("::ffff:127.0.0.1".parse().unwrap())));
        assert!(!l.allows(Some("192.168.1.1".parse().unwrap())));
        assert!(l.allows(None));
        assert!(AllowList::parse("*").unwrap().allows(Some("8.8.8.8".parse().unwrap())));
        assert!(AllowList::parse("192.168.1.1/24").is_err());
        assert!(AllowList::parse("nope").is_err());
    }

    #[test]
    fn schemes() {
        let secure = default_secure_scheme_headers();
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_scheme(&h, &secure).unwrap(), None);
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(forwarded_scheme(&h, &secure).unwrap(), Some("https"));
        h.insert("x-forwarded-ssl", "off".parse().unwrap());
        assert_eq!(forwarded_scheme(&h, &secure).unwrap_err().status, 400);
    }
}
