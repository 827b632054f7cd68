//! End-to-end tests of the `evald` binary: the exact output and exit code of
//! `evald run` (a program of a language, with real runtimes: Python and
//! C) and `evald box` (a bare box) as a user sees them. They run real
//! boxes, so they need root (CI runs as root).

use evald_testkit::uids;
use std::io::{BufRead, Write};
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

const LANGUAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../languages");

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
        .env("EVALD_LANGUAGES", LANGUAGES)
        .env("EVALD_CACHE_DIR", dir.join("cache"))
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
fn box_python_file_with_an_interpreter_prints_its_output() {
    let s = Scratch::new("python");
    s.file("hello.py", "print('hello')\n");
    s.evald(&["box", "hello.py", "--interpreter", "/usr/bin/python3"], b"").assert(0, "hello\n", "");
}

#[test]
fn box_shell_script_with_a_shebang_runs_without_a_language() {
    let s = Scratch::new("shebang");
    s.file("hi.sh", "#!/bin/sh\necho \"hi from $(pwd) as $(id -u)\"\necho oops >&2\n");
    let uid = s.uid_base;
    s.evald(&["box", "hi.sh"], b"").assert(0, &format!("hi from /box as {uid}\n"), "oops\n");
}

#[test]
fn box_stdin_dash_feeds_this_process_stdin() {
    let s = Scratch::new("stdin-dash");
    s.file("cat.sh", "#!/bin/sh\nexec cat\n");
    s.evald(&["box", "cat.sh", "--stdin", "-"], b"line one\nline two\n").assert(0, "line one\nline two\n", "");
}

#[test]
fn box_stdin_file_feeds_the_file() {
    let s = Scratch::new("stdin-file");
    s.file("wc.sh", "#!/bin/sh\nwc -l\n");
    s.file("input.txt", "a\nb\nc\n");
    s.evald(&["box", "wc.sh", "--stdin", "input.txt"], b"").assert(0, "3\n", "");
}

#[test]
fn box_arguments_after_double_dash_reach_the_program() {
    let s = Scratch::new("args");
    s.file("args.py", "import sys\nprint(sys.argv[1:])\n");
    s.evald(&["box", "args.py", "--interpreter", "/usr/bin/python3", "--", "one", "two words", "--json"], b"").assert(
        0,
        "['one', 'two words', '--json']\n",
        "",
    );
}

#[test]
fn box_all_files_are_in_the_workspace() {
    let s = Scratch::new("files");
    s.file("main.sh", "#!/bin/sh\n. ./lib.sh\ngreet world\n");
    s.file("lib.sh", "greet() { echo \"hello, $1\"; }\n");
    s.evald(&["box", "main.sh", "lib.sh"], b"").assert(0, "hello, world\n", "");
}

#[test]
fn box_exit_code_of_the_program_is_evalds_exit_code() {
    let s = Scratch::new("exit");
    s.file("exit3.sh", "#!/bin/sh\necho before\nexit 3\n");
    s.evald(&["box", "exit3.sh"], b"").assert(3, "before\n", "");
}

#[test]
fn box_json_prints_the_whole_outcome() {
    let s = Scratch::new("json");
    s.file("hello.py", "print('hello')\n");
    let out = s.evald(&["box", "hello.py", "--interpreter", "/usr/bin/python3", "--json"], b"");
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
fn box_json_reports_a_limit_without_failing() {
    let s = Scratch::new("json-limit");
    s.file("sleep.sh", "#!/bin/sh\nsleep 5\n");
    let out = s.evald(&["box", "sleep.sh", "--wall-ms", "200", "--json"], b"");
    assert_eq!(out.code, Some(128 + 9), "exit code{out:?}");
    assert_eq!(out.stderr, "", "stderr{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON outcome");
    assert_eq!(v["status"], "time_limit_wall", "{out:?}");
    assert_eq!(v["signal"], 9, "{out:?}");
}

#[test]
fn box_wall_time_limit_kills_and_exits_128_plus_sigkill() {
    let s = Scratch::new("wall");
    s.file("sleep.sh", "#!/bin/sh\necho started\nsleep 5\necho not reached\n");
    s.evald(&["box", "sleep.sh", "--wall-ms", "200"], b"").assert(128 + 9, "started\n", "evald: time_limit_wall\n");
}

#[test]
fn box_a_signal_exits_128_plus_the_signal() {
    let s = Scratch::new("signal");
    s.file("segv.sh", "#!/bin/sh\nkill -SEGV $$\n");
    s.evald(&["box", "segv.sh"], b"").assert(128 + 11, "", "evald: signaled\n");
}

#[test]
fn box_a_missing_interpreter_exits_127() {
    let s = Scratch::new("no-interpreter");
    s.file("x.py", "print(1)\n");
    s.evald(&["box", "x.py", "-l", "/usr/bin/no-such-interpreter"], b"").assert(
        127,
        "",
        "evald: executing the program: No such file or directory (os error 2)\n",
    );
}

#[test]
fn box_a_missing_file_is_evalds_own_error() {
    let s = Scratch::new("missing");
    s.evald(&["box", "no-such-file.py"], b"").assert(
        125,
        "",
        "evald: reading no-such-file.py: No such file or directory (os error 2)\n",
    );
}

#[test]
fn box_bad_limits_are_refused_before_anything_runs() {
    let s = Scratch::new("limits");
    s.file("hello.py", "print('hello')\n");
    let py = ["box", "hello.py", "--interpreter", "/usr/bin/python3"];
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

// `evald run`: programs of languages, as the API runs them.

const C_ARGS: &str = r#"#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("[%s]", argv[i]);
    puts("");
    return argc - 1;
}
"#;

#[test]
fn run_python_by_its_extension_with_arguments_and_the_programs_exit_code() {
    let s = Scratch::new("run-python");
    s.file("hello.py", "import sys\nprint('hello', sys.argv[1:])\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n");
    s.evald(&["run", "hello.py", "--", "one", "two words"], b"").assert(
        3,
        "hello ['one', 'two words']\n",
        "to stderr\n",
    );
}

#[test]
fn run_c_compiles_and_runs_and_the_second_run_comes_from_the_compile_cache() {
    let s = Scratch::new("run-c");
    s.file("main.c", C_ARGS);
    s.evald(&["run", "main.c", "--", "a", "b c"], b"").assert(2, "[a][b c]\n", "");
    let out = s.evald(&["run", "main.c", "--json", "--", "x"], b"");
    assert_eq!(out.code, Some(1), "exit code{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON result");
    assert_eq!(v["compile"]["status"], "ok", "{out:?}");
    assert_eq!(v["compile"]["cached"], true, "the second run is served from the cache{out:?}");
    assert_eq!(v["cases"][0]["stdout"], "[x]\n", "{out:?}");
}

#[test]
fn run_language_by_name_or_alias_as_the_api_resolves_them() {
    let s = Scratch::new("run-alias");
    s.file("prog.txt", "print(6 * 7)\n");
    s.evald(&["run", "prog.txt", "--language", "PY3"], b"").assert(0, "42\n", "");
    s.evald(&["run", "prog.txt", "-l", "python"], b"").assert(0, "42\n", "");
    s.file("two.c", C_ARGS);
    s.evald(&["run", "two.c", "-l", "gcc", "--", "z"], b"").assert(1, "[z]\n", "");
}

#[test]
fn run_stdin_from_a_file_and_from_this_process() {
    let s = Scratch::new("run-stdin");
    s.file("upper.py", "import sys\nsys.stdout.write(sys.stdin.read().upper())\n");
    s.file("input.txt", "from a file\n");
    s.evald(&["run", "upper.py", "--stdin", "input.txt"], b"").assert(0, "FROM A FILE\n", "");
    s.evald(&["run", "upper.py", "--stdin", "-"], b"from a pipe\nline two\n").assert(0, "FROM A PIPE\nLINE TWO\n", "");
    s.evald(&["run", "upper.py"], b"not passed on").assert(0, "", "");
    s.file("cat.c", "#include <stdio.h>\nint main(void){int c;while((c=getchar())!=EOF)putchar(c+1);return 0;}\n");
    s.evald(&["run", "cat.c", "--stdin", "-"], b"HAL").assert(0, "IBM", "");
}

#[test]
fn run_output_and_input_are_streamed_as_they_come() {
    // The program answers each line as it reads it, so the test gets the
    // first answer only if evald passes output on at once, and the program
    // gets the second line only after the test has read that answer.
    let s = Scratch::new("run-stream");
    s.file(
        "chat.py",
        "import sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_evald"))
        .args(["run", "chat.py", "--stdin", "-", "--wall-ms", "20000"])
        .current_dir(&s.dir)
        .env("EVALD_LANGUAGES", LANGUAGES)
        .env("EVALD_CACHE_DIR", s.dir.join("cache"))
        .env("EVALD_STATE_DIR", s.dir.join("state"))
        .env("EVALD_UID_BASE", s.uid_base.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting evald");
    let mut input = child.stdin.take().expect("stdin");
    let mut output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    output.read_line(&mut line).expect("first line");
    assert_eq!(line, "ready\n");
    for word in ["one", "two"] {
        input.write_all(format!("{word}\n").as_bytes()).expect("writing a line");
        input.flush().expect("flush");
        line.clear();
        output.read_line(&mut line).expect("an answer");
        assert_eq!(line, format!("got {word}\n"), "answered before the input ended");
    }
    drop(input);
    let status = child.wait().expect("evald ends");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn run_a_compile_error_exits_121_with_the_compilers_output() {
    let s = Scratch::new("run-compile-error");
    s.file("broken.c", "int main(void) { return 0 }\n");
    let out = s.evald(&["run", "broken.c"], b"");
    assert_eq!(out.code, Some(121), "exit code{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert!(out.stderr.contains("broken.c:1:"), "the compiler's message names the file{out:?}");
    assert!(out.stderr.ends_with("\nevald: compile_error: the compiler failed\n"), "{out:?}");
    let json = s.evald(&["run", "broken.c", "--json"], b"");
    assert_eq!(json.code, Some(121), "{json:?}");
    assert_eq!(json.stderr, "", "--json prints no reason line{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON result");
    assert_eq!((&v["status"], &v["compile"]["status"]), (&"compile_error".into(), &"compile_error".into()));
    assert_eq!(v["cases"], serde_json::json!([]), "{json:?}");
}

#[test]
fn run_limits_and_signals_have_their_own_exit_codes() {
    let s = Scratch::new("run-limits");
    s.file("sleep.py", "import time\nprint('started', flush=True)\ntime.sleep(10)\n");
    s.evald(&["run", "sleep.py", "--wall-ms", "300"], b"").assert(
        124,
        "started\n",
        "evald: time_limit_wall: the program ran longer than 300 ms\n",
    );
    s.file("spin.py", "while True: pass\n");
    s.evald(&["run", "spin.py", "--cpu-ms", "200"], b"").assert(
        124,
        "",
        "evald: time_limit_cpu: the program used more than 200 ms of CPU time\n",
    );
    s.file("segv.c", "#include <signal.h>\nint main(void){raise(SIGSEGV);return 0;}\n");
    s.evald(&["run", "segv.c"], b"").assert(139, "", "evald: runtime_error: the program was killed by SIGSEGV\n");
    s.file("big.py", "x = bytearray(200 << 20)\n");
    s.evald(&["run", "big.py", "--memory", "67108864"], b"").assert(
        123,
        "",
        "evald: memory_limit: the program needed more than 67108864 bytes of memory\n",
    );
    s.file("loud.py", "print('x' * 5000)\n");
    let out = s.evald(&["run", "loud.py", "--output-bytes", "1000"], b"");
    assert_eq!((out.code, out.stdout.len()), (Some(122), 1000), "{out:?}");
    assert_eq!(out.stderr, "evald: output_limit: the program wrote more than 1000 bytes\n", "{out:?}");
}

#[test]
fn run_json_prints_the_native_apis_result() {
    let s = Scratch::new("run-json");
    s.file("hello.py", "print('hello')\n");
    let out = s.evald(&["run", "hello.py", "--json"], b"");
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON result");
    let keys: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["cases", "id", "language", "status", "version"], "{out:?}");
    assert_eq!(v["id"].as_str().map(str::len), Some(32), "{out:?}");
    assert_eq!((&v["language"], &v["status"]), (&"python".into(), &"ok".into()), "{out:?}");
    let case = &v["cases"][0];
    assert_eq!(
        (&case["status"], &case["exit_code"], &case["signal"]),
        (&"ok".into(), &0.into(), &serde_json::Value::Null)
    );
    assert_eq!((&case["stdout"], &case["stderr"]), (&"hello\n".into(), &"".into()), "{out:?}");
    assert!(case["memory_bytes"].as_u64().is_some_and(|b| b > 0), "{out:?}");
    // The same type as the API's answer.
    let _: evald_proto::v1::RunResult = serde_json::from_value(v).expect("a v1 RunResult");
}

#[test]
fn run_refuses_unknown_languages_and_bad_input_with_one_line_and_exit_2() {
    let s = Scratch::new("run-refused");
    s.file("hello.py", "print('hello')\n");
    s.file("notes.xyz", "?\n");
    s.file("Makefile", "all:\n");
    let cases: [(&[&str], &str); 7] = [
        (&["run", "hello.py", "--language", "klingon"], "evald: unknown language \"klingon\" (`evald languages` lists the installed ones)\n"),
        (&["run", "notes.xyz"], "evald: no language has the extension .xyz (of notes.xyz); name one with --language\n"),
        (&["run", "Makefile"], "evald: cannot tell the language of Makefile: it has no extension; name one with --language\n"),
        (&["run", "hello.py", "-l", "/usr/bin/python3"], "evald: unknown language \"/usr/bin/python3\" (`evald languages` lists the installed ones); --language takes a language name, and `evald box FILE --interpreter /usr/bin/python3` runs a file with an interpreter in a bare box\n"),
        (&["run", "missing.py"], "evald: reading missing.py: No such file or directory (os error 2)\n"),
        (&["run", "hello.py", "--wall-ms", "0"], "evald: run wall_ms must be greater than zero\n"),
        (&["run", "hello.py", "--memory", "99999999999"], "evald: run memory_bytes cannot exceed the configured limit of 2147483648\n"),
    ];
    for (args, stderr) in cases {
        s.evald(args, b"").assert(2, "", stderr);
    }
    // A catalogued language whose runtime is missing on this host.
    std::fs::create_dir_all(s.dir.join("catalogue")).expect("a catalogue directory");
    s.file(
        "catalogue/absent.toml",
        "id = \"absent\"\nname = \"Absent\"\naliases = [\"abs\"]\nmain = \"main.abs\"\nrun = [\"/usr/bin/no-such-runtime\", \"{main}\"]\nversion = [\"/usr/bin/no-such-runtime\", \"--version\"]\n[tests.hello]\nsource = \"\"\n",
    );
    s.file("prog.abs", "?\n");
    s.evald(&["--languages-dir", "catalogue", "run", "prog.abs"], b"").assert(
        2,
        "",
        "evald: absent is not installed on this host (`evald languages install absent` installs it)\n",
    );
    assert!(!s.dir.join("state").exists(), "nothing was created");
}
