//! Validators and preconditions (RFC 9110 §8.8 and §13), and byte ranges (§14).

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE};
use http::HeaderMap;

/// What the preconditions decide, before any range is looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// The validators of one representation.
#[derive(Debug)]
pub struct Validators<'a> {
    /// The quoted strong entity tag.
    pub etag: &'a str,
    /// Modification time in whole seconds since the epoch (what Last-Modified says).
    pub mtime: u64,
}

fn header_str(headers: &HeaderMap, name: http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(text: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Entity tags of an `If-Match`/`If-None-Match` list; `weak` compares without `W/`.
fn list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        if candidate == "*" {
            return true;
        }
        match candidate.strip_prefix("W/") {
            Some(c) => weak && c == etag,
            None => candidate == etag,
        }
    })
}

/// The evaluation order of RFC 9110 §13.2.2, for GET and HEAD.
pub fn evaluate(headers: &HeaderMap, v: &Validators<'_>) -> Precondition {
    if let Some(list) = header_str(headers, IF_MATCH) {
        if !list_matches(list, v.etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(date) = header_str(headers, IF_UNMODIFIED_SINCE).and_then(http_date) {
        if v.mtime > date {
            return Precondition::Failed;
        }
    }
    if let Some(list) = header_str(headers, IF_NONE_MATCH) {
        if list_matches(list, v.etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = header_str(headers, IF_MODIFIED_SINCE).and_then(http_date) {
        if v.mtime <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// A range request gets the ranges only while `If-Range` (when present) still names this
/// representation: an exact strong tag, or exactly its Last-Modified date.
fn if_range_holds(headers: &HeaderMap, v: &Validators<'_>) -> bool {
    let Some(cond) = header_str(headers, IF_RANGE) else {
        return true;
    };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        return cond == v.etag;
    }
    http_date(cond) == Some(v.mtime)
}

/// More ranges than this and the request is answered in full: a long list of tiny or
/// overlapping ranges is an amplification attack, not a download manager.
const MAX_RANGES: usize = 16;

/// What to send of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    Full,
    /// Inclusive `(first, last)` byte positions, in the order asked.
    Partial(Vec<(u64, u64)>),
    Unsatisfiable,
}

pub fn ranges(headers: &HeaderMap, v: &Validators<'_>, len: u64) -> Ranges {
    let Some(spec) = header_str(headers, RANGE) else {
        return Ranges::Full;
    };
    if !if_range_holds(headers, v) {
        return Ranges::Full;
    }
    match parse_ranges(spec, len) {
        // Overlapping ranges that add up to more than the file amplify the answer:
        // send the file once instead (RFC 9110 14.2 allows ignoring such a Range).
        Ranges::Partial(r) if r.iter().map(|(a, b)| b - a + 1).sum::<u64>() > len => Ranges::Full,
        other => other,
    }
}

/// Parses `bytes=...`; a header that does not parse is ignored, as the RFC requires.
pub fn parse_ranges(spec: &str, len: u64) -> Ranges {
    let Some(list) = spec.trim().strip_prefix("bytes=") else {
        return Ranges::Full;
    };
    let mut out = Vec::new();
    let mut count = 0;
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Full;
        }
        let Some((first, last)) = item.split_once('-') else {
            return Ranges::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if first.is_empty() {
            // A suffix: the last N bytes.
            if !digits(last) {
                return Ranges::Full;
            }
            let Ok(n) = last.parse::<u64>() else {
                return Ranges::Full;
            };
            if n > 0 && len > 0 {
                out.push((len.saturating_sub(n), len - 1));
            }
            continue;
        }
        if !digits(first) || !(last.is_empty() || digits(last)) {
            return Ranges::Full;
        }
        let Ok(a) = first.parse::<u64>() else {
            return Ranges::Full;
        };
        let b = if last.is_empty() {
            u64::MAX
        } else {
            match last.parse::<u64>() {
                Ok(b) if b >= a => b,
                _ => return Ranges::Full,
            }
        };
        if a < len {
            out.push((a, b.min(len - 1)));
        }
    }
    if count == 0 {
        return Ranges::Full;
    }
    if out.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Partial(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    const V: Validators<'static> = Validators {
        etag: "\"abc\"",
        mtime: 1_700_000_000,
    };
    const DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT"; // 1_700_000_000

    #[test]
    fn preconditions() {
        use Precondition::*;
        assert_eq!(evaluate(&h(&[]), &V), Proceed);
        assert_eq!(evaluate(&h(&[("if-none-match", "\"abc\"")]), &V), NotModified);
        assert_eq!(evaluate(&h(&[("if-none-match", "W/\"abc\", \"x\"")]), &V), NotModified);
        assert_eq!(evaluate(&h(&[("if-none-match", "*")]), &V), NotModified);
        assert_eq!(evaluate(&h(&[("if-none-match", "\"x\"")]), &V), Proceed);
        assert_eq!(evaluate(&h(&[("if-modified-since", DATE)]), &V), NotModified);
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            evaluate(&h(&[("if-none-match", "\"x\""), ("if-modified-since", DATE)]), &V),
            Proceed
        );
        assert_eq!(
            evaluate(&h(&[("if-modified-since", "Mon, 13 Nov 2023 22:13:20 GMT")]), &V),
            Proceed
        );
        assert_eq!(evaluate(&h(&[("if-modified-since", "garbage")]), &V), Proceed);
        assert_eq!(evaluate(&h(&[("if-match", "\"x\"")]), &V), Failed);
        assert_eq!(evaluate(&h(&[("if-match", "W/\"abc\"")]), &V), Failed);
        assert_eq!(evaluate(&h(&[("if-match", "\"abc\"")]), &V), Proceed);
        assert_eq!(
            evaluate(&h(&[("if-unmodified-since", "Mon, 13 Nov 2023 22:13:20 GMT")]), &V),
            Failed
        );
        assert_eq!(evaluate(&h(&[("if-unmodified-since", DATE)]), &V), Proceed);
    }

    #[test]
    fn range_forms() {
        use Ranges::*;
        assert_eq!(parse_ranges("bytes=0-9", 100), Partial(vec![(0, 9)]));
        assert_eq!(parse_ranges("bytes=90-", 100), Partial(vec![(90, 99)]));
        assert_eq!(parse_ranges("bytes=-5", 100), Partial(vec![(95, 99)]));
        assert_eq!(parse_ranges("bytes=-500", 100), Partial(vec![(0, 99)]));
        assert_eq!(parse_ranges("bytes=50-500", 100), Partial(vec![(50, 99)]));
        assert_eq!(parse_ranges("bytes= 0-1 , 4-5", 100), Partial(vec![(0, 1), (4, 5)]));
        assert_eq!(parse_ranges("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_ranges("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_ranges("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_ranges("bytes=100-,0-1", 100), Partial(vec![(0, 1)]));
        for bad in [
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=",
            "bytes=1",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_ranges(bad, 100), Full, "{bad}");
        }
        let many = format!("bytes={}", vec!["0-0"; 17].join(","));
        assert_eq!(parse_ranges(&many, 100), Full);
    }

    #[test]
    fn amplifying_ranges_get_the_whole_file() {
        assert_eq!(ranges(&h(&[("range", "bytes=0-,0-,0-")]), &V, 10), Ranges::Full);
        assert_eq!(
            ranges(&h(&[("range", "bytes=0-4,5-9")]), &V, 10),
            Ranges::Partial(vec![(0, 4), (5, 9)])
        );
    }

    #[test]
    fn if_range() {
        let r = |cond: &str| ranges(&h(&[("range", "bytes=0-1"), ("if-range", cond)]), &V, 10);
        assert_eq!(r("\"abc\""), Ranges::Partial(vec![(0, 1)]));
        assert_eq!(r(DATE), Ranges::Partial(vec![(0, 1)]));
        assert_eq!(r("\"old\""), Ranges::Full);
        assert_eq!(r("W/\"abc\""), Ranges::Full);
        assert_eq!(r("Mon, 13 Nov 2023 22:13:20 GMT"), Ranges::Full);
    }
}
