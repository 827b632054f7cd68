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

// The README's two commands. What these tests cannot cover, and why: a
// real run of `scripts/setup` on a fresh Debian 12 machine (it needs a
// machine of its own with the package mirrors, installs about 4 GB, and
// would change this one's packages), rustup's download, a real sudo
// (password prompt, sudoers; sudo is stood in for by a script that prints
// how it was called), and `scripts/serve` staying up (it is `exec evald
// serve`, which the tests above start directly). `.ci/run` does run the real
// `scripts/setup` and then `scripts/test` on a fresh machine.

/// The commands of the README's first two `sh` blocks.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks.truncate(2);
    blocks
}

#[test]
fn the_readmes_commands_name_executable_scripts() {
    let commands = readme_commands();
    assert_eq!(commands, ["scripts/setup && scripts/serve", "scripts/test"], "the README's two commands");
    for command in &commands {
        for part in command.split("&&") {
            let script = root().join(part.split_whitespace().next().expect("a command"));
            let mode = std::fs::metadata(&script).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
            assert!(mode.is_ok_and(|m| m & 0o111 == 0o111), "{} is an executable script", script.display());
        }
    }
}

/// A directory for PATH holding only what the scripts need before they
/// become root (`bash`, `dirname`, `id`), and `sudo` if given.
fn bare_path(dir: &Path, sudo: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for tool in ["bash", "dirname", "id"] {
        let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.expect("the tool exists"), bin.join(tool)).expect("symlink");
    }
    if let Some(script) = sudo {
        let path = bin.join("sudo");
        std::fs::write(&path, script).expect("writing sudo");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// Runs `script ARGS` as nobody in an empty environment whose PATH is `bin`.
fn as_nobody(bin: &Path, script: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i"])
        .arg(format!("PATH={}", bin.display()))
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("setpriv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_readmes_scripts_run_themselves_through_sudo_and_refuse_clearly_without_it() {
    let dir = Scratch::new("sudo");
    let without = bare_path(&dir.0.join("without"), None);
    let with = bare_path(&dir.0.join("with"), Some("#!/bin/sh\necho \"sudo $*\"\n"));
    for script in ["scripts/setup", "scripts/serve", "scripts/test"] {
        assert_eq!(
            as_nobody(&without, script, &["--check"]),
            (
                Some(1),
                String::new(),
                format!("{script}: needs root (the sandbox and the package installs need it) and sudo is not installed: run it as root, e.g. su -c {script}\n")
            ),
            "a user without sudo"
        );
        assert_eq!(
            as_nobody(&with, script, &["--check"]),
            (Some(0), format!("sudo -- {}/{script} --check\n", root().display()), String::new()),
            "a user with sudo: the script runs itself again through sudo, with its arguments"
        );
    }
}

fn installed_packages() -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${Package} ${Version} ${Status}\n"]).output();
    String::from_utf8_lossy(&out.expect("dpkg-query").stdout).into_owned()
}

#[test]
fn setup_check_in_an_empty_environment_reports_its_plan_and_changes_nothing() {
    let script = std::fs::read_to_string(root().join("scripts/setup")).expect("scripts/setup");
    let packages = script
        .lines()
        .find_map(|l| l.strip_prefix("PACKAGES="))
        .map(|p| p.trim_matches('"').to_owned())
        .expect("a PACKAGES= line");
    let before = installed_packages();
    let out = Command::new("env")
        .args(["-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        .arg(root().join("scripts/setup"))
        .arg("--check")
        .output()
        .expect("scripts/setup --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("packages: {packages}"));
    assert!(lines[1].starts_with("missing packages: "), "{stdout}");
    assert!(lines[2].starts_with("rust: "), "{stdout}");
    assert_eq!(
        &lines[3..],
        [
            "would run: apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 update (again every 10 s for up to 10 minutes while it fails)",
            "would run: apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 install -y --no-install-recommends $PACKAGES",
            "would run: cargo build --release",
            "would run: target/release/evald languages install --all",
            "would run: npm ci --no-audit --no-fund (in tests/browser)",
        ]
    );
    assert_eq!(installed_packages(), before, "no package changed");
    let usage = Command::new(root().join("scripts/setup")).arg("--bogus").output().expect("scripts/setup --bogus");
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&usage.stderr), "usage: scripts/setup [--check]\n");
}
