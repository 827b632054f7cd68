//! One error type for every part, split by what the caller should do.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis did not answer (refused, reset, timed out) or answered that it
    /// cannot serve right now (loading, failing over). Retry later: the
    /// handles reconnect by themselves.
    #[error("redis is unavailable during {op}: {source}")]
    Unavailable {
        op: &'static str,
        #[source]
        source: RedisError,
    },
    /// Redis answered with an error to a command (a bug or a misconfigured
    /// Redis, e.g. an ACL that refuses a command).
    #[error("redis refused {op}: {source}")]
    Command {
        op: &'static str,
        #[source]
        source: RedisError,
    },
    /// Redis answered something this crate did not expect.
    #[error("unexpected redis reply to {op}: {detail}")]
    Reply { op: &'static str, detail: String },
    /// The URL or the client settings are unusable.
    #[error("invalid redis configuration: {0}")]
    Config(String),
}

impl StateError {
    /// Sorts a client error: unavailability or a refused command.
    pub(crate) fn from_redis(op: &'static str, source: RedisError) -> StateError {
        if unavailable(&source) {
            StateError::Unavailable { op, source }
        } else if matches!(source.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
            StateError::Reply { op, detail: source.to_string() }
        } else {
            StateError::Command { op, source }
        }
    }

    /// True when Redis is away for now (answer 503 with Retry-After).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StateError::Unavailable { .. })
    }
}

/// Errors that go away when Redis comes back.
pub(crate) fn unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        )
}
