//! ferricorn-arbiter: the master process, Gunicorn's arbiter in Rust.
//!
//! Single-threaded for its whole life and free of any async runtime, so that `fork()` is
//! always safe: it binds the listeners, forks workers through a [`Launcher`] (the Python
//! crate supplies one that respects CPython's fork protocol), and supervises them from
//! a `poll()` loop on a signal self-pipe.

pub mod arbiter;
pub mod control;
pub mod heartbeat;
pub mod metrics_http;
pub mod process;
pub mod signals;
pub mod sockets;

pub use arbiter::{Arbiter, ArbiterConfig, Launcher, WorkerExit};

/// Exit code of a worker that could not boot (Gunicorn's `WORKER_BOOT_ERROR`).
pub const WORKER_BOOT_ERROR: i32 = 3;
/// Exit code of a worker whose application could not be loaded (`APP_LOAD_ERROR`).
pub const APP_LOAD_ERROR: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    #[error("{0}")]
    Bind(String),
    #[error("fork failed: {0}")]
    Fork(nix::Error),
    #[error("signal setup failed: {0}")]
    Signals(nix::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
