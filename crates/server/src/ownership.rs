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

/// Runs `op` up to three times (100 and 200 ms apart) while Redis is unavailable: after Redis came
/// back, the first commands may still meet the broken connection, or the
/// failed reconnect attempt made while it was away, before the connection
/// manager's next attempt succeeds.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, evald_state::StateError>>,
{
    let mut last = None;
    for attempt in 0..3u64 {
        if attempt > 0 {
            // The connection manager reconnects in the background.
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        match op().await {
            Err(e) if e.is_unavailable() => last = Some(e),
            other => return other.map_err(|e| e.to_string()),
        }
    }
    Err(last.map(|e| e.to_string()).unwrap_or_default())
}

impl Ownership for RedisOwnership {
    fn take<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let previous = retried(|| self.registry.steal(session, &self.node, OWNERSHIP_TTL)).await?;
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
