//! A real HAProxy 2.6 with the shipped `deploy/haproxy/haproxy.cfg` in front
//! of two real `evald serve` processes (the built binary):
//!
//! - a node drained with `POST /admin/drain` gets no new requests once its
//!   agent says `down`, and no request through HAProxy fails meanwhile;
//!   then SIGTERM makes both nodes drain and exit;
//! - both owners of a node's state: a drain and a maintenance set by an
//!   operator through the Runtime API hold across ten agent checks, while
//!   evald's own drain shows in HAProxy within two agent checks and its
//!   undrain brings the node back with no one touching HAProxy.
//!
//! Needs `haproxy` installed and the `evald` binary built (`cargo build
//! --release`, as scripts/test does, or `cargo build -p evald`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

mod procs;
use evald_testkit::uids;
use procs::{evald_binary, free_port, http, runtime_api, until, ROOT, WAIT};

const ADMIN_KEY: &str = "haproxy-test-key";

/// (server name, status) of the `evald` backend's servers from `show stat`.
async fn server_status(socket: &Path) -> Vec<(String, String)> {
    let Some(csv) = runtime_api(socket, "show stat").await else { return Vec::new() };
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else { return Vec::new() };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&"evald") && f.get(sv).is_some_and(|s| s.starts_with('n')))
        .map(|f| (f[sv].to_owned(), f.get(st).copied().unwrap_or_default().to_owned()))
        .collect()
}

/// `SRV_ADMF_FDRAIN` of HAProxy's `srv_admin_state`: a drain forced through
/// the Runtime API (`set server ... state drain`).
const FDRAIN_OPERATOR: u32 = 0x08;

/// `srv_admin_state` of server `name` of backend `evald` (`show servers state`).
async fn admin_state(socket: &Path, name: &str) -> Option<u32> {
    let text = runtime_api(socket, "show servers state evald").await?;
    let mut lines = text.lines().skip(1);
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(' ').collect();
    let (sv, adm) =
        (header.iter().position(|h| *h == "srv_name")?, header.iter().position(|h| *h == "srv_admin_state")?);
    lines.map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.get(sv) == Some(&name))?.get(adm)?.parse().ok()
}

struct Node {
    child: Child,
    addr: SocketAddr,
    agent: SocketAddr,
}

impl Node {
    async fn start(name: &str, ip: &str, uid_base: u32, dir: &Path) -> Node {
        let addr: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().expect("addr");
        let agent: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().expect("addr");
        let instance = format!("hap-{}-{name}", std::process::id());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(evald_binary())
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--agent-listen", &agent.to_string()])
            .args(["--languages-dir", &format!("{ROOT}/languages")])
            .arg("--state-dir")
            .arg(dir.join(name).join("state"))
            .arg("--data-dir")
            .arg(dir.join(name).join("data"))
            .args(["--instance", &instance, "--uid-base", &uid_base.to_string(), "--slots", "2"])
            .args(["--admin-key", ADMIN_KEY, "--drain-window-ms", "500", "--shutdown-grace-ms", "10000"])
            .env("EVALD_LOG", "warn,evald_server=info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("evald serve starts");
        Node { child, addr, agent }
    }

    /// Sum of `evald_runs_total` over every series.
    async fn runs(&self) -> Option<u64> {
        let (status, text) = http(self.addr, "GET", "/metrics", &[], "").await?;
        (status == 200).then(|| {
            text.lines()
                .filter(|l| l.starts_with("evald_runs_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        })
    }

    async fn metric(&self, line: &str) -> bool {
        matches!(http(self.addr, "GET", "/metrics", &[], "").await, Some((200, t)) if t.lines().any(|l| l == line))
    }

    async fn agent_line(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.agent).await.expect("agent connects");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("agent answers");
        text
    }

    /// SIGTERM, then the process drains and exits by itself.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // kill(1), not libc::kill: no unsafe outside the sandbox crate.
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits after its drain").expect("wait")
    }
}

/// Two nodes behind HAProxy with the shipped configuration; n3 points at a
/// closed port and is in maintenance.
struct Pair {
    dir: std::path::PathBuf,
    n1: Node,
    n2: Node,
    haproxy: Child,
    socket: std::path::PathBuf,
    front: SocketAddr,
}

/// The tests of this file each run two nodes and HAProxy; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn pair(test: &str, block: u32) -> Pair {
    let dir = std::env::temp_dir().join(format!("evald-haproxy-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let n1 = Node::start("n1", "127.0.0.11", uids::CLI_HAPROXY.block(2 * block, 100), &dir).await;
    let n2 = Node::start("n2", "127.0.0.12", uids::CLI_HAPROXY.block(2 * block + 1, 100), &dir).await;
    for n in [&n1, &n2] {
        until("the nodes to be ready", || async {
            matches!(http(n.addr, "GET", "/healthz/ready", &[], "").await, Some((200, _))).then_some(())
        })
        .await;
    }

    // HAProxy with the shipped configuration; n3 points at a closed port
    // and is put in maintenance through the Runtime API.
    let front: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().expect("addr");
    std::fs::write(dir.join("server-state"), "1\n").expect("state file");
    let socket = dir.join("admin.sock");
    let cfg = format!("{ROOT}/deploy/haproxy/haproxy.cfg");
    let haproxy_log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
    let haproxy = Command::new("haproxy")
        .args(["-db", "-f", &cfg])
        .env("EVALD_HAPROXY_BIND", front.to_string())
        .env("EVALD_HAPROXY_RUN", &dir)
        .env("EVALD_N1_ADDR", n1.addr.to_string())
        .env("EVALD_N1_AGENT", n1.agent.port().to_string())
        .env("EVALD_N2_ADDR", n2.addr.to_string())
        .env("EVALD_N2_AGENT", n2.agent.port().to_string())
        .env("EVALD_N3_ADDR", format!("127.0.0.13:{}", free_port("127.0.0.13")))
        .env("EVALD_N3_AGENT", free_port("127.0.0.13").to_string())
        .stdout(Stdio::null())
        .stderr(haproxy_log)
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts (apt-get install haproxy)");
    until("the stats socket", || runtime_api(&socket, "set server evald/n3 state maint")).await;
    until("n1 and n2 UP, n3 in maintenance", || async {
        let s = server_status(&socket).await;
        let want = [("n1", "UP"), ("n2", "UP"), ("n3", "MAINT")];
        (s.len() == 3 && want.iter().all(|(n, st)| s.iter().any(|(a, b)| a == n && b == st))).then_some(())
    })
    .await;
    Pair { dir, n1, n2, haproxy, socket, front }
}

impl Pair {
    async fn finish(self) {
        // SIGTERM: each node drains and exits with success.
        for n in [self.n1, self.n2] {
            let status = n.terminate().await;
            assert!(status.success(), "evald exited with {status}");
        }
        let mut haproxy = self.haproxy;
        let _ = haproxy.start_kill();
        let _ = haproxy.wait().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_stops_sending_to_a_drained_node_and_no_request_fails() {
    let _serial = SERIAL.lock().await;
    let p = pair("drain", 0).await;
    let (n1, n2, socket, front) = (&p.n1, &p.n2, &p.socket, p.front);

    // Load: three clients sending Piston runs through HAProxy until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let body = r#"{"language":"python","version":"*","files":[{"content":"print(6*7)"}]}"#;
    let loaders: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match http(front, "POST", "/api/v2/execute", &[], body).await {
                        Some((200, b)) if b.contains(r#""stdout":"42\n""#) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.lock().expect("lock").push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    until("both nodes to serve runs", || async { (n1.runs().await? > 0 && n2.runs().await? > 0).then_some(()) }).await;

    // Drain n1 on the node; HAProxy learns it from the agent.
    let auth = format!("Bearer {ADMIN_KEY}");
    let (status, _) = http(n1.addr, "POST", "/admin/drain", &[], "").await.expect("answer");
    assert_eq!(status, 401);
    let (status, body) = http(n1.addr, "POST", "/admin/drain", &[("Authorization", &auth)], "").await.expect("answer");
    assert_eq!((status, body.as_str()), (200, r#"{"drain_window_ms":500,"status":"draining"}"#));
    assert_eq!(n1.agent_line().await, "down\n");
    // The agent's `down` (and the failing readiness check) take n1 down;
    // its administrative state, the operator's, is untouched.
    until("HAProxy to mark n1 down", || async { status_of(socket, "n1").await?.starts_with("DOWN").then_some(()) })
        .await;
    assert_eq!(admin_state(socket, "n1").await, Some(0), "the agent leaves the admin state alone");
    // Runs admitted on n1 before HAProxy knew finish; then n1 is idle.
    until("n1 to be idle", || async { (n1.metric("evald_free_slots 2").await).then_some(()) }).await;
    let n1_runs = n1.runs().await.expect("n1 metrics");
    let n2_runs = n2.runs().await.expect("n2 metrics");
    until("n2 to serve 10 more runs", || async { (n2.runs().await? >= n2_runs + 10).then_some(()) }).await;
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        l.await.expect("loader");
    }
    assert_eq!(n1.runs().await, Some(n1_runs), "the drained node got no new run");
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(ok.load(Ordering::SeqCst) >= 10);
    p.finish().await;
}

/// `evald_agent_checks_total` of a node.
async fn agent_checks(n: &Node) -> Option<u64> {
    let (status, text) = http(n.addr, "GET", "/metrics", &[], "").await?;
    (status == 200).then_some(())?;
    text.lines().find_map(|l| l.strip_prefix("evald_agent_checks_total ")?.parse().ok())
}

/// Waits until `n` has answered `count` more agent checks than now.
async fn agent_checks_pass(n: &Node, count: u64) {
    let from = agent_checks(n).await.expect("metrics");
    until("agent checks", || async { (agent_checks(n).await? >= from + count).then_some(()) }).await;
}

/// The `status` column of server `name` (`show stat`).
async fn status_of(socket: &Path, name: &str) -> Option<String> {
    server_status(socket).await.into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_drain_and_maintenance_hold_and_evalds_own_drain_shows_within_two_agent_checks() {
    let _serial = SERIAL.lock().await;
    let p = pair("owners", 1).await;
    let (n1, socket) = (&p.n1, &p.socket);
    let auth = format!("Bearer {ADMIN_KEY}");

    // The operator drains n1 through the Runtime API (as Ansible's haproxy
    // module does); ten agent checks later it is still drained.
    runtime_api(socket, "set server evald/n1 state drain").await.expect("runtime api");
    assert_eq!(admin_state(socket, "n1").await, Some(FDRAIN_OPERATOR));
    agent_checks_pass(n1, 10).await;
    assert_eq!(admin_state(socket, "n1").await, Some(FDRAIN_OPERATOR), "the drain holds across ten agent checks");
    let status = status_of(socket, "n1").await.unwrap_or_default();
    assert!(status.starts_with("DRAIN"), "n1 is {status}");
    // Then maintenance: the same.
    runtime_api(socket, "set server evald/n1 state maint").await.expect("runtime api");
    agent_checks_pass(n1, 10).await;
    let status = status_of(socket, "n1").await.unwrap_or_default();
    assert!(status.starts_with("MAINT"), "maintenance holds across ten agent checks: n1 is {status}");
    runtime_api(socket, "set server evald/n1 state ready").await.expect("runtime api");
    until("n1 back up", || async { status_of(socket, "n1").await?.starts_with("UP").then_some(()) }).await;

    // evald's own drain: HAProxy marks the node down within two agent checks.
    let before = agent_checks(n1).await.expect("metrics");
    let (status, _) = http(n1.addr, "POST", "/admin/drain", &[("Authorization", &auth)], "").await.expect("answer");
    assert_eq!(status, 200);
    until("HAProxy to mark n1 down", || async { status_of(socket, "n1").await?.starts_with("DOWN").then_some(()) })
        .await;
    let took = agent_checks(n1).await.expect("metrics") - before;
    assert!(took <= 2, "HAProxy saw the drain after {took} agent checks");
    assert_eq!(admin_state(socket, "n1").await, Some(0), "evald's drain is operational, not administrative");

    // Its undrain brings it back with no one touching HAProxy.
    let (status, _) = http(n1.addr, "POST", "/admin/undrain", &[("Authorization", &auth)], "").await.expect("answer");
    assert_eq!(status, 200);
    until("n1 back up by itself", || async { status_of(socket, "n1").await?.starts_with("UP").then_some(()) }).await;
    p.finish().await;
}
