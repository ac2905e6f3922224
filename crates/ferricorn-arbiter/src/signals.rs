//! Signal handling for the master: a classic self-pipe. Handlers only write the signal
//! number to a non-blocking pipe; the master loop reads it in `poll()`. Written with
//! plain `sigaction` (no registry crate) so a forked worker can reset every disposition
//! and close the pipe, leaving no trace for its own runtime's signal handling.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static READ_FD: AtomicI32 = AtomicI32::new(-1);

/// The signals the master acts on, as Gunicorn's arbiter does.
pub const HANDLED: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

pub struct SelfPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SelfPipe {
    pub fn install() -> nix::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        READ_FD.store(read.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
        for sig in HANDLED {
            // SAFETY: the handler only performs async-signal-safe operations.
            unsafe { sigaction(sig, &action) }?;
        }
        Ok(Self { read, _write: write })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Waits up to `timeout_ms` for signals and returns those received, in order.
    pub fn wait(&self, timeout_ms: i32) -> Vec<Signal> {
        self.wait_also(timeout_ms, &[]).0
    }

    /// Like `wait`, also watching `extra` for input (or hang-up); the flags say which
    /// have some.
    pub fn wait_also(&self, timeout_ms: i32, extra: &[RawFd]) -> (Vec<Signal>, Vec<bool>) {
        let mut pfds: Vec<libc::pollfd> = std::iter::once(self.read.as_raw_fd())
            .chain(extra.iter().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds (a negative fd is ignored by poll); EINTR returns early.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        let extra_ready = pfds[1..]
            .iter()
            .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
            .collect();
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer from our own non-blocking pipe.
            let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend(
                buf[..n as usize]
                    .iter()
                    .filter_map(|b| Signal::try_from(i32::from(*b)).ok()),
            );
        }
        (out, extra_ready)
    }
}

/// Blocks the master's signals around `fork()` (the returned mask restores them): a
/// signal meant for the new worker that arrived before it replaced the master's handler
/// would run that handler, land in the master's pipe and be lost to the worker (a TERM
/// sent by a master that is stopping would leave the worker running). In the child they
/// stay pending until the worker has installed its own handlers.
pub fn block_for_fork() -> Option<SigSet> {
    let mut set = SigSet::empty();
    for sig in HANDLED {
        set.add(sig);
    }
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok()?;
    Some(old)
}

/// Restores the mask `block_for_fork` replaced (the master after the fork).
pub fn unblock_after_fork(old: Option<SigSet>) {
    if let Some(old) = old {
        let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// In a freshly forked worker: restore default dispositions and forget the master's
/// pipe, before any runtime installs its own handlers. The master's signals stay blocked
/// (see `block_for_fork`) until the worker sets its own mask.
pub fn reset_in_child() {
    for fd in [
        WRITE_FD.swap(-1, Ordering::Relaxed),
        READ_FD.swap(-1, Ordering::Relaxed),
        crate::metrics_http::LISTENER_FD.swap(-1, Ordering::Relaxed),
    ]
    .into_iter()
    .chain(std::mem::take(
        &mut *crate::control::FDS.lock().unwrap_or_else(|p| p.into_inner()),
    )) {
        if fd >= 0 {
            // SAFETY: the master's pipe ends, metrics and control sockets are never used
            // again in the child.
            unsafe { libc::close(fd) };
        }
    }
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in HANDLED {
        // SAFETY: restoring the default disposition is always sound.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
}
