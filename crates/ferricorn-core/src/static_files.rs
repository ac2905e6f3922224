//! `--static-map` and its companions, parsed and checked at start-up.

use std::path::PathBuf;

use crate::settings::{SettingError, Settings};

/// WhiteNoise's default: short enough that a deploy is picked up within a minute.
pub const DEFAULT_MAX_AGE: u64 = 60;

/// One `PREFIX=DIR` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The URL prefix without its trailing slash (`""` for a mount at `/`).
    pub prefix: String,
    /// The directory, made absolute at start-up.
    pub dir: PathBuf,
    pub max_age: u64,
}

impl Mount {
    /// The rest of `path` when it lies under this mount (`"/static/a.css"` → `"/a.css"`).
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticConfig {
    /// Longest prefix first, so the most specific mount wins.
    pub mounts: Vec<Mount>,
    pub fallthrough: bool,
    pub follow_symlinks: bool,
    pub dotfiles: bool,
    pub immutable: bool,
    pub index: Option<String>,
}

impl StaticConfig {
    pub fn from_settings(s: &Settings) -> Result<Self, SettingError> {
        let mut mounts = parse_mounts(&s.list("static_map"), &s.list("static_max_age"))?;
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let index = match s.str("static_index") {
            Some(name) if !name.is_empty() => {
                if name.contains('/') || name.starts_with('.') {
                    return Err(invalid("static_index", name, "must be a plain file name"));
                }
                Some(name.to_string())
            }
            _ => None,
        };
        Ok(Self {
            mounts,
            fallthrough: s.bool("static_fallthrough"),
            follow_symlinks: s.bool("static_follow_symlinks"),
            dotfiles: s.bool("static_dotfiles"),
            immutable: s.bool("static_immutable"),
            index,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }
}

fn invalid(name: &str, value: &str, why: &str) -> SettingError {
    SettingError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn normalize_prefix(name: &str, entry: &str, prefix: &str) -> Result<String, SettingError> {
    if !prefix.starts_with('/') {
        return Err(invalid(name, entry, "the URL prefix must start with '/'"));
    }
    if prefix.contains(['?', '#', '%', '\\']) || prefix.split('/').any(|seg| seg == "..") {
        return Err(invalid(name, entry, "the URL prefix must be a plain path"));
    }
    Ok(prefix.trim_end_matches('/').to_string())
}

/// Parses `PREFIX=DIR` entries and the `[PREFIX=]SECONDS` max-age entries.
pub fn parse_mounts(map: &[String], max_ages: &[String]) -> Result<Vec<Mount>, SettingError> {
    let mut default_age = DEFAULT_MAX_AGE;
    let mut ages: Vec<(String, u64)> = Vec::new();
    for entry in max_ages {
        let (prefix, secs) = match entry.rsplit_once('=') {
            Some((p, s)) => (Some(normalize_prefix("static_max_age", entry, p.trim())?), s),
            None => (None, entry.as_str()),
        };
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| invalid("static_max_age", entry, "expected SECONDS or PREFIX=SECONDS"))?;
        match prefix {
            Some(p) => ages.push((p, secs)),
            None => default_age = secs,
        }
    }
    let mut mounts = Vec::new();
    for entry in map {
        let Some((prefix, dir)) = entry.split_once('=') else {
            return Err(invalid("static_map", entry, "expected PREFIX=DIRECTORY"));
        };
        let prefix = normalize_prefix("static_map", entry, prefix.trim())?;
        let dir = dir.trim();
        if dir.is_empty() {
            return Err(invalid("static_map", entry, "expected PREFIX=DIRECTORY"));
        }
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| invalid("static_map", entry, &format!("cannot open the directory: {e}")))?;
        if !dir.is_dir() {
            return Err(invalid("static_map", entry, "not a directory"));
        }
        if mounts.iter().any(|m: &Mount| m.prefix == prefix) {
            return Err(invalid("static_map", entry, "the prefix is mapped twice"));
        }
        let max_age = ages
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, s)| *s)
            .unwrap_or(default_age);
        mounts.push(Mount { prefix, dir, max_age });
    }
    if let Some((p, _)) = ages.iter().find(|(p, _)| !mounts.iter().any(|m| &m.prefix == p)) {
        return Err(invalid("static_max_age", p, "no --static-map has this prefix"));
    }
    Ok(mounts)
}

/// A file name with a content hash in it (`app.3f2a9b1c4d5e.css`, Django's manifest
/// storage): such a URL never changes content, so it may be cached for good.
pub fn is_hashed_name(name: &str) -> bool {
    let mut parts = name.split('.');
    parts.next();
    let mut parts: Vec<&str> = parts.collect();
    // The last part is the extension; a hash must come before it.
    parts.pop();
    parts
        .iter()
        .any(|p| p.len() >= 12 && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_mounts_and_ages() {
        let dir = std::env::temp_dir();
        let d = dir.to_str().unwrap_or("/tmp");
        let m = parse_mounts(
            &s(&[&format!("/static/={d}"), &format!("/media={d}")]),
            &s(&["10", "/media=3600"]),
        )
        .unwrap();
        assert_eq!(m[0].prefix, "/static");
        assert_eq!(m[0].max_age, 10);
        assert_eq!(m[1].max_age, 3600);
        assert!(m[0].dir.is_absolute());
    }

    #[test]
    fn rejects_bad_entries() {
        let d = std::env::temp_dir();
        let d = d.to_str().unwrap_or("/tmp");
        for bad in ["static", "/static", &format!("static={d}"), "/s=/no/such/dir/xyz"] {
            let err = parse_mounts(&s(&[bad]), &[]).unwrap_err().to_string();
            assert!(err.contains("static_map"), "{err}");
        }
        assert!(parse_mounts(&s(&[&format!("/a={d}")]), &s(&["/b=5"])).is_err());
        assert!(parse_mounts(&s(&[&format!("/a={d}")]), &s(&["x"])).is_err());
    }

    #[test]
    fn strips_only_whole_segments() {
        let m = Mount {
            prefix: "/static".into(),
            dir: PathBuf::from("/"),
            max_age: 0,
        };
        assert_eq!(m.strip("/static/a.css"), Some("/a.css"));
        assert_eq!(m.strip("/static"), Some(""));
        assert_eq!(m.strip("/staticfoo"), None);
        let root = Mount {
            prefix: "".into(),
            dir: PathBuf::from("/"),
            max_age: 0,
        };
        assert_eq!(root.strip("/x"), Some("/x"));
    }

    #[test]
    fn hashed_names() {
        assert!(is_hashed_name("app.3f2a9b1c4d5e.css"));
        assert!(is_hashed_name("base.0123456789abcdef.min.js"));
        assert!(!is_hashed_name("app.css"));
        assert!(!is_hashed_name("3f2a9b1c4d5e3f2a.css"));
        assert!(!is_hashed_name("app.3F2A9B1C4D5E.css"));
        assert!(!is_hashed_name("app.css.3f2a9b1c4d5e"));
    }
}
