//! Per-key request counters shared by every node: a fixed one-minute window
//! per key, counted in one Lua script so that concurrent requests on several
//! nodes never both take the last slot.
//!
//! The counter's key is `rate:<sha256 of the API key>`: API keys are secrets
//! and Redis key names show up in `KEYS`, `MONITOR` and slow logs.

use std::fmt::Write as _;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use crate::pool::{Pool, Replay};
use crate::{Keys, StateError};

/// The window length.
pub const WINDOW: Duration = Duration::from_secs(60);

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

/// The outcome of one counted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCheck {
    pub allowed: bool,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window resets (at least 1).
    pub reset_secs: u64,
}

/// The shared limiter. Synchronous (the server's `RateLimiter` trait is);
/// one round trip per request.
pub struct RedisRateLimiter {
    pool: Pool,
    keys: Keys,
    script: Script,
}

impl RedisRateLimiter {
    pub(crate) fn new(pool: Pool, keys: Keys) -> RedisRateLimiter {
        RedisRateLimiter { pool, keys, script: Script::new(COUNT) }
    }

    fn key(&self, api_key: &str) -> String {
        let digest = Sha256::digest(api_key.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        self.keys.key(&format!("rate:{hex}"))
    }

    /// Counts one request of `key`, allowed up to `limit` per window.
    pub fn check_rate(&self, key: &str, limit: u32) -> Result<RateCheck, StateError> {
        let redis_key = self.key(key);
        let window_ms = u64::try_from(WINDOW.as_millis()).unwrap_or(60_000);
        // Not replayed: a lost reply may have counted the request already.
        let (count, ttl_ms): (u64, u64) =
            self.pool.run("check_rate", Replay::Unsafe, |c| self.script.key(&redis_key).arg(window_ms).invoke(c))?;
        let limit64 = u64::from(limit);
        Ok(RateCheck {
            allowed: count <= limit64,
            remaining: u32::try_from(limit64.saturating_sub(count)).unwrap_or(0),
            reset_secs: ttl_ms.div_ceil(1000).max(1),
        })
    }
}
