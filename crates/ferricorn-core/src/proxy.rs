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
    /// `*`: every peer is trusted.
    pub fn allows_any(&self) -> bool {
        self.any
    }

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
    let mut see = |value: &http::HeaderValue, expected: &str| {
        // Compared exactly, as Gunicorn does (`HTTPS` is not `https`).
        let scheme = if value.as_bytes() == expected.as_bytes() {
            "https"
        } else {
            "http"
        };
        match found {
            Some(prev) if prev != scheme => Err(Rejection::bad_request("Contradictory scheme headers")),
            _ => {
                found = Some(scheme);
                Ok(())
            }
        }
    };
    // Comparing names while walking the headers once is cheaper than hashing each
    // configured name for a lookup (a request has a few headers, at most
    // limit_request_fields). The outcome does not depend on the order.
    // The map's keys (one per name) walk faster than its (name, value) pairs.
    for name in headers.keys() {
        if let Some((_, expected)) = secure.iter().find(|(n, _)| n == name) {
            for value in headers.get_all(name) {
                see(value, expected)?;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    fn parse(values: &[&str]) -> Option<Forwarded> {
        forwarded(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn last_element_wins() {
        let f = parse(&["for=1.2.3.4;proto=http, for=192.0.2.60;proto=https;by=203.0.113.43"]).unwrap();
        assert_eq!(f.client, Some("192.0.2.60:0".parse().unwrap()));
        assert_eq!(f.scheme, Some("https"));
        let f = parse(&["for=1.2.3.4", "for=\"[2001:db8:cafe::17]:4711\""]).unwrap();
        assert_eq!(f.client, Some("[2001:db8:cafe::17]:4711".parse().unwrap()));
        assert_eq!(f.scheme, None);
    }

    #[test]
    fn unknown_and_obfuscated_nodes_give_no_client() {
        assert_eq!(parse(&["for=unknown;proto=https"]).unwrap().client, None);
        assert_eq!(parse(&["for=_hidden"]).unwrap().client, None);
        assert_eq!(parse(&["proto=gopher"]).unwrap().scheme, None);
        assert!(parse(&[]).is_none());
        assert_eq!(parse(&["for=\"a,b\";proto=https"]).unwrap().scheme, Some("https"));
    }
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

    /// Repeated values among other headers, few or many; values compare exactly.
    #[test]
    fn schemes_with_few_and_many_headers() {
        let secure = default_secure_scheme_headers();
        for filler in [0, 20] {
            let mut h = HeaderMap::new();
            for i in 0..filler {
                h.insert(
                    HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
                    "1".parse().unwrap(),
                );
            }
            h.append("x-forwarded-proto", "https".parse().unwrap());
            h.append("x-forwarded-proto", "https".parse().unwrap());
            assert_eq!(forwarded_scheme(&h, &secure).unwrap(), Some("https"), "{filler}");
            h.append("x-forwarded-proto", "HTTPS".parse().unwrap());
            assert_eq!(forwarded_scheme(&h, &secure).unwrap_err().status, 400, "{filler}");
            h.remove("x-forwarded-proto");
            h.insert("x-forwarded-ssl", "off".parse().unwrap());
            assert_eq!(forwarded_scheme(&h, &secure).unwrap(), Some("http"), "{filler}");
        }
    }
}

/// `--proxy-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Off,
    V1,
    V2,
    Auto,
}

impl ProxyMode {
    pub fn parse(s: &str) -> ProxyMode {
        match s {
            "v1" => ProxyMode::V1,
            "v2" => ProxyMode::V2,
            "auto" => ProxyMode::Auto,
            _ => ProxyMode::Off,
        }
    }
}

/// What a trusted proxy says in the last element of RFC 7239 `Forwarded` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// `for=`: the client, when it is an address (not `unknown` or an obfuscated `_id`).
    pub client: Option<std::net::SocketAddr>,
    /// `proto=`: `http` or `https`.
    pub scheme: Option<&'static str>,
}

/// Parses `Forwarded` header values and returns the last element, the one the nearest
/// proxy (the trusted peer) appended; earlier elements came from further away and are
/// as trustworthy as the client itself.
pub fn forwarded<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Forwarded> {
    let mut last: Option<String> = None;
    for v in values {
        let text = std::str::from_utf8(v).ok()?;
        if let Some(e) = split_quoted(text, ',').into_iter().rev().find(|e| !e.trim().is_empty()) {
            last = Some(e.to_string());
        }
    }
    let element = last?;
    let mut out = Forwarded::default();
    for pair in split_quoted(&element, ';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "for" => out.client = parse_node(value),
            "proto" => {
                out.scheme = match value.to_ascii_lowercase().as_str() {
                    "https" => Some("https"),
                    "http" => Some("http"),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Splits on `sep` outside double quotes.
fn split_quoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`; port 0 when
/// absent or obfuscated.
fn parse_node(node: &str) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, SocketAddr};
    let (host, port) = if let Some(rest) = node.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match node.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (node, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    Some(SocketAddr::new(ip, port))
}

/// `--forwarder-headers`: the underscore-spelled headers (`SCRIPT_NAME`, `PATH_INFO`,
/// `REMOTE_USER`...) a trusted proxy may set; `*` allows all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwarderHeaders {
    names: Vec<String>,
    all: bool,
}

impl ForwarderHeaders {
    pub fn parse(text: &str) -> Self {
        let names: Vec<String> = text
            .split(',')
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect();
        Self {
            all: names.iter().any(|n| n == "*"),
            names,
        }
    }

    /// Whether header `name` (any case) may come from a trusted proxy.
    pub fn allows(&self, name: &str) -> bool {
        self.all || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `--header-map` applies to header `name`: it has a `_` (which could pass
    /// for a `-` downstream) and is not a forwarder header from a trusted proxy.
    pub fn is_unsafe_underscore(&self, name: &str, trusted_proxy: bool) -> bool {
        // A byte search: header names are short, `str::contains` sets up a searcher.
        name.as_bytes().contains(&b'_') && !(trusted_proxy && self.allows(name))
    }
}

/// A parsed PROXY protocol header (HAProxy's v1 text or v2 binary form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address; `None` for `UNKNOWN` (v1) or `LOCAL`/unspecified (v2).
    pub source: Option<std::net::SocketAddr>,
    /// The address the client connected to (the proxy's listener): Gunicorn's
    /// `PROXY_ADDR`/`PROXY_PORT`.
    pub destination: Option<std::net::SocketAddr>,
    /// `TCP4`, `TCP6`, `UNKNOWN`, `LOCAL` or `UNSPEC`, as Gunicorn reports it.
    pub protocol: &'static str,
    /// Bytes the header took on the wire.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyParse {
    /// Not a PROXY header: the connection starts with the request itself.
    Absent,
    /// More bytes are needed to decide.
    Incomplete,
    Header(ProxyHeader),
    Invalid(&'static str),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// v1 headers are at most 107 bytes including CRLF.
const V1_MAX: usize = 107;

/// Parses the start of a connection.
pub fn parse_proxy_header(buf: &[u8], mode: ProxyMode) -> ProxyParse {
    if mode == ProxyMode::Off {
        return ProxyParse::Absent;
    }
    let v1_ok = matches!(mode, ProxyMode::V1 | ProxyMode::Auto);
    let v2_ok = matches!(mode, ProxyMode::V2 | ProxyMode::Auto);
    if v2_ok {
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] == V2_SIGNATURE[..n] {
            return if buf.len() < 16 {
                ProxyParse::Incomplete
            } else {
                parse_v2(buf)
            };
        }
    }
    if v1_ok {
        let n = buf.len().min(6);
        if buf[..n] == b"PROXY "[..n] {
            return if buf.len() < 6 {
                ProxyParse::Incomplete
            } else {
                parse_v1(buf)
            };
        }
    }
    ProxyParse::Absent
}

fn parse_v1(buf: &[u8]) -> ProxyParse {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            ProxyParse::Invalid("PROXY v1 line too long")
        } else {
            ProxyParse::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return ProxyParse::Invalid("PROXY v1 line is not text");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyParse::Header(ProxyHeader {
            source: None,
            destination: None,
            protocol: "UNKNOWN",
            len,
        }),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(dst)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>()) else {
                return ProxyParse::Invalid("PROXY v1 address is invalid");
            };
            let (Ok(sport), Ok(dport)) = (sport.parse::<u16>(), dport.parse::<u16>()) else {
                return ProxyParse::Invalid("PROXY v1 port is invalid");
            };
            if (*proto == "TCP4") != src.is_ipv4() || src.is_ipv4() != dst.is_ipv4() {
                return ProxyParse::Invalid("PROXY v1 address does not match the protocol");
            }
            let protocol = if *proto == "TCP4" { "TCP4" } else { "TCP6" };
            ProxyParse::Header(ProxyHeader {
                source: Some(std::net::SocketAddr::new(src, sport)),
                destination: Some(std::net::SocketAddr::new(dst, dport)),
                protocol,
                len,
            })
        }
        _ => ProxyParse::Invalid("malformed PROXY v1 line"),
    }
}

fn parse_v2(buf: &[u8]) -> ProxyParse {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return ProxyParse::Invalid("PROXY v2 version is not 2");
    }
    let family = buf[13];
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return ProxyParse::Incomplete;
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0f {
        0 => {
            return ProxyParse::Header(ProxyHeader {
                source: None,
                destination: None,
                protocol: "LOCAL",
                len,
            })
        }
        1 => {}
        _ => return ProxyParse::Invalid("PROXY v2 command is invalid"),
    }
    // TLVs after the addresses are skipped.
    match family {
        0x11 if body.len() >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = std::net::Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            let dport = u16::from_be_bytes([body[10], body[11]]);
            ProxyParse::Header(ProxyHeader {
                source: Some((ip, port).into()),
                destination: Some((dst, dport).into()),
                protocol: "TCP4",
                len,
            })
        }
        0x21 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&body[16..32]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            let dport = u16::from_be_bytes([body[34], body[35]]);
            ProxyParse::Header(ProxyHeader {
                source: Some((std::net::Ipv6Addr::from(octets), port).into()),
                destination: Some((std::net::Ipv6Addr::from(dst), dport).into()),
                protocol: "TCP6",
                len,
            })
        }
        // UNSPEC, and (PROXY spec 2.2: "fall back to UNSPEC") the valid families we do
        // not carry: UDP over IPv4/IPv6, UNIX stream/datagram. The real peer stays.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => ProxyParse::Header(ProxyHeader {
            source: None,
            destination: None,
            protocol: "UNSPEC",
            len,
        }),
        0x11 | 0x21 => ProxyParse::Invalid("PROXY v2 address block too short"),
        _ => ProxyParse::Invalid("PROXY v2 transport is not supported"),
    }
}

#[cfg(test)]
mod proxy_protocol_tests {
    use super::*;

    #[test]
    fn v1() {
        let h = b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        match parse_proxy_header(h, ProxyMode::Auto) {
            ProxyParse::Header(p) => {
                assert_eq!(p.source, Some("10.1.2.3:5555".parse().unwrap()));
                assert_eq!(p.len, 38);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_proxy_header(b"PROX", ProxyMode::V1), ProxyParse::Incomplete);
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n", ProxyMode::Auto),
            ProxyParse::Absent
        );
        assert!(matches!(
            parse_proxy_header(b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", ProxyMode::Auto),
            ProxyParse::Invalid(_)
        ));
        assert!(matches!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n", ProxyMode::V1),
            ProxyParse::Header(ProxyHeader { source: None, .. })
        ));
        assert_eq!(parse_proxy_header(h, ProxyMode::V2), ProxyParse::Absent);
    }

    #[test]
    fn v2() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0, 12, 192, 168, 0, 9, 10, 0, 0, 1, 0x30, 0x39, 0, 80]);
        h.extend(b"GET /");
        match parse_proxy_header(&h, ProxyMode::Auto) {
            ProxyParse::Header(p) => {
                assert_eq!(p.source, Some("192.168.0.9:12345".parse().unwrap()));
                assert_eq!(p.len, 28);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_proxy_header(&h[..20], ProxyMode::V2), ProxyParse::Incomplete);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert!(matches!(
            parse_proxy_header(&local, ProxyMode::V2),
            ProxyParse::Header(ProxyHeader { protocol: "LOCAL", .. })
        ));
    }
}
