//! The composition root: the one place that chooses every port's
//! implementation, local (a single node: disk and memory) or Redis-backed
//! (a cluster), and wires the node's parts together.
//!
//! | part | one node | with `redis` |
//! |---|---|---|
//! | session workspaces | `LocalStore` under `<data_dir>/sessions` | `RedisWorkspaceStore` |
//! | session ownership | none (the node owns all) | `RedisOwnership` |
//! | rate limits | `FixedWindow` | `RedisRateLimiter` |
//! | `wait: false` runs | in memory (`JobStore`) | `ClusterQueue` |
//! | readiness | the node's phase | and a Redis PING |
//! | Judge0 submissions | `LocalRecords` under `<data_dir>/judge0` | `RedisRecords` |
//! | Judge0 `wait=false` | the capacity queue | `ClusterQueue` (by token) |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use evald_engine::{Engine, Lifecycle};
use evald_session::Manager;
use evald_state::{
    FixedWindow, LocalRecords, LocalStore, Ownership, RateLimiter, RecordStore, Redis, RedisConfig, WorkspaceStore,
};

use crate::metrics::Metrics;
use crate::queue::{ClusterQueue, QueueSettings};
use crate::runs::Runner;
use crate::{AppState, Parts, RedisSettings, ServerConfig};

/// Long-lived work of a node that ends when the node stops: the caller
/// spawns each and awaits them at shutdown.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A node's state and its background work.
pub struct Node {
    pub state: AppState,
    pub background: Vec<(&'static str, Background)>,
}

/// The ports of a node: what differs between one node and a cluster.
struct Ports {
    store: Arc<dyn WorkspaceStore>,
    ownership: Option<Arc<dyn Ownership>>,
    limiter: Arc<dyn RateLimiter>,
    queue: Option<Arc<ClusterQueue>>,
    redis: Option<Redis>,
    records: Arc<dyn RecordStore>,
}

/// Builds a node's parts around `engine` (whose capacity follows
/// `lifecycle`), choosing local or Redis-backed ports as `config` says.
pub async fn compose(config: &ServerConfig, engine: Arc<Engine>, lifecycle: Lifecycle) -> anyhow::Result<Node> {
    let runner = Arc::new(Runner::new(engine, Arc::new(Metrics::default())));
    let ports = match &config.redis {
        None => local_ports(config)?,
        Some(settings) => redis_ports(config, settings, &runner, &lifecycle).await?,
    };
    Ok(assemble(config, runner, lifecycle, ports))
}

/// [`compose`] for a node without Redis (no Redis connection is made, so it
/// needs no runtime), whatever `config.redis` says.
pub fn compose_local(config: &ServerConfig, engine: Arc<Engine>, lifecycle: Lifecycle) -> anyhow::Result<Node> {
    let runner = Arc::new(Runner::new(engine, Arc::new(Metrics::default())));
    let ports = local_ports(config)?;
    Ok(assemble(config, runner, lifecycle, ports))
}

fn assemble(config: &ServerConfig, runner: Arc<Runner>, lifecycle: Lifecycle, ports: Ports) -> Node {
    let mut background: Vec<(&'static str, Background)> = Vec::new();
    if let Some(queue) = &ports.queue {
        background.push(("run queue", Box::pin(queue.clone().run())));
    }
    let engine = runner.engine().clone();
    let sessions =
        Manager::new(engine.clone(), ports.store, ports.ownership, config.sessions.clone(), lifecycle.clone());
    background.push(("sessions", Box::pin(sessions.clone().run())));
    let shared = ports.queue.clone().map(|q| q as Arc<dyn evald_judge0::SharedQueue>);
    let judge0 = evald_judge0::Judge0::new(engine.clone(), ports.records, judge0_config(config), shared);
    if let Some(queue) = &ports.queue {
        queue.set_judge0(&judge0);
    }
    let state = AppState::new(Parts {
        runner,
        sessions,
        lifecycle,
        limiter: ports.limiter,
        queue: ports.queue,
        redis: ports.redis,
        http: config.http.clone(),
        judge0,
    });
    Node { state, background }
}

/// The Judge0 API's settings: the node's API keys are its `X-Auth-Token`s,
/// the admin key its `X-Auth-User`.
fn judge0_config(config: &ServerConfig) -> evald_judge0::Judge0Config {
    let j = &config.judge0;
    evald_judge0::Judge0Config {
        enable_submission_delete: j.enable_delete,
        max_queue_size: j.max_queue_size,
        callback_allow: j.callback_allow.clone(),
        retention: j.retention.unwrap_or(evald_judge0::Judge0Config::DEFAULT_RETENTION),
        auth_tokens: config.http.keys.keys().map(str::to_owned).collect(),
        authz_token: config.http.admin_key.clone(),
        ..evald_judge0::Judge0Config::default()
    }
}

fn retention(config: &ServerConfig) -> evald_state::Retention {
    config.judge0.retention.unwrap_or(evald_judge0::Judge0Config::DEFAULT_RETENTION)
}

/// A single node: its disk and its memory.
fn local_ports(config: &ServerConfig) -> anyhow::Result<Ports> {
    let dir = config.data_dir.join("sessions");
    let store = LocalStore::new(&dir).with_context(|| format!("opening the session store {}", dir.display()))?;
    let records_dir = config.data_dir.join("judge0");
    let records = LocalRecords::open(&records_dir, retention(config))
        .with_context(|| format!("opening the Judge0 submissions {}", records_dir.display()))?;
    Ok(Ports {
        records: Arc::new(records),
        store: Arc::new(store),
        ownership: None,
        limiter: Arc::new(FixedWindow::default()),
        queue: None,
        redis: None,
    })
}

/// A node of a cluster: everything another node may need is in Redis.
async fn redis_ports(
    config: &ServerConfig,
    settings: &RedisSettings,
    runner: &Arc<Runner>,
    lifecycle: &Lifecycle,
) -> anyhow::Result<Ports> {
    let redis = Redis::new(RedisConfig::new(settings.url.clone()).with_namespace(settings.namespace.clone()))
        .context("configuring Redis")?;
    let ownership = redis.ownership(config.node.clone()).context("connecting the session registry")?;
    let limiter = redis.rate_limiter().context("connecting the rate limiter")?;
    let run_queue = redis.run_queue().await.context("opening the run queue")?;
    let engine = runner.engine();
    let reclaim_idle = settings.run_queue_reclaim.unwrap_or_else(|| request_timeout(engine));
    let queue_settings = QueueSettings {
        node: config.node.clone(),
        max_depth: settings.run_queue_depth,
        reclaim_idle,
        result_ttl: Duration::from_secs(600),
        concurrency: engine.capacity().slots() as usize,
    };
    tracing::info!(
        node = %config.node,
        reclaim_ms = reclaim_idle.as_millis() as u64,
        "shared state and run queue in Redis"
    );
    let queue = ClusterQueue::new(run_queue, queue_settings, runner.clone(), lifecycle.subscribe());
    let records = redis.records(retention(config)).context("connecting the Judge0 submissions")?;
    Ok(Ports {
        records: Arc::new(records),
        store: Arc::new(redis.workspace_store()),
        ownership: Some(Arc::new(ownership)),
        limiter: Arc::new(limiter),
        queue: Some(Arc::new(queue)),
        redis: Some(redis),
    })
}

/// The longest a request may take: waiting for capacity, then the longest
/// job.
pub(crate) fn request_timeout(engine: &Engine) -> Duration {
    let cfg = engine.config();
    cfg.capacity.queue_timeout + evald_engine::max_job_duration(cfg, cfg.max_cases) + Duration::from_secs(10)
}
