//! Opening a file below a directory without ever leaving it.
//!
//! `openat2(RESOLVE_BENEATH)` (Linux 5.6+) lets the kernel refuse any resolution that
//! escapes the directory, symlinks included, in one system call and without the
//! check-then-open race of `realpath`. Older kernels fall back to `openat` followed by
//! a `realpath` check of the opened file.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// A mount's directory, opened once per worker.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Self> {
        let c = cstring(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path; the result is checked below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just returned by open() and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// Opens `rel` (already free of `..` segments) for reading. Unless `follow_out` is
    /// set, a symlink that leads outside the directory fails with `EXDEV`.
    pub fn open_file(&self, rel: &str, follow_out: bool) -> io::Result<File> {
        let c = cstring(rel.as_bytes())?;
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused after
        // fstat); reads of regular files ignore the flag.
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
        if !follow_out && !OPENAT2_MISSING.load(Ordering::Relaxed) {
            let mut how: libc::open_how = unsafe { std::mem::zeroed() };
            how.flags = flags as u64;
            how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
            // SAFETY: openat2 reads `how` (of the size given) and the NUL-terminated path.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: a new descriptor owned by nobody else.
                return Ok(unsafe { File::from_raw_fd(fd as i32) });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOSYS) | Some(libc::EPERM) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
                _ => return Err(err),
            }
        }
        // SAFETY: as above, with openat.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        if !follow_out {
            let real = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
            if !real.starts_with(&self.path) {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
        }
        Ok(file)
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_below_the_root() {
        let base = std::env::temp_dir().join(format!("ferricorn-open-{}", std::process::id()));
        let root_dir = base.join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        std::fs::write(root_dir.join("sub/a.txt"), b"a").unwrap();
        let _ = std::os::unix::fs::symlink("../secret", root_dir.join("out"));
        let _ = std::os::unix::fs::symlink("sub/a.txt", root_dir.join("in"));
        let root = Root::open(&std::fs::canonicalize(&root_dir).unwrap()).unwrap();
        assert!(root.open_file("sub/a.txt", false).is_ok());
        assert!(root.open_file("in", false).is_ok());
        assert!(root.open_file("out", false).is_err());
        assert!(root.open_file("out", true).is_ok());
        assert!(root.open_file("missing", false).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
