//! The master's process environment: pidfile, systemd (socket activation and
//! `sd_notify`), privilege drop.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Pid, Uid, User};

/// The pidfile, removed on drop if it still holds our pid.
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Writes `pid` to `path`, refusing when a live process already owns it.
    pub fn create(path: &Path, pid: u32) -> Result<Self, String> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(old) = text.trim().parse::<i32>() {
                let alive = old > 0 && old as u32 != pid && nix::sys::signal::kill(Pid::from_raw(old), None).is_ok();
                if alive {
                    return Err(format!(
                        "Already running on PID {old} (or pid file '{}' is stale)",
                        path.display()
                    ));
                }
            }
        }
        Self::write(path, pid)?;
        Ok(Self {
            path: path.to_path_buf(),
            pid,
        })
    }

    fn write(path: &Path, pid: u32) -> Result<(), String> {
        // Write then rename, so a reader never sees a half-written file.
        let tmp = path.with_extension(format!("tmp{pid}"));
        std::fs::write(&tmp, format!("{pid}\n"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("can't write pidfile {}: {e}", path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the pidfile (USR2 promotion: `<pidfile>.2` becomes `<pidfile>`).
    pub fn rename(&mut self, to: &Path) -> Result<(), String> {
        std::fs::rename(&self.path, to).map_err(|e| format!("can't rename pidfile: {e}"))?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listening sockets passed by systemd (`LISTEN_PID`/`LISTEN_FDS`), starting at fd 3.
/// The variables are removed so that children do not see them.
pub fn systemd_listen_fds() -> Vec<OwnedFd> {
    let pid_ok = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !pid_ok || n <= 0 {
        return Vec::new();
    }
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        remove_env(key);
    }
    // SAFETY: systemd hands these descriptors to us; nothing else in the process owns them.
    (3..3 + n)
        .map(|fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

fn remove_env(key: &str) {
    // SAFETY: called by the master at start-up, before any hook or preloaded app could
    // start a thread (see `launcher::start`).
    unsafe { std::env::remove_var(key) }
}

/// `NOTIFY_SOCKET`, read once: the master's loop runs beside threads that hooks may have
/// started, and reading the environment while one of them writes it is a data race.
static NOTIFY_SOCKET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Reads `NOTIFY_SOCKET` while the master is still alone (see [`sd_notify`]).
pub fn sd_notify_init() {
    NOTIFY_SOCKET.get_or_init(|| std::env::var("NOTIFY_SOCKET").ok());
}

/// `sd_notify(3)`: tells systemd about state changes when `NOTIFY_SOCKET` is set.
pub fn sd_notify(state: &str) {
    let Some(path) = NOTIFY_SOCKET.get_or_init(|| std::env::var("NOTIFY_SOCKET").ok()) else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let res = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), path)
    };
    if let Err(e) = res {
        ferricorn_core::debug!("sd_notify failed: {e}");
    }
}

/// A resolved `--user` / `--group`.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
}

fn lookup_user(spec: &str) -> Result<User, String> {
    let found = match spec.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)),
        Err(_) => User::from_name(spec),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| format!("Invalid value for user: {spec:?}: no such user"))
}

impl Identity {
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Self, String> {
        let mut id = Identity { uid: None, gid: None };
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            match lookup_user(u) {
                Ok(pw) => {
                    id.uid = Some(pw.uid);
                    id.gid = Some(pw.gid);
                }
                Err(e) => match u.parse::<u32>() {
                    Ok(n) => id.uid = Some(Uid::from_raw(n)),
                    Err(_) => return Err(e),
                },
            }
        }
        if let Some(g) = group.filter(|g| !g.is_empty()) {
            let gid = match g.parse::<u32>() {
                Ok(n) => Gid::from_raw(n),
                Err(_) => Group::from_name(g)
                    .ok()
                    .flatten()
                    .map(|gr| gr.gid)
                    .ok_or_else(|| format!("Invalid value for group: {g:?}: no such group"))?,
            };
            id.gid = Some(gid);
        }
        Ok(id)
    }

    /// Drops privileges in a worker: group first (while still allowed), then user.
    pub fn apply(&self, initgroups: bool) -> Result<(), String> {
        if let Some(gid) = self.gid {
            if gid != nix::unistd::getegid() {
                nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}) failed: {e}"))?;
            }
        }
        if let Some(uid) = self.uid {
            if initgroups {
                if let Ok(Some(pw)) = User::from_uid(uid) {
                    let name = std::ffi::CString::new(pw.name).map_err(|e| e.to_string())?;
                    nix::unistd::initgroups(&name, self.gid.unwrap_or(pw.gid))
                        .map_err(|e| format!("initgroups failed: {e}"))?;
                }
            }
            if uid != nix::unistd::geteuid() {
                nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}) failed: {e}"))?;
            }
        }
        Ok(())
    }
}
