//! Contents of small files kept in memory, keyed by identity and version.
//!
//! A hot asset (a stylesheet, a script) is read from the page cache once instead of on
//! every request; each request still opens and `fstat`s the file, keyed by device, inode,
//! size and nanosecond mtime. A replaced file (new inode) or one whose size changed is
//! never served stale; an in-place rewrite of the same size within one tick of the
//! filesystem's timestamp clock could be (deploy tools write a new file and rename it).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use bytes::Bytes;

/// Files larger than this are streamed, never cached.
pub const MAX_FILE: u64 = 128 * 1024;
/// The most a worker keeps; reaching it starts the cache afresh.
const MAX_TOTAL: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Key {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<Key, Bytes>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub struct SmallFiles {
    inner: Mutex<Inner>,
}

impl SmallFiles {
    pub fn get(&self, meta: &std::fs::Metadata) -> Option<Bytes> {
        let inner = self.inner.lock().ok()?;
        inner.files.get(&Key::of(meta)).cloned()
    }

    pub fn insert(&self, meta: &std::fs::Metadata, data: Bytes) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.bytes + data.len() > MAX_TOTAL {
            // Crude but bounded: old versions of edited files are dropped with the rest.
            inner.files.clear();
            inner.bytes = 0;
        }
        inner.bytes += data.len();
        if let Some(old) = inner.files.insert(Key::of(meta), data) {
            inner.bytes -= old.len();
        }
    }
}
