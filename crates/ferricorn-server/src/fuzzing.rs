//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the corpus replay
//! test that runs them on stable Rust in CI. Each takes arbitrary bytes and must never
//! panic, hang or allocate without bound; the assertions are the invariants.

use ferricorn_core::proxy::{parse_proxy_header, ProxyMode, ProxyParse};
use ferricorn_core::request::{check_head, Limits};

/// A request head as hyper's parser (httparse) reads it, then Gunicorn's rules on top.
pub fn request_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = path.parse::<http::Uri>() else { return };
    let version = if version == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    let mut map = http::HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        map.append(name, value);
    }
    for permit in [false, true] {
        if let Err(rej) = check_head(&method, &uri, version, &map, &Limits::default(), permit) {
            assert!((400..600).contains(&rej.status), "status {}", rej.status);
        }
    }
}

/// The framing scanner that restores Gunicorn's 400s for CL+TE and duplicate lengths,
/// fed in every split of the input (chunked bodies included).
pub fn framing(data: &[u8]) {
    let whole = scan(&[data]);
    let mid = data.len() / 2;
    let halves = scan(&[&data[..mid], &data[mid..]]);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let single = scan(&bytes);
    // How the bytes arrive must not change what the scanner concludes.
    assert_eq!(whole, halves);
    assert_eq!(whole, single);
}

fn scan(pieces: &[&[u8]]) -> Vec<Option<(u16, std::borrow::Cow<'static, str>)>> {
    let mut scanner = crate::framing::HeadScanner::default();
    let mut out = Vec::new();
    for p in pieces {
        scanner.feed(p, &mut |facts| out.push(facts.framing_error()));
    }
    out
}

/// PROXY protocol v1/v2 headers, in every mode, whole and cut short.
pub fn proxy_header(data: &[u8]) {
    for mode in [ProxyMode::V1, ProxyMode::V2, ProxyMode::Auto] {
        if let ProxyParse::Header(h) = parse_proxy_header(data, mode) {
            assert!(h.len <= data.len());
            // A complete header parses the same from exactly its own bytes.
            assert_eq!(parse_proxy_header(&data[..h.len], mode), ProxyParse::Header(h));
        }
        for cut in [0, 1, data.len() / 2] {
            let _ = parse_proxy_header(&data[..cut.min(data.len())], mode);
        }
    }
}

/// Every setting's parser, the bind, allow-list and static-map parsers, and the static
/// path decoder, on arbitrary text.
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for def in ferricorn_core::settings::REGISTRY {
        let _ = def.parse(&text);
    }
    let _ = ferricorn_core::bind::BindAddr::parse(&text);
    let _ = ferricorn_core::proxy::AllowList::parse(&text);
    let _ = ferricorn_core::static_files::parse_mounts(&[], &[text.to_string()]);
    for dotfiles in [false, true] {
        if let Some(p) = crate::static_files::decode_path(&text, dotfiles) {
            assert!(!p.split('/').any(|seg| seg == ".."), "{p:?}");
            assert!(!p.contains(['\0', '\\']));
        }
    }
}
