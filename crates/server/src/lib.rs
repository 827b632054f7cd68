//! evald's HTTP server: the native API (`/api/v1`), Piston v2 compatibility
//! (`/api/v2`), admission control, API keys, health and graceful shutdown.
//!
//! [`app`] builds the router from an [`AppState`] (tests drive it with
//! `oneshot` or a real socket); [`serve`] wires the sandbox, the catalogue
//! and the engine from a [`ServerConfig`] and runs it until SIGTERM/SIGINT.
//!
//! Architecture invariants: only this crate knows HTTP; the engine and the
//! sandbox are synchronous and are called through `spawn_blocking` only
//! after admission, so no async worker ever blocks on a box and the number
//! of blocking threads busy with boxes never exceeds the slots.

#![forbid(unsafe_code)]

pub mod admission;
pub mod agent;
pub mod auth;
pub mod error;
pub mod jobs;
pub mod metrics;
mod native;
pub mod ownership;
mod piston;
pub mod queue;
mod stream;
mod web;
mod ws;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use evald_engine::{Engine, EngineConfig, EngineError};
use serde_json::json;
use tracing::Instrument;

pub use admission::{Admission, AdmissionConfig, Refusal};
pub use auth::{ApiKeys, FixedWindow, RateLimiter};
pub use error::{ApiError, Dialect};
pub use jobs::JobStore;

/// Every route of the router, as (method, path); the OpenAPI document
/// describes exactly these (a test checks both ways).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz/live"),
    ("get", "/healthz/ready"),
    ("get", "/api/v1/languages"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v2/runtimes"),
    ("post", "/api/v2/execute"),
    ("get", "/api/v2/connect"),
    ("get", "/metrics"),
    ("post", "/admin/drain"),
    ("post", "/admin/undrain"),
];

/// The OpenAPI 3.1 document of the HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `evald serve` settings: flags, or `EVALD_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on
    #[arg(long, env = "EVALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the language catalogue (*.toml)
    #[arg(long, env = "EVALD_LANGUAGES", default_value = "languages")]
    pub languages_dir: PathBuf,
    /// Directory for the sandbox's own mount points
    #[arg(long, env = "EVALD_STATE_DIR", default_value = "/run/evald")]
    pub state_dir: PathBuf,
    /// Name of this instance (its cgroups are evald-<instance>)
    #[arg(long, env = "EVALD_INSTANCE", default_value = "default")]
    pub instance: String,
    /// First user id of the box users (one per slot)
    #[arg(long, env = "EVALD_UID_BASE", default_value_t = 61000)]
    pub uid_base: u32,
    /// Most boxes running at once
    #[arg(long, env = "EVALD_SLOTS", default_value_t = 8)]
    pub slots: u32,
    /// Share of the machine's memory (MemTotal) that admitted boxes may reserve together
    #[arg(long, env = "EVALD_MEMORY_SHARE", default_value_t = 0.5)]
    pub memory_share: f64,
    /// Most requests waiting for a slot; more get 429
    #[arg(long, env = "EVALD_QUEUE", default_value_t = 64)]
    pub queue: usize,
    /// Longest wait for a slot in milliseconds; then 503
    #[arg(long, env = "EVALD_QUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub queue_timeout_ms: u64,
    /// Largest request body (and WebSocket message) in bytes
    #[arg(long, env = "EVALD_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// File of API keys, one `key [requests_per_minute]` per line; when keys
    /// are configured every /api route requires one
    #[arg(long, env = "EVALD_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys as `key[:requests_per_minute],...`
    #[arg(long, env = "EVALD_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Requests per minute of a key that states none (0: unlimited)
    #[arg(long, env = "EVALD_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Log JSON lines instead of text
    #[arg(long, env = "EVALD_LOG_JSON")]
    pub log_json: bool,
    /// After SIGTERM, how long in-flight runs may take to finish, in milliseconds
    #[arg(long, env = "EVALD_SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
    /// When draining, each session client is told to reconnect after a random
    /// delay within this window (milliseconds), then closed with 4503
    #[arg(long, env = "EVALD_DRAIN_WINDOW_MS", default_value_t = 5_000)]
    pub drain_window_ms: u64,
    /// Key of the /admin routes (`Authorization: Bearer <key>`); without it
    /// they answer 404
    #[arg(long, env = "EVALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Address of the HAProxy agent-check listener (off when not given)
    #[arg(long, env = "EVALD_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Redis for shared state (session workspaces, rate limits) across
    /// nodes, e.g. redis://127.0.0.1:6379/0; without it the node keeps its
    /// state to itself (the embedded default)
    #[arg(long, env = "EVALD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// With Redis: most `wait: false` runs its queue holds (waiting and
    /// running, all nodes together); more get 429
    #[arg(long, env = "EVALD_QUEUE_DEPTH", default_value_t = 1000)]
    pub queue_depth: u64,
    /// With Redis: a queued run delivered to a node that neither finished nor
    /// touched it for this many milliseconds (the node died) is run by
    /// another node; default the longest a run may take plus a margin
    #[arg(long, env = "EVALD_QUEUE_RECLAIM_MS")]
    pub queue_reclaim_ms: Option<u64>,
    /// Prefix of every Redis key of this cluster
    #[arg(long, env = "EVALD_REDIS_NAMESPACE", default_value = "evald:")]
    pub redis_namespace: String,
    /// Directory of durable data: the stored session workspaces
    #[arg(long, env = "EVALD_DATA_DIR", default_value = "/var/lib/evald")]
    pub data_dir: PathBuf,
    /// Interactive sessions open on this node at once
    #[arg(long, env = "EVALD_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// A session with no client and no process is deleted after this many seconds
    #[arg(long, env = "EVALD_SESSION_TTL_S", default_value_t = 86_400)]
    pub session_ttl_s: u64,
    /// A session client that sends nothing for this many seconds is disconnected
    #[arg(long, env = "EVALD_SESSION_IDLE_S", default_value_t = 300)]
    pub session_idle_s: u64,
    /// Maximum lifetime of a session in seconds
    #[arg(long, env = "EVALD_SESSION_LIFETIME_S", default_value_t = 43_200)]
    pub session_lifetime_s: u64,
    /// A session's process keeps running this many seconds after its last client left
    #[arg(long, env = "EVALD_SESSION_GRACE_S", default_value_t = 60)]
    pub session_grace_s: u64,
    /// Bytes of output kept per session for replay after a reconnect
    #[arg(long, env = "EVALD_SESSION_REPLAY_BYTES", default_value_t = 256 * 1024)]
    pub session_replay_bytes: usize,
    /// Wall-clock limit of a process in a session, in seconds
    #[arg(long, env = "EVALD_SESSION_RUN_WALL_S", default_value_t = 900)]
    pub session_run_wall_s: u64,
    /// Files a session workspace may hold
    #[arg(long, env = "EVALD_SESSION_FILES", default_value_t = 500)]
    pub session_files: usize,
    /// Bytes a session workspace may hold
    #[arg(long, env = "EVALD_SESSION_DISK_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub session_disk_bytes: u64,
}

impl ServerConfig {
    /// The session settings of this configuration.
    pub fn session_config(&self) -> evald_session::SessionConfig {
        use std::time::Duration as D;
        evald_session::SessionConfig {
            ttl: D::from_secs(self.session_ttl_s),
            idle: D::from_secs(self.session_idle_s),
            lifetime: D::from_secs(self.session_lifetime_s),
            grace: D::from_secs(self.session_grace_s),
            max_sessions: self.max_sessions,
            max_clients: 16,
            replay_bytes: self.session_replay_bytes,
            run_wall: D::from_secs(self.session_run_wall_s),
            max_files: self.session_files,
            disk_bytes: self.session_disk_bytes,
        }
    }
}

/// Settings of an [`AppState`] besides the engine.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub admission: AdmissionConfig,
    pub max_body_bytes: usize,
    pub keys: ApiKeys,
    /// Stored `wait: false` runs, and how long finished ones are kept.
    pub stored_runs: usize,
    pub stored_run_ttl: Duration,
    /// Window over which session clients are told to reconnect on a drain.
    pub drain_window: Duration,
    /// Key of the /admin routes; `None`: they answer 404.
    pub admin_key: Option<String>,
}

impl StateOptions {
    /// Defaults for `slots` boxes and a memory budget.
    pub fn new(slots: u32, memory_budget_bytes: u64) -> StateOptions {
        StateOptions {
            admission: AdmissionConfig {
                slots,
                memory_budget_bytes,
                queue: 64,
                queue_timeout: Duration::from_secs(10),
            },
            max_body_bytes: 8 << 20,
            keys: ApiKeys::default(),
            stored_runs: 1000,
            stored_run_ttl: Duration::from_secs(600),
            drain_window: Duration::from_secs(5),
            admin_key: None,
        }
    }
}

struct Inner {
    engine: Arc<Engine>,
    admission: Admission,
    jobs: JobStore,
    keys: ApiKeys,
    limiter: Box<dyn RateLimiter>,
    max_body_bytes: usize,
    request_timeout: Duration,
    shutting_down: AtomicBool,
    draining: AtomicBool,
    drain_window: Duration,
    admin_key: Option<String>,
    metrics: metrics::Metrics,
    sessions: std::sync::OnceLock<Arc<evald_session::Manager>>,
    redis: std::sync::OnceLock<evald_state::Redis>,
    queue: std::sync::OnceLock<Arc<queue::ClusterQueue>>,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    pub fn new(engine: Engine, options: StateOptions) -> AppState {
        AppState::with_rate_limiter(engine, options, Box::new(FixedWindow::default()))
    }

    pub fn with_rate_limiter(engine: Engine, options: StateOptions, limiter: Box<dyn RateLimiter>) -> AppState {
        let cfg = engine.config();
        let request_timeout = options.admission.queue_timeout
            + evald_engine::max_job_duration(cfg, cfg.max_cases)
            + Duration::from_secs(10);
        AppState {
            inner: Arc::new(Inner {
                engine: Arc::new(engine),
                admission: Admission::new(options.admission),
                jobs: JobStore::new(options.stored_runs, options.stored_run_ttl),
                keys: options.keys,
                limiter,
                max_body_bytes: options.max_body_bytes,
                request_timeout,
                shutting_down: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                drain_window: options.drain_window,
                admin_key: options.admin_key,
                metrics: metrics::Metrics::default(),
                sessions: std::sync::OnceLock::new(),
                redis: std::sync::OnceLock::new(),
                queue: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Runs submitted with `wait: false` (tests await `wait_done`).
    pub fn jobs(&self) -> &JobStore {
        &self.inner.jobs
    }

    pub fn keys(&self) -> &ApiKeys {
        &self.inner.keys
    }

    pub fn rate_limiter(&self) -> &dyn RateLimiter {
        self.inner.limiter.as_ref()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Readiness turns 503 and admission refuses new jobs for good; admitted
    /// ones go on; remaining session clients are closed with 4503 at once.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.admission.close();
        if let Some(m) = self.inner.sessions.get() {
            m.shutdown();
        }
    }

    /// Starts a drain (`POST /admin/drain`, and the first step of SIGTERM):
    /// readiness answers 503 `draining`, the agent says `drain`, new and
    /// waiting runs and new sessions get 503 with Retry-After, admitted runs
    /// go on, and each session client is told to reconnect after a random
    /// delay within the drain window, then closed with 4503.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.admission.drain();
        if let Some(q) = self.inner.queue.get() {
            q.drain();
        }
        if let Some(m) = self.inner.sessions.get() {
            m.drain(self.inner.drain_window);
        }
    }

    /// Ends a drain started by `POST /admin/drain`; `false` once the node
    /// shuts down (a SIGTERM drain cannot be undone).
    pub fn end_drain(&self) -> bool {
        if self.shutting_down() {
            return false;
        }
        self.inner.draining.store(false, Ordering::SeqCst);
        self.inner.admission.undrain();
        if let Some(q) = self.inner.queue.get() {
            q.undrain();
        }
        if let Some(m) = self.inner.sessions.get() {
            m.undrain();
        }
        true
    }

    /// Whether the node takes no new work: draining, or shutting down.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst) || self.shutting_down()
    }

    /// Waits until the drain has done its work: no admitted run left, no
    /// session client left, and at least the drain window has passed (so
    /// balancers have learnt that the node drains); at most `bound`.
    /// Returns whether everything finished within the bound.
    pub async fn drained(&self, bound: Duration) -> bool {
        let started = tokio::time::Instant::now();
        let mut active = self.admission().active();
        let mut clients = self.sessions().map(|m| m.clients());
        let work = async {
            let _ = active.wait_for(|n| *n == 0).await;
            if let Some(c) = clients.as_mut() {
                let _ = c.wait_for(|n| *n == 0).await;
            }
            tokio::time::sleep_until(started + self.inner.drain_window).await;
        };
        tokio::time::timeout(bound, work).await.is_ok()
    }

    /// The series recorded by the handlers.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The session manager, when sessions are served.
    pub fn sessions(&self) -> Option<&Arc<evald_session::Manager>> {
        self.inner.sessions.get()
    }

    /// Enables interactive sessions, served by `manager`.
    pub fn set_sessions(&self, manager: Arc<evald_session::Manager>) {
        let _ = self.inner.sessions.set(manager);
    }

    /// Makes readiness depend on this Redis answering.
    pub fn set_redis(&self, redis: evald_state::Redis) {
        let _ = self.inner.redis.set(redis);
    }

    /// The cluster's queue of `wait: false` runs (with Redis).
    pub fn queue(&self) -> Option<&Arc<queue::ClusterQueue>> {
        self.inner.queue.get()
    }

    /// Queues `wait: false` runs in Redis instead of running them here.
    pub fn set_queue(&self, queue: Arc<queue::ClusterQueue>) {
        let _ = self.inner.queue.set(queue);
    }

    /// The longest a request (admission wait and run) may take.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Admits a job reserving `memory_bytes`, or says why not.
    pub(crate) async fn admit(&self, memory_bytes: u64, dialect: Dialect) -> Result<admission::Permit, ApiError> {
        let ticket = self.inner.admission.enqueue(memory_bytes).map_err(|r| refusal(r, dialect))?;
        ticket.admit().await.map_err(|r| refusal(r, dialect))
    }
}

/// The HTTP answer to a refusal.
pub(crate) fn refusal(r: Refusal, dialect: Dialect) -> ApiError {
    let e = match &r {
        Refusal::TooLarge { .. } => ApiError::bad_request("memory_budget", r.to_string()),
        Refusal::QueueFull => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", r.to_string()).retry_after(1),
        Refusal::Timeout => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", r.to_string()).retry_after(5),
        Refusal::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", r.to_string()).retry_after(5)
        }
        Refusal::Draining => draining_error(),
    };
    e.with_dialect(dialect)
}

/// The answer to new work on a draining node: 503, retry (elsewhere) at once.
fn draining_error() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", Refusal::Draining.to_string()).retry_after(1)
}

/// The HTTP answer to an engine error.
pub(crate) fn engine_error(e: EngineError, dialect: Dialect) -> ApiError {
    let e = match e {
        EngineError::Busy => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the sandbox is busy; retry later")
                .retry_after(1)
        }
        EngineError::Sandbox(details) => ApiError::internal(details),
        other => ApiError::bad_request("invalid_job", other.to_string()),
    };
    e.with_dialect(dialect)
}

pub use evald_sandbox::signal_name;

/// The signals a WebSocket client may send.
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "SIGINT" => libc::SIGINT,
        "SIGTERM" => libc::SIGTERM,
        "SIGKILL" => libc::SIGKILL,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGHUP" => libc::SIGHUP,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        _ => return None,
    })
}

/// The router.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/languages", get(native::languages))
        .route("/api/v1/runs", post(native::create_run))
        .route("/api/v1/runs/{id}", get(native::get_run))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v2/runtimes", get(piston::runtimes))
        .route("/api/v2/execute", post(piston::execute))
        .route("/api/v2/connect", get(ws::connect));
    let api = match state.inner.sessions.get() {
        Some(m) => api.merge(evald_session::routes(m.clone())),
        None => api,
    };
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), drain_gate))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/admin/drain", post(admin_drain))
        .route("/admin/undrain", post(admin_undrain))
        .merge(web::router())
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if let Some(redis) = state.inner.redis.get() {
        let answered = tokio::time::timeout(Duration::from_secs(1), redis.ping()).await;
        if !matches!(answered, Ok(Ok(()))) {
            let mut resp =
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "state_unavailable"}))).into_response();
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            return resp;
        }
    }
    if state.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting_down"}))).into_response()
    } else if state.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

/// New sessions, session WebSockets and Piston WebSockets are refused on a
/// draining node (batch runs are refused by admission, which also refuses
/// the runs waiting in its queue). Everything else, such as the files of
/// existing sessions, is still served.
async fn drain_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.draining() {
        let path = req.uri().path();
        let new_work = (req.method() == axum::http::Method::POST && path == "/api/v1/sessions")
            || (path.starts_with("/api/v1/sessions/") && path.ends_with("/ws"))
            || path == "/api/v2/connect";
        if new_work {
            let why = if state.shutting_down() { Refusal::ShuttingDown } else { Refusal::Draining };
            return refusal(why, Dialect::of_path(path)).into_response();
        }
    }
    next.run(req).await
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let admission = state.admission();
    let (cache_entries, cache_bytes, cache_hits, cache_misses) = state.engine().cache().stats();
    let gauges = metrics::Gauges {
        sessions_active: state.sessions().map_or(0, |m| m.len()),
        session_clients_connected: state.sessions().map_or(0, |m| *m.clients().borrow()),
        queue_depth: admission.waiting(),
        free_slots: admission.free_slots(),
        free_memory_bytes: admission.free_memory_bytes(),
        draining: state.draining(),
        cache_entries,
        cache_bytes,
        cache_hits,
        cache_misses,
    };
    let text = metrics::render(state.metrics(), &gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Checks `Authorization: Bearer <admin key>`: 404 when the node has no
/// admin key (the routes do not exist for it), 401 when the key is wrong.
fn check_admin(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(key) = state.inner.admin_key.as_deref() else {
        return Err(ApiError::not_found("the admin routes are off: this node has no admin key"));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if auth::constant_time_eq(given.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid admin key is required"))
    }
}

async fn admin_drain(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    if !state.draining() {
        tracing::info!("draining (admin request)");
    }
    state.begin_drain();
    let window = state.inner.drain_window.as_millis() as u64;
    Ok(Json(json!({"status": "draining", "drain_window_ms": window})).into_response())
}

async fn admin_undrain(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    if !state.end_drain() {
        return Err(ApiError::new(StatusCode::CONFLICT, "shutting_down", "the node is shutting down"));
    }
    tracing::info!("taking work again (admin request)");
    Ok(Json(json!({"status": "ok"})).into_response())
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
        .with_dialect(Dialect::of_path(req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .with_dialect(Dialect::of_path(req.uri().path()))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error").into_response()
}

/// Bounds every request (reading its body and running its job) by the
/// longest a job may legitimately take.
async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(req.uri().path());
    match tokio::time::timeout(state.inner.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long")
            .with_dialect(dialect)
            .retry_after(5)
            .into_response(),
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A span per request with its id (also returned as `x-request-id`).
async fn request_span(req: Request, next: Next) -> Response {
    let id = format!("{:x}-{}", std::process::id(), REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "answered")
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Installs the global tracing subscriber (`EVALD_LOG` filters, default info).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Builds the [`StateOptions`] of a configuration (reads the keys file and
/// the machine's memory size).
pub fn state_options(config: &ServerConfig) -> anyhow::Result<StateOptions> {
    anyhow::ensure!(config.slots > 0, "--slots must be at least 1");
    anyhow::ensure!(config.memory_share > 0.0 && config.memory_share <= 1.0, "--memory-share must be in (0, 1]");
    let total = admission::mem_total().context("reading the machine's memory size")?;
    let mut options = StateOptions::new(config.slots, (total as f64 * config.memory_share) as u64);
    options.admission.queue = config.queue;
    options.admission.queue_timeout = Duration::from_millis(config.queue_timeout_ms);
    options.max_body_bytes = config.max_body_bytes;
    options.drain_window = Duration::from_millis(config.drain_window_ms);
    options.admin_key = config.admin_key.clone().filter(|k| !k.is_empty());
    if let Some(path) = &config.api_keys_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        options.keys.parse_file(&text, config.rate_limit).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(list) = &config.api_keys {
        options.keys.parse_list(list, config.rate_limit).map_err(|e| anyhow::anyhow!("EVALD_API_KEYS: {e}"))?;
    }
    Ok(options)
}

/// The sandbox `config` asks for. Make it before the async runtime: the
/// sandbox's zygote, forked then, copies fewer threads' mappings, and every
/// box init is a copy of the zygote.
pub fn sandbox(config: &ServerConfig) -> anyhow::Result<evald_sandbox::Sandbox> {
    evald_sandbox::Sandbox::new(evald_sandbox::SandboxConfig {
        instance: config.instance.clone(),
        state_dir: config.state_dir.clone(),
        uid_base: config.uid_base,
        slots: config.slots,
        ..evald_sandbox::SandboxConfig::default()
    })
    .context("starting the sandbox")
}

/// Runs the server with `sandbox` (see [`sandbox`]) until SIGTERM or
/// SIGINT, then stops accepting and lets in-flight runs finish within the
/// grace period.
pub async fn serve(config: ServerConfig, sandbox: evald_sandbox::Sandbox) -> anyhow::Result<()> {
    let options = state_options(&config)?;
    let catalogue = evald_engine::Catalogue::load_dir(&config.languages_dir)
        .with_context(|| format!("loading the languages of {}", config.languages_dir.display()))?;
    let languages = tokio::task::spawn_blocking(move || evald_engine::catalogue::detect_installed(&catalogue))
        .await
        .context("detecting installed languages")?;
    tracing::info!(installed = languages.len(), "languages detected");
    let engine = Engine::new(sandbox, languages, EngineConfig::default());
    let redis = match &config.redis_url {
        Some(url) => Some(
            evald_state::Redis::new(
                evald_state::RedisConfig::new(url.clone()).with_namespace(config.redis_namespace.clone()),
            )
            .context("configuring Redis")?,
        ),
        None => None,
    };
    let state = match &redis {
        Some(r) => AppState::with_rate_limiter(engine, options, Box::new(auth::SharedWindow::new(r.rate_limiter()))),
        None => AppState::new(engine, options),
    };
    let store: Arc<dyn evald_session::WorkspaceStore> = match &redis {
        Some(r) => {
            state.set_redis(r.clone());
            tracing::info!("shared state in Redis");
            Arc::new(r.workspace_store())
        }
        None => {
            let store_dir = config.data_dir.join("sessions");
            Arc::new(
                evald_session::LocalStore::new(&store_dir)
                    .with_context(|| format!("opening the session store {}", store_dir.display()))?,
            )
        }
    };
    let queue_workers = match &redis {
        Some(r) => {
            let run_queue = r.run_queue().await.context("opening the run queue")?;
            let settings = queue::QueueSettings {
                node: config.instance.clone(),
                max_depth: config.queue_depth,
                reclaim_idle: config.queue_reclaim_ms.map_or(state.request_timeout(), Duration::from_millis),
                result_ttl: Duration::from_secs(600),
                concurrency: config.slots as usize,
            };
            let reclaim_ms = settings.reclaim_idle.as_millis() as u64;
            tracing::info!(node = %settings.node, reclaim_ms, "run queue in Redis");
            let q = Arc::new(queue::ClusterQueue::new(run_queue, settings));
            state.set_queue(q.clone());
            q.start(state.clone())
        }
        None => Vec::new(),
    };
    let sessions = evald_session::Manager::new(state.engine().clone(), store, config.session_config());
    if let Some(r) = &redis {
        let registry = r.session_registry().context("connecting the session registry")?;
        sessions.set_ownership(Arc::new(ownership::RedisOwnership::new(registry, config.instance.clone())));
    }
    let reaper = sessions.start_reaper();
    state.set_sessions(sessions);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let agent = match config.agent_listen {
        Some(addr) => {
            let l = agent::bind(addr).await.with_context(|| format!("binding the agent listener {addr}"))?;
            tracing::info!(agent = %l.local_addr()?, "agent check listening");
            Some(tokio::spawn(agent::serve(l, state.clone())))
        }
        None => None,
    };
    tracing::info!(listen = %listener.local_addr()?, "serving");

    // SIGTERM drains first (the same drain as POST /admin/drain), while the
    // listener stays open so balancers see readiness fail and the agent say
    // `drain`; then the server stops accepting and the process exits.
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_signal = {
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            shutdown_signal().await;
            tracing::info!("draining before exit");
            state.begin_drain();
            if !state.drained(grace.max(state.inner.drain_window)).await {
                tracing::warn!("grace period over with work left");
            }
            tracing::info!("shutting down");
            state.begin_shutdown();
            stop.notify_waiters();
        }
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(on_signal);
    let mut server = std::pin::pin!(server.into_future());
    // Connections still open after the drain (idle keep-alives, Piston
    // WebSockets) get a short while to close, then are dropped.
    let deadline = async {
        stop.notified().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        r = &mut server => r.context("serving")?,
        () = deadline => tracing::warn!("closing remaining connections"),
    }
    // Admitted jobs (background runs, WebSocket runs) hold permits.
    let mut active = state.admission().active();
    if tokio::time::timeout(Duration::from_secs(1), active.wait_for(|n| *n == 0)).await.is_err() {
        tracing::warn!(active = *active.borrow(), "runs still active at exit; their boxes are killed");
    }
    if let Some(a) = agent {
        a.abort();
    }
    reaper.abort();
    for w in queue_workers {
        w.abort();
    }
    // Finished boxes are torn down in the background; wait for that before
    // the process (and the thread doing it) ends.
    let sandbox = state.engine().sandbox().clone();
    if tokio::time::timeout(Duration::from_secs(5), tokio::task::spawn_blocking(move || sandbox.shutdown()))
        .await
        .is_err()
    {
        tracing::warn!("box teardown still going on at exit");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
