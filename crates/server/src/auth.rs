//! Optional API keys and per-key rate limits.
//!
//! When no key is configured every request is let through. The rate limit
//! is a fixed one-minute window per key, counted by the node's
//! `evald_state::RateLimiter` (its own memory, or Redis for a cluster).

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Dialect};
use crate::AppState;

/// Configured keys and their requests-per-minute (0: unlimited).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: BTreeMap<String, u32>,
}

/// Keys are secrets: their debug form shows how many there are.
impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// No keys: every request is let through.
    pub const EMPTY: ApiKeys = ApiKeys { keys: BTreeMap::new() };

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn insert(&mut self, key: impl Into<String>, per_minute: u32) {
        self.keys.insert(key.into(), per_minute);
    }

    /// The keys (the Judge0 API's `X-Auth-Token`s).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
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
    let keys = &state.http().keys;
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
    let d = state.limiter().check(&key, limit).await;
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
}
