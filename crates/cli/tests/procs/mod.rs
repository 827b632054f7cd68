//! Shared by the tests that run real `evald serve` processes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every awaited condition has this bound: a test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(60);
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The `evald` binary of this build (Cargo builds it for the tests).
pub fn evald_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_evald"))
}

/// A free TCP port on `ip` (bound then released).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Polls `check` every 50 ms until it yields a value, at most [`WAIT`].
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request on a fresh connection; (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: evald\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

// ---------------------------------------------------------------------------
// A whole cluster of real processes: Redis, HAProxy with the shipped
// configuration, and `evald serve` nodes on their own loopback addresses.
// ---------------------------------------------------------------------------

use std::process::Stdio;

use tokio::process::{Child, Command};

/// The admin key of the cluster nodes.
pub const CLUSTER_ADMIN_KEY: &str = "cluster-test-key";

/// A persistent Redis (every write fsynced to its append-only file) that a
/// test can kill and restart on the same port and directory.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    pub async fn start(dir: &Path) -> RedisServer {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = RedisServer { child: None, port: free_port("127.0.0.1"), dir };
        r.restart().await;
        r
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        until("redis to answer", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// SIGKILL: a crash; what was fsynced survives a restart.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One command through `redis-cli`; its non-empty output lines.
    pub async fn cli(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    pub async fn stop(mut self) {
        self.kill().await;
    }
}

/// One `evald serve` node; `start` again after `terminate` or `kill` runs it
/// with the same flags (same addresses, directories, uid base, instance).
pub struct ClusterNode {
    pub name: String,
    pub addr: SocketAddr,
    pub agent: SocketAddr,
    uid_base: u32,
    dir: PathBuf,
    redis_url: String,
    namespace: String,
    child: Option<Child>,
    starts: u32,
}

impl ClusterNode {
    /// A node (not started yet) on `ip` with fresh ports.
    pub fn new(name: &str, ip: &str, uid_base: u32, dir: &Path, redis: &RedisServer) -> ClusterNode {
        ClusterNode {
            name: name.to_owned(),
            addr: format!("{ip}:{}", free_port(ip)).parse().expect("addr"),
            agent: format!("{ip}:{}", free_port(ip)).parse().expect("addr"),
            uid_base,
            dir: dir.to_owned(),
            redis_url: redis.url(),
            namespace: format!("t{}:", std::process::id()),
            child: None,
            starts: 0,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .expect("log file");
        let child = Command::new(evald_binary())
            .arg("serve")
            .args(["--listen", &self.addr.to_string(), "--agent-listen", &self.agent.to_string()])
            .args(["--redis-url", &self.redis_url, "--redis-namespace", &self.namespace])
            .args(["--languages-dir", &format!("{ROOT}/languages")])
            .arg("--state-dir")
            .arg(self.dir.join(&self.name).join("state"))
            .arg("--data-dir")
            .arg(self.dir.join(&self.name).join("data"))
            .args(["--instance", &format!("roll-{}-{}", std::process::id(), self.name)])
            .args(["--uid-base", &self.uid_base.to_string(), "--slots", "2"])
            .args(["--admin-key", CLUSTER_ADMIN_KEY, "--drain-window-ms", "3000", "--shutdown-grace-ms", "10000"])
            .env("EVALD_LOG", "warn,evald_session=info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("evald serve starts");
        self.child = Some(child);
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub async fn ready(&self) -> bool {
        matches!(http(self.addr, "GET", "/healthz/ready", &[], "").await, Some((200, _)))
    }

    /// SIGTERM, then the process drains and exits by itself (bounded wait).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("running");
        // kill(1), not libc::kill: no unsafe outside the sandbox crate.
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(WAIT, child.wait()).await.expect("exits after its drain").expect("wait")
    }

    /// SIGKILL: the process and its running sandboxes are gone at once.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("SIGKILL");
    }

    /// The value of one unlabelled series of `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, text) = http(self.addr, "GET", "/metrics", &[], "").await?;
        if status != 200 {
            return None;
        }
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Sum of `evald_runs_total` over every series.
    pub async fn runs(&self) -> Option<u64> {
        let (status, text) = http(self.addr, "GET", "/metrics", &[], "").await?;
        (status == 200).then(|| {
            text.lines()
                .filter(|l| l.starts_with("evald_runs_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        })
    }
}

/// HAProxy 2.6 with the shipped `deploy/haproxy/haproxy.cfg`, its three
/// servers pointed at the given nodes.
pub struct HaProxy {
    child: Child,
    pub front: SocketAddr,
    pub socket: PathBuf,
}

impl HaProxy {
    /// HAProxy with the shipped configuration.
    pub async fn start(dir: &Path, nodes: &[&ClusterNode; 3]) -> HaProxy {
        HaProxy::start_with(&format!("{ROOT}/deploy/haproxy/haproxy.cfg"), dir, nodes).await
    }

    /// HAProxy with the configuration file `cfg`.
    pub async fn start_with(cfg: &str, dir: &Path, nodes: &[&ClusterNode; 3]) -> HaProxy {
        let servers = nodes.map(|n| (n.addr.to_string(), n.agent.port()));
        HaProxy::start_at(cfg, dir, &servers).await
    }

    /// HAProxy with the configuration file `cfg` and servers n1..n3 at
    /// (address:port, agent port).
    pub async fn start_at(cfg: &str, dir: &Path, servers: &[(String, u16); 3]) -> HaProxy {
        let front: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().expect("addr");
        std::fs::write(dir.join("server-state"), "1\n").expect("state file");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f", cfg]).env("EVALD_HAPROXY_BIND", front.to_string()).env("EVALD_HAPROXY_RUN", dir);
        for (i, (addr, agent)) in servers.iter().enumerate() {
            cmd.env(format!("EVALD_N{}_ADDR", i + 1), addr).env(format!("EVALD_N{}_AGENT", i + 1), agent.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts (apt-get install haproxy)");
        let socket = dir.join("admin.sock");
        let s = socket.clone();
        until("the HAProxy stats socket", || runtime_api(&s, "show info")).await;
        HaProxy { child, front, socket }
    }

    /// A Runtime API command on the stats socket; its whole answer.
    pub async fn api(&self, command: &str) -> Option<String> {
        runtime_api(&self.socket, command).await
    }

    /// `status` column of `show stat` for server `name` of backend `evald`.
    pub async fn status(&self, name: &str) -> Option<String> {
        let csv = self.api("show stat").await?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |c: &str| header.iter().position(|h| *h == c);
        let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(px) == Some(&"evald") && f.get(sv) == Some(&name))
            .and_then(|f| f.get(st).map(|s| (*s).to_owned()))
    }

    /// `srv_admin_state` of server `name` (`show servers state`).
    pub async fn admin_state(&self, name: &str) -> Option<u32> {
        let text = self.api("show servers state evald").await?;
        let mut lines = text.lines().skip(1);
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(' ').collect();
        let (sv, adm) =
            (header.iter().position(|h| *h == "srv_name")?, header.iter().position(|h| *h == "srv_admin_state")?);
        lines.map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.get(sv) == Some(&name))?.get(adm)?.parse().ok()
    }

    /// Waits until HAProxy has server `name` UP and not in (agent) drain.
    pub async fn until_up(&self, name: &str) {
        until(&format!("HAProxy to report {name} UP"), || async {
            let up = self.status(name).await.as_deref() == Some("UP");
            (up && self.admin_state(name).await? & 0x08 == 0).then_some(())
        })
        .await;
    }

    /// Waits until HAProxy has server `name` DOWN or in maintenance.
    pub async fn until_down(&self, name: &str) {
        until(&format!("HAProxy to report {name} down"), || async {
            let s = self.status(name).await?;
            (s.starts_with("DOWN") || s.starts_with("MAINT")).then_some(())
        })
        .await;
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Runtime API command on a HAProxy stats socket; its whole answer.
pub async fn runtime_api(socket: &Path, command: &str) -> Option<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    stream.write_all(format!("{command}\n").as_bytes()).await.ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    Some(out)
}

// ---------------------------------------------------------------------------
// Batch load
// ---------------------------------------------------------------------------

/// Clients posting Piston Python runs through a front (HAProxy) until
/// stopped; every answer that is not the program's output is a failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` tasks, each waiting `pause` between its requests.
    pub fn start(front: SocketAddr, clients: usize, pause: Duration) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let body = r#"{"language":"python","version":"*","files":[{"content":"print('hello')"}]}"#;
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let t = std::time::Instant::now();
                        match http(front, "POST", "/api/v2/execute", &[], body).await {
                            Some((200, b)) if b.contains(r#""stdout":"hello\n""#) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failures.lock().expect("lock").push(format!("after {:?}: {other:?}", t.elapsed())),
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, tasks }
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the clients; (successful requests, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.ok.load(std::sync::atomic::Ordering::SeqCst), failures)
    }
}
