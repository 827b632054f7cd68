//! End-to-end escape tests of the sandbox (root only; CI runs them as root).
//!
//! Each test runs one attack in a real box and asserts (a) the exact verdict
//! the user sees — status, exit code or signal, and the specific errno lines
//! the attack program prints — and (b) the host invariants afterwards (see
//! `common/mod.rs`): no process of a box user, no cgroup, mount or listening
//! socket left, canaries untouched, no descriptor leaked, all slots free.
//!
//! Needs on the host: gcc with a static libc (libc6-dev), python3, a JDK
//! (`java`), Go (`go`).

mod common;

use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_stdout, attack, c_spec, harness, limits, py_spec, run_attack, sandbox, sh_spec, show};
use evald_sandbox::{
    Capture, Control, FileSpec, Network, RunSpec, SandboxError, Sink, SpecError, Status, Stdin, Stream, WorkspaceError,
};

const MIB: u64 = 1 << 20;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn stdout_of(o: &evald_sandbox::Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_of(o: &evald_sandbox::Outcome) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------- processes

#[test]
fn fork_bomb_in_c_hits_the_process_limit_and_ends_at_the_wall_limit() {
    let mut spec = c_spec("forkbomb", &[]);
    // CPU cannot run out before the wall clock: 2 cores x 2 s < 60 s.
    spec.limits = limits(secs(2), secs(60));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitWall, "{}", show(&o));
    assert!(o.process_limit_hit, "{}", show(&o));
    assert_stdout(&o, "fork: EAGAIN\n");
}

#[test]
fn fork_bomb_in_shell_hits_the_process_limit_and_ends_at_the_wall_limit() {
    let mut spec = sh_spec("exec 2>/dev/null; b() { b | b & }; b; exec sleep 1000");
    spec.limits = limits(secs(2), secs(60));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitWall, "{}", show(&o));
    assert!(o.process_limit_hit, "{}", show(&o));
}

#[test]
fn thread_bomb_is_stopped_by_the_process_limit() {
    let mut spec = c_spec("threadbomb", &[]);
    spec.limits.processes = 32;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert!(o.process_limit_hit, "{}", show(&o));
    // 32 tasks in the box's cgroup: its init, the main thread and 30 more.
    assert_stdout(&o, "pthread_create: EAGAIN after 30 threads\n");
}

#[test]
fn daemon_that_double_forks_and_setsids_dies_with_the_run() {
    let o = run_attack(&c_spec("daemon", &[]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_eq!(o.exit_code, Some(0), "{}", show(&o));
    assert_stdout(&o, "daemonized\n");
}

#[test]
fn daemon_in_shell_with_detached_stdio_dies_with_the_run() {
    let spec = sh_spec("setsid sh -c 'trap \"\" HUP TERM; exec sleep 1000' </dev/null >/dev/null 2>&1 & echo started");
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "started\n");
}

// ------------------------------------------------------------------- memory

#[test]
fn memory_bomb_in_c_is_a_memory_limit() {
    let mut spec = c_spec("membomb", &[]);
    spec.limits.memory_bytes = 64 * MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::MemoryLimit, "{}", show(&o));
    assert!(o.memory_bytes <= 64 * MIB, "{}", show(&o));
    assert_stdout(&o, "");
}

#[test]
fn memory_bomb_in_python_is_a_memory_limit() {
    let mut spec = py_spec("blocks = []\nwhile True:\n    blocks.append(b'x' * (1 << 20))\n");
    spec.limits.memory_bytes = 64 * MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::MemoryLimit, "{}", show(&o));
    assert!(o.memory_bytes <= 64 * MIB, "{}", show(&o));
}

// --------------------------------------------------------------------- disk

#[test]
fn disk_fill_of_box_tmp_and_shm_is_enospc_within_the_memory_limit() {
    let mut spec = c_spec("diskfill", &["/box", "/tmp", "/dev/shm", "/"]);
    spec.limits.disk_bytes = 8 * MIB;
    spec.limits.memory_bytes = 64 * MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "/box: ENOSPC\n/tmp: ENOSPC\n/dev/shm: ENOSPC\n/: open EROFS\n");
    // The three full tmpfs (charged to the box) stay below the memory limit.
    assert!(o.memory_bytes < 64 * MIB, "{}", show(&o));
}

#[test]
fn disk_fill_in_shell_reports_no_space() {
    let mut spec = sh_spec("head -c 100000000 /dev/zero > /tmp/fill; echo \"head=$?\"");
    spec.limits.disk_bytes = 8 * MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "head=1\n");
    assert!(stderr_of(&o).contains("No space left on device"), "{}", show(&o));
}

#[test]
fn file_size_limit_kills_with_sigxfsz() {
    let mut spec = c_spec("fsize", &[]);
    spec.limits.file_size_bytes = MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Signaled, "{}", show(&o));
    assert_eq!(o.signal, Some(libc::SIGXFSZ), "{}", show(&o));
}

#[test]
fn file_size_limit_with_sigxfsz_ignored_is_efbig_at_the_limit() {
    let mut spec = c_spec("fsize", &["ignore"]);
    spec.limits.file_size_bytes = MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "write: EFBIG after 1048576 bytes\n");
}

// ------------------------------------------------------------------- output

#[test]
fn stdout_flood_is_an_output_limit_keeping_exactly_the_limit() {
    let mut spec = c_spec("flood", &["stdout"]);
    spec.limits.output_bytes = 64 * 1024;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::OutputLimit, "{}", show(&o));
    assert!(o.stdout_truncated && !o.stderr_truncated, "{}", show(&o));
    assert_eq!(o.stdout.len(), 64 * 1024, "{}", show(&o));
    assert!(o.stdout.iter().all(|&b| b == b'x'), "{}", show(&o));
}

#[test]
fn stderr_flood_is_an_output_limit_keeping_exactly_the_limit() {
    let mut spec = c_spec("flood", &["stderr"]);
    spec.limits.output_bytes = 10_000;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::OutputLimit, "{}", show(&o));
    assert!(o.stderr_truncated && !o.stdout_truncated, "{}", show(&o));
    assert_eq!(o.stderr.len(), 10_000, "{}", show(&o));
}

#[test]
fn python_print_flood_is_an_output_limit() {
    let mut spec = py_spec("import sys\nwhile True:\n    sys.stdout.write('y' * 4096)\n");
    spec.limits.output_bytes = 100_000;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::OutputLimit, "{}", show(&o));
    assert!(o.stdout_truncated, "{}", show(&o));
    assert_eq!(o.stdout.len(), 100_000, "{}", show(&o));
}

// --------------------------------------------------------------------- time

#[test]
fn cpu_loop_in_c_is_a_cpu_time_limit() {
    let mut spec = c_spec("spin", &[]);
    spec.limits = limits(secs(60), secs(1));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitCpu, "{}", show(&o));
}

#[test]
fn cpu_loop_in_shell_is_a_cpu_time_limit() {
    let mut spec = sh_spec("while :; do :; done");
    spec.limits = limits(secs(60), secs(1));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitCpu, "{}", show(&o));
}

#[test]
fn sleep_is_a_wall_time_limit() {
    let mut spec = RunSpec::new("sleep", vec!["1000".into()]);
    spec.limits = limits(secs(1), secs(5));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitWall, "{}", show(&o));
}

#[test]
fn read_blocked_on_a_fifo_is_a_wall_time_limit() {
    let mut spec = sh_spec("mkfifo /tmp/never && exec cat /tmp/never");
    spec.limits = limits(secs(1), secs(5));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::TimeLimitWall, "{}", show(&o));
}

#[test]
fn read_of_empty_or_null_stdin_is_end_of_file_not_a_hang() {
    for stdin in [Stdin::Bytes(Vec::new()), Stdin::Null] {
        let mut spec = sh_spec("if read line; then echo \"line=$line\"; else echo eof; fi");
        spec.stdin = stdin.clone();
        spec.limits = limits(secs(10), secs(5));
        let o = run_attack(&spec);
        assert_eq!(o.status, Status::Ok, "{stdin:?}\n{}", show(&o));
        assert_stdout(&o, "eof\n");
    }
}

#[test]
fn cpu_time_counts_every_process_of_the_box() {
    let mut spec = c_spec("multicpu", &[]);
    spec.limits = limits(secs(30), secs(20));
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "children: 4\n");
    // Each child measured 0.3 s of its own CPU time: 1.2 s together, far
    // more than one process's share.
    assert!(o.cpu_time >= Duration::from_millis(1150), "{}", show(&o));
}

// ------------------------------------------------------------------ network

/// A non-loopback IPv4 address of the host, if it has one.
fn host_ipv4() -> Option<String> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

fn network_attack(network: Network, expected_connect: &str, expected_connect6: &str, expected_self: &str) {
    let attack = attack();
    let listener = TcpListener::bind("0.0.0.0:0").expect("host listener");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let port = listener.local_addr().expect("address").port().to_string();
    let host_ip = host_ipv4();
    let mut args = vec![port.as_str()];
    if let Some(ip) = &host_ip {
        args.push(ip);
    }
    let mut spec = c_spec("net", &args);
    spec.network = network;
    let o = sandbox().run(&spec).expect("run");
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host listener got a connection: {accepted:?}\n{}",
        show(&o)
    );
    drop(listener);
    attack.finish(&show(&o));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    let mut expected = format!("connect 127.0.0.1: {expected_connect}\nconnect ::1: {expected_connect6}\n");
    if host_ip.is_some() {
        expected += "connect host: ENETUNREACH\n";
    }
    expected += &format!(
        "self: {expected_self}\nudp 192.0.2.1: ENETUNREACH\nsocket AF_NETLINK: EPERM\nsocket AF_PACKET: EPERM\n\
         socket AF_VSOCK: EPERM\n"
    );
    assert_stdout(&o, &expected);
}

#[test]
fn network_none_cannot_reach_a_host_listener() {
    // With `lo` down, ::1 is not even an address of the box.
    network_attack(Network::None, "ENETUNREACH", "EADDRNOTAVAIL", "ENETUNREACH");
}

#[test]
fn network_loopback_reaches_only_its_own_loopback() {
    network_attack(Network::Loopback, "ECONNREFUSED", "ECONNREFUSED", "OK");
}

#[test]
fn dns_lookup_fails_without_resolv_conf_or_network() {
    let spec = py_spec(
        "import os, socket\n\
         print('resolv.conf:', os.path.exists('/etc/resolv.conf'))\n\
         try:\n    socket.getaddrinfo('example.com', 80)\n    print('resolved')\n\
         except socket.gaierror as e:\n    print('gaierror:', e.errno)\n",
    );
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, &format!("resolv.conf: False\ngaierror: {}\n", libc::EAI_AGAIN));
}

// ---------------------------------------------------------------- cross-box

/// Box A sets up an abstract unix socket, a loopback listener and files in
/// /tmp and /dev/shm, proves it can reach them itself, says `ready` and
/// waits for its stdin to close.
const CROSS_A: &str = r#"
import socket, sys
u = socket.socket(socket.AF_UNIX)
u.bind("\0evald-escape-cross")
u.listen(8)
t = socket.socket()
t.bind(("127.0.0.1", 5555))
t.listen(8)
for path in ("/tmp/evald-cross", "/dev/shm/evald-cross", "/box/evald-cross"):
    open(path, "w").write("secret of box A")
c = socket.socket(socket.AF_UNIX)
c.connect("\0evald-escape-cross")
print("self unix: OK")
socket.create_connection(("127.0.0.1", 5555)).close()
print("self tcp: OK")
print("ready", flush=True)
sys.stdin.read()
print("done")
"#;

/// Box B looks for all of A's resources, then signals every process it can.
const CROSS_B: &str = r#"
import errno, os, signal, socket
def attempt(what, f):
    try:
        f()
        print(what + ": OK")
    except OSError as e:
        print(what + ": " + errno.errorcode[e.errno])
attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("\0evald-escape-cross"))
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", 5555)).close())
for path in ("/tmp/evald-cross", "/dev/shm/evald-cross", "/box/evald-cross"):
    attempt(path, lambda: open(path).read())
print("pids:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("kill -1", lambda: os.kill(-1, signal.SIGKILL))
"#;

/// A sink that keeps a box's output and says once when its stdout holds a
/// line.
struct Until {
    capture: Capture,
    line: &'static [u8],
    seen: Option<std::sync::mpsc::Sender<()>>,
}

impl Sink for Until {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        self.capture.output(stream, bytes);
        if self.capture.stdout.windows(self.line.len()).any(|w| w == self.line) {
            if let Some(seen) = self.seen.take() {
                let _ = seen.send(());
            }
        }
    }
}

#[test]
fn concurrent_boxes_cannot_reach_each_other() {
    let attack = attack();
    let mut a = py_spec(CROSS_A);
    a.network = Network::Loopback;
    a.stdin = Stdin::Pipe;
    a.limits = limits(secs(30), secs(10));
    let running = sandbox().spawn(&a).expect("spawning box A");
    let (control, mut requests) = tokio::sync::mpsc::channel(4);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Box A is driven on a thread of its own (with a runtime of its own,
    // gone with the thread); box B runs on this thread once A is ready.
    // The control sender lives until A's input is to end (a closed channel
    // would kill A).
    let driver = std::thread::spawn(move || {
        let mut sink = Until { capture: Capture::default(), line: b"ready\n", seen: Some(ready_tx) };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let mut outcome = runtime.block_on(running.drive(Vec::new(), Some(&mut requests), &mut sink));
        outcome.stdout = sink.capture.stdout;
        outcome.stderr = sink.capture.stderr;
        outcome
    });
    // A ended without getting ready: the sender is gone.
    let ready = ready_rx.recv_timeout(secs(30)).is_ok();
    let b = ready.then(|| {
        let mut b = py_spec(CROSS_B);
        b.network = Network::Loopback;
        sandbox().run(&b).expect("running box B")
    });
    // The end of A's input: it prints "done" and exits.
    let _ = control.blocking_send(Control::Eof);
    let outcome_a = driver.join().expect("box A's driver");
    drop(control);
    let context = format!("box A: {}\nbox B: {}", show(&outcome_a), b.as_ref().map_or("not run".into(), show));
    attack.finish(&context);

    assert!(ready, "box A never got ready\n{context}");
    let b = b.expect("box B ran");
    assert_eq!(b.status, Status::Ok, "{context}");
    assert_stdout(
        &b,
        "unix: ECONNREFUSED\ntcp: ECONNREFUSED\n/tmp/evald-cross: ENOENT\n/dev/shm/evald-cross: ENOENT\n\
         /box/evald-cross: ENOENT\npids: [1, 2]\nkill -1: ESRCH\n",
    );
    assert_eq!(outcome_a.status, Status::Ok, "{context}");
    assert_stdout(&outcome_a, "self unix: OK\nself tcp: OK\nready\ndone\n");
}

// ---------------------------------------------------------- host file system

/// What a box user gets from opening a root-only file of /proc, which some
/// kernels (like this project's VMs) do not have at all.
fn root_only_proc_file(path: &str) -> &'static str {
    if std::path::Path::new(path).exists() {
        "EACCES"
    } else {
        "ENOENT"
    }
}

#[test]
fn host_files_are_not_visible_or_readable() {
    let h = harness();
    let canary = h.canary_dir.join("secret");
    let state_canary = h.state_dir.join("canary");
    let paths = [
        "/etc/shadow",
        "/etc/resolv.conf",
        "/root",
        "/home",
        // /var itself may exist: GHC's package database is bound at
        // /var/lib/ghc. Nothing else of the host's /var is there.
        "/var/log",
        "/var/lib/dpkg",
        "/run",
        "/proc/1/environ",
        "/proc/1/root/etc",
        "/proc/kcore",
        canary.to_str().expect("utf-8"),
        state_canary.to_str().expect("utf-8"),
    ];
    let o = run_attack(&c_spec("files", &paths));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    let expected = format!(
        "read /etc/shadow: ENOENT\nread /etc/resolv.conf: ENOENT\nread /root: ENOENT\nread /home: ENOENT\n\
         read /var/log: ENOENT\nread /var/lib/dpkg: ENOENT\nread /run: ENOENT\nread /proc/1/environ: EACCES\nread /proc/1/root/etc: EACCES\n\
         read /proc/kcore: {}\nread {}: ENOENT\nread {}: ENOENT\n\
         environ: HOME=/box LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin\n",
        root_only_proc_file("/proc/kcore"),
        canary.display(),
        state_canary.display()
    );
    assert_stdout(&o, &expected);
}

#[test]
fn etc_holds_only_the_box_files_and_read_only_binds() {
    let o = run_attack(&sh_spec("ls /etc; echo --; cut -d: -f1,3 /etc/passwd"));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    let out = stdout_of(&o);
    let (listing, users) = out.split_once("--\n").expect("separator");
    for entry in listing.lines() {
        let allowed = ["passwd", "group", "hosts"].contains(&entry)
            || evald_sandbox::DEFAULT_READ_ONLY_BINDS.iter().any(|b| b.strip_prefix("/etc/") == Some(entry));
        assert!(allowed, "unexpected /etc/{entry}\n{}", show(&o));
    }
    // The box's own passwd: root, nobody and box users only, never the
    // host's accounts.
    for user in users.lines() {
        let (name, uid) = user.split_once(':').expect("name:uid");
        let uid: u32 = uid.parse().expect("numeric uid");
        let allowed = (name == "root" && uid == 0) || uid == 65534 || common::BOX_UIDS.contains(&uid);
        assert!(allowed, "unexpected account {user}\n{}", show(&o));
    }
}

#[test]
fn writes_outside_the_workspace_are_refused() {
    let args = [
        "/evil",
        "/usr/evil",
        "/usr/bin/su",
        "/etc/passwd",
        "/etc/evil",
        "/dev/evil",
        "/proc/sys/kernel/hostname",
        "/proc/sysrq-trigger",
        "mkdir:/usr/lib/evil",
        "/dev/null",
        "/box/ok",
        "/tmp/ok",
        "/dev/shm/ok",
    ];
    let o = run_attack(&c_spec("writes", &args));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        &format!(
            "write /evil: EROFS\nwrite /usr/evil: EROFS\nwrite /usr/bin/su: EACCES\nwrite /etc/passwd: EACCES\n\
         write /etc/evil: EROFS\nwrite /dev/evil: EROFS\nwrite /proc/sys/kernel/hostname: EACCES\n\
         write /proc/sysrq-trigger: {}\nmkdir /usr/lib/evil: EROFS\nwrite /dev/null: OK\nwrite /box/ok: OK\n\
         write /tmp/ok: OK\nwrite /dev/shm/ok: OK\n",
            root_only_proc_file("/proc/sysrq-trigger")
        ),
    );
}

#[test]
fn hard_links_to_host_files_cross_devices() {
    let o = run_attack(&c_spec("links", &["fresh"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "link /usr/bin/su /box/su: EXDEV\nlink /etc/passwd /box/passwd: EXDEV\nlink /usr/bin/su /tmp/su: EXDEV\n\
         symlink /etc/passwd /box/out: OK\nmkfifo /box/fifo: OK\n",
    );
}

fn raw_os_error(e: &WorkspaceError) -> Option<i32> {
    match e {
        WorkspaceError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// Runs `f` on another thread and fails if it does not return within 30 s
/// (a host read that blocks on a FIFO would hang the server).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(secs(30)).unwrap_or_else(|_| panic!("{what} blocked"))
}

#[test]
fn host_refuses_symlinks_and_fifos_planted_in_a_persistent_workspace() {
    let h = harness();
    let attack = attack();
    let ws = sandbox().create_workspace("links", 16 * MIB).expect("workspace");
    ws.write_file("attack", &common::program("links"), true).expect("placing the program");
    let canary_dir = h.canary_dir.to_str().expect("utf-8").to_owned();
    let spec = RunSpec::new(common::ATTACK, vec!["plant".into(), canary_dir]);
    let o = sandbox().run_in(&spec, &ws).expect("run");

    let ws = std::sync::Arc::new(ws);
    let w = ws.clone();
    let read_out = bounded("reading the symlink", move || w.read_file("out", MIB));
    let w = ws.clone();
    let read_fifo = bounded("reading the FIFO", move || w.read_file("fifo", MIB));
    let w = ws.clone();
    let read_through_dir = bounded("reading through the symlinked dir", move || w.read_file("dir/secret", MIB));
    let write_out = ws.write_file("out", b"pwned by the host", false);
    let write_through_dir = ws.write_file("dir/secret", b"pwned by the host", false);
    let write_fifo = bounded("writing the FIFO", {
        let w = ws.clone();
        move || w.write_file("fifo", b"x", false)
    });
    let listed: Vec<String> = ws.list(100).expect("listing").into_iter().map(|e| e.path).collect();
    let removed = ws.remove("out");
    drop(std::sync::Arc::try_unwrap(ws).expect("sole owner"));
    attack.finish(&show(&o));

    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "symlink out: OK\nsymlink dir: OK\nmkfifo fifo: OK\nlink su: EXDEV\n");
    // openat2(RESOLVE_NO_SYMLINKS) and O_NOFOLLOW answer ELOOP.
    assert!(matches!(&read_out, Err(e) if raw_os_error(e) == Some(libc::ELOOP)), "{read_out:?}");
    assert!(matches!(&read_fifo, Err(WorkspaceError::NotAFile { path }) if path == "fifo"), "{read_fifo:?}");
    assert!(matches!(&read_through_dir, Err(e) if raw_os_error(e) == Some(libc::ELOOP)), "{read_through_dir:?}");
    assert!(matches!(&write_out, Err(e) if raw_os_error(e) == Some(libc::ELOOP)), "{write_out:?}");
    assert!(matches!(&write_through_dir, Err(e) if raw_os_error(e) == Some(libc::ELOOP)), "{write_through_dir:?}");
    // O_WRONLY | O_NONBLOCK on a FIFO without a reader: ENXIO, at once.
    assert!(matches!(&write_fifo, Err(e) if raw_os_error(e) == Some(libc::ENXIO)), "{write_fifo:?}");
    assert_eq!(listed, ["attack"], "symlinks and FIFOs are not listed");
    assert!(removed.is_ok(), "removing the symlink itself: {removed:?}");
}

// ---------------------------------------------------- processes of the host

#[test]
fn kill_and_ptrace_of_init_and_host_fail() {
    let host_pid = std::process::id().to_string();
    let o = run_attack(&c_spec("kill", &[&host_pid]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "kill 1 SIGKILL: EPERM\nkill 1 SIGTERM: EPERM\nkill host pid SIGKILL: ESRCH\nkill -1 SIGKILL: ESRCH\n\
         ptrace attach 1: EPERM\nptrace traceme: EPERM\nprocess_vm_readv 1: EPERM\nkcmp: EPERM\nalive\n",
    );
}

#[test]
fn setuid_binaries_do_not_give_root() {
    let script = "ls -l /usr/bin/su | cut -c1-10; grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status; \
                  su -c 'id -u' root </dev/null; echo \"su=$?\"; id -u";
    let o = run_attack(&sh_spec(script));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    let out = stdout_of(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "-rwsr-xr-x", "su is setuid on the host\n{}", show(&o));
    assert_eq!(
        lines[1..4],
        ["CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"],
        "{}",
        show(&o)
    );
    assert_eq!(lines[4], "su=1", "{}", show(&o));
    let uid: u32 = lines[5].parse().expect("uid");
    assert!(common::BOX_UIDS.contains(&uid), "{}", show(&o));
}

#[test]
fn setuid_calls_and_clearing_no_new_privs_fail() {
    let o = run_attack(&c_spec("setuid", &[]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "setuid 0: EPERM\nsetresuid 0: EPERM\nsetgid 0: EPERM\nclear no_new_privs: EINVAL\nno_new_privs: 1\n",
    );
}

// ------------------------------------------------------------ kernel surface

#[test]
fn mount_unshare_setns_and_cgroup_escapes_are_eperm() {
    let o = run_attack(&c_spec("escape", &[]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "mount tmpfs: EPERM\nremount / rw: EPERM\nmount cgroup2: EPERM\numount /proc: EPERM\nfsopen: EPERM\n\
         open_tree: EPERM\nunshare user: EPERM\nunshare mount: EPERM\nunshare net: EPERM\nsetns net: EPERM\n\
         open /proc/1/ns/mnt: EACCES\nchroot: EPERM\npivot_root: EPERM\nclone newuser: EPERM\nclone3: ENOSYS\n\
         stat /sys: ENOENT\nstat /sys/fs/cgroup: ENOENT\ncgroup lines rooted at /: all\n",
    );
}

#[test]
fn unshare_in_shell_is_refused() {
    let o = run_attack(&sh_spec("unshare -r id -u; echo \"unshare=$?\""));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "unshare=1\n");
    assert!(stderr_of(&o).contains("Operation not permitted"), "{}", show(&o));
}

#[test]
fn dev_has_only_the_safe_devices() {
    let o = run_attack(&c_spec("dev", &[]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "/dev: fd full null random shm stderr stdin stdout tty urandom zero\n\
         open /dev/mem: ENOENT\nopen /dev/kmem: ENOENT\nopen /dev/port: ENOENT\nopen /dev/kmsg: ENOENT\n\
         open /dev/sda: ENOENT\nopen /dev/vda: ENOENT\nopen /dev/console: ENOENT\nopen /dev/fuse: ENOENT\n\
         open /dev/net/tun: ENOENT\nopen /dev/userfaultfd: ENOENT\nopen /dev/tty: ENXIO\n\
         mknod /tmp/mem: EPERM\nmknod /box/sda: EPERM\nmknod /dev/mem: EROFS\n",
    );
}

#[test]
fn only_the_standard_descriptors_are_open() {
    let o = run_attack(&c_spec("fds", &[]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "fds: 0 1 2\n0 -> /dev/null\n1 -> pipe\n2 -> pipe\n");
}

#[test]
fn python_sees_only_the_standard_descriptors() {
    let o = run_attack(&py_spec("import os\nprint(sorted(int(f) for f in os.listdir('/proc/self/fd')))\n"));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    // 3 is the descriptor of the listing itself.
    assert_stdout(&o, "[0, 1, 2, 3]\n");
}

#[test]
fn tiocsti_and_tioclinux_are_eperm() {
    let o = run_attack(&c_spec("syscalls", &["tiocsti"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(
        &o,
        "ioctl TIOCSTI: EPERM\nioctl TIOCSTI high bits: EPERM\nioctl TIOCLINUX: EPERM\nioctl FIONREAD: OK\n",
    );
}

#[test]
fn keyrings_are_eperm() {
    let o = run_attack(&c_spec("syscalls", &["keyring"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "add_key: EPERM\nrequest_key: EPERM\nkeyctl join: EPERM\nkeyctl get: EPERM\n");
}

#[test]
fn io_uring_is_eperm() {
    let o = run_attack(&c_spec("syscalls", &["io_uring"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "io_uring_setup: EPERM\nio_uring_enter: EPERM\nio_uring_register: EPERM\n");
}

#[test]
fn userfaultfd_is_eperm() {
    let o = run_attack(&c_spec("syscalls", &["userfaultfd"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "userfaultfd: EPERM\n");
}

#[test]
fn perf_event_open_is_eperm() {
    let o = run_attack(&c_spec("syscalls", &["perf"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "perf_event_open: EPERM\n");
}

#[test]
fn bpf_is_eperm() {
    let o = run_attack(&c_spec("syscalls", &["bpf"]));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "bpf map_create: EPERM\nbpf prog_load: EPERM\n");
}

#[test]
fn i386_system_call_is_killed_with_sigsys() {
    let o = run_attack(&c_spec("abi", &["i386"]));
    assert_eq!(o.status, Status::Signaled, "{}", show(&o));
    assert_eq!(o.signal, Some(libc::SIGSYS), "{}", show(&o));
    assert_stdout(&o, "before\n");
}

#[test]
fn x32_system_call_is_killed_with_sigsys() {
    let o = run_attack(&c_spec("abi", &["x32"]));
    assert_eq!(o.status, Status::Signaled, "{}", show(&o));
    assert_eq!(o.signal, Some(libc::SIGSYS), "{}", show(&o));
    assert_stdout(&o, "before\n");
}

#[test]
fn abort_dumps_no_core_into_the_workspace() {
    let attack = attack();
    let ws = sandbox().create_workspace("core", 16 * MIB).expect("workspace");
    ws.write_file("attack", &common::program("core"), true).expect("placing the program");
    let o = sandbox().run_in(&RunSpec::new(common::ATTACK, vec![]), &ws).expect("run");
    let listed: Vec<String> = ws.list(100).expect("listing").into_iter().map(|e| e.path).collect();
    ws.destroy();
    attack.finish(&show(&o));
    assert_eq!(o.status, Status::Signaled, "{}", show(&o));
    assert_eq!(o.signal, Some(libc::SIGABRT), "{}", show(&o));
    assert_stdout(&o, "setrlimit core: EPERM\nprctl dumpable: OK\n");
    assert_eq!(listed, ["attack"], "no core file\n{}", show(&o));
}

// ------------------------------------------------------------ argv and env

#[test]
fn arguments_near_the_spec_limit_work() {
    // 1000 arguments of 1000 bytes: 1,001,000 bytes, under 1 MiB.
    let mut args = vec!["-c".to_owned(), "echo \"$#\"".to_owned(), "sh".to_owned()];
    args.extend((0..1000).map(|i| format!("{i:0>1000}")));
    let o = run_attack(&RunSpec::new("/bin/sh", args));
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "1000\n");
}

#[test]
fn environment_near_the_spec_limit_works() {
    let mut spec = sh_spec("echo \"${#BIG0} ${#BIG7}\"");
    spec.env = (0..8).map(|i| (format!("BIG{i}"), "e".repeat(120_000))).collect();
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "120000 120000\n");
}

#[test]
fn arguments_beyond_the_spec_limit_are_refused_before_anything_starts() {
    let attack = attack();
    let mut args = vec!["-c".to_owned(), "true".to_owned()];
    args.extend((0..1100).map(|i| format!("{i:0>1000}")));
    let result = sandbox().run(&RunSpec::new("/bin/sh", args));
    let mut env_spec = sh_spec("true");
    env_spec.env = vec![("BIG".into(), "e".repeat(2 * MIB as usize))];
    let env_result = sandbox().run(&env_spec);
    attack.finish("");
    assert!(
        matches!(result, Err(SandboxError::Spec(SpecError::ArgumentsTooLarge { max: 1_048_576, .. }))),
        "{result:?}"
    );
    assert!(matches!(env_result, Err(SandboxError::Spec(SpecError::ArgumentsTooLarge { .. }))), "{env_result:?}");
}

#[test]
fn single_argument_over_the_kernel_string_limit_is_exit_126() {
    // Within the spec's 1 MiB, but longer than the kernel's 128 KiB per
    // string: execve fails and the user sees a shell-like 126.
    let o = run_attack(&RunSpec::new("/bin/echo", vec!["a".repeat(200_000)]));
    assert_eq!(o.status, Status::RuntimeError, "{}", show(&o));
    assert_eq!(o.exit_code, Some(126), "{}", show(&o));
    assert_eq!(stderr_of(&o), "evald: executing the program: Argument list too long (os error 7)\n", "{}", show(&o));
}

// ---------------------------------------------------------------- runtimes

#[test]
fn java_single_file_program_runs_in_a_box() {
    let mut spec = RunSpec::new("java", vec!["Hello.java".into()]);
    spec.files.push(FileSpec {
        path: "Hello.java".into(),
        content: b"public class Hello { public static void main(String[] a) { System.out.println(\"hello from java \" + Runtime.version().feature()); } }\n".to_vec(),
        executable: false,
    });
    spec.limits = limits(secs(60), secs(30));
    spec.limits.processes = 128;
    spec.limits.memory_bytes = 1 << 30;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert!(stdout_of(&o).starts_with("hello from java "), "{}", show(&o));
}

#[test]
fn go_program_compiles_and_runs_in_a_box() {
    let mut spec = sh_spec("go build -o hello hello.go && ./hello");
    spec.files.push(FileSpec {
        path: "hello.go".into(),
        content: b"package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from go\") }\n".to_vec(),
        executable: false,
    });
    spec.env = vec![
        ("GOCACHE".into(), "/tmp/gocache".into()),
        ("GOPATH".into(), "/tmp/gopath".into()),
        ("GOTOOLCHAIN".into(), "local".into()),
        ("CGO_ENABLED".into(), "0".into()),
        ("HOME".into(), "/box".into()),
    ];
    spec.limits = limits(secs(120), secs(100));
    spec.limits.processes = 256;
    spec.limits.memory_bytes = 1 << 30;
    spec.limits.disk_bytes = 256 * MIB;
    let o = run_attack(&spec);
    assert_eq!(o.status, Status::Ok, "{}", show(&o));
    assert_stdout(&o, "hello from go\n");
}
