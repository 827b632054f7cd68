//! Two real `evald serve` nodes sharing one real Redis: a session created on
//! one node is served by the other with its files, an API key's rate limit
//! holds across both, and a Redis restart makes both nodes not ready, then
//! ready again by themselves, with no acknowledged file lost.
//!
//! Needs `redis-server` installed and the `evald` binary built.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

mod procs;
use evald_testkit::uids;
use procs::{evald_binary, free_port, http, until, RedisServer, ROOT};

struct Node {
    _child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(name: &str, ip: &str, uid_base: u32, redis: &RedisServer, dir: &Path) -> Node {
        let addr: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().expect("addr");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(evald_binary())
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--redis-url", &redis.url()])
            .args(["--redis-namespace", &format!("test{}:", std::process::id())])
            .args(["--languages-dir", &format!("{ROOT}/languages")])
            .arg("--state-dir")
            .arg(dir.join(name).join("state"))
            .arg("--data-dir")
            .arg(dir.join(name).join("data"))
            .args(["--instance", &format!("cl-{}-{name}", std::process::id()), "--uid-base", &uid_base.to_string()])
            .args(["--slots", "2", "--api-keys", "limited:3,free"])
            .env("EVALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("evald serve starts");
        Node { _child: child, addr }
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
        let auth = format!("Bearer {key}");
        http(self.addr, method, path, &[("Authorization", &auth)], body).await.expect("the node answers")
    }

    async fn ready_status(&self) -> Option<u16> {
        http(self.addr, "GET", "/healthz/ready", &[], "").await.map(|(s, _)| s)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_sessions_rate_limits_and_survive_a_redis_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisServer::start(dir.path()).await;
    let a = Node::start("a", "127.0.0.21", uids::CLI_CLUSTER.block(0, 100), &redis, dir.path());
    let b = Node::start("b", "127.0.0.22", uids::CLI_CLUSTER.block(1, 100), &redis, dir.path());
    for n in [&a, &b] {
        until("the node to be ready", || async move { (n.ready_status().await == Some(200)).then_some(()) }).await;
    }

    // A session created on A is served by B with its files.
    let body = json!({"language": "python", "files": [{"path": "main.py", "content": "print(1)\n"}]}).to_string();
    let (status, created) = a.call("POST", "/api/v1/sessions", "free", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<Value>(&created).expect("json")["id"].as_str().expect("id").to_owned();
    let (status, text) = a.call("PUT", &format!("/api/v1/sessions/{id}/files/notes.txt"), "free", "kept").await;
    assert_eq!(status, 204, "{text}");
    // A client attached on A, the session's owner so far.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/api/v1/sessions/{id}/ws",
        a.addr
    ))
    .expect("request");
    request.headers_mut().insert("Authorization", "Bearer free".parse().expect("header"));
    let (mut on_a, _) = tokio_tungstenite::connect_async(request).await.expect("websocket on A");
    let (status, listed) = b.call("GET", &format!("/api/v1/sessions/{id}/files"), "free", "").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        serde_json::from_str::<Value>(&listed).expect("json"),
        json!([{"path": "main.py", "size": 9, "is_dir": false}, {"path": "notes.txt", "size": 4, "is_dir": false}])
    );

    // B took the session over: A drops its copy and tells its client to
    // reconnect (4410) at its next ownership heartbeat.
    let code = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        use futures_util::StreamExt;
        while let Some(Ok(msg)) = on_a.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("A closes its client within the bound");
    assert_eq!(code, Some(4410));

    // A key limited to 3 requests a minute gets 3 in total across the nodes.
    let mut statuses = Vec::new();
    for node in [&a, &a, &b, &b] {
        statuses.push(node.call("GET", "/api/v1/languages", "limited", "").await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Redis goes away: both nodes say they are not ready, and a session
    // write is refused with 503 (nothing is acknowledged that is not stored).
    redis.kill().await;
    for n in [&a, &b] {
        until("the node to report not ready", || async move { (n.ready_status().await == Some(503)).then_some(()) })
            .await;
    }
    let (status, text) = b.call("PUT", &format!("/api/v1/sessions/{id}/files/lost.txt"), "free", "x").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("state_unavailable"), "{text}");
    // Batch runs need no shared state: they go on while Redis is away.
    let run =
        json!({"language": "python", "version": "*", "files": [{"content": "print('hello, world')"}]}).to_string();
    for n in [&a, &b, &a, &b] {
        let (status, text) = n.call("POST", "/api/v2/execute", "free", &run).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["run"]["stdout"], "hello, world\n");
    }

    // Redis returns: both nodes recover by themselves, and what was
    // acknowledged before is still there.
    redis.restart().await;
    for n in [&a, &b] {
        until("the node to be ready again", || async move { (n.ready_status().await == Some(200)).then_some(()) })
            .await;
    }
    // Their Redis connections come back within a bounded time; then what
    // was acknowledged is there.
    let path = format!("/api/v1/sessions/{id}/files/notes.txt");
    let (b_ref, path_ref) = (&b, &path);
    let text = until("the file to be served again", || async move {
        let (status, text) = b_ref.call("GET", path_ref, "free", "").await;
        (status == 200).then_some(text)
    })
    .await;
    assert_eq!(text, "kept");
    let (status, listed) = a.call("GET", &format!("/api/v1/sessions/{id}/files"), "free", "").await;
    assert_eq!(status, 200, "{listed}");
    assert!(!listed.contains("lost.txt"), "{listed}");
}
