//! A small pool of synchronous connections for the parts called from
//! blocking threads (the workspace store).
//!
//! Why a pool and not one `Mutex<Connection>`: the server calls the store
//! from several blocking threads at once; one connection would serialise
//! every file write of every session behind the slowest. Why not the async
//! client: the [`crate::WorkspaceStore`] trait is synchronous and is
//! called outside the runtime's workers, where `block_on` would need a
//! runtime handle and could deadlock a current-thread runtime.
//!
//! The pool keeps at most `max_idle` idle connections; callers are bounded
//! by the server's blocking pool, so open connections are too. A connection
//! that saw an I/O error is closed, never returned; after such an error every
//! idle connection is dropped as well, since they most likely point at the
//! same dead server. The std mutex is held only to push or pop.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, ConnectionLike, RedisError};

use crate::error::{unavailable, StateError};
use crate::RedisConfig;

/// Whether an operation may be sent again after its connection broke. A
/// stale idle connection (Redis restarted since it was last used) fails on
/// its first use before the command reached the new server; operations that
/// give the same result when applied twice are retried once on a fresh
/// connection, the others report the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    Safe,
    Unsafe,
}

pub(crate) struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(client: Client, config: &RedisConfig) -> Pool {
        Pool {
            client,
            idle: Mutex::new(Vec::new()),
            max_idle: config.max_idle_connections,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        }
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let c = self.client.get_connection_with_timeout(self.connect_timeout)?;
        c.set_read_timeout(Some(self.response_timeout))?;
        c.set_write_timeout(Some(self.response_timeout))?;
        Ok(c)
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, c: Connection) {
        if !c.is_open() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(c);
            }
        }
    }

    fn forget_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Runs `f` on a connection. `op` names the operation in errors.
    pub(crate) fn run<T>(
        &self,
        op: &'static str,
        replay: Replay,
        mut f: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StateError> {
        let (mut conn, reused) = match self.take_idle() {
            Some(c) => (c, true),
            None => (self.connect().map_err(|e| StateError::from_redis(op, e))?, false),
        };
        match f(&mut conn) {
            Ok(v) => {
                self.give_back(conn);
                Ok(v)
            }
            Err(e) if unavailable(&e) => {
                drop(conn);
                self.forget_idle();
                if !(reused && replay == Replay::Safe) {
                    return Err(StateError::from_redis(op, e));
                }
                tracing::debug!(op, error = %e, "a pooled redis connection broke; retrying on a fresh one");
                let mut conn = self.connect().map_err(|e| StateError::from_redis(op, e))?;
                let v = f(&mut conn).map_err(|e| StateError::from_redis(op, e))?;
                self.give_back(conn);
                Ok(v)
            }
            Err(e) => {
                self.give_back(conn);
                Err(StateError::from_redis(op, e))
            }
        }
    }
}
