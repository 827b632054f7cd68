//! Optional API keys and per-key rate limits.
//!
//! When no key is configured every request is let through. The rate limit
//! is a fixed one-minute window per key, kept behind [`RateLimiter`] so a
//! cluster can share the counters (e.g. in Redis) without touching the
//! middleware.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Dialect};
use crate::AppState;

/// Configured keys and their requests-per-minute (0: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: HashMap<String, u32>,
}

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn insert(&mut self, key: impl Into<String>, per_minute: u32) {
        self.keys.insert(key.into(), per_minute);
    }

    pub fn limit_of(&self, key: &str) -> Option<u32> {
        self.keys.get(key).copied()
    }

    /// Parses a keys file: one `key [requests_per_minute]` per line; blank
    /// lines and lines starting with `#` are skipped.
    pub fn parse_file(&mut self, text: &str, default_rpm: u32) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap_or_default();
            let rpm = match parts.next() {
                None => default_rpm,
                Some(n) => n.parse().map_err(|_| format!("line {}: invalid requests per minute {n:?}", i + 1))?,
            };
            if parts.next().is_some() {
                return Err(format!("line {}: expected `key [requests_per_minute]`", i + 1));
            }
            self.insert(key, rpm);
        }
        Ok(())
    }

    /// Parses `key[:rpm],key[:rpm]`.
    pub fn parse_list(&mut self, text: &str, default_rpm: u32) -> Result<(), String> {
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, rpm) = match item.rsplit_once(':') {
                Some((k, n)) => {
                    (k, n.parse().map_err(|_| format!("invalid requests per minute {n:?} in the key list"))?)
                }
                None => (item, default_rpm),
            };
            if key.is_empty() {
                return Err("an empty key in the key list".into());
            }
            self.insert(key, rpm);
        }
        Ok(())
    }
}

/// The answer of a rate limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

/// Counts requests per key.
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key`, allowed up to `limit` per minute.
    fn check(&self, key: &str, limit: u32) -> RateDecision;
}

/// Fixed one-minute windows in Redis, shared by every node of a cluster. When
/// Redis does not answer, requests are refused (429 with a short
/// Retry-After): a limit that cannot be counted is not granted.
pub struct SharedWindow {
    limiter: evald_state::RedisRateLimiter,
}

impl SharedWindow {
    pub fn new(limiter: evald_state::RedisRateLimiter) -> SharedWindow {
        SharedWindow { limiter }
    }
}

impl RateLimiter for SharedWindow {
    fn check(&self, key: &str, limit: u32) -> RateDecision {
        match self.limiter.check_rate(key, limit) {
            Ok(c) => RateDecision { allowed: c.allowed, limit, remaining: c.remaining, reset_secs: c.reset_secs },
            Err(e) => {
                tracing::warn!(error = %e, "rate limit not counted: Redis unavailable");
                RateDecision { allowed: false, limit, remaining: 0, reset_secs: 5 }
            }
        }
    }
}

/// Fixed one-minute windows in this process's memory. The map holds at most
/// one entry per configured key; the mutex is held only for the update.
#[derive(Default)]
pub struct FixedWindow {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateLimiter for FixedWindow {
    fn check(&self, key: &str, limit: u32) -> RateDecision {
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return RateDecision { allowed: true, limit, remaining: limit, reset_secs: 60 };
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

/// Compares two secrets in time that depends on their lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(req: &Request) -> Option<&str> {
    let headers = req.headers();
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Middleware of every `/api` route.
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = state.keys();
    if keys.is_empty() {
        return next.run(req).await;
    }
    let dialect = Dialect::of_path(req.uri().path());
    let Some(limit) = presented_key(&req).and_then(|k| keys.limit_of(k)) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is required")
            .with_dialect(dialect)
            .into_response();
    };
    if limit == 0 {
        return next.run(req).await;
    }
    let key = presented_key(&req).unwrap_or_default().to_owned();
    let d = state.rate_limiter().check(&key, limit);
    if !d.allowed {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "the rate limit of this API key is exceeded",
        )
        .with_dialect(dialect)
        .retry_after(d.reset_secs)
        .header("ratelimit-limit", d.limit.into())
        .header("ratelimit-remaining", 0)
        .header("ratelimit-reset", d.reset_secs)
        .into_response();
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources_parse() {
        let mut k = ApiKeys::default();
        k.parse_file("# comment\nalpha 10\n\nbeta\n", 5).expect("file");
        k.parse_list("gamma:3, delta", 7).expect("list");
        assert_eq!(
            [k.limit_of("alpha"), k.limit_of("beta"), k.limit_of("gamma"), k.limit_of("delta"), k.limit_of("x")],
            [Some(10), Some(5), Some(3), Some(7), None]
        );
        assert!(k.parse_file("a b c", 1).is_err());
        assert!(k.parse_list("a:x", 1).is_err());
    }

    #[test]
    fn fixed_window_counts_per_key() {
        let l = FixedWindow::default();
        assert_eq!(l.check("a", 2).remaining, 1);
        assert_eq!(l.check("a", 2).remaining, 0);
        let over = l.check("a", 2);
        assert!(!over.allowed);
        assert!(over.reset_secs >= 1 && over.reset_secs <= 60);
        assert!(l.check("b", 2).allowed);
    }
}
