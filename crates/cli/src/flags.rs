//! The flags of `evald serve`, in groups, and their conversion into the
//! libraries' configurations. Every default shown here is the library's own
//! (`SandboxConfig::DEFAULT_*`, `SessionConfig::DEFAULT`, ...): defined once,
//! there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::Args;
use evald_engine::{CapacityConfig, EngineConfig, SandboxConfig};
use evald_server::{ApiKeys, HttpConfig, Judge0Settings, RedisSettings, ServerConfig};
use evald_session::SessionConfig;

const SESSIONS: SessionConfig = SessionConfig::DEFAULT;
const HTTP: HttpConfig = HttpConfig::DEFAULT;

/// Where the node listens, what it is called, where it keeps things.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Node")]
pub struct NodeFlags {
    /// Address to listen on
    #[arg(long, env = "EVALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the HAProxy agent-check listener (off when not given)
    #[arg(long, env = "EVALD_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Name of this node (unique per node of a cluster); its cgroups are
    /// evald-<instance>
    #[arg(long, env = "EVALD_INSTANCE", default_value = SandboxConfig::DEFAULT_INSTANCE)]
    pub instance: String,
    /// Directory of durable data: the stored session workspaces and Judge0
    /// submissions
    #[arg(long, env = "EVALD_DATA_DIR", default_value = "/var/lib/evald")]
    pub data_dir: PathBuf,
    /// After SIGTERM, how long admitted work may take to finish, in milliseconds
    #[arg(long, env = "EVALD_SHUTDOWN_GRACE_MS", default_value_t = ServerConfig::DEFAULT_SHUTDOWN_GRACE.as_millis() as u64)]
    pub shutdown_grace_ms: u64,
    /// When draining, each session client is told to reconnect after a random
    /// delay within this window (milliseconds), then closed with 4503
    #[arg(long, env = "EVALD_DRAIN_WINDOW_MS", default_value_t = SESSIONS.drain_window.as_millis() as u64)]
    pub drain_window_ms: u64,
    /// Log JSON lines instead of text
    #[arg(long, env = "EVALD_LOG_JSON")]
    pub log_json: bool,
}

/// The sandbox's own place on the host.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sandbox")]
pub struct SandboxFlags {
    /// Directory for the sandbox's own mount points
    #[arg(long, env = "EVALD_STATE_DIR", default_value = SandboxConfig::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// First user id of the box users (one per slot, and one for workspaces)
    #[arg(long, env = "EVALD_UID_BASE", default_value_t = SandboxConfig::DEFAULT_UID_BASE)]
    pub uid_base: u32,
}

/// How much work the node takes at once, and how much waits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admission")]
pub struct AdmissionFlags {
    /// Most boxes running at once (batch runs and session processes together)
    #[arg(long, env = "EVALD_SLOTS", default_value_t = SandboxConfig::DEFAULT_SLOTS)]
    pub slots: u32,
    /// Share of the machine's memory (MemTotal) that admitted boxes may reserve together
    #[arg(long, env = "EVALD_MEMORY_SHARE", default_value_t = 0.5)]
    pub memory_share: f64,
    /// Most requests waiting on this node for a slot or memory; more get 429
    #[arg(long = "admission-queue", alias = "queue", env = "EVALD_ADMISSION_QUEUE", default_value_t = CapacityConfig::DEFAULT_QUEUE)]
    pub admission_queue: usize,
    /// Longest wait in the admission queue in milliseconds; then 503
    #[arg(
        long = "admission-queue-timeout-ms",
        alias = "queue-timeout-ms",
        env = "EVALD_ADMISSION_QUEUE_TIMEOUT_MS",
        default_value_t = CapacityConfig::DEFAULT_QUEUE_TIMEOUT.as_millis() as u64
    )]
    pub admission_queue_timeout_ms: u64,
}

/// The HTTP edge: bodies, API keys, the admin key.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpFlags {
    /// Largest request body (and WebSocket message) in bytes
    #[arg(long, env = "EVALD_MAX_BODY_BYTES", default_value_t = HTTP.max_body_bytes)]
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
    /// Key of the /admin routes (`Authorization: Bearer <key>`); without it
    /// they answer 404
    #[arg(long, env = "EVALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// Interactive sessions.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionFlags {
    /// Interactive sessions open on this node at once
    #[arg(long, env = "EVALD_MAX_SESSIONS", default_value_t = SESSIONS.max_sessions)]
    pub max_sessions: usize,
    /// A session with no client and no process is deleted after this many seconds
    #[arg(long, env = "EVALD_SESSION_TTL_S", default_value_t = SESSIONS.ttl.as_secs())]
    pub session_ttl_s: u64,
    /// A session client that sends nothing for this many seconds is disconnected
    #[arg(long, env = "EVALD_SESSION_IDLE_S", default_value_t = SESSIONS.idle.as_secs())]
    pub session_idle_s: u64,
    /// Maximum lifetime of a session in seconds
    #[arg(long, env = "EVALD_SESSION_LIFETIME_S", default_value_t = SESSIONS.lifetime.as_secs())]
    pub session_lifetime_s: u64,
    /// A session's process keeps running this many seconds after its last client left
    #[arg(long, env = "EVALD_SESSION_GRACE_S", default_value_t = SESSIONS.grace.as_secs())]
    pub session_grace_s: u64,
    /// Bytes of output kept per session for replay after a reconnect
    #[arg(long, env = "EVALD_SESSION_REPLAY_BYTES", default_value_t = SESSIONS.replay_bytes)]
    pub session_replay_bytes: usize,
    /// Wall-clock limit of a process in a session, in seconds
    #[arg(long, env = "EVALD_SESSION_RUN_WALL_S", default_value_t = SESSIONS.run_wall.as_secs())]
    pub session_run_wall_s: u64,
    /// Files a session workspace may hold
    #[arg(long, env = "EVALD_SESSION_FILES", default_value_t = SESSIONS.max_files)]
    pub session_files: usize,
    /// Bytes a session workspace may hold
    #[arg(long, env = "EVALD_SESSION_DISK_BYTES", default_value_t = SESSIONS.disk_bytes)]
    pub session_disk_bytes: u64,
}

/// Shared state of a cluster.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster (Redis)")]
pub struct RedisFlags {
    /// Redis for shared state (session workspaces, rate limits, the run queue)
    /// across nodes, e.g. redis://127.0.0.1:6379/0; without it the node keeps
    /// its state to itself (the embedded default)
    #[arg(long, env = "EVALD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key of this cluster
    #[arg(long, env = "EVALD_REDIS_NAMESPACE", default_value = RedisSettings::DEFAULT_NAMESPACE)]
    pub redis_namespace: String,
    /// With Redis: most `wait: false` runs the cluster's run queue holds
    /// (waiting and running, all nodes together); more get 429
    #[arg(
        long = "run-queue-depth",
        alias = "queue-depth",
        env = "EVALD_RUN_QUEUE_DEPTH",
        default_value_t = RedisSettings::DEFAULT_RUN_QUEUE_DEPTH
    )]
    pub run_queue_depth: u64,
    /// With Redis: a run of the run queue delivered to a node that neither
    /// finished nor touched it for this many milliseconds (the node died) is
    /// run by another node; default the longest a run may take plus a margin
    #[arg(long = "run-queue-reclaim-ms", alias = "queue-reclaim-ms", env = "EVALD_RUN_QUEUE_RECLAIM_MS")]
    pub run_queue_reclaim_ms: Option<u64>,
}

/// The Judge0 API (always under `/judge0` on the main listener).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Judge0 API")]
pub struct Judge0Flags {
    /// Also serve the Judge0 API at the root of this address (for clients
    /// that cannot take a path prefix)
    #[arg(long, env = "EVALD_JUDGE0_LISTEN")]
    pub judge0_listen: Option<SocketAddr>,
    /// Address ranges (CIDR) callbacks may go to although they are loopback,
    /// private or link-local, e.g. 127.0.0.0/8
    #[arg(long, env = "EVALD_JUDGE0_CALLBACK_ALLOW", value_delimiter = ',', num_args = 1..)]
    pub judge0_callback_allow: Vec<evald_judge0::Cidr>,
    /// Seconds a submission is kept
    #[arg(long, env = "EVALD_JUDGE0_RETENTION_S", default_value_t = J0_RETENTION.max_age.as_secs())]
    pub judge0_retention_s: u64,
    /// Most submissions kept (the oldest go first)
    #[arg(long, env = "EVALD_JUDGE0_RETENTION_COUNT", default_value_t = J0_RETENTION.max_count)]
    pub judge0_retention_count: u64,
    /// Allow DELETE /submissions/{token} (with X-Auth-User: the admin key)
    #[arg(long, env = "EVALD_JUDGE0_ENABLE_DELETE")]
    pub judge0_enable_delete: bool,
    /// Most submissions waiting for this node's capacity (Judge0's
    /// MAX_QUEUE_SIZE); more answer 503 "queue is full". A cluster's
    /// wait=false submissions are bounded by --run-queue-depth instead
    #[arg(long, env = "EVALD_JUDGE0_MAX_QUEUE_SIZE", default_value_t = evald_judge0::Judge0Config::DEFAULT_MAX_QUEUE_SIZE)]
    pub judge0_max_queue_size: usize,
}

const J0_RETENTION: evald_judge0::Retention = evald_judge0::Judge0Config::DEFAULT_RETENTION;

impl Judge0Flags {
    fn settings(&self) -> Judge0Settings {
        Judge0Settings {
            listen: self.judge0_listen,
            callback_allow: self.judge0_callback_allow.clone(),
            retention: Some(evald_judge0::Retention {
                max_age: Duration::from_secs(self.judge0_retention_s),
                max_count: self.judge0_retention_count,
            }),
            enable_delete: self.judge0_enable_delete,
            max_queue_size: self.judge0_max_queue_size,
        }
    }
}

/// `evald serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
    #[command(flatten)]
    pub admission: AdmissionFlags,
    #[command(flatten)]
    pub http: HttpFlags,
    #[command(flatten)]
    pub sessions: SessionFlags,
    #[command(flatten)]
    pub redis: RedisFlags,
    #[command(flatten)]
    pub judge0: Judge0Flags,
}

impl SandboxFlags {
    /// The sandbox of a node named `instance` with `slots`.
    pub fn config(&self, instance: &str, slots: u32) -> SandboxConfig {
        SandboxConfig {
            instance: instance.to_owned(),
            state_dir: self.state_dir.clone(),
            uid_base: self.uid_base,
            slots,
            ..SandboxConfig::default()
        }
    }
}

impl SessionFlags {
    fn config(&self, drain_window: Duration) -> SessionConfig {
        SessionConfig {
            ttl: Duration::from_secs(self.session_ttl_s),
            idle: Duration::from_secs(self.session_idle_s),
            lifetime: Duration::from_secs(self.session_lifetime_s),
            grace: Duration::from_secs(self.session_grace_s),
            max_sessions: self.max_sessions,
            replay_bytes: self.session_replay_bytes,
            run_wall: Duration::from_secs(self.session_run_wall_s),
            max_files: self.session_files,
            disk_bytes: self.session_disk_bytes,
            drain_window,
            ..SessionConfig::DEFAULT
        }
    }
}

impl HttpFlags {
    /// Reads the keys file, if any.
    fn config(&self) -> Result<HttpConfig> {
        let mut keys = ApiKeys::default();
        if let Some(path) = &self.api_keys_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            keys.parse_file(&text, self.rate_limit).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        if let Some(list) = &self.api_keys {
            keys.parse_list(list, self.rate_limit).map_err(|e| anyhow::anyhow!("EVALD_API_KEYS: {e}"))?;
        }
        Ok(HttpConfig {
            max_body_bytes: self.max_body_bytes,
            keys,
            admin_key: self.admin_key.clone().filter(|k| !k.is_empty()),
            ..HttpConfig::DEFAULT
        })
    }
}

impl RedisFlags {
    fn settings(&self) -> Option<RedisSettings> {
        Some(RedisSettings {
            url: self.redis_url.clone()?,
            namespace: self.redis_namespace.clone(),
            run_queue_depth: self.run_queue_depth,
            run_queue_reclaim: self.run_queue_reclaim_ms.map(Duration::from_millis),
        })
    }
}

impl ServeArgs {
    /// The sandbox this node asks for.
    pub fn sandbox_config(&self) -> SandboxConfig {
        self.sandbox.config(&self.node.instance, self.admission.slots)
    }

    /// The node's configuration (reads the keys file and the machine's
    /// memory size).
    pub fn server_config(&self, languages_dir: &Path) -> Result<ServerConfig> {
        let a = &self.admission;
        ensure!(a.slots > 0, "--slots must be at least 1");
        ensure!(a.memory_share > 0.0 && a.memory_share <= 1.0, "--memory-share must be in (0, 1]");
        let total = evald_engine::mem_total().context("reading the machine's memory size")?;
        let mut engine = EngineConfig::new((total as f64 * a.memory_share) as u64);
        engine.capacity.queue = a.admission_queue;
        engine.capacity.queue_timeout = Duration::from_millis(a.admission_queue_timeout_ms);
        let node = &self.node;
        Ok(ServerConfig {
            listen: node.listen,
            agent_listen: node.agent_listen,
            node: node.instance.clone(),
            languages_dir: languages_dir.to_owned(),
            data_dir: node.data_dir.clone(),
            engine,
            sessions: self.sessions.config(Duration::from_millis(node.drain_window_ms)),
            http: self.http.config()?,
            redis: self.redis.settings(),
            shutdown_grace: Duration::from_millis(node.shutdown_grace_ms),
            judge0: self.judge0.settings(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).expect("flags parse").args
    }

    #[test]
    fn defaults_are_the_libraries_own() {
        let a = parse(&[]);
        let c = a.server_config(Path::new("languages")).expect("config");
        assert_eq!(c.sessions, SessionConfig::DEFAULT);
        assert_eq!(c.http, HttpConfig::DEFAULT);
        assert_eq!(c.engine.capacity.queue, CapacityConfig::DEFAULT_QUEUE);
        assert_eq!(c.engine.capacity.queue_timeout, CapacityConfig::DEFAULT_QUEUE_TIMEOUT);
        assert_eq!(c.shutdown_grace, ServerConfig::DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(c.redis, None);
        let s = a.sandbox_config();
        let d = SandboxConfig::default();
        assert_eq!((s.instance, s.state_dir, s.uid_base, s.slots), (d.instance, d.state_dir, d.uid_base, d.slots));
    }

    #[test]
    fn the_queues_have_names_that_say_which_and_the_old_names_still_parse() {
        let a = parse(&["--admission-queue", "3", "--admission-queue-timeout-ms", "70", "--run-queue-depth", "9"]);
        assert_eq!((a.admission.admission_queue, a.admission.admission_queue_timeout_ms), (3, 70));
        assert_eq!(a.redis.run_queue_depth, 9);
        let old =
            parse(&["--queue", "4", "--queue-timeout-ms", "80", "--queue-depth", "10", "--queue-reclaim-ms", "5"]);
        assert_eq!((old.admission.admission_queue, old.admission.admission_queue_timeout_ms), (4, 80));
        assert_eq!((old.redis.run_queue_depth, old.redis.run_queue_reclaim_ms), (10, Some(5)));
    }

    #[test]
    fn groups_convert_into_the_libraries_configs() {
        let a = parse(&[
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--session-ttl-s",
            "7",
            "--drain-window-ms",
            "250",
            "--api-keys",
            "k:5",
            "--admin-key",
            "",
        ]);
        let c = a.server_config(Path::new("x")).expect("config");
        assert_eq!(c.sessions.ttl, Duration::from_secs(7));
        assert_eq!(c.sessions.drain_window, Duration::from_millis(250));
        assert_eq!(c.http.keys.limit_of("k"), Some(5));
        assert_eq!(c.http.admin_key, None, "an empty admin key is none");
        let redis = c.redis.expect("redis settings");
        assert_eq!((redis.url.as_str(), redis.namespace.as_str()), ("redis://127.0.0.1:1/0", "evald:"));
        let bad = parse(&["--slots", "0"]).server_config(Path::new("x")).expect_err("refused");
        assert_eq!(bad.to_string(), "--slots must be at least 1");
    }

    #[test]
    fn judge0_flags() {
        let c = parse(&[]).server_config(Path::new("x")).expect("config");
        assert_eq!(c.judge0.retention, Some(evald_judge0::Judge0Config::DEFAULT_RETENTION));
        assert!(c.judge0.listen.is_none() && c.judge0.callback_allow.is_empty() && !c.judge0.enable_delete);
        assert_eq!(c.judge0.max_queue_size, 100);
        let a = parse(&[
            "--judge0-listen",
            "127.0.0.1:2358",
            "--judge0-callback-allow",
            "127.0.0.0/8,10.0.0.0/8",
            "--judge0-retention-s",
            "60",
            "--judge0-retention-count",
            "5",
            "--judge0-enable-delete",
            "--judge0-max-queue-size",
            "3",
        ]);
        let j = a.server_config(Path::new("x")).expect("config").judge0;
        assert_eq!(j.listen, Some("127.0.0.1:2358".parse().expect("addr")));
        assert_eq!(j.callback_allow.iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["127.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(j.retention.map(|r| (r.max_age, r.max_count)), Some((Duration::from_secs(60), 5)));
        assert!(j.enable_delete);
        assert_eq!(j.max_queue_size, 3);
        let bad = Serve::try_parse_from(["serve", "--judge0-callback-allow", "10.0.0.0/33"]);
        assert!(bad.is_err(), "a bad range is refused");
    }
}
