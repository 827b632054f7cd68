//! The rolling playbook (`deploy/ansible/rolling.yml`) run for real: two
//! systemd guests of the VM lab (`scripts/vm-lab boot`, Debian 12's stock
//! kernel under QEMU's emulation, the package from `scripts/package`),
//! HAProxy with the shipped configuration and Redis on the host, a bounded
//! batch load through HAProxy the whole time.
//!
//! 1. `site.yml` installs version N on both nodes.
//! 2. `rolling.yml` deploys N+1: the play succeeds, both nodes run N+1, the
//!    summary on the control machine has both hosts' steps.
//! 3. `rolling.yml` deploys a broken N+2 (its readiness never turns green):
//!    only the canary is touched, it ends on N+1 and serving, the play fails
//!    naming it and the failing step.
//!
//! No request of the load fails in any of it.
//!
//! N+1 and N+2 are the package built from this tree, repacked with higher
//! versions (N+2 with a unit drop-in that points the node at a Redis that
//! does not exist, so readiness stays 503): the rollout's mechanics are what
//! is tested, not a change of code between versions.
//!
//! Needs root, `haproxy`, `redis-server`, QEMU and the lab's image (the
//! scripts install and build what is missing) and the Ansible venv of
//! `scripts/deploy-check`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod procs;
use procs::{free_port, until, HaProxy, Load, RedisServer, ROOT};

/// A guest of the lab: its SSH port and the host ports forwarded to its
/// evald listener and agent.
struct Guest {
    name: &'static str,
    ssh: u16,
    http: u16,
    agent: u16,
}

impl Guest {
    fn new(name: &'static str) -> Guest {
        Guest { name, ssh: free_port("127.0.0.1"), http: free_port("127.0.0.1"), agent: free_port("127.0.0.1") }
    }

    fn boot(&self, redis_port: u16) {
        let status = std::process::Command::new(format!("{ROOT}/scripts/vm-lab"))
            .args(["boot", &self.ssh.to_string(), "-m", "1536", "-c", "1"])
            .args(["-f", &format!("{}:8080", self.http), "-f", &format!("{}:8081", self.agent)])
            .args(["-g", &format!("10.0.2.100:6379={redis_port}")])
            .stdout(Stdio::null())
            .status()
            .expect("scripts/vm-lab runs");
        assert!(status.success(), "{} boots: {status}", self.name);
    }

    fn ssh(&self, command: &str) -> String {
        let out = std::process::Command::new(format!("{ROOT}/scripts/vm-lab"))
            .args(["ssh", &self.ssh.to_string(), command])
            .output()
            .expect("scripts/vm-lab ssh runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn version(&self) -> String {
        self.ssh("dpkg-query -W -f='${Version}' evald")
    }

    /// When the service last entered `active` (monotonic µs): changes with
    /// every restart.
    fn started_at(&self) -> String {
        self.ssh("systemctl show -p ActiveEnterTimestampMonotonic --value evald")
    }

    fn halt(&self) {
        let _ =
            std::process::Command::new(format!("{ROOT}/scripts/vm-lab")).args(["halt", &self.ssh.to_string()]).status();
    }
}

/// A failed assertion leaves no guest running.
impl Drop for Guest {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The package of this tree, built by `scripts/package` (a release build
/// that is up to date costs nothing).
fn package() -> PathBuf {
    let out = std::process::Command::new(format!("{ROOT}/scripts/package"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/package runs");
    assert!(out.status.success(), "scripts/package: {}", out.status);
    let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
    assert!(path.ends_with(".deb"), "scripts/package prints the package's path, got {path:?}");
    PathBuf::from(ROOT).join(path)
}

fn run(cmd: &mut std::process::Command) {
    let status = cmd.status().expect("a command runs");
    assert!(status.success(), "{cmd:?}: {status}");
}

/// `deb` repacked as version `version` into `dir`, plus `extra` files
/// (path inside the package, content).
fn repack(deb: &Path, dir: &Path, version: &str, extra: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    let _ = std::fs::remove_dir_all(&tree);
    run(std::process::Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let text: String = text
        .lines()
        .map(|l| if l.starts_with("Version:") { format!("Version: {version}") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&control, text + "\n").expect("control");
    for (path, content) in extra {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(&p, content).expect("extra file");
    }
    let out = dir.join(format!("evald_{version}_amd64.deb"));
    run(std::process::Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "-b"]).arg(&tree).arg(&out));
    out
}

/// The inventory of the lab: the two guests by SSH on loopback, the host as
/// the balancer (HAProxy's Runtime API socket `socket`).
fn inventory(guests: &[Guest; 2], socket: &Path, key: &str) -> String {
    let lab_key = std::env::var("EVALD_VM_LAB_CACHE").unwrap_or_else(|_| "/var/cache/evald-vm-lab".into());
    let mut hosts = String::new();
    for (i, g) in guests.iter().enumerate() {
        hosts.push_str(&format!(
            "        {}:\n          ansible_port: {}\n          evald_haproxy_server: n{}\n",
            g.name,
            g.ssh,
            i + 1
        ));
    }
    format!(
        r#"all:
  vars:
    ansible_become: false
    evald_admin_key: {key}
    evald_haproxy_socket: {socket}
    evald_haproxy_backend: evald
  children:
    evald_nodes:
      vars:
        ansible_host: 127.0.0.1
        ansible_user: root
        ansible_ssh_private_key_file: {lab_key}/ssh/id_ed25519
        ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        evald_listen: 0.0.0.0:8080
        evald_agent_listen: 0.0.0.0:8081
        evald_node_url: http://127.0.0.1:8080
        evald_redis_url: redis://10.0.2.100:6379/
        evald_slots: 2
        evald_drain_window_ms: 3000
        evald_ready_attempts: 40
      hosts:
{hosts}    balancers:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
"#,
        socket = socket.display()
    )
}

/// Runs a playbook of deploy/ansible on the evald nodes only (never on the
/// host: HAProxy and Redis here are the test's own processes); (success,
/// output).
fn playbook(dir: &Path, playbook: &str, deb: &Path, summary: &Path) -> (bool, String) {
    let venv = format!("{ROOT}/target/deploy-venv/bin");
    let out = std::process::Command::new(format!("{venv}/ansible-playbook"))
        .current_dir(format!("{ROOT}/deploy/ansible"))
        .env("PATH", format!("{venv}:{}", std::env::var("PATH").unwrap_or_default()))
        .env("PYTHONWARNINGS", "ignore")
        .env("EVALD_ROLLOUT_SUMMARY", summary)
        .args(["-i"])
        .arg(dir.join("inventory.yml"))
        .arg(playbook)
        .args(["--limit", "evald_nodes"])
        .arg("-e")
        .arg(format!("evald_deb={}", deb.display()))
        .output()
        .expect("ansible-playbook runs (scripts/deploy-check makes the venv)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {playbook} ({})\n{text}", out.status);
    (out.status.success(), text)
}

/// Where the last run's figures and rollout summaries are kept (they are
/// the closing figures of a run; the test's own output is captured).
const KEPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/fleet-lab");

/// Prints a figure and keeps it in `KEPT/figures.txt`.
fn figure(line: String) {
    eprintln!("{line}");
    use std::io::Write as _;
    let _ = std::fs::create_dir_all(KEPT);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(format!("{KEPT}/figures.txt")) {
        let _ = writeln!(f, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolling_playbook_upgrades_a_fleet_and_rolls_a_broken_canary_back_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = package();
    let base = {
        let out = std::process::Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Version").output().expect("dpkg");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (v1, v2, v3) = (format!("{base}+lab1"), format!("{base}+lab2"), format!("{base}+lab3"));
    let n = repack(&deb, dir.path(), &v1, &[]);
    let n1 = repack(&deb, dir.path(), &v2, &[]);
    let broken = repack(
        &deb,
        dir.path(),
        &v3,
        &[(
            "lib/systemd/system/evald.service.d/lab-broken.conf",
            "[Service]\nExecStart=\nExecStart=/usr/bin/evald serve --redis-url redis://127.0.0.1:1/\n",
        )],
    );

    let redis = RedisServer::start(dir.path()).await;
    let redis_port: u16 =
        redis.url().rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("port");
    let guests = [Guest::new("node1"), Guest::new("node2")];
    let started = Instant::now();
    // One after the other: each may install what the lab misses with apt.
    for g in &guests {
        g.boot(redis_port);
    }
    let _ = std::fs::remove_file(format!("{KEPT}/figures.txt"));
    figure(format!("two systemd guests up after {:?}", started.elapsed()));

    let haproxy = HaProxy::start_at(
        &format!("{ROOT}/deploy/haproxy/haproxy.cfg"),
        dir.path(),
        &[
            (format!("127.0.0.1:{}", guests[0].http), guests[0].agent),
            (format!("127.0.0.1:{}", guests[1].http), guests[1].agent),
            (format!("127.0.0.1:{}", free_port("127.0.0.1")), free_port("127.0.0.1")),
        ],
    )
    .await;
    haproxy.api("set server evald/n3 state maint").await.expect("runtime api");
    let socket = dir.path().join("admin.sock");
    std::fs::write(dir.path().join("inventory.yml"), inventory(&guests, &socket, "lab-admin-key")).expect("inventory");

    // N on both nodes.
    let t = Instant::now();
    let (ok, out) = playbook(dir.path(), "site.yml", &n, &dir.path().join("site.md"));
    assert!(ok, "site.yml installs N:\n{out}");
    figure(format!("site.yml (N on both nodes) took {:?}", t.elapsed()));
    for name in ["n1", "n2"] {
        until_up(&haproxy, name).await;
    }
    // A bounded rate: the guests run under emulation.
    let load = Load::start(haproxy.front, 2, Duration::from_millis(100));
    until("the load to run", || async { (load.ok() >= 4).then_some(()) }).await;

    // N to N+1.
    let t = Instant::now();
    let summary = dir.path().join("rollout-n1.md");
    let (ok, out) = playbook(dir.path(), "rolling.yml", &n1, &summary);
    assert!(ok, "rolling.yml deploys N+1:\n{out}");
    figure(format!("rolling.yml N -> N+1 took {:?}; {} requests ok so far", t.elapsed(), load.ok()));
    for g in &guests {
        assert_eq!(g.version(), v2, "{} runs N+1", g.name);
    }
    let text = std::fs::read_to_string(&summary).expect("the summary is kept on the control machine");
    eprintln!("{text}");
    let _ = std::fs::copy(&summary, format!("{KEPT}/rollout-n1.md"));
    for want in
        ["## node1", "## node2", "Drain the node (POST /admin/drain)", "Smoke run of real code on this node alone"]
    {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
    for name in ["n1", "n2"] {
        until_up(&haproxy, name).await;
    }
    let before = load.ok();
    until("the load to go on", || async { (load.ok() >= before + 4).then_some(()) }).await;

    // A broken N+2: only the canary is touched, rolled back, the play fails naming it.
    let node2_started = guests[1].started_at();
    let t = Instant::now();
    let (ok, out) = playbook(dir.path(), "rolling.yml", &broken, &dir.path().join("rollout-broken.md"));
    figure(format!("rolling.yml N+1 -> broken N+2 took {:?}", t.elapsed()));
    let _ = std::fs::copy(dir.path().join("rollout-broken.md"), format!("{KEPT}/rollout-broken.md"));
    assert!(!ok, "the play fails");
    assert!(
        out.contains("evald rollout stopped: host node1 failed at step")
            && out.contains("Readiness gate")
            && out.contains(&format!("rolled back to {v2}")),
        "the failure names the host, the step and the version it went back to:\n{out}"
    );
    assert_eq!(guests[0].version(), v2, "the canary is back on N+1");
    assert_eq!(guests[1].version(), v2, "the other node is untouched");
    assert_eq!(guests[1].started_at(), node2_started, "the other node was not restarted");
    until_up(&haproxy, "n1").await;
    assert_eq!(haproxy.admin_state("n1").await, Some(0), "the canary is back in the balancer");
    let before = load.ok();
    until("the load to go on", || async { (load.ok() >= before + 4).then_some(()) }).await;

    let (done, failures) = load.finish().await;
    figure(format!("batch requests through HAProxy: {done} ok, {} failed", failures.len()));
    assert!(failures.is_empty(), "{} requests failed: {:#?}", failures.len(), &failures[..failures.len().min(10)]);
    drop(guests);
    haproxy.stop().await;
    redis.stop().await;
}

/// Waits until HAProxy has `name` UP and in no administrative drain or
/// maintenance (the lab is slow: a longer bound than [`procs::WAIT`]).
async fn until_up(haproxy: &HaProxy, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if haproxy.status(name).await.as_deref() == Some("UP") && haproxy.admin_state(name).await == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never came UP: {:?}", haproxy.status(name).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
