//! Production-host behaviour of real `evald serve` processes: one process
//! per instance name, memory figures of reused box cgroups, and a smoke test
//! of the Piston API with bombs. They run on this host (cgroup v1 here) and,
//! through `scripts/vm-test`, in a guest on Debian 12's stock kernel with a
//! pure cgroup v2 hierarchy.
//!
//! Needs root, the language runtimes (python3, lua5.4, gcc, bash, node) and
//! the `evald` binary built.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

mod procs;
use evald_testkit::uids;
use procs::{evald_binary, free_port, http, until, ROOT, WAIT};

const MIB: f64 = 1024.0 * 1024.0;

struct Node {
    child: Child,
    addr: SocketAddr,
}

fn serve_command(instance: &str, port: u16, uid_base: u32, dir: &Path, slots: u32) -> Command {
    let mut command = Command::new(evald_binary());
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--languages-dir")
        .arg(dir.join("languages"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--instance", instance, "--uid-base", &uid_base.to_string(), "--slots", &slots.to_string()])
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The languages these tests use: a node detects only these at start-up
/// (detecting all 52 takes minutes under emulation, in the v2 guest).
const LANGUAGES: &[&str] = &["bash", "c", "javascript", "lua", "python"];

fn copy_languages(dir: &Path) {
    let to = dir.join("languages");
    std::fs::create_dir_all(&to).expect("languages dir");
    for id in LANGUAGES {
        std::fs::copy(format!("{ROOT}/languages/{id}.toml"), to.join(format!("{id}.toml"))).expect("copy a language");
    }
}

impl Node {
    async fn start(instance: &str, uid_base: u32, dir: &Path, slots: u32) -> Node {
        copy_languages(dir);
        let port = free_port("127.0.0.1");
        let log = std::fs::File::create(dir.join("serve.log")).expect("log file");
        let child =
            serve_command(instance, port, uid_base, dir, slots).stderr(log).spawn().expect("evald serve starts");
        let node = Node { child, addr: format!("127.0.0.1:{port}").parse().expect("addr") };
        let addr = node.addr;
        until("the node to be ready", || async move {
            http(addr, "GET", "/healthz/ready", &[], "").await.filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await;
        node
    }

    /// `POST /api/v2/execute`; the answer's JSON.
    async fn execute(&self, body: Value) -> Value {
        let (status, text) =
            http(self.addr, "POST", "/api/v2/execute", &[], &body.to_string()).await.expect("the node answers");
        assert_eq!(status, 200, "execute answered {status}: {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }
}

fn program(language: &str, file: &str, code: &str) -> Value {
    json!({"language": language, "version": "*", "files": [{"name": file, "content": code}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_of_one_instance_refuses_and_leaves_the_first_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = format!("hosts-{}-one", std::process::id());
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir");
    std::fs::create_dir_all(&b_dir).expect("dir");
    copy_languages(&b_dir);
    let a = Node::start(&instance, uids::CLI_HOSTS.base, &a_dir, 2).await;
    // A run in a box of the first server while the second one starts.
    let mut slow = program("python", "main.py", "import time\ntime.sleep(3)\nprint('survived')\n");
    slow["run_timeout"] = json!(30_000);
    let long_run = {
        let addr = a.addr;
        tokio::spawn(async move {
            let body = slow.to_string();
            http(addr, "POST", "/api/v2/execute", &[], &body).await.expect("the first node answers")
        })
    };
    let addr = a.addr;
    until("the long run to be in a box", || async move {
        let (_, metrics) = http(addr, "GET", "/metrics", &[], "").await?;
        metrics.lines().any(|l| l == "evald_free_slots 1").then_some(())
    })
    .await;

    let second = serve_command(&instance, free_port("127.0.0.1"), uids::CLI_HOSTS.base + 100, &b_dir, 2)
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(WAIT, second).await.expect("the second server ends").expect("it ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "second server: {stderr}");
    let expected = format!(
        "instance \"{instance}\" is already running on this host (pid {}",
        a.child.id().expect("the first node runs")
    );
    assert!(stderr.contains(&expected), "second server's error: {stderr}");
    // It made nothing of its own: no state directory.
    assert!(!b_dir.join("state").exists(), "the second server made its state directory");

    let (status, body) = long_run.await.expect("the run's task");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["run"]["stdout"], "survived\n", "the first server's box was touched: {answer}");
    assert_eq!(answer["run"]["status"], Value::Null, "{answer}");
    let (ready, _) = http(a.addr, "GET", "/healthz/ready", &[], "").await.expect("the first node answers");
    assert_eq!(ready, 200);
}

/// With one slot every run of a node goes through the same slot, so its
/// cgroups are reused wherever the kernel allows it (v1; v2 from 6.12, see
/// docs/security.md): the figures must hold there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_figures_hold_in_reused_cgroups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = format!("hosts-{}-mem", std::process::id());
    let node = Node::start(&instance, uids::CLI_HOSTS.base + 200, dir.path(), 1).await;
    let touch_c = "#include <stdlib.h>\n#include <stdio.h>\nint main(void) {\n  size_t n = 20u << 20;\n  \
                   volatile char *p = malloc(n);\n  for (size_t i = 0; i < n; i += 4096) p[i] = 1;\n  \
                   printf(\"%d\\n\", p[n - 1]);\n  return 0;\n}\n";
    let touch_py = "b = bytearray(20 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint(1)\n";
    let small = [
        program("lua", "main.lua", "print('hi')\n"),
        program("bash", "main.sh", "true\n"),
        program("python", "main.py", "print('hi')\n"),
        program("c", "main.c", "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"),
        program("javascript", "main.js", "console.log('hi')\n"),
    ];
    let mut figures = Vec::new();
    let mut mib_of = |answer: &Value| {
        let bytes = answer["run"]["memory"].as_u64().expect("memory");
        figures.push(format!("{} {bytes}", answer["language"]));
        bytes as f64 / MIB
    };
    for round in 0..3 {
        // Small programs first: none reports 0 (the cgroup may charge them
        // nothing new; their resident set is the figure then).
        let mut python_hello = 0.0;
        for body in &small {
            let answer = node.execute(body.clone()).await;
            assert_eq!(answer["run"]["status"], Value::Null, "round {round}: {answer}");
            let mib = mib_of(&answer);
            assert!(mib > 0.0, "round {round}: a program that ran reported 0 bytes: {answer}");
            if answer["language"] == "python" {
                python_hello = mib;
            }
        }
        let answer = node.execute(program("c", "main.c", touch_c)).await;
        assert_eq!(answer["run"]["status"], Value::Null, "round {round}: {answer}");
        let mib = mib_of(&answer);
        assert!((20.0..=26.0).contains(&mib), "round {round}: 20 MiB touched, {mib:.2} MiB reported: {answer}");
        // Python's own interpreter comes on top: 20 MiB more than its hello
        // world, give or take a MiB of the interpreter's own pages.
        let answer = node.execute(program("python", "main.py", touch_py)).await;
        assert_eq!(answer["run"]["status"], Value::Null, "round {round}: {answer}");
        let more = mib_of(&answer) - python_hello;
        assert!((19.0..=26.0).contains(&more), "round {round}: 20 MiB touched, {more:.2} MiB above hello: {answer}");
    }
    println!("figures: {figures:?}");
}

/// Five languages, an OOM bomb and a fork bomb through the Piston API, then
/// the node still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_languages_and_two_bombs_through_the_piston_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = format!("hosts-{}-smoke", std::process::id());
    let node = Node::start(&instance, uids::CLI_HOSTS.base + 300, dir.path(), 2).await;
    let cases = [
        ("python", "main.py", "print(6 * 7)\n"),
        ("javascript", "main.js", "console.log(6 * 7)\n"),
        ("c", "main.c", "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 6 * 7); return 0; }\n"),
        ("lua", "main.lua", "print(6 * 7)\n"),
        ("bash", "main.sh", "echo $((6 * 7))\n"),
    ];
    for (language, file, code) in cases {
        let answer = node.execute(program(language, file, code)).await;
        assert_eq!(answer["run"]["stdout"], "42\n", "{language}: {answer}");
        assert_eq!(answer["run"]["code"], 0, "{language}: {answer}");
    }

    let mut oom = program("python", "main.py", "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n");
    oom["run_memory_limit"] = json!(64 << 20);
    // Time enough for the memory limit to come first under emulation too.
    oom["run_timeout"] = json!(30_000);
    oom["run_cpu_time"] = json!(30_000);
    let answer = node.execute(oom).await;
    assert_eq!(answer["run"]["status"], "SG", "{answer}");
    assert_eq!(answer["run"]["message"], "Memory limit exceeded", "{answer}");

    // Every process forks until the pids limit refuses; each then fails.
    let fork_bomb = "import os\nwhile True:\n    os.fork()\n";
    let started = std::time::Instant::now();
    let mut bomb = program("python", "main.py", fork_bomb);
    bomb["run_timeout"] = json!(30_000);
    bomb["run_cpu_time"] = json!(30_000);
    let answer = node.execute(bomb).await;
    assert_eq!(answer["run"]["status"], "RE", "{answer}");
    assert_eq!(answer["run"]["code"], 1, "{answer}");
    assert!(answer["run"]["stderr"].as_str().unwrap_or("").contains("BlockingIOError"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(60), "the fork bomb took {:?}", started.elapsed());

    let answer = node.execute(program("python", "main.py", "print('still here')\n")).await;
    assert_eq!(answer["run"]["stdout"], "still here\n", "{answer}");
}
