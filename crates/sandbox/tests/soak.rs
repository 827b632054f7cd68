//! Soak: thousands of runs, some concurrent, some killed by limits or
//! leaving daemons behind, must leave no cgroup, mount, process or file
//! descriptor behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use evald_sandbox::{Limits, RunSpec, Sandbox, SandboxConfig, Status};

const UID_BASE: u32 = evald_testkit::uids::SANDBOX_SOAK.base;
const SLOTS: u32 = 4;

/// Runs per thread of the big soak: 500, divided by `EVALD_SOAK_SCALE`
/// (1, 2, 5 or 10; the VM-lab guest, 5-11x slower under emulation, uses
/// 5: scripts/vm-test).
fn runs_per_thread() -> usize {
    500 / scale() as usize
}

/// How much slower than this machine the tests run (`EVALD_SOAK_SCALE`).
fn scale() -> u32 {
    let scale = std::env::var("EVALD_SOAK_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!([1, 2, 5, 10].contains(&scale), "EVALD_SOAK_SCALE must be 1, 2, 5 or 10");
    scale
}

/// The first run on a thread makes that thread's driver runtime (see
/// `Sandbox::run`), whose two descriptors live as long as the thread: one
/// run before the descriptors are counted keeps them out of the count.
fn warm_up_thread(sandbox: &Sandbox) {
    let outcome = sandbox.run(&RunSpec::new("/bin/true", vec![])).expect("warm-up run");
    assert_eq!(outcome.status, Status::Ok, "warm-up run: {outcome:?}");
}

/// The tests of this file count the process's descriptors: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn box_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if uid.is_some_and(|u| (UID_BASE..=UID_BASE + SLOTS).contains(&u)) {
            found.push(format!("{:?}: {}", entry.file_name(), status.lines().next().unwrap_or("")));
        }
    }
    found
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(4).is_some_and(|m| m.starts_with(&*dir)))
        .map(str::to_owned)
        .collect()
}

fn box_cgroups(instance: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name().to_string_lossy() == format!("evald-{instance}") {
                found.extend(
                    std::fs::read_dir(&path)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|b| b.file_type().is_ok_and(|t| t.is_dir()).then(|| b.path())),
                );
            } else if path.components().count() < 9 {
                stack.push(path);
            }
        }
    }
    found
}

/// A sandbox configuration of its own for one test: instance
/// `<tag>-<pid>`, state in `/tmp/evald-<tag>-<pid>`, box users from
/// `UID_BASE + uid_offset`.
fn config(tag: &str, uid_offset: u32, slots: u32) -> SandboxConfig {
    let pid = std::process::id();
    SandboxConfig {
        instance: format!("{tag}-{pid}"),
        state_dir: format!("/tmp/evald-{tag}-{pid}").into(),
        uid_base: UID_BASE + uid_offset,
        slots,
        ..SandboxConfig::default()
    }
}

fn spec(script: &str, wall_ms: u64) -> RunSpec {
    let mut s = RunSpec::new("/bin/sh", vec!["-c".into(), script.into()]);
    s.limits = Limits { wall_time: Duration::from_millis(wall_ms), processes: 16, ..Limits::default() };
    s
}

#[test]
fn two_thousand_runs_leave_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let config = config("soak", 0, SLOTS);
    let (instance, state_dir) = (config.instance.clone(), config.state_dir.clone());
    let sandbox = Arc::new(Sandbox::new(config).expect("sandbox starts"));
    // Every slot's next box is prepared in the background (an init's
    // pidfd and socket, the cgroup's counter files): count descriptors once
    // that is done.
    sandbox.settle();
    let fds_before = fd_count();
    let runs = runs_per_thread();
    let threads: Vec<_> = (0..SLOTS)
        .map(|t| {
            let sandbox = sandbox.clone();
            std::thread::spawn(move || {
                let mut statuses = std::collections::BTreeMap::new();
                for i in 0..runs {
                    let (spec, want) = match i % 50 {
                        // a daemon that outlives the program
                        7 => (spec("(setsid sleep 100 &) ; echo started", 5000), Status::Ok),
                        // killed by the wall-clock limit with children alive
                        13 => (spec("sleep 100 & sleep 100", 50), Status::TimeLimitWall),
                        // a short-lived fork storm within the process limit
                        29 => (spec("for i in 1 2 3 4 5 6 7 8; do /bin/true & done; wait", 5000), Status::Ok),
                        _ => (RunSpec::new("/bin/true", vec![]), Status::Ok),
                    };
                    let outcome = sandbox.run(&spec).expect("run starts");
                    assert_eq!(outcome.status, want, "thread {t} run {i}: {outcome:?}");
                    *statuses.entry(outcome.status.as_str()).or_insert(0) += 1;
                }
                statuses
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        let statuses = t.join().expect("thread finished");
        total += statuses.values().sum::<i32>();
        assert_eq!(statuses.get("time_limit_wall"), Some(&(runs as i32 / 50)));
    }
    assert_eq!(total, 4 * runs as i32);
    sandbox.settle();
    assert_eq!(box_processes(), Vec::<String>::new(), "box processes left");
    let mut left = box_cgroups(&instance);
    let mut prepared = sandbox.prepared_cgroups();
    left.sort();
    prepared.sort();
    assert_eq!(left, prepared, "box cgroups left besides the prepared ones");
    assert_eq!(mounts_under(&state_dir), Vec::<String>::new(), "mounts left");
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
    assert_eq!(sandbox.free_slots(), SLOTS as usize);
    let sandbox = Arc::into_inner(sandbox).expect("the threads are done");
    drop(sandbox);
    assert_eq!(box_cgroups(&instance), Vec::<PathBuf>::new(), "cgroups left after the sandbox was dropped");
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[test]
fn runs_without_prepared_boxes_leave_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let config = SandboxConfig { prepare_ahead: false, ..config("cold", 100, 2) };
    let (instance, state_dir) = (config.instance.clone(), config.state_dir.clone());
    let sandbox = Sandbox::new(config).expect("sandbox starts");
    warm_up_thread(&sandbox);
    sandbox.settle();
    let fds_before = fd_count();
    for i in 0..40 {
        let (spec, want) = match i % 4 {
            0 => (spec("echo hi; sleep 5 & echo bye", 5000), Status::Ok),
            1 => (spec("exit 3", 5000), Status::RuntimeError),
            2 => (spec("while :; do :; done", 200), Status::TimeLimitWall),
            _ => (RunSpec::new("/bin/true", vec![]), Status::Ok),
        };
        let outcome = sandbox.run(&spec).expect("run starts");
        assert_eq!(outcome.status, want, "run {i}: {outcome:?}");
        if i % 4 == 0 {
            assert_eq!(outcome.stdout, b"hi\nbye\n");
        }
    }
    sandbox.settle();
    assert_eq!(sandbox.prepared_cgroups(), Vec::<PathBuf>::new(), "nothing prepared");
    assert_eq!(box_cgroups(&instance), Vec::<PathBuf>::new(), "box cgroups left");
    assert_eq!(mounts_under(&state_dir), Vec::<String>::new(), "mounts left");
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[test]
fn a_reused_slot_reports_each_runs_own_figures() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let config = config("reuse", 200, 1);
    let (instance, state_dir) = (config.instance.clone(), config.state_dir.clone());
    let sandbox = Sandbox::new(config).expect("sandbox starts");
    sandbox.settle();
    let first = sandbox.prepared_cgroups();
    assert!(!first.is_empty(), "the slot's box is prepared");
    // Asked while the first cgroup exists (where the peak cannot be reset,
    // it is gone after its run).
    let resettable = memory_peak_resettable(&first);
    let python = |source: &str, memory: u64| {
        let mut s = RunSpec::new("/usr/bin/python3", vec!["-c".into(), source.into()]);
        s.limits.memory_bytes = memory;
        s
    };
    let quiet = || {
        let o = sandbox.run(&RunSpec::new("/bin/true", vec![])).expect("run starts");
        assert_eq!(o.status, Status::Ok, "{}", brief(&o));
        assert!(!o.process_limit_hit, "an earlier run's failed forks do not count: {}", brief(&o));
        // /bin/true's own CPU time, 200 ms at most (times the slowdown).
        let bound = Duration::from_millis(200) * scale();
        assert!(o.cpu_time < bound, "an earlier run's CPU time does not count: {}", brief(&o));
        assert!(o.memory_bytes < 8 << 20, "an earlier run's peak does not count: {}", brief(&o));
    };

    let bomb = sandbox.run(&spec("exec 2>/dev/null; b() { b | b & }; b; exec sleep 1000", 1500)).expect("run starts");
    assert_eq!(bomb.status, Status::TimeLimitWall, "{}", brief(&bomb));
    assert!(bomb.process_limit_hit, "{}", brief(&bomb));
    quiet();

    let hog = sandbox
        .run(&python("blocks = []\nwhile True:\n    blocks.append(b'x' * (1 << 20))\n", 64 << 20))
        .expect("run starts");
    assert_eq!(hog.status, Status::MemoryLimit, "{}", brief(&hog));
    quiet();

    let mut spin = spec("while :; do :; done", 5000);
    spin.limits.cpu_time = Duration::from_millis(300);
    let spin = sandbox.run(&spin).expect("run starts");
    assert_eq!(spin.status, Status::TimeLimitCpu, "{}", brief(&spin));
    quiet();

    // A run's own peak is all there: 32 MiB touched after a 64 MiB bomb.
    let o =
        sandbox.run(&python("b = bytearray(32 << 20)\nb[::4096] = b'x' * (8 << 10)\n", 64 << 20)).expect("run starts");
    assert_eq!(o.status, Status::Ok, "{}", brief(&o));
    assert!((32 << 20..48 << 20).contains(&o.memory_bytes), "{}", brief(&o));

    sandbox.settle();
    if resettable {
        assert_eq!(sandbox.prepared_cgroups(), first, "the slot's cgroups serve every run");
    } else {
        // cgroup v2 before kernel 6.12: a fresh cgroup per run.
        let now = sandbox.prepared_cgroups();
        assert!(now.iter().all(|d| !first.contains(d)), "no cgroup served two runs: {first:?} {now:?}");
    }
    drop(sandbox);
    assert_eq!(box_cgroups(&instance), Vec::<PathBuf>::new(), "cgroups left after the sandbox was dropped");
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// Whether the kernel can reset the memory peak of these cgroups (v1
/// always; v2 from kernel 6.12, by writing to `memory.peak`).
fn memory_peak_resettable(dirs: &[PathBuf]) -> bool {
    use std::io::Write;
    dirs.iter().filter(|d| d.join("memory.peak").exists()).all(|d| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("memory.peak"))
            .and_then(|mut f| f.write_all(b"reset\n"))
            .is_ok()
    })
}

/// An outcome without its output.
fn brief(o: &evald_sandbox::Outcome) -> String {
    format!(
        "{:?} exit {:?} signal {:?} cpu {:?} memory {} processes capped {} error {:?}",
        o.status, o.exit_code, o.signal, o.cpu_time, o.memory_bytes, o.process_limit_hit, o.error
    )
}

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse::<i32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// Waits (at most 5 s) for the process behind `pidfd` to end; false if it
/// did not.
fn await_end(pidfd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: polling one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 5000) == 1 }
}

fn pidfd(pid: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    assert!(fd >= 0, "pidfd_open {pid}: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor owned by nobody else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

#[test]
fn runs_go_on_when_the_zygote_is_killed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let config = config("zygote", 300, 2);
    let (instance, state_dir) = (config.instance.clone(), config.state_dir.clone());
    let sandbox = Sandbox::new(config).expect("sandbox starts");
    warm_up_thread(&sandbox);
    sandbox.settle();
    let fds_before = fd_count();
    let zygote = sandbox.zygote_pid().expect("a zygote runs");
    let inits = children_of(zygote);
    assert_eq!(inits.len(), 2, "one prepared init per slot");
    let watched: Vec<_> = std::iter::once(zygote).chain(inits).map(pidfd).collect();
    // SAFETY: kill only sends a signal, to the zygote this process forked.
    assert_eq!(unsafe { libc::kill(zygote, libc::SIGKILL) }, 0);
    for fd in &watched {
        assert!(await_end(fd), "the zygote and its prepared inits end");
    }
    drop(watched);
    for i in 0..6 {
        let o = sandbox.run(&spec("echo ok", 5000)).expect("run starts");
        assert_eq!((o.status, &o.stdout[..]), (Status::Ok, &b"ok\n"[..]), "run {i}: {}", brief(&o));
    }
    let replaced = sandbox.zygote_pid().expect("a zygote runs");
    assert_ne!(replaced, zygote, "a new zygote");
    sandbox.settle();
    assert_eq!(children_of(replaced).len(), 2, "both slots prepared again");
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
    let mut left = box_cgroups(&instance);
    let mut prepared = sandbox.prepared_cgroups();
    left.sort();
    prepared.sort();
    assert_eq!(left, prepared, "box cgroups left besides the prepared ones");
    drop(sandbox);
    assert_eq!(box_cgroups(&instance), Vec::<PathBuf>::new(), "cgroups left after the sandbox was dropped");
    let _ = std::fs::remove_dir_all(&state_dir);
}
