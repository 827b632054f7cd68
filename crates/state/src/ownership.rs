//! Which node serves a session, when nodes share a store.
//!
//! The node a client opens a session on takes it (the latest wins: the
//! client is there now); the owner renews its claim; a node that finds it no
//! longer owns a session drops its working copy without writing it back, so
//! a stale copy never overwrites the store. A single node has no
//! [`Ownership`] at all: it owns everything it opens.

use std::time::Duration;

use crate::{BoxFuture, SessionRegistry, StateError};

/// Ownership of sessions among nodes that share a store.
pub trait Ownership: Send + Sync + 'static {
    /// Makes this node the owner.
    fn take<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), StateError>>;
    /// Extends this node's ownership; `false` when another node owns it.
    fn renew<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, StateError>>;
    /// Gives it up (the session was deleted).
    fn release<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), StateError>>;
}

/// How long an ownership lives without a renewal (the session manager renews
/// every 5 s).
pub const OWNERSHIP_TTL: Duration = Duration::from_secs(20);

/// Ownership kept in Redis ([`SessionRegistry`]) under this node's name.
pub struct RedisOwnership {
    registry: SessionRegistry,
    node: String,
}

impl RedisOwnership {
    pub fn new(registry: SessionRegistry, node: String) -> RedisOwnership {
        RedisOwnership { registry, node }
    }
}

/// Runs `op` up to three times (100 and 200 ms apart) while Redis is
/// unavailable: after Redis came back, the first commands may still meet the
/// broken connection, or the failed reconnect attempt made while it was
/// away, before the connection manager's next attempt succeeds.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, StateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let mut attempt = 0u64;
    loop {
        match op().await {
            Err(e) if e.is_unavailable() && attempt < 2 => {
                attempt += 1;
                // The connection manager reconnects in the background.
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            other => return other,
        }
    }
}

impl Ownership for RedisOwnership {
    fn take<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let previous = retried(|| self.registry.steal(session, &self.node, OWNERSHIP_TTL)).await?;
            if let Some(p) = previous {
                tracing::info!(session, from = %p, "took the session over");
            }
            Ok(())
        })
    }

    fn renew<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(self.registry.heartbeat(session, &self.node, OWNERSHIP_TTL))
    }

    fn release<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { self.registry.release(session, &self.node).await.map(drop) })
    }
}
