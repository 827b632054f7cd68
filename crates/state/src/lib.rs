#![forbid(unsafe_code)]
//! The state a node keeps beyond one request, behind the ports the other
//! crates use, each with the implementation of a single node (the embedded
//! default) and the Redis one of a cluster:
//!
//! | port | one node | cluster (Redis) |
//! |---|---|---|
//! | [`WorkspaceStore`]: session workspaces, written before a write is acknowledged | [`LocalStore`] (host disk) | [`RedisWorkspaceStore`] |
//! | [`Ownership`]: which node serves a session | none: the node owns all | [`RedisOwnership`] over [`SessionRegistry`] |
//! | [`RateLimiter`]: per-key request counters | [`FixedWindow`] | [`RedisRateLimiter`] |
//! | [`RecordStore`]: records by token (Judge0 submissions), bounded by age and count | [`LocalRecords`] (host disk) | [`RedisRecords`] |
//! | [`RunQueue`]: `wait=false` runs on a Redis Stream, finished by another node if theirs dies | (in-memory runs of the server) | [`RunQueue`] |
//!
//! Every Redis key starts with a namespace ([`RedisConfig::namespace`],
//! `evald:` by default), so several deployments can share one Redis.
//!
//! Architecture invariant: this crate knows storage and Redis, and nothing
//! of HTTP, sessions or the sandbox (it depends on `evald-proto` only, for
//! the path rule). Every Redis failure is a [`StateError`] that tells
//! "Redis is away, retry later" ([`StateError::is_unavailable`]) apart from a
//! broken reply or a refused command, so the server can answer 503 with
//! Retry-After while Redis is away and recover by itself when it returns: no
//! handle here needs rebuilding after a Redis restart.
//!
//! The deployment this is made for is one Redis (optionally behind Sentinel);
//! multi-key scripts do not use hash tags and so do not run on Redis Cluster.

mod error;
mod local_store;
mod ownership;
mod pool;
mod queue;
mod rate;
mod records;
mod redis_store;
mod registry;
mod workspace;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use error::StateError;
pub use local_store::LocalStore;
pub use ownership::{Ownership, RedisOwnership, OWNERSHIP_TTL};
pub use queue::{QueueDepth, QueueEntry, RunQueue};
pub use rate::{FixedWindow, RateDecision, RateLimiter, RedisRateLimiter, WINDOW};
pub use records::{LocalRecords, RecordPage, RecordStore, RedisRecords, Retention};
pub use redis_store::{is_unavailable, RedisWorkspaceStore};
pub use registry::SessionRegistry;
pub use workspace::{Meta, StoredFile, WorkspaceStore};

/// A boxed future, for the object-safe ports.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key.
    pub namespace: String,
    /// Bound of one TCP connect.
    pub connect_timeout: Duration,
    /// Bound of one command's reply (blocking stream reads add their block
    /// time to it).
    pub response_timeout: Duration,
    /// Idle connections the synchronous pool keeps (more may be open while
    /// more threads are in a call; they are closed on return).
    pub max_idle_connections: usize,
}

impl RedisConfig {
    pub const DEFAULT_NAMESPACE: &'static str = "evald:";

    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            namespace: RedisConfig::DEFAULT_NAMESPACE.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(3),
            max_idle_connections: 8,
        }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> RedisConfig {
        self.namespace = namespace.into();
        self
    }
}

/// Key names, all under the namespace.
#[derive(Debug, Clone)]
struct Keys {
    ns: String,
}

impl Keys {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.ns)
    }
}

/// A handle on one Redis: builds the four parts, each of which can be cloned
/// or shared freely.
///
/// Nothing connects here: a node starts while Redis is away and its first
/// calls fail with [`StateError::Unavailable`] until Redis answers.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    config: RedisConfig,
}

impl Redis {
    pub fn new(config: RedisConfig) -> Result<Redis, StateError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| StateError::Config(e.to_string()))?;
        Ok(Redis { client, config })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn keys(&self) -> Keys {
        Keys { ns: self.config.namespace.clone() }
    }

    /// The synchronous workspace store (for blocking threads).
    pub fn workspace_store(&self) -> RedisWorkspaceStore {
        RedisWorkspaceStore::new(pool::Pool::new(self.client.clone(), &self.config), self.keys())
    }

    /// The shared rate limiter. Must be called within a tokio runtime.
    pub fn rate_limiter(&self) -> Result<RedisRateLimiter, StateError> {
        Ok(RedisRateLimiter::new(self.manager(None)?, self.keys()))
    }

    /// The shared records (the Judge0 API's submissions), kept as
    /// `retention` says. Must be called within a tokio runtime.
    pub fn records(&self, retention: Retention) -> Result<RedisRecords, StateError> {
        Ok(RedisRecords::new(self.manager(None)?, self.keys(), retention))
    }

    /// The session registry. Must be called within a tokio runtime.
    pub fn session_registry(&self) -> Result<SessionRegistry, StateError> {
        Ok(SessionRegistry::new(self.manager(None)?, self.keys()))
    }

    /// Session ownership for this node, named `node` (unique per node).
    /// Must be called within a tokio runtime.
    pub fn ownership(&self, node: impl Into<String>) -> Result<RedisOwnership, StateError> {
        Ok(RedisOwnership::new(self.session_registry()?, node.into()))
    }

    /// The run queue. Must be called within a tokio runtime. Creates the
    /// consumer group if Redis answers; if it does not, the group is created
    /// by the first call that finds Redis back.
    pub async fn run_queue(&self) -> Result<RunQueue, StateError> {
        // Blocking reads get their own connection: a multiplexed connection
        // answers in order, so a blocked XREADGROUP would hold back every
        // other command queued behind it. Their bound is set per call.
        let reader = self.manager(Some(None))?;
        RunQueue::new(self.manager(None)?, reader, self.keys(), self.config.response_timeout).await
    }

    /// Answers when Redis answers a PING (readiness).
    pub async fn ping(&self) -> Result<(), StateError> {
        let mut c = self
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.config.connect_timeout))
                    .set_response_timeout(Some(self.config.response_timeout)),
            )
            .await
            .map_err(|e| StateError::from_redis("PING", e))?;
        let pong: String =
            redis::cmd("PING").query_async(&mut c).await.map_err(|e| StateError::from_redis("PING", e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StateError::Reply { op: "PING", detail: format!("answered {pong:?}") })
        }
    }

    /// A lazily connecting manager that reconnects by itself. Each
    /// (re)connection makes one attempt: while Redis is away calls fail at
    /// once with an I/O error (and trigger the next attempt) instead of
    /// waiting out a long backoff. `response_timeout`: `None` uses the
    /// configured one, `Some(None)` none at all.
    fn manager(&self, response_timeout: Option<Option<Duration>>) -> Result<ConnectionManager, StateError> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(response_timeout.unwrap_or(Some(self.config.response_timeout)));
        ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StateError::Config(e.to_string()))
    }
}
