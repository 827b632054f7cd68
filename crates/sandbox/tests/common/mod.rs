//! Harness of the end-to-end escape tests (needs root, as in CI).
//!
//! One [`Sandbox`] per test binary. Every attack runs under [`Attack`], which
//! holds a process-wide mutex and a file lock (so that attacks of concurrent
//! test processes, e.g. under `cargo nextest`, never overlap), snapshots the
//! host before the run and checks the host invariants after it:
//!
//! - no process on the host runs with a uid of the box range;
//! - no box cgroup is left under this instance's parent cgroups;
//! - no mount is left under the state directory;
//! - the canary files outside every box are unchanged;
//! - the test process has as many open descriptors as before;
//! - no listening TCP socket appeared that belongs to a box user or to no
//!   process at all;
//! - every sandbox slot is free again (the "server" is alive and usable).
//!
//! Attack programs live in `tests/programs/`: C programs are compiled once
//! per test binary with the host's `gcc -static` (a static binary depends on
//! nothing inside the box) and placed in the box as `/box/attack`.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use evald_sandbox::cgroup::Cgroups;
use evald_sandbox::{FileSpec, Limits, Outcome, RunSpec, Sandbox, SandboxConfig, DEFAULT_READ_ONLY_BINDS};

/// First box user id of this test binary (see `evald_testkit::uids`).
pub const UID_BASE: u32 = evald_testkit::uids::SANDBOX_ESCAPE.base;
/// Boxes that may run at once.
pub const SLOTS: u32 = 4;
/// Every uid a box of this binary may run as (slots, then the owner of
/// persistent workspaces, with room to spare).
pub const BOX_UIDS: std::ops::Range<u32> = UID_BASE..UID_BASE + 64;

/// Path of the attack program inside the box.
pub const ATTACK: &str = "/box/attack";

/// A file lock shared by every process running these tests.
const LOCK_FILE: &str = "/tmp/evald-escape-tests.lock";

pub struct Harness {
    pub sandbox: Sandbox,
    pub instance: String,
    pub state_dir: PathBuf,
    /// A directory outside every box holding `secret`.
    pub canary_dir: PathBuf,
    canaries: Vec<Canary>,
    cgroup_parents: Vec<PathBuf>,
    lock_file: fs::File,
    /// Compiled attack programs by name.
    programs: HashMap<String, Vec<u8>>,
}

struct Canary {
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
    mtime: (i64, i64),
}

impl Canary {
    fn create(path: PathBuf, content: Vec<u8>) -> Canary {
        fs::write(&path, &content).unwrap_or_else(|e| panic!("writing canary {}: {e}", path.display()));
        let meta = fs::metadata(&path).expect("canary metadata");
        Canary { path, content, mode: meta.mode(), mtime: (meta.mtime(), meta.mtime_nsec()) }
    }

    fn check(&self, problems: &mut Vec<String>) {
        match (fs::read(&self.path), fs::symlink_metadata(&self.path)) {
            (Ok(content), Ok(meta)) => {
                if content != self.content {
                    problems.push(format!("canary {} changed content", self.path.display()));
                }
                if meta.mode() != self.mode || (meta.mtime(), meta.mtime_nsec()) != self.mtime {
                    problems.push(format!("canary {} changed mode or mtime", self.path.display()));
                }
            }
            (Err(e), _) | (_, Err(e)) => problems.push(format!("canary {}: {e}", self.path.display())),
        }
    }
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static LOCK: Mutex<()> = Mutex::new(());

/// The shared harness; the first call creates the sandbox (needs root).
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(Harness::new)
}

pub fn sandbox() -> &'static Sandbox {
    &harness().sandbox
}

impl Harness {
    fn new() -> Harness {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "the escape tests need root (CI runs them as root)");
        let pid = std::process::id();
        sweep_stale_runs();
        let instance = format!("escape-{pid}");
        let state_dir = PathBuf::from(format!("/tmp/evald-escape-{pid}"));
        fs::create_dir_all(&state_dir).expect("creating the state directory");
        let sandbox = Sandbox::new(SandboxConfig {
            instance: instance.clone(),
            state_dir: state_dir.clone(),
            uid_base: UID_BASE,
            slots: SLOTS,
            read_only_binds: DEFAULT_READ_ONLY_BINDS.iter().map(PathBuf::from).collect(),
            prepare_ahead: true,
        })
        .unwrap_or_else(|e| panic!("creating the sandbox: {e}"));
        let cgroup_parents = Cgroups::detect(&instance)
            .unwrap_or_else(|e| panic!("detecting cgroups: {e}"))
            .parent_dirs()
            .into_iter()
            .map(Path::to_path_buf)
            .collect::<Vec<_>>();
        assert!(!cgroup_parents.is_empty(), "no cgroup parent directory found");
        let canary_dir = PathBuf::from(format!("/tmp/evald-canary-{pid}"));
        fs::create_dir_all(&canary_dir).expect("creating the canary directory");
        let canaries = vec![
            Canary::create(canary_dir.join("secret"), format!("canary of test process {pid}\n").into_bytes()),
            Canary::create(state_dir.join("canary"), b"state canary\n".to_vec()),
        ];
        // Compiled now, once: a compiler running later could hold pipes
        // open while another test counts its descriptors.
        let programs = compile_all();
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .expect("opening the test lock file");
        // SAFETY: atexit with a plain extern "C" function that only touches
        // the file system.
        unsafe { libc::atexit(cleanup_at_exit) };
        Harness { sandbox, instance, state_dir, canary_dir, canaries, cgroup_parents, lock_file, programs }
    }
}

/// Removes this binary's cgroup parents, state and canary directories at
/// exit (the sandbox lives in a static and is never dropped).
extern "C" fn cleanup_at_exit() {
    if let Some(h) = HARNESS.get() {
        for parent in &h.cgroup_parents {
            let _ = fs::remove_dir(parent);
        }
        if mounts_under(&h.state_dir).is_empty() {
            let _ = fs::remove_dir_all(&h.state_dir);
        }
        let _ = fs::remove_dir_all(&h.canary_dir);
    }
}

/// Removes what earlier runs of this binary that died left behind: state
/// and canary directories and empty `evald-escape-<pid>` cgroups of dead
/// pids. Live processes' directories are never touched.
fn sweep_stale_runs() {
    let dead = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name, "evald-canary-") || (dead(&name, "evald-escape-") && mounts_under(&e.path()).is_empty()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    for dir in find_dirs_named(Path::new("/sys/fs/cgroup"), &|n| dead(n, "evald-escape-"), 6) {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::remove_dir(e.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

fn find_dirs_named(root: &Path, pred: &dyn Fn(&str) -> bool, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(root) else { return out };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if pred(&name) {
            out.push(e.path());
        } else if depth > 0 {
            out.extend(find_dirs_named(&e.path(), pred, depth - 1));
        }
    }
    out
}

/// One attack: holds the locks and the host snapshot taken before it.
pub struct Attack {
    _lock: MutexGuard<'static, ()>,
    _flock: FileLock,
    fds_before: BTreeSet<String>,
    listeners_before: BTreeSet<Listener>,
    free_slots_before: usize,
}

struct FileLock(i32);

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor of the harness's lock file, which
        // lives as long as the process.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

/// Starts an attack: waits for the others to finish, then snapshots.
pub fn attack() -> Attack {
    let h = harness();
    let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let fd = h.lock_file.as_raw_fd();
    // SAFETY: flock on a descriptor that lives as long as the process.
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        panic!("locking {LOCK_FILE}: {}", io::Error::last_os_error());
    }
    let flock = FileLock(fd);
    warm_up_thread(&h.sandbox);
    // Earlier boxes finish their teardown (and the slots' next boxes their
    // preparation) before the snapshot.
    h.sandbox.settle();
    Attack {
        _lock: lock,
        _flock: flock,
        fds_before: open_fds(&h.sandbox),
        listeners_before: listeners(),
        free_slots_before: h.sandbox.free_slots(),
    }
}

/// The first run on a thread makes that thread's driver runtime (see
/// `Sandbox::run`), whose two descriptors live as long as the thread: one
/// run before a snapshot of the descriptors keeps them out of it.
pub fn warm_up_thread(sandbox: &Sandbox) {
    let outcome = sandbox.run(&RunSpec::new("/bin/true", vec![])).expect("warm-up run");
    assert_eq!(outcome.status, evald_sandbox::Status::Ok, "warm-up run: {}", show(&outcome));
}

impl Attack {
    /// Checks every host invariant; panics with all violations, and with
    /// `context` (usually the outcome of the attack).
    pub fn finish(self, context: &str) {
        let problems = self.violations();
        assert!(problems.is_empty(), "host invariants violated:\n  {}\n{context}", problems.join("\n  "));
    }

    fn violations(&self) -> Vec<String> {
        let h = harness();
        // Boxes are torn down in the background once their outcome is
        // known; the invariants hold from when that is done.
        h.sandbox.settle();
        let mut problems = Vec::new();
        for (pid, name, uids) in processes() {
            if uids.iter().any(|u| BOX_UIDS.contains(u)) {
                problems.push(format!("process {pid} ({name}) of a box user {uids:?} is alive"));
            }
        }
        // Besides the boxes prepared for the next runs (each holding just
        // its init, one process that is not the box user's), nothing.
        let prepared = h.sandbox.prepared_cgroups();
        for parent in &h.cgroup_parents {
            match fs::read_dir(parent) {
                Ok(entries) => {
                    for e in entries.flatten().filter(|e| e.path().is_dir()) {
                        let path = e.path();
                        if !prepared.contains(&path) {
                            problems.push(format!("cgroup {} left behind", path.display()));
                            continue;
                        }
                        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
                        if procs.lines().count() != 1 {
                            problems.push(format!("prepared cgroup {} holds {procs:?}", path.display()));
                        }
                    }
                }
                Err(e) => problems.push(format!("cgroup parent {}: {e}", parent.display())),
            }
        }
        for mount in mounts_under(&h.state_dir) {
            problems.push(format!("mount {mount} left behind"));
        }
        for canary in &h.canaries {
            canary.check(&mut problems);
        }
        let canary_files: Vec<_> = fs::read_dir(&h.canary_dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if canary_files != ["secret"] {
            problems.push(format!("canary directory holds {canary_files:?}"));
        }
        let fds = open_fds(&h.sandbox);
        if fds != self.fds_before {
            let gone: Vec<_> = self.fds_before.difference(&fds).collect();
            let new: Vec<_> = fds.difference(&self.fds_before).collect();
            problems.push(format!("open descriptors changed: closed {gone:?}, opened {new:?}"));
        }
        // Other programs on the machine may open listeners meanwhile; a new
        // one is the box's doing if a box user owns it, or if no process
        // holds it although it is still listening.
        for l in listeners().difference(&self.listeners_before) {
            if BOX_UIDS.contains(&l.uid) || (socket_owners(l.inode).is_empty() && listeners().contains(l)) {
                problems.push(format!("new listening socket {l:?}"));
            }
        }
        let free = h.sandbox.free_slots();
        if free != self.free_slots_before {
            problems.push(format!("{free} free slots, {} before", self.free_slots_before));
        }
        problems
    }
}

/// Runs `spec` as one attack: snapshot, run, host invariants. Returns the
/// outcome (the run itself must not fail to start).
pub fn run_attack(spec: &RunSpec) -> Outcome {
    let attack = attack();
    let outcome = sandbox().run(spec).unwrap_or_else(|e| panic!("starting the run: {e}"));
    attack.finish(&show(&outcome));
    outcome
}

/// Everything about an outcome, for assertion messages.
pub fn show(o: &Outcome) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "status={:?} exit_code={:?} signal={:?} cpu={:?} wall={:?} memory={} process_limit_hit={} \
         truncated(out={}, err={}) error={:?}",
        o.status,
        o.exit_code,
        o.signal,
        o.cpu_time,
        o.wall_time,
        o.memory_bytes,
        o.process_limit_hit,
        o.stdout_truncated,
        o.stderr_truncated,
        o.error
    );
    for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
        let _ = write!(s, "\n--- {name} ({} bytes) ---\n{text}", bytes.len());
    }
    s
}

/// Asserts that stdout is exactly `expected`.
pub fn assert_stdout(o: &Outcome, expected: &str) {
    assert_eq!(String::from_utf8_lossy(&o.stdout), expected, "unexpected stdout\n{}", show(o));
}

/// Bytes of the compiled attack program `tests/programs/<name>.c`.
pub fn program(name: &str) -> Vec<u8> {
    harness().programs.get(name).unwrap_or_else(|| panic!("no program tests/programs/{name}.c")).clone()
}

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// Compiles every `tests/programs/*.c`.
fn compile_all() -> HashMap<String, Vec<u8>> {
    let entries = fs::read_dir(programs_dir()).expect("listing tests/programs");
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".c").map(str::to_owned))
        .map(|name| {
            let bytes = compile(&name);
            (name, bytes)
        })
        .collect()
}

fn compile(name: &str) -> Vec<u8> {
    let dir = programs_dir();
    let src = dir.join(format!("{name}.c"));
    let out_dir = tempfile::tempdir().expect("temporary directory");
    let out = out_dir.path().join(name);
    let result = Command::new("gcc")
        .args(["-O1", "-static", "-pthread", "-Wall", "-Werror", "-I"])
        .arg(&dir)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running gcc (install gcc): {e}"));
    assert!(result.status.success(), "gcc failed on {}:\n{}", src.display(), String::from_utf8_lossy(&result.stderr));
    fs::read(&out).expect("reading the compiled program")
}

/// A spec running the C attack program `name` with `args`.
pub fn c_spec(name: &str, args: &[&str]) -> RunSpec {
    let mut spec = RunSpec::new(ATTACK, args.iter().map(|a| (*a).to_owned()).collect());
    spec.files.push(FileSpec { path: "attack".into(), content: program(name), executable: true });
    spec
}

/// A spec running `script` with `/bin/sh -c`.
pub fn sh_spec(script: &str) -> RunSpec {
    RunSpec::new("/bin/sh", vec!["-c".into(), script.into()])
}

/// A spec running the Python program `source` (placed as /box/attack.py).
pub fn py_spec(source: &str) -> RunSpec {
    let mut spec = RunSpec::new("/usr/bin/python3", vec!["attack.py".into()]);
    spec.files.push(FileSpec { path: "attack.py".into(), content: source.as_bytes().to_vec(), executable: false });
    spec
}

/// Default limits with the given wall and CPU times.
pub fn limits(wall: Duration, cpu: Duration) -> Limits {
    Limits { wall_time: wall, cpu_time: cpu, ..Limits::default() }
}

/// Host pid, name and uids (real, effective, saved, fs) of every process.
fn processes() -> Vec<(u32, String, Vec<u32>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        // A process may exit while we look: skip it.
        let Ok(status) = fs::read_to_string(e.path().join("status")) else { continue };
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let name = field("Name:").unwrap_or("?").to_owned();
        let uids =
            field("Uid:").map(|u| u.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
        out.push((pid, name, uids));
    }
    out
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

/// Open descriptors of this process, except those held for prepared boxes
/// (their inits are replaced after every run of their slot).
fn open_fds(sandbox: &Sandbox) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prepared: BTreeSet<String> = sandbox.prepared_fds().iter().map(|fd| fd.to_string()).collect();
    let Ok(entries) = fs::read_dir("/proc/self/fd") else { return out };
    for e in entries.flatten() {
        if prepared.contains(&*e.file_name().to_string_lossy()) {
            continue;
        }
        let target = fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
        // The listing's own descriptor (its number depends on which are free).
        let listing = format!("/proc/{}/fd", std::process::id());
        if !target.is_empty() && target != listing {
            out.insert(format!("{} -> {target}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Listener {
    local: String,
    uid: u32,
    inode: u64,
}

/// LISTEN sockets of /proc/net/tcp and tcp6 (this network namespace).
fn listeners() -> BTreeSet<Listener> {
    let mut out = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                out.insert(Listener {
                    local: f[1].to_owned(),
                    uid: f[7].parse().unwrap_or(u32::MAX),
                    inode: f[9].parse().unwrap_or(0),
                });
            }
        }
    }
    out
}

/// Pids holding the socket `inode` open.
fn socket_owners(inode: u64) -> Vec<u32> {
    let needle = format!("socket:[{inode}]");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = fs::read_dir(e.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == needle.as_str())) {
            out.push(pid);
        }
    }
    out
}
