//! Operations: Prometheus metrics, the drain (`POST /admin/drain`), the
//! HAProxy agent line and the session clients' reconnect hint, over the
//! router and real sockets with real boxes (python and c must be installed).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::*;
use evald_server::AppState;
use evald_server::ServerConfig;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_OPS;
/// Every awaited event has this bound: a test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

struct Node {
    app: axum::Router,
    state: AppState,
    addr: SocketAddr,
    agent: SocketAddr,
}

/// A node with 2 slots and sessions (at most 4), served on real sockets,
/// with its agent-check listener.
async fn node(tune: impl FnOnce(&mut ServerConfig)) -> Node {
    let state = state(UIDS, 2, |c| {
        c.sessions.max_sessions = 4;
        tune(c);
    });
    let app = evald_server::app(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn({
        let app = app.clone();
        async move { axum::serve(listener, app).await }
    });
    let agent_listener = evald_server::agent::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind agent");
    let agent = agent_listener.local_addr().expect("addr");
    tokio::spawn(evald_server::agent::serve(agent_listener, state.clone()));
    Node { app, state, addr, agent }
}

impl Node {
    /// The agent's whole reply to one connection.
    async fn agent_line(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.agent).await.expect("agent connects");
        let mut text = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut text)).await.expect("agent answers").expect("read");
        text
    }

    async fn metrics(&self) -> Vec<String> {
        let r = get(&self.app, "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        String::from_utf8(r.bytes).expect("utf-8").lines().map(str::to_owned).collect()
    }

    /// Polls /metrics until `line` is there (bounded).
    async fn await_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lines = self.metrics().await;
            if lines.iter().any(|l| l == line) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {line:?} in\n{}", lines.join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create_session(&self) -> String {
        let body = json!({"language": "python", "files": [{"path": "main.py", "content": "print(1)\n"}]});
        let r = post_json(&self.app, "/api/v1/sessions", &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
        r.json()["id"].as_str().expect("id").to_owned()
    }

    async fn admin(&self, path: &str, key: Option<&str>) -> Reply {
        let mut req = Request::post(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        send(&self.app, req.body(Body::empty()).expect("request")).await
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(node: &Node, id: &str) -> Ws {
    let url = format!("ws://{}/api/v1/sessions/{id}/ws", node.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    ws
}

/// The next text message as JSON, or `{"type":"closed","code":N}`.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("json"),
            Some(Ok(Message::Close(frame))) => {
                return json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))})
            }
            Some(Ok(_)) => continue,
            other => panic!("websocket ended without a close frame: {other:?}"),
        }
    }
}

fn run(language: &str, path: &str, source: &str) -> Value {
    json!({"language": language, "files": [{"path": path, "content": source}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_runs_capacity_sessions_and_the_compile_cache() {
    assert!(installed("python") && installed("c"), "python and c must be installed");
    let node = node(|_| {}).await;
    let before = node.metrics().await;
    for want in [
        "# TYPE evald_runs_total counter",
        "evald_sandbox_run_seconds_count 0",
        "evald_sessions_active 0",
        "evald_session_clients_connected 0",
        "evald_queue_depth 0",
        "evald_free_slots 2",
        "evald_free_memory_bytes 68719476736",
        "evald_draining 0",
        "evald_compile_cache_entries 0",
        "evald_compile_cache_bytes 0",
        "evald_compile_cache_hits 0",
        "evald_compile_cache_misses 0",
    ] {
        assert!(before.iter().any(|l| l == want), "missing {want:?} in\n{}", before.join("\n"));
    }
    assert!(!before.iter().any(|l| l.starts_with("evald_runs_total{")), "no run yet");

    // Two python runs (ok, runtime_error) natively, one through Piston; the
    // same C program twice (the second compile comes from the cache).
    let r = post_json(&node.app, "/api/v1/runs", &run("python", "main.py", "print(1)")).await;
    assert_eq!(r.json()["status"], "ok");
    let r = post_json(&node.app, "/api/v1/runs", &run("python", "main.py", "raise SystemExit(3)")).await;
    assert_eq!(r.json()["status"], "runtime_error");
    let r = post_json(&node.app, "/api/v2/execute", &execute("python", "*", "print(2)")).await;
    assert_eq!(r.json()["run"]["stdout"], "2\n");
    let c = run("c", "main.c", "int main(void) { return 0; }\n");
    for _ in 0..2 {
        let r = post_json(&node.app, "/api/v1/runs", &c).await;
        assert_eq!(r.json()["status"], "ok", "{}", r.json());
    }
    let lines = node.metrics().await;
    for want in [
        "evald_runs_total{language=\"c\",status=\"ok\"} 2",
        "evald_runs_total{language=\"python\",status=\"ok\"} 2",
        "evald_runs_total{language=\"python\",status=\"runtime_error\"} 1",
        "evald_sandbox_run_seconds_bucket{le=\"+Inf\"} 5",
        "evald_sandbox_run_seconds_count 5",
        "evald_queue_depth 0",
        "evald_free_slots 2",
        "evald_free_memory_bytes 68719476736",
        "evald_compile_cache_entries 1",
        "evald_compile_cache_hits 1",
        "evald_compile_cache_misses 1",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want:?} in\n{}", lines.join("\n"));
    }
    let runs: Vec<&String> = lines.iter().filter(|l| l.starts_with("evald_runs_total{")).collect();
    assert_eq!(runs.len(), 3, "exactly the series driven: {runs:?}");
    let cache_bytes = lines.iter().find_map(|l| l.strip_prefix("evald_compile_cache_bytes ")).expect("cache bytes");
    assert!(cache_bytes.parse::<u64>().expect("a number") > 0);

    // Sessions and their clients.
    let id = node.create_session().await;
    node.await_metric("evald_sessions_active 1").await;
    let mut ws = connect(&node, &id).await;
    assert_eq!(next(&mut ws).await["type"], "hello");
    node.await_metric("evald_session_clients_connected 1").await;
    drop(ws);
    node.await_metric("evald_session_clients_connected 0").await;

    // Without an admin key the admin routes do not exist.
    let r = node.admin("/admin/drain", Some("anything")).await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (
            404,
            json!({"error": {"code": "not_found", "message": "the admin routes are off: this node has no admin key"}})
        )
    );
    assert_eq!(get(&node.app, "/healthz/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_serves_through_its_window_then_refuses_new_work_finishes_admitted_runs_and_spreads_reconnects() {
    assert!(installed("python"), "python must be installed");
    // Long enough that the checks of the window's first part cannot outlast
    // it on a busy machine; the test awaits its end as an event.
    const WINDOW_MS: u64 = 8000;
    let node = node(|o| {
        o.http.admin_key = Some("sekret".into());
        o.sessions.drain_window = Duration::from_millis(WINDOW_MS);
    })
    .await;
    assert_eq!(node.agent_line().await, "up 100%\n");
    let id = node.create_session().await;
    assert_eq!(node.agent_line().await, "up 75%\n", "1 of 4 sessions taken");
    let mut ws = connect(&node, &id).await;
    assert_eq!(next(&mut ws).await["type"], "hello");

    // A run admitted before the drain.
    let mut active = node.state.engine().capacity().active();
    let admitted = {
        let app = node.app.clone();
        tokio::spawn(async move {
            post_json(&app, "/api/v1/runs", &run("python", "main.py", "import time\ntime.sleep(1)\nprint('done')"))
                .await
        })
    };
    tokio::time::timeout(WAIT, active.wait_for(|n| *n == 1)).await.expect("admitted in time").expect("watch");
    assert_eq!(node.agent_line().await, "up 50%\n", "1 of 2 slots taken");

    // Only the admin key drains.
    let unauthorized = json!({"error": {"code": "unauthorized", "message": "a valid admin key is required"}});
    let r = node.admin("/admin/drain", None).await;
    assert_eq!((r.status.as_u16(), r.json()), (401, unauthorized.clone()));
    let r = node.admin("/admin/drain", Some("wrong")).await;
    assert_eq!((r.status.as_u16(), r.json()), (401, unauthorized));
    assert_eq!(get(&node.app, "/healthz/ready").await.status, 200, "a refused drain changes nothing");
    let r = node.admin("/admin/drain", Some("sekret")).await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"status": "draining", "drain_window_ms": WINDOW_MS})));

    // The window: the node says it is out of service at once...
    let r = get(&node.app, "/healthz/ready").await;
    assert_eq!((r.status.as_u16(), r.json()), (503, json!({"status": "draining"})));
    assert_eq!(node.agent_line().await, "down\n");
    assert!(node.metrics().await.iter().any(|l| l == "evald_draining 1"));
    // ...but still serves everything a balancer sends before it has noticed.
    assert_eq!(node.state.lifecycle().phase(), evald_engine::Phase::Leaving);
    let r = post_json(&node.app, "/api/v1/runs", &run("python", "main.py", "print(6*7)")).await;
    assert_eq!((r.status.as_u16(), &r.json()["cases"][0]["stdout"]), (200, &json!("42\n")), "a run in the window");
    let r = post_json(&node.app, "/api/v2/execute", &execute("python", "*", "print(7)")).await;
    assert_eq!((r.status.as_u16(), &r.json()["run"]["stdout"]), (200, &json!("7\n")), "a Piston run in the window");
    let r = post_json(&node.app, "/api/v1/sessions", &json!({"language": "python"})).await;
    assert_eq!(r.status.as_u16(), 201, "a session in the window: {:?}", r.json());
    assert_eq!(node.state.lifecycle().phase(), evald_engine::Phase::Leaving, "all of it within the window");

    // After the window: new work is refused.
    tokio::time::timeout(WAIT, node.state.lifecycle().refusing()).await.expect("the window ends");
    let message = "this node is draining; retry (another node will take the run)";
    let r = post_json(&node.app, "/api/v1/runs", &run("python", "main.py", "print(1)")).await;
    assert_eq!(
        (r.status.as_u16(), r.header("retry-after"), r.json()),
        (503, Some("1"), json!({"error": {"code": "draining", "message": message}}))
    );
    let r = post_json(&node.app, "/api/v2/execute", &execute("python", "*", "print(1)")).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after"), r.json()), (503, Some("1"), json!({"message": message})));
    let r = post_json(&node.app, "/api/v1/sessions", &json!({"language": "python"})).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (503, Some("1")));
    assert_eq!(r.json()["error"]["code"], "draining");

    // The connected client is told to reconnect within the window, then closed.
    let hint = next(&mut ws).await;
    assert_eq!(hint["type"], "reconnect", "{hint}");
    let delay = hint["delay_ms"].as_u64().expect("delay_ms is a number");
    assert!(delay <= WINDOW_MS, "{delay} ms is beyond the window");
    assert_eq!(hint.as_object().map(|o| o.len()), Some(2), "{hint}");
    assert_eq!(next(&mut ws).await, json!({"type": "closed", "code": 4503}));

    // The admitted run finished normally.
    let r = tokio::time::timeout(WAIT, admitted).await.expect("in time").expect("task");
    assert_eq!((r.status.as_u16(), &r.json()["cases"][0]["stdout"]), (200, &json!("done\n")));
    assert!(node.state.drained(WAIT).await, "no run and no client left");

    // Undrain takes work again.
    let r = node.admin("/admin/undrain", Some("sekret")).await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"status": "ok"})));
    assert_eq!(get(&node.app, "/healthz/ready").await.status, 200);
    assert_eq!(node.agent_line().await, "up 50%\n", "2 of 4 sessions taken");
    let r = post_json(&node.app, "/api/v1/runs", &run("python", "main.py", "print(1)")).await;
    assert_eq!(r.json()["status"], "ok");
    let mut ws = connect(&node, &id).await;
    assert_eq!(next(&mut ws).await["type"], "hello");
}
