#![forbid(unsafe_code)]
//! Judge0 CE v1.13.1's API on evald's engine: the router (`router`), the
//! wire format (`wire`: fields, decimals, timestamps, Ruby's base64), the
//! request's casts, defaults and Rails messages (`request`), language ids
//! (`languages`), running a submission as one engine job and judging it as
//! Judge0 does (`exec`), `additional_files` (`files`) and callbacks
//! (`callback`).
//!
//! Submissions are records in the state crate's [`RecordStore`] (a node's
//! disk, or Redis for a cluster, so any node answers any token). On one
//! node a `wait=false` submission takes its place in the engine's capacity
//! queue when it is made (refused at once when the queue is full, as native
//! `wait: false` runs are) and runs there. In a cluster it goes, by its
//! token, into the cluster's run queue ([`SharedQueue`], the one native
//! `wait: false` runs use), and the node whose worker takes it runs it;
//! a node that dies holding it leaves it to be reclaimed by another.
//! `wait=true` submissions run on the node that took them.
//!
//! Architecture invariant: like `crates/server`, this crate knows HTTP
//! (axum); every box it starts comes from `Engine::run_job` under a
//! capacity permit.

pub mod callback;
pub mod exec;
pub mod files;
mod http;
mod info;
pub mod languages;
pub mod request;
mod service;
pub mod wire;

use std::time::Duration;

pub use callback::Cidr;
pub use evald_state::Retention;
pub use http::{home, router};
pub use service::{Judge0, Pending, Queued, SharedQueue};

/// The API's settings (Judge0's configuration variables that evald lets an
/// operator change; the rest are Judge0's defaults).
#[derive(Debug, Clone)]
pub struct Judge0Config {
    /// `ENABLE_SUBMISSION_DELETE`.
    pub enable_submission_delete: bool,
    /// `ALLOW_ENABLE_NETWORK`: off, as evald's batch runs have no network.
    pub allow_enable_network: bool,
    /// `ENABLE_CALLBACKS`.
    pub enable_callbacks: bool,
    /// Callback addresses allowed although they are loopback, private or
    /// link-local.
    pub callback_allow: Vec<Cidr>,
    /// `MAX_QUEUE_SIZE`: submissions waiting for capacity on this node.
    pub max_queue_size: usize,
    /// How long and how many submissions are kept.
    pub retention: evald_state::Retention,
    /// API tokens (`X-Auth-Token`): evald's API keys; empty: none needed.
    pub auth_tokens: Vec<String>,
    /// The `X-Auth-User` token (evald's admin key): `GET /submissions` and
    /// `DELETE` need it; `None`: they answer 403, as Judge0 without
    /// `AUTHZ_TOKEN`.
    pub authz_token: Option<String>,
}

impl Judge0Config {
    pub const DEFAULT_RETENTION: evald_state::Retention =
        evald_state::Retention { max_age: Duration::from_secs(24 * 3600), max_count: 10_000 };
    pub const DEFAULT_MAX_QUEUE_SIZE: usize = 100;
}

impl Default for Judge0Config {
    fn default() -> Self {
        Judge0Config {
            enable_submission_delete: false,
            allow_enable_network: false,
            enable_callbacks: true,
            callback_allow: Vec::new(),
            max_queue_size: Judge0Config::DEFAULT_MAX_QUEUE_SIZE,
            retention: Judge0Config::DEFAULT_RETENTION,
            auth_tokens: Vec::new(),
            authz_token: None,
        }
    }
}
