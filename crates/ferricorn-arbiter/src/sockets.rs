//! Binding the listeners, as Gunicorn does: `SO_REUSEADDR`, optional `SO_REUSEPORT`,
//! stale UNIX socket files removed, `umask` applied to the socket file, `fd://N` and
//! systemd's `LISTEN_FDS` adopted as they are, and five attempts one second apart when
//! the system refuses an address (in use, not available, a missing directory).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use ferricorn_core::bind::BindAddr;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::ArbiterError;

/// A bound, listening socket owned by the master and inherited by every worker.
pub struct BoundListener {
    pub addr: BindAddr,
    pub fd: OwnedFd,
}

impl BoundListener {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The address as Gunicorn prints it in "Listening at:" (the real port when 0 was asked).
    pub fn display(&self) -> String {
        self.display_with_scheme("http")
    }

    /// As `display`, with `https` when the listener serves TLS.
    pub fn display_with_scheme(&self, scheme: &str) -> String {
        if let BindAddr::Unix(_) = self.addr {
            return self.addr.to_string();
        }
        match local_addr(self.raw_fd()) {
            Some(SocketAddr::V6(a)) => format!("{scheme}://[{}]:{}", a.ip(), a.port()),
            Some(a) => format!("{scheme}://{a}"),
            None => self.addr.to_string(),
        }
    }
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: borrow the descriptor without taking ownership.
    let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    s.local_addr().ok().and_then(|a| a.as_socket())
}

pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
    pub umask: u32,
    /// Attempts when the address is in use (Gunicorn: 5, one second apart).
    pub attempts: u32,
}

pub fn bind_all(addrs: &[BindAddr], opts: &BindOptions) -> Result<Vec<BoundListener>, ArbiterError> {
    let mut out = Vec::new();
    for addr in addrs {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match bind_one(addr, opts) {
                Ok(fds) => {
                    out.extend(fds.into_iter().map(|fd| BoundListener { addr: addr.clone(), fd }));
                    break;
                }
                Err(e) => e,
            };
            // Gunicorn retries every OSError and logs each failure with Python's words;
            // anything else (a file in the way of a unix socket) stops at once.
            let Some(code) = e.raw_os_error() else {
                return Err(ArbiterError::Bind(format!("Can't connect to {}: {e}", describe(addr))));
            };
            match e.kind() {
                std::io::ErrorKind::AddrInUse => ferricorn_core::error!("Connection in use: {}", describe(addr)),
                std::io::ErrorKind::AddrNotAvailable => ferricorn_core::error!("Invalid address: {}", describe(addr)),
                _ => {}
            }
            let reason = nix::errno::Errno::from_raw(code).desc();
            ferricorn_core::error!("connection to {} failed: [Errno {code}] {reason}", describe(addr));
            if attempt >= opts.attempts {
                return Err(ArbiterError::Bind(format!("Can't connect to {}", describe(addr))));
            }
            ferricorn_core::debug!("Retrying in 1 second.");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(out)
}

fn describe(addr: &BindAddr) -> String {
    match addr {
        BindAddr::Tcp { host, port } => format!("('{host}', {port})"),
        BindAddr::TcpName { host, port } => format!("('{host}', {port})"),
        BindAddr::Unix(path) => path.display().to_string(),
        other => other.to_string(),
    }
}

fn bind_one(addr: &BindAddr, opts: &BindOptions) -> std::io::Result<Vec<OwnedFd>> {
    match addr {
        BindAddr::Tcp { host, port } => Ok(vec![bind_tcp(SocketAddr::new(*host, *port), opts)?]),
        BindAddr::TcpName { host, port } => {
            let addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            let first = addrs
                .first()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address")))?;
            Ok(vec![bind_tcp(*first, opts)?])
        }
        BindAddr::Unix(path) => Ok(vec![bind_unix(path, opts)?]),
        BindAddr::Fd(fd) => {
            let fd = *fd;
            // SAFETY: fd:// hands us a descriptor we must own from now on; check it is a socket first.
            let mut ty: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&mut ty as *mut libc::c_int).cast(),
                    &mut len,
                )
            } != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(vec![unsafe { OwnedFd::from_raw_fd(fd) }])
        }
    }
}

fn bind_tcp(addr: SocketAddr, opts: &BindOptions) -> std::io::Result<OwnedFd> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    // IPV6_V6ONLY is left at the system's default, as Python's socket (and so Gunicorn)
    // leaves it: on Linux `[::]` then also takes IPv4 clients, which containers that
    // bind `[::]:8000` rely on.
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(opts.backlog)?;
    Ok(sock.into())
}

fn bind_unix(path: &Path, opts: &BindOptions) -> std::io::Result<OwnedFd> {
    // Followed through a symlink, as Gunicorn's `os.stat`; the link itself is removed.
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            // Gunicorn's words; a file that is not a socket is never replaced or retried.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{}' is not a socket", path.display()),
            ));
        }
    }
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // SAFETY: umask(2) cannot fail; the master is single-threaded so no other thread
    // observes the temporary mask.
    let old = unsafe { libc::umask(opts.umask as libc::mode_t) };
    let bound = sock.bind(&SockAddr::unix(path)?);
    unsafe { libc::umask(old) };
    bound?;
    sock.listen(opts.backlog)?;
    Ok(sock.into())
}

/// Removes UNIX socket files on a final shutdown.
pub fn cleanup(addrs: &[BindAddr]) {
    for a in addrs {
        if let BindAddr::Unix(p) = a {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Connections waiting to be accepted on a TCP listener (`tcpi_unacked` of a socket in
/// LISTEN state); `None` for other sockets.
pub fn accept_queue_len(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // 10 is TCP_LISTEN.
    (rc == 0 && info.tcpi_state == 10).then_some(u64::from(info.tcpi_unacked))
}
