//! Interactive sessions: a persistent workspace, at most one process on a
//! terminal (a program run, a shell or a REPL), and any number of clients
//! that all see its sequence-numbered output and can resume after a
//! disconnect. The protocol is documented in `docs/protocol.md`; its wire
//! types are `evald_proto::session`.
//!
//! - [`Manager`]: the sessions of this node (create, reopen from the store,
//!   remove, expire, file operations, ownership among nodes).
//! - [`Session`]: one session's events (numbered, buffered for replay,
//!   broadcast) and its process.
//! - [`client::serve`]: one client's connection, over any [`client::Transport`]
//!   (the server adapts its WebSocket to it).
//!
//! Processes start through the engine (its capacity, its compile step, its
//! driver); workspaces are kept in a `evald_state::WorkspaceStore`. This crate
//! knows no HTTP.

#![forbid(unsafe_code)]

pub mod client;
mod files;
mod manager;
mod process;
mod session;

use std::time::Duration;

pub use manager::Manager;
pub use session::Session;

/// Settings of the session service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session with no client and no process is removed after this.
    pub ttl: Duration,
    /// A client that sends nothing for this long is disconnected (4408).
    pub idle: Duration,
    /// A session is closed (4409) this long after its creation.
    pub lifetime: Duration,
    /// A process keeps running this long after its last client left.
    pub grace: Duration,
    /// Sessions open on this node at once.
    pub max_sessions: usize,
    /// Clients attached to one session at once.
    pub max_clients: usize,
    /// Bytes of events kept for replay per session.
    pub replay_bytes: usize,
    /// Wall-clock limit of a process started in a session.
    pub run_wall: Duration,
    /// Files and bytes a workspace may hold.
    pub max_files: usize,
    pub disk_bytes: u64,
    /// While the node drains, each client is told to reconnect after a
    /// delay drawn from this window.
    pub drain_window: Duration,
}

impl SessionConfig {
    /// The defaults: the one place they are defined (the command line's
    /// defaults are these).
    pub const DEFAULT: SessionConfig = SessionConfig {
        ttl: Duration::from_secs(24 * 3600),
        idle: Duration::from_secs(300),
        lifetime: Duration::from_secs(12 * 3600),
        grace: Duration::from_secs(60),
        max_sessions: 1000,
        max_clients: 16,
        replay_bytes: 256 << 10,
        run_wall: Duration::from_secs(15 * 60),
        max_files: 500,
        disk_bytes: 64 << 20,
        drain_window: Duration::from_secs(5),
    };
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig::DEFAULT
    }
}

/// Why a session request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session not found")]
    NotFound,
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown language {0:?}")]
    UnknownLanguage(String),
    #[error("{0}")]
    Quota(String),
    #[error("file not found")]
    FileNotFound,
    #[error("this node already has {0} sessions")]
    TooMany(usize),
    /// Files that cannot both exist, or a file where a directory is (or
    /// the other way round).
    #[error("{0}")]
    Conflict(String),
    #[error("the shared state is unavailable; retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, SessionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(SessionError::FileNotFound),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotConnected => {
            tracing::warn!(error = %e, "the workspace store is unavailable");
            Err(SessionError::Unavailable)
        }
        // The file system's EINVAL (say, a directory moved into itself) is
        // a conflict; our own path checks say InvalidInput without one.
        Ok(Err(e)) if e.raw_os_error() == Some(22) => Err(SessionError::Conflict(e.to_string())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => Err(SessionError::BadPath(e.to_string())),
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::DirectoryNotEmpty
                    | std::io::ErrorKind::AlreadyExists
            ) =>
        {
            Err(SessionError::Conflict(e.to_string()))
        }
        Ok(Err(e)) if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull => {
            Err(SessionError::Quota("the workspace is full".into()))
        }
        Ok(Err(e)) => Err(SessionError::Internal(e.to_string())),
        Err(e) => Err(SessionError::Internal(e.to_string())),
    }
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
