//! From the URL path under a mount to a relative file path that cannot leave the mount.

use percent_encoding::percent_decode_str;

/// Why a URL path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// An attempt to leave the directory or a malformed name: never passed to the app.
    Hostile,
    /// A hidden name (`.env`, `.git/`): treated as absent.
    Hidden,
}

/// A decoded path, relative to the mount's directory.
#[derive(Debug, PartialEq, Eq)]
pub struct RelPath {
    /// Segments joined with `/`; `"."` for the directory itself.
    pub rel: String,
    /// The URL ended with `/` (the mount itself without one gets a redirect).
    pub dir_request: bool,
    /// The last segment (the file name the client asked for).
    pub name_start: usize,
}

impl RelPath {
    pub fn name(&self) -> &str {
        &self.rel[self.name_start..]
    }
}

/// Decodes `%XX` escapes once and checks every segment. Decoding before splitting means
/// `%2f` and `%2e%2e` are judged as the `/` and `..` they stand for; invalid UTF-8
/// (overlong forms included), NUL and backslashes are refused outright.
pub fn decode(rest: &str, dotfiles: bool) -> Result<RelPath, Refused> {
    let bytes: Vec<u8> = percent_decode_str(rest).collect();
    let text = String::from_utf8(bytes).map_err(|_| Refused::Hostile)?;
    if text.contains(['\0', '\\']) {
        return Err(Refused::Hostile);
    }
    let mut rel = String::with_capacity(text.len());
    let mut name_start = 0;
    let mut hidden = false;
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(Refused::Hostile);
        }
        if seg.starts_with('.') && !dotfiles {
            hidden = true;
        }
        if !rel.is_empty() {
            rel.push('/');
        }
        name_start = rel.len();
        rel.push_str(seg);
    }
    if hidden {
        return Err(Refused::Hidden);
    }
    let dir_request = text.ends_with('/');
    if rel.is_empty() {
        rel.push('.');
    }
    Ok(RelPath {
        rel,
        dir_request,
        name_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_encoded_names() {
        let p = decode("/css/app.css", false).unwrap();
        assert_eq!(
            (p.rel.as_str(), p.name(), p.dir_request),
            ("css/app.css", "app.css", false)
        );
        assert_eq!(decode("/hello%20world.txt", false).unwrap().rel, "hello world.txt");
        assert_eq!(decode("//a///b", false).unwrap().rel, "a/b");
        let d = decode("/sub/", false).unwrap();
        assert!(d.dir_request);
        let root = decode("", false).unwrap();
        assert_eq!((root.rel.as_str(), root.dir_request), (".", false));
    }

    #[test]
    fn traversal_in_every_spelling() {
        for bad in [
            "/../secret",
            "/%2e%2e/secret",
            "/%2E%2E/secret",
            "/..%2fsecret",
            "/a/%2e%2e%2f%2e%2e%2fsecret",
            "/..\\secret",
            "/..%5csecret",
            "/a%00.txt",
            "/%c0%ae%c0%ae/secret",
            "/%ff",
            "/./a",
            "/sub/../../secret",
        ] {
            assert_eq!(decode(bad, false), Err(Refused::Hostile), "{bad}");
            assert_eq!(decode(bad, true), Err(Refused::Hostile), "{bad}");
        }
    }

    #[test]
    fn dotfiles() {
        assert_eq!(decode("/.env", false), Err(Refused::Hidden));
        assert_eq!(decode("/.git/config", false), Err(Refused::Hidden));
        assert_eq!(decode("/%2egit/config", false), Err(Refused::Hidden));
        assert_eq!(decode("/.well-known/x", true).unwrap().rel, ".well-known/x");
    }
}
