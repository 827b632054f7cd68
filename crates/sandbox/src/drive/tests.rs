//! The driver against real boxes (needs root, as in CI). Each test makes
//! its own small sandbox (instance `drive-<test>-<pid>`, box users from
//! `evald_testkit::uids::SANDBOX_UNIT`), drives one box on this thread's driver runtime and asserts the
//! exact output and outcome.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;

use super::{block_on, Capture, Control, Sink, Stream};
use crate::{Outcome, RunSpec, Sandbox, SandboxConfig, Status, Stdin};

/// A sandbox of one test, shut down and removed when dropped.
struct TestSandbox {
    sandbox: Sandbox,
    state_dir: std::path::PathBuf,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.sandbox.shutdown();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn sandbox(tag: &str, uid_offset: u32) -> TestSandbox {
    let pid = std::process::id();
    let state_dir = std::path::PathBuf::from(format!("/tmp/evald-drive-{tag}-{pid}"));
    let sandbox = Sandbox::new(SandboxConfig {
        instance: format!("drive-{tag}-{pid}"),
        state_dir: state_dir.clone(),
        uid_base: evald_testkit::uids::SANDBOX_UNIT.base + uid_offset,
        slots: 1,
        ..SandboxConfig::default()
    })
    .unwrap_or_else(|e| panic!("creating the sandbox (needs root): {e}"));
    TestSandbox { sandbox, state_dir }
}

fn sh(script: &str, stdin: Stdin) -> RunSpec {
    let mut spec = RunSpec::new("/bin/sh", vec!["-c".into(), script.into()]);
    spec.stdin = stdin;
    spec
}

/// Records output by stream, and sends a control message once the output
/// so far contains a text.
#[derive(Default)]
struct Script {
    terminal: Vec<u8>,
    capture: Capture,
    /// When the output holds the text, send the messages (once each).
    on: Vec<(&'static str, Vec<Control>)>,
    tx: Option<mpsc::Sender<Control>>,
}

impl Sink for Script {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Terminal => self.terminal.extend_from_slice(bytes),
            _ => self.capture.output(stream, bytes),
        }
        let seen = [&self.terminal[..], &self.capture.stdout[..]].concat();
        let text = String::from_utf8_lossy(&seen).into_owned();
        let Some(tx) = &self.tx else { return };
        for (needle, controls) in &mut self.on {
            if text.contains(*needle) {
                for c in controls.drain(..) {
                    tx.try_send(c).unwrap();
                }
            }
        }
    }
}

/// Drives `spec` with `stdin`, the controls sent up front, and `script`.
fn drive(sandbox: &Sandbox, spec: &RunSpec, stdin: &[u8], controls: Vec<Control>, script: &mut Script) -> Outcome {
    let running = sandbox.spawn(spec).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    for c in controls {
        tx.try_send(c).unwrap();
    }
    script.tx = Some(tx);
    block_on(running.drive(stdin.to_vec(), Some(&mut rx), script)).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn stdin_comes_first_then_control_bytes_in_order_then_eof() {
    let t = sandbox("order", 0);
    let controls = vec![Control::Stdin(b"two\n".to_vec()), Control::Stdin(b"three\n".to_vec()), Control::Eof];
    let mut script = Script::default();
    let o = drive(&t.sandbox, &sh("cat; echo end", Stdin::Pipe), b"one\n", controls, &mut script);
    assert_eq!((o.status, text(&script.capture.stdout)), (Status::Ok, "one\ntwo\nthree\nend\n".into()), "{o:?}");
    // Bytes after the end of input go nowhere.
    let controls = vec![Control::Stdin(b"abc".to_vec()), Control::Eof, Control::Stdin(b"lost".to_vec())];
    let mut script = Script::default();
    let o = drive(&t.sandbox, &sh("wc -c", Stdin::Pipe), b"", controls, &mut script);
    assert_eq!((o.status, text(&script.capture.stdout)), (Status::Ok, "3\n".into()), "{o:?}");
}

#[test]
fn a_closed_control_channel_kills_the_box() {
    let t = sandbox("closed", 10);
    let running = t.sandbox.spawn(&sh("echo started; sleep 100", Stdin::Pipe)).unwrap();
    let (tx, mut rx) = mpsc::channel::<Control>(1);
    drop(tx);
    let mut capture = Capture::default();
    let o = block_on(running.drive(Vec::new(), Some(&mut rx), &mut capture)).unwrap();
    assert_eq!((o.status, o.signal), (Status::Signaled, Some(libc::SIGKILL)), "{o:?}");
    assert!(o.wall_time < Duration::from_secs(5), "{o:?}");
}

#[test]
fn kill_and_signal_reach_the_program() {
    let t = sandbox("signal", 20);
    let mut script = Script { on: vec![("ready", vec![Control::Signal(libc::SIGTERM)])], ..Script::default() };
    let o = drive(&t.sandbox, &sh("echo ready; exec sleep 100", Stdin::Pipe), b"", vec![], &mut script);
    assert_eq!((o.status, o.signal), (Status::Signaled, Some(libc::SIGTERM)), "{o:?}");
    let mut script = Script { on: vec![("ready", vec![Control::Kill])], ..Script::default() };
    let o = drive(&t.sandbox, &sh("echo ready; exec sleep 100", Stdin::Pipe), b"", vec![], &mut script);
    assert_eq!((o.status, o.signal), (Status::Signaled, Some(libc::SIGKILL)), "{o:?}");
}

#[test]
fn resize_changes_the_terminal_size() {
    let t = sandbox("resize", 30);
    let mut script = Script {
        on: vec![("24 80", vec![Control::Resize { rows: 30, cols: 100 }, Control::Stdin(b"\n".to_vec())])],
        ..Script::default()
    };
    let pty = Stdin::Pty { rows: 24, cols: 80 };
    let o = drive(&t.sandbox, &sh("stty size; read x; stty size", pty), b"", vec![], &mut script);
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert_eq!(text(&script.terminal), "24 80\r\n\r\n30 100\r\n");
    assert!(script.capture.stdout.is_empty() && script.capture.stderr.is_empty());
}

#[test]
fn eof_on_a_terminal_is_ctrl_d() {
    let t = sandbox("ctrl-d", 40);
    // ^D at the start of a line is the end of input.
    let controls = vec![Control::Stdin(b"abc\n".to_vec()), Control::Eof];
    let mut script = Script::default();
    let pty = Stdin::Pty { rows: 24, cols: 80 };
    let o = drive(&t.sandbox, &sh("wc -c", pty), b"", controls, &mut script);
    assert_eq!(o.status, Status::Ok, "{o:?}");
    // The terminal echoes the line, then wc counts it.
    assert_eq!(text(&script.terminal), "abc\r\n4\r\n");
}

#[test]
fn output_over_the_cap_keeps_exactly_the_cap_of_that_stream() {
    let t = sandbox("cap", 50);
    let mut spec = sh("echo err >&2; exec head -c 100000 /dev/zero 2>/dev/null", Stdin::Null);
    spec.limits.output_bytes = 1000;
    let mut capture = Capture::default();
    let o = block_on(t.sandbox.spawn(&spec).unwrap().drive(Vec::new(), None, &mut capture)).unwrap();
    assert_eq!(o.status, Status::OutputLimit, "{o:?}");
    assert_eq!((capture.stdout.len(), o.stdout_truncated), (1000, true));
    assert_eq!((text(&capture.stderr), o.stderr_truncated), ("err\n".into(), false));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "the output went to the sink");
}

#[test]
fn a_terminal_counts_once_against_the_cap() {
    let t = sandbox("pty-cap", 60);
    let mut spec = sh("head -c 5000 /dev/zero | tr '\\0' x; head -c 5000 /dev/zero | tr '\\0' y >&2", Stdin::Null);
    spec.stdin = Stdin::Pty { rows: 24, cols: 80 };
    spec.limits.output_bytes = 8000;
    let mut script = Script::default();
    let o = drive(&t.sandbox, &spec, b"", vec![], &mut script);
    assert_eq!((o.status, o.stdout_truncated), (Status::OutputLimit, true), "{o:?}");
    assert_eq!(script.terminal.len(), 8000);
}

#[test]
fn what_a_terminal_holds_at_the_end_is_read() {
    let t = sandbox("pty-end", 70);
    let mut script = Script::default();
    let pty = Stdin::Pty { rows: 24, cols: 80 };
    let o = drive(&t.sandbox, &sh("head -c 30000 /dev/zero | tr '\\0' x", pty), b"", vec![], &mut script);
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert_eq!(script.terminal, vec![b'x'; 30000]);
}

#[test]
fn a_sleeping_program_ends_at_the_wall_limit() {
    let t = sandbox("wall", 80);
    let mut spec = RunSpec::new("/bin/sleep", vec!["100".into()]);
    spec.limits.wall_time = Duration::from_millis(300);
    let mut capture = Capture::default();
    let o = block_on(t.sandbox.spawn(&spec).unwrap().drive(Vec::new(), None, &mut capture)).unwrap();
    assert_eq!(o.status, Status::TimeLimitWall, "{o:?}");
    assert!((Duration::from_millis(300)..Duration::from_secs(3)).contains(&o.wall_time), "{o:?}");
}

#[test]
fn a_program_that_cannot_be_executed_is_exit_127_with_the_reason() {
    let t = sandbox("exec", 90);
    let mut capture = Capture::default();
    let spec = RunSpec::new("/box/missing", vec![]);
    let o = block_on(t.sandbox.spawn(&spec).unwrap().drive(Vec::new(), None, &mut capture)).unwrap();
    assert_eq!((o.status, o.exit_code), (Status::RuntimeError, Some(127)), "{o:?}");
    let reason = "evald: executing the program: No such file or directory (os error 2)\n";
    assert_eq!((text(&capture.stdout), text(&capture.stderr)), (String::new(), reason.into()));
    // On a terminal the reason is terminal output.
    let mut spec = spec;
    spec.stdin = Stdin::Pty { rows: 24, cols: 80 };
    let mut script = Script::default();
    let o = drive(&t.sandbox, &spec, b"", vec![], &mut script);
    assert_eq!(o.exit_code, Some(127), "{o:?}");
    assert_eq!(text(&script.terminal), reason);
}

#[test]
fn run_moves_the_captured_output_into_the_outcome() {
    let t = sandbox("run", 100);
    let mut spec = sh("cat; echo err >&2", Stdin::Bytes(b"in\n".to_vec()));
    spec.limits.output_bytes = 3;
    let o = t.sandbox.run(&spec).unwrap();
    assert_eq!((o.status, text(&o.stdout), text(&o.stderr)), (Status::OutputLimit, "in\n".into(), "err".into()));
    assert_eq!((o.stdout_truncated, o.stderr_truncated), (false, true), "{o:?}");
}

#[test]
fn run_works_on_a_blocking_thread_of_an_async_runtime() {
    let t = sandbox("blocking", 110);
    let sandbox = t.sandbox.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let o = runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || sandbox.run(&sh("echo hi", Stdin::Null)).unwrap()).await
        })
        .unwrap();
    assert_eq!((o.status, text(&o.stdout)), (Status::Ok, "hi\n".into()), "{o:?}");
}
