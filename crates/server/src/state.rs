//! What every handler shares: the node's parts, complete when built.

use std::sync::Arc;
use std::time::Duration;

use evald_engine::{Engine, Lifecycle, Phase};
use evald_session::Manager;
use evald_state::{RateLimiter, Redis};

use crate::config::HttpConfig;
use crate::jobs::JobStore;
use crate::metrics::Metrics;
use crate::queue::ClusterQueue;
use crate::runs::Runner;

/// The parts a state is made of (see [`crate::compose`], which chooses them:
/// local ones, or Redis-backed ones for a cluster).
pub struct Parts {
    /// Runs batch jobs with the engine, recording metrics.
    pub runner: Arc<Runner>,
    pub sessions: Arc<Manager>,
    /// The node's drain and shutdown signal (the engine's capacity and the
    /// sessions subscribe to the same one).
    pub lifecycle: Lifecycle,
    pub limiter: Arc<dyn RateLimiter>,
    /// With Redis: the cluster's queue of `wait: false` runs.
    pub queue: Option<Arc<ClusterQueue>>,
    /// With Redis: readiness also asks it.
    pub redis: Option<Redis>,
    pub http: HttpConfig,
    /// The Judge0 API.
    pub judge0: Arc<evald_judge0::Judge0>,
}

struct Inner {
    parts: Parts,
    jobs: JobStore,
    request_timeout: Duration,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    pub fn new(parts: Parts) -> AppState {
        let request_timeout = crate::compose::request_timeout(parts.runner.engine());
        let jobs = JobStore::new(parts.http.stored_runs, parts.http.stored_run_ttl);
        AppState { inner: Arc::new(Inner { parts, jobs, request_timeout }) }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.parts.runner.engine()
    }

    pub fn runner(&self) -> &Arc<Runner> {
        &self.inner.parts.runner
    }

    pub fn sessions(&self) -> &Arc<Manager> {
        &self.inner.parts.sessions
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.parts.lifecycle
    }

    pub fn limiter(&self) -> &dyn RateLimiter {
        self.inner.parts.limiter.as_ref()
    }

    /// The cluster's queue of `wait: false` runs (with Redis).
    pub fn queue(&self) -> Option<&Arc<ClusterQueue>> {
        self.inner.parts.queue.as_ref()
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.inner.parts.redis.as_ref()
    }

    pub fn judge0(&self) -> &Arc<evald_judge0::Judge0> {
        &self.inner.parts.judge0
    }

    pub fn http(&self) -> &HttpConfig {
        &self.inner.parts.http
    }

    /// Runs submitted with `wait: false` on a single node (tests await
    /// `wait_done`).
    pub fn jobs(&self) -> &JobStore {
        &self.inner.jobs
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.parts.http.max_body_bytes
    }

    pub fn metrics(&self) -> &Metrics {
        self.inner.parts.runner.metrics()
    }

    /// The longest a request (admission wait and run) may take.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Whether the node takes no new work: draining after its window, or
    /// shutting down.
    pub fn draining(&self) -> bool {
        self.lifecycle().draining()
    }

    /// Whether the node says it is out of service: from the start of a
    /// drain (its window included), readiness fails and the agent reports
    /// the node down.
    pub fn out_of_service(&self) -> bool {
        self.lifecycle().out_of_service()
    }

    pub fn shutting_down(&self) -> bool {
        self.lifecycle().phase() == Phase::Stopping
    }
}
