//! Test harness: an `AppState` over a real sandbox and the real catalogue,
//! and helpers that send a request through the router and return status,
//! headers and the JSON body.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use evald_engine::{Engine, EngineConfig, Language};
use evald_sandbox::{Sandbox, SandboxConfig};
use evald_server::{AppState, StateOptions};
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

/// A state with `slots` boxes; `uid_base` must differ between test binaries
/// (each state takes `uid_base + 100 * n` for its own users).
pub fn state(uid_base: u32, slots: u32, tune: impl FnOnce(&mut StateOptions)) -> AppState {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,evald_server=info"))
        .with_test_writer()
        .try_init();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("srv-test-{}-{n}", std::process::id());
    let sandbox = Sandbox::new(SandboxConfig {
        instance: name.clone(),
        state_dir: std::env::temp_dir().join(format!("evald-{name}")),
        uid_base: uid_base + 100 * n,
        slots,
        ..SandboxConfig::default()
    })
    .expect("the sandbox starts (tests run as root)");
    let engine = Engine::new(sandbox, languages(), EngineConfig::default());
    let mut options = StateOptions::new(slots, 64 << 30);
    tune(&mut options);
    AppState::new(engine, options)
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
