//! What a new user meets first, through the real binary and the real
//! scripts: log lines without colour codes unless on a terminal, the 413 of
//! an oversized body reaching a client that writes its whole body first
//! (Python's urllib), and the README's two commands (see
//! `the_readmes_commands_*` for what they cover and what they cannot).
//! The `evald serve` tests need root (the sandbox), as CI runs them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use evald_testkit::uids;

const BIN: &str = env!("CARGO_BIN_EXE_evald");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("evald-first-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("languages")).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `evald serve` of test `n` (its box user ids from the top of the CLI_RUN
/// range, which `cli.rs` fills from the bottom), with an empty catalogue:
/// nothing here runs code.
fn serve_command(dir: &Path, n: u32, listen: &str, extra: &[&str]) -> Vec<String> {
    let uid_base = uids::CLI_RUN.block(110 + n, 8);
    let mut args: Vec<String> = [
        BIN,
        "serve",
        "--listen",
        listen,
        "--slots",
        "1",
        "--instance",
        &format!("first-{}-{n}", std::process::id()),
        "--uid-base",
        &uid_base.to_string(),
        "--languages-dir",
        &dir.join("languages").display().to_string(),
        "--state-dir",
        &dir.join("state").display().to_string(),
        "--data-dir",
        &dir.join("data").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `evald serve` on an address already taken, so that it logs its
/// start-up lines and then fails: under `script(1)` (a terminal) when
/// `terminal`, else with stderr on a pipe. Returns what it wrote.
fn serve_until_it_fails(n: u32, terminal: bool, env: &[(&str, &str)], extra: &[&str]) -> String {
    let dir = Scratch::new(&format!("log-{n}"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let argv = serve_command(&dir.0, n, &addr, extra);
    let mut command = if terminal {
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &argv.join(" "), "/dev/null"]);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let out = command
        .env_remove("NO_COLOR")
        .env("EVALD_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running evald serve");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(125), "the taken address fails the server: {text}");
    assert!(text.contains("languages detected"), "a log line was written: {text}");
    text
}

#[test]
fn log_lines_are_coloured_only_on_a_terminal_without_no_color() {
    let piped = serve_until_it_fails(0, false, &[], &[]);
    assert!(!piped.contains('\x1b'), "no escape byte when stderr is a pipe: {piped:?}");
    let terminal = serve_until_it_fails(1, true, &[], &[]);
    assert!(terminal.contains("\x1b["), "colour on a terminal: {terminal:?}");
    let no_color = serve_until_it_fails(2, true, &[("NO_COLOR", "1")], &[]);
    assert!(!no_color.contains('\x1b'), "NO_COLOR is respected: {no_color:?}");
}

#[test]
fn json_log_lines_are_json_on_a_pipe_and_on_a_terminal() {
    for (n, terminal) in [(3, false), (4, true)] {
        let out = serve_until_it_fails(n, terminal, &[], &["--log-json"]);
        assert!(!out.contains('\x1b'), "{out:?}");
        let logs: Vec<serde_json::Value> =
            out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert!(logs.iter().any(|v| v["fields"]["message"] == "languages detected" && v["level"] == "INFO"), "{out:?}");
    }
}

/// A running `evald serve`, stopped (SIGTERM) on drop.
struct Server {
    child: Child,
    addr: String,
    _dir: Scratch,
}

impl Server {
    fn start(n: u32) -> Server {
        let dir = Scratch::new(&format!("serve-{n}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let addr = format!("127.0.0.1:{port}");
        let argv = serve_command(&dir.0, n, &addr, &["--log-json"]);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("EVALD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting evald serve");
        // Ready when it logs `serving`.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines.next().expect("evald serve ended before serving").expect("a log line");
            if line.contains("\"serving\"") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr, _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

#[test]
fn python_urllib_sees_the_413_of_an_oversized_body() {
    let server = Server::start(5);
    // urllib writes the whole body before reading the answer; 32 MiB is
    // four times the default limit, far beyond what socket buffers hold.
    let client = r#"
import sys, urllib.request, urllib.error
body = b" " * (32 << 20)
request = urllib.request.Request("http://%s/api/v1/runs" % sys.argv[1], data=body,
                                 headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(request)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;
    let out = Command::new("python3").args(["-c", client, &server.addr]).output().expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "413 {\"error\":{\"code\":\"payload_too_large\",\"message\":\"the request body is larger than the configured maximum\"}}\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
