//! The session protocol over real sockets: a real server on 127.0.0.1, real
//! boxes, real languages (python, bash and c must be installed).

use std::time::Duration;

use base64::Engine as _;
use common::state;
use evald_server::AppState;
use evald_session::SessionConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

mod common;

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_SESSIONS;

/// Events are awaited with this bound; a test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

struct Server {
    base: String,
    state: AppState,
}

/// A node with sessions configured as `config`, on a real socket.
async fn server(config: SessionConfig) -> Server {
    for language in ["python", "bash", "c"] {
        assert!(common::installed(language), "{language} must be installed");
    }
    let state = state(UIDS, 8, |c| c.sessions = config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = evald_server::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { base: format!("127.0.0.1:{}", addr.port()), state }
}

impl Server {
    async fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let url = format!("http://{}{path}", self.base);
        let method = method.to_owned();
        tokio::task::spawn_blocking(move || {
            let req = ureq::request(&method, &url);
            let resp = match body {
                Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
                None => req.call(),
            };
            match resp {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => panic!("request failed: {e}"),
            }
        })
        .await
        .expect("request task")
    }

    async fn session(&self, language: &str, files: Value) -> String {
        let (status, body) =
            self.http("POST", "/api/v1/sessions", Some(json!({"language": language, "files": files}))).await;
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    async fn connect(&self, id: &str, last_seq: Option<u64>) -> Client {
        let q = last_seq.map(|s| format!("?last_seq={s}")).unwrap_or_default();
        let url = format!("ws://{}/api/v1/sessions/{id}/ws{q}", self.base);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Client { ws, output: String::new() }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    ws: Ws,
    /// Terminal output seen so far.
    output: String,
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.expect("send");
    }

    /// The next event, or the close code as `{"type":"closed","code":N}`.
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("an event within the bound");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json event");
                    if v["type"] == "output" {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v["data"].as_str().expect("data"))
                            .expect("base64");
                        self.output.push_str(&String::from_utf8_lossy(&bytes));
                    }
                    return v;
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                    return json!({"type": "closed", "code": code});
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return json!({"type": "closed", "code": 0}),
            }
        }
    }

    /// Reads events until `pred` holds for one; returns it.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value, &str) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v, &self.output) {
                return v;
            }
            assert_ne!(v["type"], "closed", "closed while waiting for {what}; output so far: {:?}", self.output);
        }
    }

    async fn output_contains(&mut self, text: &str) {
        let t = text.to_owned();
        self.until(text, move |_, out| out.contains(&t)).await;
    }

    async fn exit(&mut self) -> Value {
        self.until("exit", |v, _| v["type"] == "exit").await
    }
}

fn py(source: &str) -> Value {
    json!([{"path": "main.py", "content": source}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_interactive_stdin() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("n = input('name? ')\nprint('hi', n)\n")).await;
    let mut c = s.connect(&id, None).await;
    let hello = c.next().await;
    assert_eq!(
        (hello["type"].as_str(), hello["seq"].as_u64(), &hello["running"]),
        (Some("hello"), Some(0), &Value::Null)
    );
    c.send(json!({"type": "run"})).await;
    let started = c.next().await;
    assert_eq!(
        (started["type"].as_str(), started["kind"].as_str(), started["seq"].as_u64()),
        (Some("started"), Some("run"), Some(1))
    );
    c.output_contains("name? ").await;
    c.send(json!({"type": "stdin", "data": "ada\r"})).await;
    let exit = c.exit().await;
    assert!(c.output.contains("hi ada"), "{:?}", c.output);
    assert_eq!((exit["status"].as_str(), exit["exit_code"].as_i64()), (Some("ok"), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_ends_input() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("import sys\nprint(repr(sys.stdin.read().upper()))\n")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "run"})).await;
    c.until("started", |v, _| v["type"] == "started").await;
    c.send(json!({"type": "stdin", "data": "abc\r"})).await;
    c.send(json!({"type": "eof"})).await;
    let exit = c.exit().await;
    assert!(c.output.contains("'ABC\\n'"), "{:?}", c.output);
    assert_eq!(exit["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_is_seen_by_the_program_and_shell_runs_in_the_workspace() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("print(1)\n")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "shell", "rows": 24, "cols": 80})).await;
    c.until("started", |v, _| v["type"] == "started").await;
    c.send(json!({"type": "stdin", "data": "stty size; ls; pwd\r"})).await;
    c.output_contains("24 80").await;
    c.output_contains("/box").await;
    assert!(c.output.contains("main.py"), "{:?}", c.output);
    c.send(json!({"type": "resize", "rows": 40, "cols": 120})).await;
    c.send(json!({"type": "stdin", "data": "stty size; echo made > new.txt; exit\r"})).await;
    c.output_contains("40 120").await;
    let exit = c.exit().await;
    assert_eq!((exit["kind"].as_str(), exit["status"].as_str()), (Some("shell"), Some("ok")));
    // The file the shell wrote is listed afterwards, over WebSocket and HTTP.
    let files = c.until("files", |v, _| v["type"] == "files").await;
    let paths: Vec<&str> = files["files"].as_array().expect("list").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, ["main.py", "new.txt"]);
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files/new.txt"), None).await;
    assert_eq!((status, body.as_str()), (200, "made\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_loop() {
    let s = server(SessionConfig::default()).await;
    let id =
        s.session("python", py("import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.05)\n")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "run"})).await;
    c.output_contains("looping").await;
    c.send(json!({"type": "signal", "signal": "INT"})).await;
    let exit = c.exit().await;
    assert!(c.output.contains("KeyboardInterrupt"), "{:?}", c.output);
    assert_eq!(exit["status"], "runtime_error", "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repl_evaluates_an_expression() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "repl"})).await;
    let ev =
        c.until("repl start", |v, _| ["started", "exit", "error"].contains(&v["type"].as_str().unwrap_or(""))).await;
    assert_eq!(ev["type"], "started", "{ev} {:?}", c.output);
    c.output_contains(">>> ").await;
    c.send(json!({"type": "stdin", "data": "6 * 7\r"})).await;
    c.output_contains("42").await;
    c.send(json!({"type": "eof"})).await;
    let exit = c.exit().await;
    assert_eq!((exit["kind"].as_str(), exit["exit_code"].as_i64()), (Some("repl"), Some(0)));
    let c_session = s.session("c", json!([{"path": "main.c", "content": "int main(void) { return 0; }"}])).await;
    let mut c = s.connect(&c_session, None).await;
    c.send(json!({"type": "repl"})).await;
    let e = c.until("error", |v, _| v["type"] == "error").await;
    assert_eq!(e["code"], "no_repl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replays_and_two_observers_see_the_same_events() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("input()\nfor i in range(3):\n    print('line', i)\n")).await;
    let mut a = s.connect(&id, None).await;
    let mut b = s.connect(&id, None).await;
    a.next().await;
    b.next().await;
    a.send(json!({"type": "run"})).await;
    let started = b.until("started", |v, _| v["type"] == "started").await;
    // `a` disconnects after the start; `b` types and watches to the end.
    let seen = a.until("started", |v, _| v["type"] == "started").await;
    assert_eq!(seen, started);
    drop(a);
    b.send(json!({"type": "stdin", "data": "\r"})).await;
    let exit_b = b.exit().await;
    let mut a = s.connect(&id, started["seq"].as_u64()).await;
    let hello = a.next().await;
    assert_eq!(hello["seq"], b.until("files", |v, _| v["type"] == "files").await["seq"]);
    let exit_a = a.exit().await;
    assert_eq!(exit_a, exit_b, "replayed exit equals the live one");
    assert!(a.output.contains("line 2"), "{:?}", a.output);
    assert!(!a.output.is_empty() && b.output.ends_with(&a.output), "a {:?} b {:?}", a.output, b.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffer_overflow_gives_a_gap_notice() {
    let s = server(SessionConfig { replay_bytes: 4096, ..SessionConfig::default() }).await;
    let id = s.session("python", py("for i in range(3000):\n    print('x' * 60, i, flush=True)\n")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "run"})).await;
    c.exit().await;
    drop(c);
    let mut late = s.connect(&id, Some(0)).await;
    late.next().await;
    let gap = late.next().await;
    assert_eq!((gap["type"].as_str(), gap["from"].as_u64()), (Some("gap"), Some(1)), "{gap}");
    assert!(gap["to"].as_u64().expect("to") > 1);
    let next = late.next().await;
    assert_eq!(next["seq"].as_u64(), Some(gap["to"].as_u64().expect("to") + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_close_with_their_codes() {
    // Idle timeout.
    let s = server(SessionConfig { idle: Duration::from_millis(300), ..SessionConfig::default() }).await;
    let id = s.session("python", py("")).await;
    let mut c = s.connect(&id, None).await;
    c.next().await;
    assert_eq!(c.next().await, json!({"type": "closed", "code": 4408}));
    // Lifetime.
    let s = server(SessionConfig { lifetime: Duration::from_secs(1), ..SessionConfig::default() }).await;
    let id = s.session("python", py("")).await;
    let mut c = s.connect(&id, None).await;
    c.next().await;
    assert_eq!(c.next().await, json!({"type": "closed", "code": 4409}));
    // Sessions per node and clients per session.
    let s = server(SessionConfig { max_sessions: 1, max_clients: 1, ..SessionConfig::default() }).await;
    let id = s.session("python", py("")).await;
    let (status, body) = s.http("POST", "/api/v1/sessions", Some(json!({"language": "python"}))).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("\"too_many_sessions\""), "{body}");
    let mut first = s.connect(&id, None).await;
    first.next().await;
    let mut second = s.connect(&id, None).await;
    assert_eq!(second.next().await, json!({"type": "closed", "code": 4429}));
    // Unknown session, malformed message.
    let mut c = s.connect("0123456789abcdef", None).await;
    assert_eq!(c.next().await, json!({"type": "closed", "code": 4404}));
    first.send(json!({"type": "launch"})).await;
    assert_eq!(first.next().await, json!({"type": "closed", "code": 4400}));
    // The wall-clock limit of a session's process.
    let s = server(SessionConfig { run_wall: Duration::from_secs(1), ..SessionConfig::default() }).await;
    let id = s.session("python", py("import time\ntime.sleep(60)\n")).await;
    let mut c = s.connect(&id, None).await;
    c.send(json!({"type": "run"})).await;
    let exit = c.exit().await;
    assert_eq!(
        (exit["status"].as_str(), exit["signal"].as_str()),
        (Some("time_limit_wall"), Some("SIGKILL")),
        "{exit}"
    );
    // Shutdown.
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("")).await;
    let mut c = s.connect(&id, None).await;
    c.next().await;
    s.state.begin_shutdown();
    assert_eq!(c.next().await, json!({"type": "closed", "code": 4503}));
    let _ = CloseCode::Normal;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_and_quotas() {
    let s = server(SessionConfig { max_files: 3, disk_bytes: 1000, ..SessionConfig::default() }).await;
    let id = s.session("python", py("print(1)\n")).await;
    let put = |p: &str| format!("/api/v1/sessions/{id}/files/{p}");
    let u = put("dir/a.txt");
    let ureq_put = |url: String, body: &'static [u8]| {
        tokio::task::spawn_blocking(move || match ureq::put(&url).send_bytes(body) {
            Ok(r) => (r.status(), String::new()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        })
    };
    let base = format!("http://{}", s.base);
    let (status, body) = ureq_put(format!("{base}{u}"), b"abc").await.expect("put");
    assert_eq!(status, 204, "{body}");
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files"), None).await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        list,
        json!([{"path": "dir", "size": 0, "is_dir": true}, {"path": "dir/a.txt", "size": 3, "is_dir": false}, {"path": "main.py", "size": 9, "is_dir": false}])
    );
    let (status, _) = s
        .http("POST", &format!("/api/v1/sessions/{id}/rename"), Some(json!({"from": "dir/a.txt", "to": "b.txt"})))
        .await;
    assert_eq!(status, 204);
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files/b.txt"), None).await;
    assert_eq!((status, body.as_str()), (200, "abc"));
    let (status, body) = ureq_put(format!("{base}{}", put("big.bin")), &[b'x'; 1001]).await.expect("put");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("quota_exceeded"));
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files/..%2Fetc%2Fpasswd"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.http("DELETE", &format!("/api/v1/sessions/{id}/files/b.txt"), None).await;
    assert_eq!(status, 204);
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files/b.txt"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = s.http("DELETE", &format!("/api/v1/sessions/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("session_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_a_lost_node_is_told_its_process_is_gone() {
    let s = server(SessionConfig::default()).await;
    let id = s.session("python", py("print(1)\n")).await;
    // This copy has no events yet; the client had seen 7 elsewhere.
    let mut c = s.connect(&id, Some(7)).await;
    let hello = c.next().await;
    assert_eq!((hello["type"].as_str(), hello["seq"].as_u64()), (Some("hello"), Some(0)));
    let notice = c.next().await;
    assert_eq!((notice["type"].as_str(), notice["code"].as_str()), (Some("error"), Some("process_lost")), "{notice}");
    // It can run again.
    c.send(json!({"type": "run"})).await;
    let exit = c.exit().await;
    assert_eq!(exit["status"], "ok");
}

/// Files and directories in each other's way are 409 `path_conflict`, a
/// file under a file is not found, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_each_others_way_are_conflicts() {
    let s = server(SessionConfig::default()).await;
    let files = json!([{"path": "main.py", "content": "print(1)\n"}, {"path": "dir/a.txt", "content": "a"}]);
    let id = s.session("python", files).await;
    let base = format!("http://{}/api/v1/sessions/{id}", s.base);
    let put = |path: &str| {
        let url = format!("{base}/files/{path}");
        tokio::task::spawn_blocking(move || match ureq::put(&url).send_bytes(b"x") {
            Ok(r) => (r.status(), String::new()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        })
    };
    let code = |body: &str| serde_json::from_str::<Value>(body).expect("json")["error"]["code"].clone();
    // Onto a directory, and under a file.
    for path in ["dir", "main.py/x"] {
        let (status, body) = put(path).await.expect("put");
        assert_eq!((status, code(&body)), (409, json!("path_conflict")), "PUT {path}: {body}");
    }
    let file = |p: &str| format!("/api/v1/sessions/{id}/files/{p}");
    let (status, body) = s.http("GET", &file("dir"), None).await;
    assert_eq!((status, code(&body)), (409, json!("path_conflict")), "GET a directory: {body}");
    for method in ["GET", "DELETE"] {
        let (status, body) = s.http(method, &file("main.py/x"), None).await;
        assert_eq!((status, code(&body)), (404, json!("file_not_found")), "{method} under a file: {body}");
    }
    let (status, body) = s.http("DELETE", &file("dir"), None).await;
    assert_eq!((status, code(&body)), (409, json!("path_conflict")), "DELETE a non-empty directory: {body}");
    let rename = format!("/api/v1/sessions/{id}/rename");
    for (from, to) in [("dir", "dir/inner"), ("main.py", "dir"), ("dir", "main.py")] {
        let (status, body) = s.http("POST", &rename, Some(json!({"from": from, "to": to}))).await;
        assert_eq!((status, code(&body)), (409, json!("path_conflict")), "rename {from} to {to}: {body}");
    }
    let (status, body) = s.http("GET", &format!("/api/v1/sessions/{id}/files"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!([{"path": "dir", "size": 0, "is_dir": true}, {"path": "dir/a.txt", "size": 1, "is_dir": false}, {"path": "main.py", "size": 9, "is_dir": false}]),
        "nothing changed"
    );
}

/// Among nodes: a session another node took, taken back while this node's
/// first working copy is still held (a client of it still attached). The
/// old copy's end (it unmounts and removes its directory) must not take the
/// new copy's mount with it: each working copy has a directory of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_back_keeps_its_files_when_the_old_copy_ends() {
    use std::os::unix::fs::MetadataExt;
    let redis = common::RedisServer::start();
    let (a, a_dir) = common::clustered_state(UIDS, 2, &redis, "takeback:").await;
    let (b, _) = common::clustered_state(UIDS, 2, &redis, "takeback:").await;
    let file =
        evald_state::StoredFile { path: "main.py".into(), content: b"print('kept')\n".to_vec(), executable: false };
    let first = a.sessions().create("python", vec![file]).await.expect("created on a");
    let id = first.id.clone();
    assert_eq!(b.sessions().read_file(&id, "main.py".into()).await.expect("b takes it"), b"print('kept')\n");
    assert_eq!(a.sessions().read_file(&id, "main.py".into()).await.expect("a takes it back"), b"print('kept')\n");
    drop(first);
    // What a serves now is the directory of its copy: a file written through
    // the session is there (had the old copy's end detached the new mount,
    // the path would show another tmpfs, or nothing).
    a.sessions().write_file(&id, "more.txt".into(), b"x".to_vec()).await.expect("writable");
    let workspaces = a_dir.join("workspaces");
    let copies: Vec<std::path::PathBuf> = std::fs::read_dir(&workspaces)
        .expect("a's workspaces")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("s-{id}"))))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let parent_dev = std::fs::metadata(&workspaces).expect("stat").dev();
    assert_ne!(std::fs::metadata(&copies[0]).expect("stat").dev(), parent_dev, "{:?} is a mount", copies[0]);
    assert_eq!(std::fs::read(copies[0].join("more.txt")).expect("the new file, through the path"), b"x");
    assert_eq!(std::fs::read(copies[0].join("main.py")).expect("through the path"), b"print('kept')\n");
}
