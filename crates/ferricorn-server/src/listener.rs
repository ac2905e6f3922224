//! Listening sockets as a worker receives them from the master.

use std::os::fd::{FromRawFd, RawFd};

pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// Wraps an inherited listening descriptor, detecting its family.
    ///
    /// # Safety
    /// `fd` must be an open listening socket that nothing else owns.
    pub unsafe fn from_raw_fd(fd: RawFd) -> std::io::Result<Self> {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(if i32::from(addr.ss_family) == libc::AF_UNIX {
            Listener::Unix(std::os::unix::net::UnixListener::from_raw_fd(fd))
        } else {
            Listener::Tcp(std::net::TcpListener::from_raw_fd(fd))
        })
    }
}
