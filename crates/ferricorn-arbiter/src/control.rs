//! The control socket (Gunicorn 25.1+'s `gunicornc` interface), answered from the master
//! loop.
//!
//! Wire format, as Gunicorn's `gunicorn.ctl.protocol`: each message is a 4-byte
//! big-endian length and a JSON object. A request is `{"id", "command", "args"}`, a reply
//! `{"id", "status": "ok", "data"}` or `{"id", "status": "error", "error"}`. Clients may
//! send several requests on one connection (`gunicornc`'s interactive mode).
//!
//! The master stays single-threaded (it forks): the listener and its clients join the
//! loop's `poll()`, requests are read without blocking, and each reply is written with a
//! short timeout (they are a few hundred bytes).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The control socket's descriptors, closed in forked workers by `signals::reset_in_child`.
pub(crate) static FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Gunicorn's `MAX_MESSAGE_SIZE`.
const MAX_MESSAGE: usize = 16 << 20;
/// Connections kept at once; more are closed at accept.
const MAX_CLIENTS: usize = 16;
/// A client silent this long is closed (Gunicorn: 5 minutes).
const IDLE: Duration = Duration::from_secs(300);
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    seen: Instant,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: a new master (USR2) binds the same path, and this one
    /// must not remove the successor's socket when it exits.
    ino: u64,
    clients: Vec<Client>,
    /// The master that bound it: a forked worker unwinding through a copy of the master's
    /// state must not remove the master's socket file.
    owner: u32,
}

/// A parsed request: the command's words (with `args` appended).
pub struct Command {
    pub id: Value,
    pub words: Vec<String>,
}

impl ControlServer {
    /// Binds `path` (its directory created with mode 0700 when missing, a stale socket
    /// replaced) and gives it `mode`.
    pub fn bind(path: &Path, mode: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        let ino = std::fs::metadata(path)?.ino();
        lock_fds().push(listener.as_raw_fd());
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            ino,
            clients: Vec::new(),
            owner: std::process::id(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptors the master loop polls for input.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.clients.iter().map(|c| c.stream.as_raw_fd()));
        fds
    }

    /// Accepts waiting clients, reads what they sent and answers every complete request
    /// with `handle` (which returns the reply's `data`, or an error message).
    pub fn serve(&mut self, handle: &mut dyn FnMut(&Command) -> Result<Value, String>) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS {
                self.prune_idle();
            }
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            lock_fds().push(stream.as_raw_fd());
            self.clients.push(Client {
                stream,
                buf: Vec::new(),
                seen: Instant::now(),
            });
        }
        self.keep_clients(|c| serve_client(c, handle));
    }

    /// Closes clients silent for longer than Gunicorn's idle limit (called every loop).
    pub fn prune_idle(&mut self) {
        self.keep_clients(|c| c.seen.elapsed() < IDLE);
    }

    /// Keeps the clients `keep` says to keep; the others are closed and forgotten.
    fn keep_clients(&mut self, mut keep: impl FnMut(&mut Client) -> bool) {
        let mut i = 0;
        while i < self.clients.len() {
            if keep(&mut self.clients[i]) {
                i += 1;
            } else {
                let c = self.clients.swap_remove(i);
                lock_fds().retain(|fd| *fd != c.stream.as_raw_fd());
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        let mut fds = lock_fds();
        fds.retain(|fd| *fd != self.listener.as_raw_fd());
        for c in &self.clients {
            fds.retain(|fd| *fd != c.stream.as_raw_fd());
        }
        drop(fds);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn lock_fds() -> std::sync::MutexGuard<'static, Vec<RawFd>> {
    FDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads and answers one client's complete requests; false when it should be closed.
fn serve_client(c: &mut Client, handle: &mut dyn FnMut(&Command) -> Result<Value, String>) -> bool {
    let mut chunk = [0u8; 4096];
    // A client may send its request and shut its side at once (`socat`, `nc -N`): the
    // requests already read are answered before the connection goes.
    let mut eof = false;
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                c.seen = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    loop {
        if c.buf.len() < 4 {
            break;
        }
        let len = u32::from_be_bytes([c.buf[0], c.buf[1], c.buf[2], c.buf[3]]) as usize;
        if len > MAX_MESSAGE {
            return false;
        }
        if c.buf.len() < 4 + len {
            break;
        }
        let body: Vec<u8> = c.buf.drain(..4 + len).skip(4).collect();
        let reply = match parse(&body) {
            Ok(cmd) => match handle(&cmd) {
                Ok(data) => json!({"id": cmd.id, "status": "ok", "data": data}),
                Err(e) => json!({"id": cmd.id, "status": "error", "error": e}),
            },
            // Gunicorn closes a connection whose message it cannot decode.
            Err(ParseError::Undecodable) => return false,
            Err(ParseError::Reply(id, e)) => json!({"id": id, "status": "error", "error": e}),
        };
        if write_message(&c.stream, &reply).is_err() {
            return false;
        }
    }
    !eof && c.seen.elapsed() < IDLE
}

enum ParseError {
    Undecodable,
    Reply(Value, String),
}

fn parse(body: &[u8]) -> Result<Command, ParseError> {
    let msg: Value = serde_json::from_slice(body).map_err(|_| ParseError::Undecodable)?;
    let id = msg.get("id").cloned().unwrap_or(json!(0));
    let command = msg.get("command").and_then(Value::as_str).unwrap_or("").trim();
    if command.is_empty() {
        return Err(ParseError::Reply(id, "Empty command".into()));
    }
    let mut words =
        split_words(command).map_err(|e| ParseError::Reply(id.clone(), format!("Invalid argument: {e}")))?;
    if let Some(args) = msg.get("args").and_then(Value::as_array) {
        words.extend(args.iter().map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    if words.is_empty() {
        return Err(ParseError::Reply(id, "Empty command".into()));
    }
    Ok(Command { id, words })
}

/// Python's `shlex.split` for what a command line holds: words separated by whitespace,
/// single and double quotes, backslash escapes outside single quotes.
fn split_words(s: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err("No closing quotation"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("No escaped character"),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn write_message(mut stream: &UnixStream, msg: &Value) -> std::io::Result<()> {
    let payload = msg.to_string().into_bytes();
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let written = stream.write_all(&out);
    stream.set_nonblocking(true)?;
    written
}

/// The default path, as Gunicorn's: `$XDG_RUNTIME_DIR/gunicorn.ctl` when that directory
/// exists, else `~/.gunicorn/gunicorn.ctl`.
pub fn default_path() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Path::new(&xdg).join("gunicorn.ctl");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    Path::new(&home).join(".gunicorn").join("gunicorn.ctl")
}

/// Gunicorn's `help` reply.
pub fn help() -> Value {
    json!({"commands": {
        "show all": "Show all processes (arbiter, web workers, dirty workers)",
        "show workers": "List HTTP workers with their status",
        "show dirty": "List dirty workers and apps",
        "show config": "Show current effective configuration",
        "show stats": "Show server statistics",
        "show listeners": "Show bound sockets",
        "worker add [N]": "Spawn N workers (default 1)",
        "worker remove [N]": "Remove N workers (default 1)",
        "worker kill <PID>": "Gracefully terminate specific worker",
        "dirty add [N]": "Spawn N dirty workers (default 1)",
        "dirty remove [N]": "Remove N dirty workers (default 1)",
        "reload": "Graceful reload (HUP)",
        "reopen": "Reopen log files (USR1)",
        "shutdown [graceful|quick]": "Shutdown server (TERM/INT)",
        "help": "Show this help message",
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_shlex_splits_them() {
        assert_eq!(split_words("show  workers").unwrap(), ["show", "workers"]);
        assert_eq!(split_words("worker kill '12'").unwrap(), ["worker", "kill", "12"]);
        assert_eq!(split_words(r#"a "b c" d\ e"#).unwrap(), ["a", "b c", "d e"]);
        assert!(split_words("show 'workers").is_err());
    }

    #[test]
    fn requests_and_replies() {
        let dir = std::env::temp_dir().join(format!("ferricorn-ctl-{}", std::process::id()));
        let path = dir.join("sub").join("gunicorn.ctl");
        let mut server = ControlServer::bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut client = UnixStream::connect(&path).unwrap();
        let send = |client: &mut UnixStream, body: &[u8]| {
            let mut msg = (body.len() as u32).to_be_bytes().to_vec();
            msg.extend_from_slice(body);
            client.write_all(&msg).unwrap();
        };
        send(&mut client, br#"{"id": 7, "command": "worker add", "args": [2]}"#);
        send(&mut client, br#"{"id": 8, "command": ""}"#);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut replies = Vec::new();
        client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while replies.len() < 2 && Instant::now() < deadline {
            server.serve(&mut |cmd| {
                seen.push(cmd.words.clone());
                Ok(json!({"added": 2}))
            });
            let mut buf = [0u8; 4096];
            if let Ok(n) = client.read(&mut buf) {
                replies.extend_from_slice(&buf[..n]);
                if replies.len() > 8 {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut rest = [0u8; 4096];
        if let Ok(n) = client.read(&mut rest) {
            replies.extend_from_slice(&rest[..n]);
        }
        assert_eq!(seen, [vec!["worker".to_string(), "add".into(), "2".into()]]);
        let first_len = u32::from_be_bytes(replies[..4].try_into().unwrap()) as usize;
        let first: Value = serde_json::from_slice(&replies[4..4 + first_len]).unwrap();
        assert_eq!(first, json!({"id": 7, "status": "ok", "data": {"added": 2}}));
        let second: Value = serde_json::from_slice(&replies[8 + first_len..]).unwrap();
        assert_eq!(second, json!({"id": 8, "status": "error", "error": "Empty command"}));
        drop(server);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
