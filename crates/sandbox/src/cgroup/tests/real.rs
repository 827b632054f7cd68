//! Real cgroups of this machine; run as root (CI does).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::*;

fn instance(tag: &str) -> String {
    format!("test-{}-{tag}", std::process::id())
}

/// `sh -c script`, blocked on reading its stdin until [`go`].
fn spawn_waiting(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read _ && {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn go(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

fn pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap()
}

#[test]
fn real_box_lifecycle() {
    let inst = instance("life");
    let cg = Cgroups::detect(&inst).unwrap();
    assert_eq!(cg.sweep_stale().unwrap(), 0);
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    let paths: Vec<PathBuf> = bx.paths().iter().map(|p| p.to_path_buf()).collect();
    let memory = &paths[cg.roles.memory];
    let pids = &paths[cg.roles.pids];
    match cg.version() {
        CgroupVersion::V1 => {
            assert_eq!(fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(), "67108864\n");
            if memory.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(fs::read_to_string(memory.join("memory.memsw.limit_in_bytes")).unwrap(), "67108864\n");
            }
        }
        CgroupVersion::V2 => {
            assert_eq!(fs::read_to_string(memory.join("memory.max")).unwrap(), "67108864\n");
            assert!(bx.v2_dir_fd().is_some());
        }
    }
    assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "16\n");

    let mut child = Command::new("sleep").arg("10").spawn().unwrap();
    bx.add_pid(pid(&child)).unwrap();
    let suffix = format!("/evald-{inst}/b1");
    let own_cgroups = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    assert_eq!(own_cgroups.lines().filter(|l| l.ends_with(&suffix)).count(), paths.len(), "{own_cgroups}");
    for dir in &paths {
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), format!("{}\n", child.id()));
    }
    let usage = bx.usage().unwrap();
    assert!(!usage.oom_killed && !usage.pids_max_hit, "{usage:?}");

    bx.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    bx.remove().unwrap();
    for dir in &paths {
        assert!(!dir.exists(), "{}", dir.display());
    }
    bx.remove().unwrap();
    drop(bx);
    cg.remove_parents().unwrap();
    for parent in cg.parent_dirs() {
        assert!(!parent.exists(), "{}", parent.display());
    }
}

#[test]
fn real_memory_limit_is_an_oom_kill() {
    let cg = Cgroups::detect(&instance("oom")).unwrap();
    let limits = CgroupLimits { memory_bytes: 32 << 20, pids: 16 };
    let bx = cg.create_box("b1", &limits).unwrap();
    // `tail` keeps the whole newline-free 128 MiB "line" in memory.
    let mut child = spawn_waiting("head -c 134217728 /dev/zero | tail");
    bx.add_pid(pid(&child)).unwrap();
    go(&mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{status:?}");
    let usage = bx.usage().unwrap();
    assert!(usage.oom_killed, "{usage:?}");
    assert!(!usage.pids_max_hit, "{usage:?}");
    assert!(usage.memory_peak_bytes > 16 << 20, "{usage:?}");
    assert!(usage.memory_peak_bytes <= 32 << 20, "{usage:?}");
    drop(bx);
    cg.remove_parents().unwrap();
}

#[test]
fn real_pids_limit_is_reported() {
    let cg = Cgroups::detect(&instance("pids")).unwrap();
    let limits = CgroupLimits { memory_bytes: 64 << 20, pids: 4 };
    let mut bx = cg.create_box("b1", &limits).unwrap();
    let mut child = spawn_waiting("for i in 1 2 3 4 5 6 7 8; do sleep 30 >/dev/null 2>&1 & done; echo done; wait");
    bx.add_pid(pid(&child)).unwrap();
    go(&mut child);
    // A line when every fork was tried, or EOF if the shell gave up.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let usage = bx.usage().unwrap();
    assert!(usage.pids_max_hit, "{usage:?}");
    assert!(!usage.oom_killed, "{usage:?}");
    bx.kill_all().unwrap();
    child.wait().unwrap();
    bx.remove().unwrap();
    cg.remove_parents().unwrap();
}

#[test]
fn real_cpu_time_counts_the_whole_box() {
    let cg = Cgroups::detect(&instance("cpu")).unwrap();
    let bx = cg.create_box("b1", &LIMITS).unwrap();
    assert_eq!(bx.cpu_ns().unwrap(), 0);
    // The busy loop runs in a grandchild.
    let mut child = spawn_waiting("sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'");
    bx.add_pid(pid(&child)).unwrap();
    go(&mut child);
    assert!(child.wait().unwrap().success());
    let cpu = bx.cpu_ns().unwrap();
    assert!(cpu >= 10_000_000, "{cpu} ns");
    assert_eq!(bx.usage().unwrap().cpu_ns, cpu);
    drop(bx);
    cg.remove_parents().unwrap();
}

#[test]
fn real_drop_kills_and_removes() {
    let cg = Cgroups::detect(&instance("drop")).unwrap();
    let bx = cg.create_box("b1", &LIMITS).unwrap();
    let paths: Vec<PathBuf> = bx.paths().iter().map(|p| p.to_path_buf()).collect();
    let mut child = Command::new("sleep").arg("10").spawn().unwrap();
    bx.add_pid(pid(&child)).unwrap();
    drop(bx);
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(paths.iter().all(|p| !p.exists()));
    cg.remove_parents().unwrap();
}

#[test]
fn real_sweep_stale_kills_and_removes_a_crashed_run() {
    let inst = instance("sweep");
    let crashed = Cgroups::detect(&inst).unwrap();
    let bx = crashed.create_box("stale", &LIMITS).unwrap();
    let paths: Vec<PathBuf> = bx.paths().iter().map(|p| p.to_path_buf()).collect();
    let mut child = Command::new("sleep").arg("10").spawn().unwrap();
    bx.add_pid(pid(&child)).unwrap();
    std::mem::forget(bx);

    let cg = Cgroups::detect(&inst).unwrap();
    assert_eq!(cg.sweep_stale().unwrap(), 1);
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(paths.iter().all(|p| !p.exists()));
    cg.remove_parents().unwrap();
}

#[test]
fn real_v1_without_cgroup_kill_kills_pid_by_pid() {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    if !mountinfo.lines().any(|l| l.contains(" - cgroup cgroup ")) {
        return; // pure v2 host: no v1 hierarchies to test
    }
    // Hide the cgroup2 mount: only v1 hierarchies, no cgroup.kill.
    let v1_only: String = mountinfo.lines().filter(|l| !l.contains(" - cgroup2 ")).map(|l| format!("{l}\n")).collect();
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap();
    let cg = Cgroups::detect_from(Path::new("/"), &v1_only, &proc_cgroup, &instance("sigkill")).unwrap();
    assert_eq!(cg.roles.kill, None);
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    let mut child = spawn_waiting("sleep 10 & sleep 10 & wait");
    bx.add_pid(pid(&child)).unwrap();
    go(&mut child);
    bx.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    for dir in bx.paths() {
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "");
    }
    bx.remove().unwrap();
    cg.remove_parents().unwrap();
}

#[test]
fn real_v2_dir_fd_matches_version() {
    let cg = Cgroups::detect(&instance("fd")).unwrap();
    let bx = cg.create_box("b1", &LIMITS).unwrap();
    assert_eq!(bx.v2_dir_fd().is_some(), cg.version() == CgroupVersion::V2);
    drop(bx);
    cg.remove_parents().unwrap();
}
