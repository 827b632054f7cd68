//! The server's settings: everything `evald serve` is told, as the library
//! takes it (the command line's flags are converted into this by the CLI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use evald_engine::EngineConfig;
use evald_session::SessionConfig;

use crate::auth::ApiKeys;

/// Everything about one node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Address of the HAProxy agent-check listener, if any.
    pub agent_listen: Option<SocketAddr>,
    /// This node's name (its instance): unique per node, it names the node
    /// in the run queue and as a session owner.
    pub node: String,
    /// The language catalogue.
    pub languages_dir: PathBuf,
    /// Durable data: the stored session workspaces (`<data_dir>/sessions`)
    /// and Judge0 submissions (`<data_dir>/judge0`).
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub sessions: SessionConfig,
    pub http: HttpConfig,
    /// Shared state in Redis; `None`: the node keeps its state to itself.
    pub redis: Option<RedisSettings>,
    /// After SIGTERM, how long admitted work may take to finish.
    pub shutdown_grace: Duration,
    /// The Judge0 API (`/judge0`, and its own listener if given).
    pub judge0: Judge0Settings,
}

/// The Judge0 API's settings.
#[derive(Debug, Clone)]
pub struct Judge0Settings {
    /// A listener serving the Judge0 API at its root.
    pub listen: Option<SocketAddr>,
    /// Callback addresses allowed although loopback, private or link-local.
    pub callback_allow: Vec<evald_judge0::Cidr>,
    /// How long and how many submissions are kept (`None`: the default).
    pub retention: Option<evald_state::Retention>,
    /// `DELETE /submissions/{token}` (Judge0's `ENABLE_SUBMISSION_DELETE`).
    pub enable_delete: bool,
    /// Judge0's `MAX_QUEUE_SIZE`: submissions waiting for this node's
    /// capacity.
    pub max_queue_size: usize,
}

impl Default for Judge0Settings {
    fn default() -> Self {
        Judge0Settings {
            listen: None,
            callback_allow: Vec::new(),
            retention: None,
            enable_delete: false,
            max_queue_size: evald_judge0::Judge0Config::DEFAULT_MAX_QUEUE_SIZE,
        }
    }
}

impl ServerConfig {
    /// The shutdown grace, unless configured.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
}

/// The HTTP edge's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest request body (and Piston WebSocket message).
    pub max_body_bytes: usize,
    /// API keys; when some are configured every `/api` route requires one.
    pub keys: ApiKeys,
    /// Key of the `/admin` routes; `None`: they answer 404.
    pub admin_key: Option<String>,
    /// Stored `wait: false` runs of a single node, and how long finished
    /// ones are kept.
    pub stored_runs: usize,
    pub stored_run_ttl: Duration,
}

impl HttpConfig {
    /// The defaults: the one place they are defined (the command line's
    /// defaults are these).
    pub const DEFAULT: HttpConfig = HttpConfig {
        max_body_bytes: 8 << 20,
        keys: ApiKeys::EMPTY,
        admin_key: None,
        stored_runs: 1000,
        stored_run_ttl: Duration::from_secs(600),
    };
}

/// The admin key is a secret: the debug form says whether there is one.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("keys", &self.keys)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<set>"))
            .field("stored_runs", &self.stored_runs)
            .field("stored_run_ttl", &self.stored_run_ttl)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig::DEFAULT
    }
}

/// Where the cluster's shared state is (the URL may hold a password: it
/// is not printed by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key of this cluster.
    pub namespace: String,
    /// Most `wait: false` runs the cluster's run queue holds (waiting and
    /// running, all nodes together); more get 429.
    pub run_queue_depth: u64,
    /// A queued run delivered to a node that neither finished nor touched
    /// it for this long (the node died) is run by another node; `None`: the
    /// longest a run may take plus a margin.
    pub run_queue_reclaim: Option<Duration>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("namespace", &self.namespace)
            .field("run_queue_depth", &self.run_queue_depth)
            .field("run_queue_reclaim", &self.run_queue_reclaim)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    pub const DEFAULT_NAMESPACE: &'static str = evald_state::RedisConfig::DEFAULT_NAMESPACE;
    pub const DEFAULT_RUN_QUEUE_DEPTH: u64 = 1000;
}
