//! The cluster's queue of `wait: false` runs, with two real `evald serve`
//! nodes and a real Redis: runs accepted by a node that is killed (SIGKILL)
//! right after answering 202 are finished by the other node, which answers
//! their status too. The same for Judge0's `wait=false` submissions, which
//! go through the same queue.
//!
//! Needs `redis-server` and `redis-cli` installed and the `evald` binary
//! built.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

mod procs;
use evald_testkit::uids;
use procs::{evald_binary, free_port, http, until, RedisServer, ROOT};

/// Runs submitted; each sleeps this long, then prints its number.
const RUNS: usize = 6;
/// The nodes' `--run-queue-reclaim-ms`.
const RECLAIM_MS: u64 = 2000;

fn namespace() -> String {
    format!("queuetest{}:", std::process::id())
}

struct Node {
    child: Child,
    addr: SocketAddr,
    instance: String,
}

impl Node {
    fn start(name: &str, ip: &str, uid_base: u32, redis: &RedisServer, dir: &Path) -> Node {
        let addr: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().expect("addr");
        // Unique on the host: the tests of this file run at once.
        let instance = format!("q-{}-{name}-{uid_base}", std::process::id());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(evald_binary())
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--redis-url", &redis.url()])
            .args(["--redis-namespace", &namespace()])
            .args(["--run-queue-reclaim-ms", &RECLAIM_MS.to_string()])
            .args(["--languages-dir", &format!("{ROOT}/languages")])
            .arg("--state-dir")
            .arg(dir.join(name).join("state"))
            .arg("--data-dir")
            .arg(dir.join(name).join("data"))
            .args(["--instance", &instance, "--uid-base", &uid_base.to_string(), "--slots", "2"])
            .env("EVALD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("evald serve starts");
        Node { child, addr, instance }
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.addr, method, path, &[], body).await.expect("the node answers")
    }

    async fn ready(&self) -> Option<()> {
        http(self.addr, "GET", "/healthz/ready", &[], "").await.filter(|(s, _)| *s == 200).map(|_| ())
    }
}

fn program(n: usize) -> String {
    json!({
        "language": "python",
        "files": [{"path": "main.py", "content": format!("import time\ntime.sleep(1.5)\nprint({n})\n")}],
        "wait": false,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_accepted_by_a_killed_node_are_finished_by_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, mut a, b) = two_nodes(dir.path(), 0).await;

    // Six runs accepted by A (B also takes from the queue meanwhile).
    let mut ids = Vec::new();
    for n in 0..RUNS {
        let (status, body) = a.call("POST", "/api/v1/runs", &program(n)).await;
        assert_eq!(status, 202, "{body}");
        let id = serde_json::from_str::<Value>(&body).expect("json")["id"].as_str().expect("an id").to_owned();
        ids.push(id);
    }

    let held_by_a = kill_once_holding(&mut a, &redis).await;

    // B answers for every run, and finishes them all, A's included (after
    // their idle bound).
    let (status, body) = b.call("GET", "/api/v1/runs/nosuchrun", "").await;
    assert_eq!(status, 404, "{body}");
    for (n, id) in ids.iter().enumerate() {
        let done = until("the run to be done on node B", || {
            let (b, id) = (&b, id.clone());
            async move {
                let (status, body) = b.call("GET", &format!("/api/v1/runs/{id}"), "").await;
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).expect("json");
                (v["state"] == "done").then_some(v)
            }
        })
        .await;
        assert_eq!(done["id"], json!(id), "{done}");
        assert_eq!(done["result"]["status"], "ok", "{done}");
        assert_eq!(done["result"]["cases"][0]["stdout"], format!("{n}\n"), "{done}");
    }

    assert_queue_emptied_through_b(&redis, held_by_a, dir.path()).await;
}

/// As soon as node A holds entries of the queue, kills it (SIGKILL);
/// returns how many it held.
async fn kill_once_holding(a: &mut Node, redis: &RedisServer) -> usize {
    let stream = format!("{}runs", namespace());
    let held_by_a = until("node A to take runs from the queue", || {
        let (redis, stream, consumer) = (redis, &stream, a.instance.clone());
        async move {
            let lines = redis.cli(&["XPENDING", stream, "workers", "-", "+", "100", &consumer]).await;
            let held = lines.len() / 4;
            (held > 0).then_some(held)
        }
    })
    .await;
    let pid = a.child.id().expect("node A runs").to_string();
    let killed = Command::new("kill").args(["-9", &pid]).status().await.expect("kill runs");
    assert!(killed.success());
    let _ = a.child.wait().await;
    held_by_a
}

/// Nothing is left in the queue, and A's entries went through B.
async fn assert_queue_emptied_through_b(redis: &RedisServer, held_by_a: usize, dir: &Path) {
    let stream = format!("{}runs", namespace());
    assert_eq!(redis.cli(&["XLEN", &stream]).await, ["0"]);
    let pending = redis.cli(&["XPENDING", &stream, "workers", "-", "+", "100"]).await;
    assert!(pending.is_empty(), "{pending:?}");
    assert!(held_by_a >= 1);
    let log = std::fs::read_to_string(dir.join("b.log")).expect("b's log");
    assert!(log.contains("reclaimed a queued run"), "node B reclaimed nothing:\n{log}");
}

/// A Redis and two ready nodes, A and B: pair `pair` of this file's
/// addresses and user-id blocks (the tests run at once).
async fn two_nodes(dir: &Path, pair: u32) -> (RedisServer, Node, Node) {
    let redis = RedisServer::start(dir).await;
    let ip = |i: u32| format!("127.0.0.{}", 31 + 2 * pair + i);
    let a = Node::start("a", &ip(0), uids::CLI_QUEUE.block(2 * pair, 100), &redis, dir);
    let b = Node::start("b", &ip(1), uids::CLI_QUEUE.block(2 * pair + 1, 100), &redis, dir);
    for n in [&a, &b] {
        until("the node to be ready", || n.ready()).await;
    }
    (redis, a, b)
}

fn judge0_program(n: usize) -> String {
    json!({"language_id": 71, "source_code": format!("import time\ntime.sleep(1.5)\nprint({n})\n")}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge0_submissions_taken_by_a_killed_node_are_finished_by_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, mut a, b) = two_nodes(dir.path(), 1).await;

    // Submissions made on A; they wait in the cluster's queue, not in A.
    let mut tokens = Vec::new();
    for n in 0..RUNS {
        let (status, body) = a.call("POST", "/judge0/submissions", &judge0_program(n)).await;
        assert_eq!(status, 201, "{body}");
        let token = serde_json::from_str::<Value>(&body).expect("json")["token"].as_str().expect("a token").to_owned();
        tokens.push(token);
    }
    let held_by_a = kill_once_holding(&mut a, &redis).await;

    // B answers for every token and finishes them all, with Judge0's
    // statuses: In Queue or Processing until the reclaim, then Accepted.
    for (n, token) in tokens.iter().enumerate() {
        let done = until("the submission to finish on node B", || {
            let (b, token) = (&b, token.clone());
            async move {
                let path = format!("/judge0/submissions/{token}?fields=token,stdout,status_id");
                let (status, body) = b.call("GET", &path, "").await;
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).expect("json");
                let id = v["status_id"].as_u64().expect("a status id");
                assert!((1..=3).contains(&id), "{v}");
                (id == 3).then_some(v)
            }
        })
        .await;
        assert_eq!(done, json!({"token": token, "stdout": format!("{n}\n"), "status_id": 3}));
    }
    assert_queue_emptied_through_b(&redis, held_by_a, dir.path()).await;
}
