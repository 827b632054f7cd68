//! Session ownership in Redis for nodes sharing state (see
//! `evald_session::Ownership`): the node that opens a session takes it;
//! heartbeats keep it; a node whose heartbeat finds another owner drops its
//! working copy.

use std::time::Duration;

use evald_session::{BoxFuture, Ownership};

/// How long an ownership lives without a heartbeat (the manager renews
/// every 5 s).
pub const OWNERSHIP_TTL: Duration = Duration::from_secs(20);

pub struct RedisOwnership {
    registry: evald_state::SessionRegistry,
    node: String,
}

impl RedisOwnership {
    pub fn new(registry: evald_state::SessionRegistry, node: String) -> RedisOwnership {
        RedisOwnership { registry, node }
    }
}

impl Ownership for RedisOwnership {
    fn take<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // One retry: the first command after Redis came back may meet the
            // broken connection that the manager then replaces.
            let previous = match self.registry.steal(session, &self.node, OWNERSHIP_TTL).await {
                Err(e) if e.is_unavailable() => self.registry.steal(session, &self.node, OWNERSHIP_TTL).await,
                other => other,
            }
            .map_err(|e| e.to_string())?;
            if let Some(p) = previous {
                tracing::info!(session, from = %p, "took the session over");
            }
            Ok(())
        })
    }

    fn renew<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(
            async move { self.registry.heartbeat(session, &self.node, OWNERSHIP_TTL).await.map_err(|e| e.to_string()) },
        )
    }

    fn release<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.registry.release(session, &self.node).await.map(|_| ()).map_err(|e| e.to_string()) })
    }
}
