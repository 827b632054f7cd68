//! evald's HTTP server: the native API (`/api/v1`), Piston v2 compatibility
//! (`/api/v2`), sessions and their WebSockets, health, metrics and admin
//! routes, API keys: the process's one HTTP edge.
//!
//! - [`config`]: [`ServerConfig`], everything a node is told.
//! - [`state`]: [`AppState`], complete when built from its [`Parts`].
//! - [`compose`]: the composition root (local or Redis-backed parts).
//! - [`app`]: the router and its middleware; [`app()`] has one shape.
//! - [`lifecycle`]: drain and shutdown, as the edge drives them.
//! - [`serve`]: running a node until SIGTERM.
//!
//! The Judge0 API (`crates/judge0`) is nested under `/judge0`.
//!
//! Architecture invariants: only this crate and `evald-judge0` know HTTP; it reaches the
//! sandbox only through the engine, whose capacity admits every box (batch
//! runs, Piston WebSocket runs and session processes alike), so no async
//! worker ever blocks on a box and no more boxes run than the node admits.

#![forbid(unsafe_code)]

pub mod agent;
mod app;
pub mod auth;
pub mod compose;
pub mod config;
pub mod error;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
mod native;
pub mod notify;
mod piston;
mod piston_versions;
mod piston_ws;
pub mod queue;
pub mod runs;
mod serve;
mod sessions;
pub mod state;
mod web;

pub use app::{app, OPENAPI, ROUTES};
pub use auth::ApiKeys;
pub use config::{HttpConfig, Judge0Settings, RedisSettings, ServerConfig};
pub use error::{ApiError, Dialect};
pub use jobs::JobStore;
pub use serve::{serve, Lingering, LingeringStream, LINGER_BYTES, LINGER_TIME};
pub use state::{AppState, Parts};
