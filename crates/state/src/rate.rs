//! Per-key request counters: a fixed one-minute window per API key, behind
//! [`RateLimiter`] so a node counts alone ([`FixedWindow`]) or with every
//! node of its cluster ([`RedisRateLimiter`]).
//!
//! In Redis the counter's key is `rate:<sha256 of the API key>` (API keys
//! are secrets and Redis key names show up in `KEYS`, `MONITOR` and slow
//! logs), counted in one Lua script so that concurrent requests on several
//! nodes never both take the last slot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use sha2::{Digest, Sha256};

use crate::{BoxFuture, Keys, StateError};

/// The window length.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The answer of a rate limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window resets (at least 1).
    pub reset_secs: u64,
}

/// Counts requests per key.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key`, allowed up to `limit` per window.
    fn check<'a>(&'a self, key: &'a str, limit: u32) -> BoxFuture<'a, RateDecision>;
}

/// Fixed one-minute windows in this process's memory. The map holds at most
/// one entry per configured key; the mutex is held only for the update.
#[derive(Default)]
pub struct FixedWindow {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl FixedWindow {
    fn count(&self, key: &str, limit: u32) -> RateDecision {
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return RateDecision { allowed: true, limit, remaining: limit, reset_secs: WINDOW.as_secs() };
        };
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        let reset_secs = WINDOW.saturating_sub(now.duration_since(entry.0)).as_secs().max(1);
        if entry.1 >= limit {
            return RateDecision { allowed: false, limit, remaining: 0, reset_secs };
        }
        entry.1 += 1;
        RateDecision { allowed: true, limit, remaining: limit - entry.1, reset_secs }
    }
}

impl RateLimiter for FixedWindow {
    fn check<'a>(&'a self, key: &'a str, limit: u32) -> BoxFuture<'a, RateDecision> {
        let decision = self.count(key, limit);
        Box::pin(std::future::ready(decision))
    }
}

/// Counts one request; the first of a window starts the window's expiry. A
/// key left without expiry (never by this script) is given one.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

/// How long a request that could not be counted is told to wait.
const UNCOUNTED_RETRY_SECS: u64 = 5;

/// Fixed one-minute windows in Redis, shared by every node of a cluster;
/// one round trip per request. When Redis does not answer, requests are
/// refused (429 with a short Retry-After): a limit that cannot be counted
/// is not granted.
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    keys: Keys,
    script: Script,
}

impl RedisRateLimiter {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys) -> RedisRateLimiter {
        RedisRateLimiter { conn, keys, script: Script::new(COUNT) }
    }

    fn key(&self, api_key: &str) -> String {
        let digest = Sha256::digest(api_key.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        self.keys.key(&format!("rate:{hex}"))
    }

    /// Counts one request of `key`, allowed up to `limit` per window. Not
    /// retried: a lost reply may have counted the request already.
    pub async fn check_rate(&self, key: &str, limit: u32) -> Result<RateDecision, StateError> {
        let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(60_000);
        let mut conn = self.conn.clone();
        let (count, ttl_ms): (u64, u64) = self
            .script
            .key(self.key(key))
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| StateError::from_redis("check_rate", e))?;
        let limit64 = u64::from(limit);
        Ok(RateDecision {
            allowed: count <= limit64,
            limit,
            remaining: u32::try_from(limit64.saturating_sub(count)).unwrap_or(0),
            reset_secs: ttl_ms.div_ceil(1000).max(1),
        })
    }
}

impl RateLimiter for RedisRateLimiter {
    fn check<'a>(&'a self, key: &'a str, limit: u32) -> BoxFuture<'a, RateDecision> {
        Box::pin(async move {
            match self.check_rate(key, limit).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit not counted: Redis unavailable");
                    RateDecision { allowed: false, limit, remaining: 0, reset_secs: UNCOUNTED_RETRY_SECS }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_window_counts_per_key() {
        let l = FixedWindow::default();
        assert_eq!(l.check("a", 2).await.remaining, 1);
        assert_eq!(l.check("a", 2).await.remaining, 0);
        let over = l.check("a", 2).await;
        assert!(!over.allowed);
        assert!(over.reset_secs >= 1 && over.reset_secs <= 60);
        assert!(l.check("b", 2).await.allowed);
    }
}
