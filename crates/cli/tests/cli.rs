//! End-to-end tests of the `evald` binary: the exact output and exit code of
//! `evald run` as a user sees them. They run real boxes, so they need root
//! (CI runs as root).

use evald_testkit::uids;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// What one `evald` invocation did.
struct Output {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\ncommand: {}\nexit code: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts the exit code, stdout and stderr exactly.
    fn assert(&self, code: i32, stdout: &str, stderr: &str) {
        assert_eq!(self.code, Some(code), "exit code{self:?}");
        assert_eq!(self.stdout, stdout, "stdout{self:?}");
        assert_eq!(self.stderr, stderr, "stderr{self:?}");
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A scratch directory with the test's program files, removed on drop.
struct Scratch {
    dir: PathBuf,
    /// Box user ids of this test: tests run concurrently, and each box's
    /// RLIMIT_NPROC counts the processes of its uid host-wide.
    uid_base: u32,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evald-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch { dir, uid_base: uids::CLI_RUN.block(n, 8) }
    }

    /// Writes a program file and returns its path.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).expect("writing a test file");
        path
    }

    /// Runs `evald ARGS`, feeding `stdin`.
    fn evald(&self, args: &[&str], stdin: &[u8]) -> Output {
        evald_in(&self.dir, self.uid_base, args, stdin)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn evald_in(dir: &Path, uid_base: u32, args: &[&str], stdin: &[u8]) -> Output {
    let bin = env!("CARGO_BIN_EXE_evald");
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env_remove("EVALD_LOG")
        .env("EVALD_STATE_DIR", dir.join("state"))
        .env("EVALD_UID_BASE", uid_base.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting evald");
    let mut input = child.stdin.take().expect("stdin pipe");
    input.write_all(stdin).expect("writing stdin");
    drop(input);
    let out = child.wait_with_output().expect("waiting for evald");
    Output {
        command: format!("(cd {} && {bin} {})", dir.display(), args.join(" ")),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn version_prints_name_and_version() {
    let s = Scratch::new("version");
    s.evald(&["--version"], b"").assert(0, "evald 0.1.0\n", "");
}

#[test]
fn python_file_with_an_interpreter_prints_its_output() {
    let s = Scratch::new("python");
    s.file("hello.py", "print('hello')\n");
    s.evald(&["run", "hello.py", "--language", "/usr/bin/python3"], b"").assert(0, "hello\n", "");
}

#[test]
fn shell_script_with_a_shebang_runs_without_a_language() {
    let s = Scratch::new("shebang");
    s.file("hi.sh", "#!/bin/sh\necho \"hi from $(pwd) as $(id -u)\"\necho oops >&2\n");
    let uid = s.uid_base;
    s.evald(&["run", "hi.sh"], b"").assert(0, &format!("hi from /box as {uid}\n"), "oops\n");
}

#[test]
fn stdin_dash_feeds_this_process_stdin() {
    let s = Scratch::new("stdin-dash");
    s.file("cat.sh", "#!/bin/sh\nexec cat\n");
    s.evald(&["run", "cat.sh", "--stdin", "-"], b"line one\nline two\n").assert(0, "line one\nline two\n", "");
}

#[test]
fn stdin_file_feeds_the_file() {
    let s = Scratch::new("stdin-file");
    s.file("wc.sh", "#!/bin/sh\nwc -l\n");
    s.file("input.txt", "a\nb\nc\n");
    s.evald(&["run", "wc.sh", "--stdin", "input.txt"], b"").assert(0, "3\n", "");
}

#[test]
fn arguments_after_double_dash_reach_the_program() {
    let s = Scratch::new("args");
    s.file("args.py", "import sys\nprint(sys.argv[1:])\n");
    s.evald(&["run", "args.py", "--language", "/usr/bin/python3", "--", "one", "two words", "--json"], b"").assert(
        0,
        "['one', 'two words', '--json']\n",
        "",
    );
}

#[test]
fn all_files_are_in_the_workspace() {
    let s = Scratch::new("files");
    s.file("main.sh", "#!/bin/sh\n. ./lib.sh\ngreet world\n");
    s.file("lib.sh", "greet() { echo \"hello, $1\"; }\n");
    s.evald(&["run", "main.sh", "lib.sh"], b"").assert(0, "hello, world\n", "");
}

#[test]
fn exit_code_of_the_program_is_evalds_exit_code() {
    let s = Scratch::new("exit");
    s.file("exit3.sh", "#!/bin/sh\necho before\nexit 3\n");
    s.evald(&["run", "exit3.sh"], b"").assert(3, "before\n", "");
}

#[test]
fn json_prints_the_whole_outcome() {
    let s = Scratch::new("json");
    s.file("hello.py", "print('hello')\n");
    let out = s.evald(&["run", "hello.py", "--language", "/usr/bin/python3", "--json"], b"");
    assert_eq!(out.code, Some(0), "exit code{out:?}");
    assert_eq!(out.stderr, "", "stderr{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON outcome");
    assert_eq!(v["status"], "ok", "{out:?}");
    assert_eq!(v["exit_code"], 0, "{out:?}");
    assert_eq!(v["signal"], serde_json::Value::Null, "{out:?}");
    assert_eq!(v["stdout"], "hello\n", "{out:?}");
    assert_eq!(v["stderr"], "", "{out:?}");
    assert_eq!(v["stdout_truncated"], false, "{out:?}");
    assert_eq!(v["process_limit_hit"], false, "{out:?}");
    assert!(v["wall_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{out:?}");
    assert!(v["memory_bytes"].as_u64().is_some_and(|b| b > 0), "{out:?}");
}

#[test]
fn json_reports_a_limit_without_failing() {
    let s = Scratch::new("json-limit");
    s.file("sleep.sh", "#!/bin/sh\nsleep 5\n");
    let out = s.evald(&["run", "sleep.sh", "--wall-ms", "200", "--json"], b"");
    assert_eq!(out.code, Some(128 + 9), "exit code{out:?}");
    assert_eq!(out.stderr, "", "stderr{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON outcome");
    assert_eq!(v["status"], "time_limit_wall", "{out:?}");
    assert_eq!(v["signal"], 9, "{out:?}");
}

#[test]
fn wall_time_limit_kills_and_exits_128_plus_sigkill() {
    let s = Scratch::new("wall");
    s.file("sleep.sh", "#!/bin/sh\necho started\nsleep 5\necho not reached\n");
    s.evald(&["run", "sleep.sh", "--wall-ms", "200"], b"").assert(128 + 9, "started\n", "evald: time_limit_wall\n");
}

#[test]
fn a_signal_exits_128_plus_the_signal() {
    let s = Scratch::new("signal");
    s.file("segv.sh", "#!/bin/sh\nkill -SEGV $$\n");
    s.evald(&["run", "segv.sh"], b"").assert(128 + 11, "", "evald: signaled\n");
}

#[test]
fn a_missing_interpreter_exits_127() {
    let s = Scratch::new("no-interpreter");
    s.file("x.py", "print(1)\n");
    s.evald(&["run", "x.py", "--language", "/usr/bin/no-such-interpreter"], b"").assert(
        127,
        "",
        "evald: executing the program: No such file or directory (os error 2)\n",
    );
}

#[test]
fn a_missing_file_is_evalds_own_error() {
    let s = Scratch::new("missing");
    s.evald(&["run", "no-such-file.py"], b"").assert(
        125,
        "",
        "evald: reading no-such-file.py: No such file or directory (os error 2)\n",
    );
}

#[test]
fn bad_limits_are_refused_before_anything_runs() {
    let s = Scratch::new("limits");
    s.file("hello.py", "print('hello')\n");
    let py = ["run", "hello.py", "--language", "/usr/bin/python3"];
    s.evald(&[&py[..], &["--memory", "0"]].concat(), b"").assert(
        125,
        "",
        "evald: limit memory_bytes must be greater than zero\n",
    );
    s.evald(&[&py[..], &["--wall-ms", "0"]].concat(), b"").assert(
        125,
        "",
        "evald: limit wall_time must be greater than zero\n",
    );
    s.evald(&[&py[..], &["--processes", "100000"]].concat(), b"").assert(
        125,
        "",
        "evald: limit processes exceeds the maximum of 4096\n",
    );
    assert!(!s.dir.join("state").exists(), "no sandbox state was created");
}
