//! Which node runs which session.
//!
//! `session:<id>` holds the owning node's name with an expiry. The owner
//! extends it by heartbeats; a node that dies stops them, the key expires,
//! and the node the client reconnects to takes the session over. Only the
//! owner may extend or release (compare-and-pexpire, compare-and-delete in
//! Lua), so a node that was slow and lost ownership cannot take it back by a
//! late heartbeat.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::{Keys, StateError};

const HEARTBEAT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes a session whose owner is gone (or that this node owns already).
const TAKEOVER: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// The registry. Cheap to clone; every clone shares one reconnecting
/// connection.
#[derive(Clone)]
pub struct SessionRegistry {
    conn: ConnectionManager,
    keys: Keys,
    heartbeat: Script,
    release: Script,
    takeover: Script,
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SessionRegistry {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys) -> SessionRegistry {
        SessionRegistry {
            conn,
            keys,
            heartbeat: Script::new(HEARTBEAT),
            release: Script::new(RELEASE),
            takeover: Script::new(TAKEOVER),
        }
    }

    fn key(&self, session: &str) -> String {
        self.keys.key(&format!("session:{session}"))
    }

    /// Claims a session nobody owns: true when `node` is now its owner;
    /// false when any node (this one included) already owns it.
    pub async fn claim(&self, session: &str, node: &str, ttl: Duration) -> Result<bool, StateError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(session))
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("claim", e))?;
        Ok(set.is_some())
    }

    /// Extends the ownership of `node` by `ttl`: false when `node` is not
    /// (or no longer) the owner, which then must stop serving the session.
    pub async fn heartbeat(&self, session: &str, node: &str, ttl: Duration) -> Result<bool, StateError> {
        let n: i64 = self
            .heartbeat
            .key(self.key(session))
            .arg(node)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("heartbeat", e))?;
        Ok(n == 1)
    }

    /// The owning node, if the ownership has not expired.
    pub async fn owner(&self, session: &str) -> Result<Option<String>, StateError> {
        redis::cmd("GET")
            .arg(self.key(session))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("owner", e))
    }

    /// Gives the session up if `node` owns it; true when it did.
    pub async fn release(&self, session: &str, node: &str) -> Result<bool, StateError> {
        let n: i64 = self
            .release
            .key(self.key(session))
            .arg(node)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("release", e))?;
        Ok(n == 1)
    }

    /// Makes `node` the owner when the previous owner's key has expired (or
    /// was released), or refreshes it when `node` owns it already. False
    /// while another node's ownership is alive: the client should be sent
    /// there, or wait for the expiry.
    pub async fn takeover(&self, session: &str, node: &str, ttl: Duration) -> Result<bool, StateError> {
        let n: i64 = self
            .takeover
            .key(self.key(session))
            .arg(node)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("takeover", e))?;
        Ok(n == 1)
    }

    /// Makes `node` the owner whoever owned the session before (a client
    /// opened it here: the latest node to serve a session owns it; the
    /// previous owner learns it at its next heartbeat and drops its copy).
    /// Returns the previous owner, if another node.
    pub async fn steal(&self, session: &str, node: &str, ttl: Duration) -> Result<Option<String>, StateError> {
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.key(session))
            .arg(node)
            .arg("PX")
            .arg(millis(ttl))
            .arg("GET")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("steal", e))?;
        Ok(previous.filter(|p| p != node))
    }

    /// Milliseconds left of the current ownership (None: nobody owns it).
    pub async fn remaining(&self, session: &str) -> Result<Option<Duration>, StateError> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.key(session))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("remaining", e))?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }
}
