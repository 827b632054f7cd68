//! The Redis backend against real `redis-server` processes, one per test,
//! each started on a free loopback port without persistence.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evald_state::{is_unavailable, Meta, QueueDepth, Redis, RedisConfig, StateError, StoredFile, WorkspaceStore};

/// A `redis-server` this test owns; killed (by its pid) on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn ping(port: u16) -> io::Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    Ok(&buf == b"+PONG\r\n")
}

impl RedisServer {
    fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = RedisServer { child: None, port: free_port(), dir };
        s.restart();
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Starts the server (again) on the same port and waits until it
    /// answers PING: a bounded number of connection attempts.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..400 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server on port {} exited with {status}; log:\n{}", self.port, self.log());
            }
            if ping(self.port).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING; log:\n{}", self.port, self.log());
    }

    /// Kills the server (SIGKILL: a crash, nothing saved) and reaps it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::new(self.url())
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url()).and_then(|c| c.get_connection()).expect("raw connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn file(path: &str, content: &[u8], executable: bool) -> StoredFile {
    StoredFile { path: path.into(), content: content.to_vec(), executable }
}

fn meta() -> Meta {
    Meta { language: "python".into(), touched: 7 }
}

#[test]
fn workspace_store_round_trip() {
    let server = RedisServer::start();
    let redis = Redis::new(server.config().with_namespace("t1:")).expect("client");
    let s = redis.workspace_store();

    s.create("abc", &meta()).expect("create");
    assert_eq!(s.meta("abc").expect("meta"), Some(meta()));
    assert_eq!(s.meta("zzz").expect("meta of unknown"), None);
    assert_eq!(s.files("abc").expect("files"), vec![]);

    // Binary content, the executable bit, nested paths.
    let bin = file("bin/run", b"\0\xff#!", true);
    s.put("abc", &file("d/a.py", b"print(1)", false)).expect("put");
    s.put("abc", &bin).expect("put");
    s.rename("abc", "d/a.py", "b.py").expect("rename a file");
    assert_eq!(s.files("abc").expect("files"), vec![file("b.py", b"print(1)", false), bin.clone()]);
    s.rename("abc", "bin", "tools").expect("rename a directory");
    assert_eq!(s.files("abc").expect("files")[1], file("tools/run", b"\0\xff#!", true));
    assert_eq!(s.rename("abc", "nope", "x").map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    assert_eq!(s.rename("abc", "tools", "tools/x").map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));

    assert_eq!(s.delete("abc", "tools").map_err(|e| e.kind()), Err(io::ErrorKind::DirectoryNotEmpty));
    assert_eq!(s.delete("abc", "nope").map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    s.delete("abc", "tools/run").expect("delete");
    assert_eq!(s.files("abc").expect("files"), vec![file("b.py", b"print(1)", false)]);

    // Path and id refusals, before anything is written.
    for bad in ["../x", "/etc/passwd", "", "a/../../b", "a/", "./a"] {
        let e = s.put("abc", &file(bad, b"x", false)).expect_err(bad);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    assert_eq!(s.meta("../etc").map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));
    assert_eq!(s.files("a:b").map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));
    assert_eq!(
        s.replace_all("abc", &[file("ok", b"1", false), file("../bad", b"2", false)]).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    assert_eq!(
        s.files("abc").expect("files"),
        vec![file("b.py", b"print(1)", false)],
        "a refused replace changes nothing"
    );

    // A session that does not exist takes no writes (no orphan keys).
    assert_eq!(s.put("gone", &file("a", b"1", false)).map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    assert_eq!(s.set_meta("gone", &meta()).map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    assert_eq!(s.replace_all("gone", &[]).map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    assert_eq!(s.files("gone").map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));

    s.replace_all("abc", &[file("c", &[1], true)]).expect("replace");
    assert_eq!(s.files("abc").expect("files"), vec![file("c", &[1], true)]);
    s.set_meta("abc", &Meta { language: "python".into(), touched: 9 }).expect("set meta");
    assert_eq!(s.meta("abc").expect("meta").map(|m| m.touched), Some(9));

    s.create("def", &meta()).expect("create");
    assert_eq!(s.ids().expect("ids"), vec!["abc".to_string(), "def".to_string()]);

    // Every key is under the namespace.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut server.raw()).expect("keys");
    assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with("t1:ws:")), "{keys:?}");

    s.remove("abc").expect("remove");
    s.remove("abc").expect("remove twice");
    assert_eq!(s.meta("abc").expect("meta"), None);
    assert_eq!(s.ids().expect("ids"), vec!["def".to_string()]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("t1:ws:abc*").query(&mut server.raw()).expect("keys");
    assert_eq!(keys, Vec::<String>::new(), "remove leaves no key");
}

/// A reader running next to a writer that swaps between two file sets sees
/// one set or the other, never a mix.
#[test]
fn replace_all_is_atomic() {
    let server = RedisServer::start();
    let redis = Redis::new(server.config()).expect("client");
    let s = Arc::new(redis.workspace_store());
    s.create("w", &meta()).expect("create");
    let set = |tag: &str| -> Vec<StoredFile> {
        (0..40).map(|i| file(&format!("{tag}/{i:02}"), tag.as_bytes(), false)).collect()
    };
    let (a, b) = (set("a"), set("b"));
    s.replace_all("w", &a).expect("replace");

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, stop, a, b) = (s.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let got = s.files("w").expect("files");
                assert!(got == a || got == b, "a mixed or partial set of {} files", got.len());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        s.replace_all("w", if i % 2 == 0 { &b } else { &a }).expect("replace");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
}

#[tokio::test]
async fn registry_claim_heartbeat_expiry_takeover() {
    let server = RedisServer::start();
    let reg = Redis::new(server.config()).expect("client").session_registry().expect("registry");
    let long = Duration::from_secs(30);

    assert!(reg.claim("s1", "n1", long).await.expect("claim"));
    assert!(!reg.claim("s1", "n2", long).await.expect("claim"), "a second claim is refused");
    assert!(!reg.claim("s1", "n1", long).await.expect("claim"), "claim is NX even for the owner");
    assert_eq!(reg.owner("s1").await.expect("owner").as_deref(), Some("n1"));
    assert!(reg.heartbeat("s1", "n1", long).await.expect("heartbeat"));
    assert!(!reg.heartbeat("s1", "n2", long).await.expect("heartbeat"), "a foreign heartbeat is refused");
    assert!(!reg.takeover("s1", "n2", long).await.expect("takeover"), "no takeover while the owner lives");
    assert!(!reg.release("s1", "n2").await.expect("release"), "a foreign release is refused");
    assert_eq!(reg.owner("s1").await.expect("owner").as_deref(), Some("n1"));

    // The owner stops its heartbeats: the key expires.
    assert!(reg.heartbeat("s1", "n1", Duration::from_millis(100)).await.expect("heartbeat"));
    let left = reg.remaining("s1").await.expect("pttl").expect("owned");
    assert!(left <= Duration::from_millis(100), "{left:?}");
    let mut expired = false;
    for _ in 0..200 {
        if reg.remaining("s1").await.expect("pttl").is_none() {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(expired, "the ownership did not expire");
    assert_eq!(reg.owner("s1").await.expect("owner"), None);
    assert!(!reg.heartbeat("s1", "n1", long).await.expect("heartbeat"), "a late heartbeat does not revive it");

    assert!(reg.takeover("s1", "n2", long).await.expect("takeover"));
    assert_eq!(reg.owner("s1").await.expect("owner").as_deref(), Some("n2"));
    assert!(reg.takeover("s1", "n2", long).await.expect("takeover"), "the owner may refresh by takeover");
    assert!(!reg.release("s1", "n1").await.expect("release"));
    assert!(reg.release("s1", "n2").await.expect("release"));
    assert_eq!(reg.owner("s1").await.expect("owner"), None);
    assert!(reg.claim("s1", "n3", long).await.expect("claim after release"));
}

#[tokio::test]
async fn rate_limit_holds_across_clients() {
    let server = RedisServer::start();
    // Two clients with their own connections, as two nodes would have.
    let nodes = [
        Redis::new(server.config()).expect("client").rate_limiter().expect("limiter"),
        Redis::new(server.config()).expect("client").rate_limiter().expect("limiter"),
    ];
    let limit = 5;
    for i in 0..limit {
        let d = nodes[i as usize % 2].check_rate("secret-key", limit).await.expect("check");
        assert!(d.allowed, "request {i}");
        assert_eq!(d.remaining, limit - i - 1);
        assert!((1..=60).contains(&d.reset_secs), "{d:?}");
    }
    for node in &nodes {
        let d = node.check_rate("secret-key", limit).await.expect("check");
        assert!(!d.allowed, "request past the limit: {d:?}");
        assert_eq!(d.remaining, 0);
        assert!((1..=60).contains(&d.reset_secs), "{d:?}");
    }
    let other = nodes[0].check_rate("other-key", limit).await.expect("check");
    assert!(other.allowed && other.remaining == limit - 1, "keys are counted apart: {other:?}");

    // The API key itself never appears in Redis.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut server.raw()).expect("keys");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("evald:rate:") && !k.contains("secret")), "{keys:?}");
}

#[tokio::test]
async fn run_queue_reclaims_a_dead_consumers_run() {
    let server = RedisServer::start();
    let q = Redis::new(server.config()).expect("client").run_queue().await.expect("queue");
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 0, in_flight: 0 });

    let id = q.enqueue(r#"{"id":"r1"}"#, 10).await.expect("enqueue").expect("room");
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 1, in_flight: 0 });

    // Consumer A takes it and dies without acknowledging.
    let a = q.next("node-a", Duration::from_secs(1)).await.expect("next").expect("an entry");
    assert_eq!((a.id.as_str(), a.job.as_str(), a.deliveries), (id.as_str(), r#"{"id":"r1"}"#, 1));
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 0, in_flight: 1 });
    assert_eq!(q.next("node-b", Duration::from_millis(10)).await.expect("next"), None, "delivered once");
    assert_eq!(q.reclaim("node-b", Duration::from_secs(60)).await.expect("reclaim"), vec![], "not idle long enough");

    // B reclaims it once it has been idle for the bound.
    let mut claimed = Vec::new();
    for _ in 0..200 {
        claimed = q.reclaim("node-b", Duration::from_millis(50)).await.expect("reclaim");
        if !claimed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(claimed.len(), 1, "reclaimed after the idle bound");
    assert_eq!((claimed[0].id.as_str(), claimed[0].job.as_str()), (id.as_str(), r#"{"id":"r1"}"#));
    assert_eq!(claimed[0].deliveries, 2);
    assert!(!q.touch("node-a", &id).await.expect("touch"), "A no longer holds it");
    assert!(q.touch("node-b", &id).await.expect("touch"));

    q.finish(&id, "r1", r#"{"stdout":"hi"}"#, Duration::from_secs(60)).await.expect("finish");
    assert_eq!(q.get_result("r1").await.expect("result").as_deref(), Some(r#"{"stdout":"hi"}"#));
    assert_eq!(q.get_result("r2").await.expect("result"), None);
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 0, in_flight: 0 });
    assert_eq!(q.reclaim("node-c", Duration::ZERO).await.expect("reclaim"), vec![], "finished runs stay finished");
    let ttl: i64 = redis::cmd("PTTL").arg("evald:result:r1").query(&mut server.raw()).expect("pttl");
    assert!(ttl > 0 && ttl <= 60_000, "the result expires: {ttl}");
}

#[tokio::test]
async fn run_queue_hand_back_and_bound() {
    let server = RedisServer::start();
    let q = Redis::new(server.config()).expect("client").run_queue().await.expect("queue");
    q.enqueue("j1", 2).await.expect("enqueue").expect("room");
    q.enqueue("j2", 2).await.expect("enqueue").expect("room");
    assert_eq!(q.enqueue("j3", 2).await.expect("enqueue"), None, "the queue is bounded");

    let a = q.next("node-a", Duration::from_secs(1)).await.expect("next").expect("entry");
    assert_eq!(a.job, "j1");
    // A drains: j1 goes back, at the end of the queue, for anyone to read at once.
    assert_eq!(q.hand_back("node-b", &a.id).await.expect("hand back"), None, "only the holder hands back");
    let new_id = q.hand_back("node-a", &a.id).await.expect("hand back").expect("handed back");
    assert_ne!(new_id, a.id);
    assert_eq!(q.hand_back("node-a", &a.id).await.expect("hand back"), None, "once");
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 2, in_flight: 0 });

    let b1 = q.next("node-b", Duration::from_secs(1)).await.expect("next").expect("entry");
    let b2 = q.next("node-b", Duration::from_secs(1)).await.expect("next").expect("entry");
    assert_eq!((b1.job.as_str(), b2.job.as_str()), ("j2", "j1"));
    assert_eq!(b2.id, new_id);
    q.ack(&b1.id).await.expect("ack");
    q.ack(&b2.id).await.expect("ack");
    assert_eq!(q.depth().await.expect("depth"), QueueDepth { waiting: 0, in_flight: 0 });
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StateError>) {
    match r {
        Err(e) => assert!(e.is_unavailable(), "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded while redis is down: {v:?}"),
    }
}

/// Polls `f` until it succeeds: the handles recover by themselves.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let mut last = None;
    for _ in 0..200 {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(e.is_unavailable(), "{what}: {e}");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not recover: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_recovers_from_a_redis_restart() {
    let mut server = RedisServer::start();
    let redis = Redis::new(server.config()).expect("client");
    let store = Arc::new(redis.workspace_store());
    let limiter = redis.rate_limiter().expect("limiter");
    let reg = redis.session_registry().expect("registry");
    let q = redis.run_queue().await.expect("queue");
    let long = Duration::from_secs(30);

    // Everything works, and every part holds an open connection.
    redis.ping().await.expect("ping");
    let s2 = store.clone();
    tokio::task::spawn_blocking(move || s2.create("s1", &meta())).await.expect("join").expect("create");
    assert!(reg.claim("s1", "n1", long).await.expect("claim"));
    q.enqueue("before", 10).await.expect("enqueue").expect("room");
    assert!(limiter.check_rate("k", 100).await.expect("rate").allowed);

    server.stop();

    assert_unavailable("ping", redis.ping().await);
    assert_unavailable("claim", reg.claim("s2", "n1", long).await);
    assert_unavailable("enqueue", q.enqueue("during", 10).await);
    assert_unavailable("next", q.next("n1", Duration::from_millis(10)).await);
    let s2 = store.clone();
    let put = tokio::task::spawn_blocking(move || s2.put("s1", &file("a", b"1", false))).await.expect("join");
    let rate = limiter.check_rate("k", 100).await;
    let put = put.expect_err("put while redis is down");
    assert!(is_unavailable(&put), "{put}");
    assert_eq!(put.kind(), io::ErrorKind::NotConnected);
    assert_unavailable("check_rate", rate);

    // Redis comes back on the same port, empty (no persistence here).
    server.restart();

    redis.ping().await.expect("ping after the restart");
    eventually("registry", || reg.claim("s1", "n2", long)).await;
    assert_eq!(reg.owner("s1").await.expect("owner").as_deref(), Some("n2"));
    // The group is gone with the data; the queue recreates it.
    let id = eventually("enqueue", || q.enqueue("after", 10)).await.expect("room");
    let e = eventually("next", || q.next("n2", Duration::from_secs(1))).await.expect("the entry");
    assert_eq!((e.id, e.job.as_str()), (id, "after"));

    let s2 = store.clone();
    tokio::task::spawn_blocking(move || {
        s2.create("s1", &meta()).expect("create after the restart");
        s2.put("s1", &file("a", b"1", false)).expect("put after the restart");
        assert_eq!(s2.files("s1").expect("files"), vec![file("a", b"1", false)]);
    })
    .await
    .expect("join");
    let rate = eventually("check_rate", || limiter.check_rate("k", 100)).await;
    assert!(rate.allowed, "rate after the restart: {rate:?}");
}

/// Idle pooled connections are stale after a restart: an operation that may
/// be replayed goes through on a fresh connection. The rate limiter (one
/// reconnecting connection) reports a count it could not make and never
/// replays it (a lost reply may have counted a request).
#[tokio::test]
async fn stale_connections_after_a_restart() {
    let mut server = RedisServer::start();
    let redis = Redis::new(server.config()).expect("client");
    let store = Arc::new(redis.workspace_store());
    let limiter = redis.rate_limiter().expect("limiter");
    let s2 = store.clone();
    tokio::task::spawn_blocking(move || s2.create("s1", &meta())).await.expect("join").expect("create");
    assert!(limiter.check_rate("k", 10).await.expect("rate").allowed);

    server.stop();
    server.restart();

    let s2 = store.clone();
    tokio::task::spawn_blocking(move || {
        s2.create("s1", &meta()).expect("a replayable write goes through");
        assert_eq!(s2.meta("s1").expect("meta"), Some(meta()));
    })
    .await
    .expect("join");
    // The first count meets the broken connection (unless the manager has
    // reconnected already): it fails as unavailable and is not replayed.
    let d = match limiter.check_rate("k", 10).await {
        Ok(d) => d,
        Err(e) => {
            assert!(e.is_unavailable(), "{e}");
            eventually("check_rate", || limiter.check_rate("k", 10)).await
        }
    };
    assert_eq!(d.remaining, 9, "exactly one request counted in the new server: failed attempts count nothing");
}

/// Judge0 submissions: shared by every node (two handles), listed newest
/// first, bounded by count, expired by age (a TTL), updated only while
/// stored.
#[tokio::test]
async fn records_are_shared_bounded_and_expire() {
    use evald_state::{RecordPage, RecordStore, Retention};
    let server = RedisServer::start();
    let retention = Retention { max_age: Duration::from_secs(3600), max_count: 3 };
    let a = Redis::new(server.config().with_namespace("rec:")).expect("client").records(retention).expect("a");
    let b = Redis::new(server.config().with_namespace("rec:")).expect("client").records(retention).expect("b");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64;
    for (i, t) in ["t-a", "t-b", "t-c", "t-d"].iter().enumerate() {
        a.insert(t, now - 10_000 + i as u64, t.as_bytes().to_vec()).await.expect("insert");
    }
    assert_eq!(b.get("t-a").await.expect("get"), None, "the oldest beyond the count went");
    assert_eq!(b.get("t-b").await.expect("get"), Some(b"t-b".to_vec()), "another node reads it");
    assert_eq!(
        b.list(0, 2).await.expect("list"),
        RecordPage { bodies: vec![b"t-d".to_vec(), b"t-c".to_vec()], total: 3 }
    );
    assert_eq!(b.list(2, 2).await.expect("list").bodies, vec![b"t-b".to_vec()]);
    assert!(b.update("t-b", b"B".to_vec()).await.expect("update"));
    assert_eq!(a.get("t-b").await.expect("get"), Some(b"B".to_vec()));
    assert!(!b.update("t-a", b"A".to_vec()).await.expect("update a gone record"));
    assert_eq!(a.get("t-a").await.expect("get"), None, "an update does not bring it back");
    let ttl: i64 = redis::cmd("PTTL").arg("rec:rec:t-b").query(&mut server.raw()).expect("pttl");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "the age bound is the key's TTL: {ttl}");
    assert!(a.remove("t-b").await.expect("remove"));
    assert!(!a.remove("t-b").await.expect("remove again"));
    assert_eq!(b.list(0, 10).await.expect("list").total, 2);
    assert_eq!(a.get("../x").await.expect("a bad token"), None);
    // Records past the age bound are listed no more.
    let short = Redis::new(server.config().with_namespace("rec:"))
        .expect("client")
        .records(Retention { max_age: Duration::from_millis(1), max_count: 3 })
        .expect("short");
    assert_eq!(short.list(0, 10).await.expect("list").total, 0);
}
