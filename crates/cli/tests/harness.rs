//! The cluster harness as shipped (`scripts/cluster`): it starts Redis,
//! HAProxy and three nodes, the cluster serves batch runs and sessions
//! through HAProxy, and `stop` ends every process it started.
//!
//! Needs redis-server, haproxy, curl and the built `evald` binary.

use std::net::SocketAddr;
use std::path::Path;

use evald_testkit::uids;
use serde_json::{json, Value};

mod procs;
use procs::{evald_binary, free_port, http, ROOT};

fn cluster(action: &str, run: &Path, env: &[(&str, String)]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(format!("{ROOT}/scripts/cluster"))
        .arg(action)
        .env("EVALD_CLUSTER_DIR", run)
        .env("EVALD_BIN", evald_binary())
        .env("EVALD_CLUSTER_UID_BASE", uids::CLI_HARNESS.base.to_string())
        .env("EVALD_LANGUAGES", format!("{ROOT}/languages"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("scripts/cluster runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_starts_serves_and_stops() {
    let run = tempfile::tempdir().expect("tempdir");
    // One port free on all three node addresses.
    let node_port = (0..50)
        .map(|_| free_port("127.0.0.11"))
        .find(|p| ["127.0.0.12", "127.0.0.13"].iter().all(|ip| std::net::TcpListener::bind((*ip, *p)).is_ok()))
        .expect("a port free on every node address");
    let agent_port = (0..50)
        .map(|_| free_port("127.0.0.11"))
        .find(|p| {
            *p != node_port
                && ["127.0.0.12", "127.0.0.13"].iter().all(|ip| std::net::TcpListener::bind((*ip, *p)).is_ok())
        })
        .expect("an agent port");
    let front = free_port("127.0.0.1");
    let env = [
        ("EVALD_CLUSTER_PORT", front.to_string()),
        ("EVALD_NODE_PORT", node_port.to_string()),
        ("EVALD_AGENT_PORT", agent_port.to_string()),
        ("EVALD_REDIS_PORT", free_port("127.0.0.1").to_string()),
    ];
    let started = cluster("start", run.path(), &env);
    let show = |o: &std::process::Output| {
        format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(started.status.success(), "start failed:\n{}", show(&started));

    let addr: SocketAddr = format!("127.0.0.1:{front}").parse().expect("addr");
    let body = json!({"language": "python", "version": "*", "files": [{"content": "print('hello, world')"}]});
    let (status, text) = http(addr, "POST", "/api/v2/execute", &[], &body.to_string()).await.expect("answer");
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["run"]["stdout"], "hello, world\n");
    let body = json!({"language": "python", "files": [{"path": "main.py", "content": "print(1)"}]});
    let (status, text) = http(addr, "POST", "/api/v1/sessions", &[], &body.to_string()).await.expect("answer");
    assert_eq!(status, 201, "{text}");
    let status = cluster("status", run.path(), &env);
    assert!(status.status.success(), "status failed:\n{}", show(&status));

    // The processes the script started: Redis, HAProxy and three nodes.
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(run.path()).expect("run dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") {
            pids.push(std::fs::read_to_string(&path).expect("pid file").trim().to_owned());
        }
    }
    assert_eq!(pids.len(), 5, "pid files: {pids:?}");
    assert!(pids.iter().all(|p| Path::new("/proc").join(p).exists()), "all running before stop");
    let stopped = cluster("stop", run.path(), &env);
    assert!(stopped.status.success(), "stop failed:\n{}", show(&stopped));
    let alive: Vec<&String> = pids.iter().filter(|p| Path::new("/proc").join(p).exists()).collect();
    assert_eq!(alive, Vec::<&String>::new(), "processes left running after stop");
}
