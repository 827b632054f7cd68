//! Test harness: a node's state over the real catalogue, with a real
//! sandbox ([`state`], the root tier) or none at all ([`api_state`], for
//! tests that run no code and so need no root), and helpers that send a
//! request through the router and return status, headers and the JSON body.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use evald_engine::{Engine, EngineConfig, Language, Lifecycle, Sandbox, SandboxConfig};
use evald_server::{AppState, HttpConfig, ServerConfig};
use evald_session::SessionConfig;
use evald_testkit::uids::Range;
use serde_json::Value;
use tower::ServiceExt;

pub const LANGUAGES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../languages");

/// Installed languages, detected once per test binary.
pub fn languages() -> Vec<Arc<Language>> {
    static LANGS: OnceLock<Vec<Arc<Language>>> = OnceLock::new();
    LANGS
        .get_or_init(|| {
            let catalogue =
                evald_engine::Catalogue::load_dir(std::path::Path::new(LANGUAGES_DIR)).expect("the catalogue loads");
            evald_engine::catalogue::detect_installed(&catalogue)
        })
        .clone()
}

pub fn installed(id: &str) -> bool {
    languages().iter().any(|l| l.spec.id == id)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Box user ids each state takes from its binary's range.
const UIDS_PER_STATE: u32 = 10;

/// The configuration of a test node numbered `n`: defaults, a memory budget
/// that never limits, a data directory of its own.
fn config(n: u32) -> ServerConfig {
    let name = format!("srv-test-{}-{n}", std::process::id());
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        agent_listen: None,
        node: name.clone(),
        languages_dir: LANGUAGES_DIR.into(),
        data_dir: std::env::temp_dir().join(format!("evald-{name}-data")),
        engine: EngineConfig::new(64 << 30),
        sessions: SessionConfig::DEFAULT,
        http: HttpConfig::DEFAULT,
        redis: None,
        shutdown_grace: ServerConfig::DEFAULT_SHUTDOWN_GRACE,
        judge0: Default::default(),
    }
}

fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,evald_server=info"))
        .with_test_writer()
        .try_init();
}

/// A node with a real sandbox of `slots` boxes, its user ids from `uids`
/// (each state of a binary takes the next block of it), its background
/// work spawned. `tune` changes the configuration first.
pub fn state(uids: Range, slots: u32, tune: impl FnOnce(&mut ServerConfig)) -> AppState {
    let (config, engine, lifecycle, _) = sandboxed(uids, slots, tune);
    start(&config, engine, lifecycle)
}

/// The next node's configuration (`tune`d) and an engine on a real sandbox
/// of `slots` boxes; also the sandbox's state directory.
fn sandboxed(
    uids: Range,
    slots: u32,
    tune: impl FnOnce(&mut ServerConfig),
) -> (ServerConfig, Arc<Engine>, Lifecycle, std::path::PathBuf) {
    log();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut config = config(n);
    tune(&mut config);
    let state_dir = std::env::temp_dir().join(format!("evald-{}", config.node));
    let sandbox = Sandbox::new(SandboxConfig {
        instance: config.node.clone(),
        state_dir: state_dir.clone(),
        uid_base: uids.block(n, UIDS_PER_STATE),
        slots,
        ..SandboxConfig::default()
    })
    .expect("the sandbox starts (tests run as root)");
    let lifecycle = Lifecycle::new();
    let engine = Arc::new(Engine::new(sandbox, languages(), config.engine.clone(), &lifecycle));
    (config, engine, lifecycle, state_dir)
}

/// A node that runs no code (its engine has no sandbox): for routing,
/// validation, bad input and documents. Needs no root.
pub fn api_state(tune: impl FnOnce(&mut ServerConfig)) -> AppState {
    log();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut config = config(n);
    tune(&mut config);
    let lifecycle = Lifecycle::new();
    let engine = Arc::new(Engine::without_sandbox(2, languages(), config.engine.clone(), &lifecycle));
    start(&config, engine, lifecycle)
}

fn start(config: &ServerConfig, engine: Arc<Engine>, lifecycle: Lifecycle) -> AppState {
    let node = evald_server::compose::compose_local(config, engine, lifecycle).expect("the node composes");
    for (_, task) in node.background {
        tokio::spawn(task);
    }
    node.state
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.bytes)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body").to_vec();
    Reply { status, headers, bytes }
}

pub async fn get(app: &Router, path: &str) -> Reply {
    send(app, Request::get(path).body(Body::empty()).expect("request")).await
}

pub async fn post_json(app: &Router, path: &str, body: &Value) -> Reply {
    post_raw(app, path, "application/json", body.to_string().into_bytes()).await
}

pub async fn post_raw(app: &Router, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let req = Request::post(path).header("content-type", content_type).body(Body::from(body)).expect("request");
    send(app, req).await
}

/// A Piston execute request for one file.
pub fn execute(language: &str, version: &str, source: &str) -> Value {
    serde_json::json!({"language": language, "version": version, "files": [{"content": source}]})
}

/// A `redis-server` of a test on a free loopback port (its directory
/// kept while it runs), killed (by its pid) on drop.
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        // Bounded: wait until it answers PING.
        for _ in 0..400 {
            let pong = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"PING\r\n").ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).ok()?;
                Some(&buf == b"+PONG\r\n")
            });
            if pong == Some(true) {
                return RedisServer { child, port, _dir: dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not answer");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of a cluster sharing `redis` (namespace `ns`), with a real
/// sandbox; its background work (session ownership, the run queue) runs.
/// Also returns the sandbox's state directory.
pub async fn clustered_state(uids: Range, slots: u32, redis: &RedisServer, ns: &str) -> (AppState, std::path::PathBuf) {
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let (config, engine, lifecycle, state_dir) = sandboxed(uids, slots, |c| {
        c.redis = Some(evald_server::RedisSettings {
            url,
            namespace: ns.into(),
            run_queue_depth: 100,
            run_queue_reclaim: None,
        })
    });
    let node = evald_server::compose::compose(&config, engine, lifecycle).await.expect("the node composes with Redis");
    for (_, task) in node.background {
        tokio::spawn(task);
    }
    (node.state, state_dir)
}
