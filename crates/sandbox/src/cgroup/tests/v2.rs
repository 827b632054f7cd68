//! Pure cgroup v2 against the fake cgroupfs: detection, delegation, a box's life, accounting periods.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn v2_detect_enables_controllers_in_own_cgroup_and_parent() {
    let host = v2_host("cpu io memory pids\n", "");
    let cg = host.detect("t").unwrap();
    assert_eq!(cg.version(), CgroupVersion::V2);
    assert_eq!(cg.parent_dirs(), vec![host.path(&format!("{V2_OWN}/evald-t"))]);
    assert!(!cg.needs_v2_delegation().unwrap());
    let own = V2_OWN;
    assert_eq!(
        host.ops(),
        vec![
            write(&format!("{own}/cgroup.subtree_control"), "+memory +pids"),
            write(&format!("{own}/cgroup.subtree_control"), "+cpu"),
            mkdir(&format!("{own}/evald-t")),
            write(&format!("{own}/evald-t/cgroup.subtree_control"), "+memory +pids"),
            write(&format!("{own}/evald-t/cgroup.subtree_control"), "+cpu"),
        ]
    );
    // A second detection (restart) finds everything in place: no writes.
    let _again = host.detect("t").unwrap();
    assert_eq!(host.ops(), vec![]);
}

#[test]
fn v2_box_limits_accounting_kill_and_remove() {
    let host = v2_host("cpu io memory pids\n", "");
    let cg = host.detect("t").unwrap();
    host.ops();
    let b1 = format!("{V2_OWN}/evald-t/b1");

    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    assert_eq!(
        host.ops(),
        vec![
            mkdir(&b1),
            write(&format!("{b1}/memory.max"), "67108864"),
            write(&format!("{b1}/memory.swap.max"), "0"),
            write(&format!("{b1}/memory.oom.group"), "1"),
            write(&format!("{b1}/pids.max"), "16"),
        ]
    );
    assert_eq!(bx.paths(), vec![host.path(&b1)]);
    assert!(bx.v2_dir_fd().is_some());

    bx.add_pid(4242).unwrap();
    assert_eq!(host.ops(), vec![write(&format!("{b1}/cgroup.procs"), "4242")]);
    assert_eq!(host.read(&format!("{b1}/cgroup.procs")), "4242\n");

    // What the kernel would report after an OOM kill and a failed fork.
    host.file(&format!("{b1}/cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n");
    host.file(&format!("{b1}/memory.peak"), "1048576\n");
    host.file(&format!("{b1}/memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 1\n");
    host.file(&format!("{b1}/pids.events"), "max 2\n");
    assert_eq!(bx.cpu_ns().unwrap(), 1_500_000);
    assert_eq!(
        bx.usage().unwrap(),
        CgroupUsage { cpu_ns: 1_500_000, memory_peak_bytes: 1_048_576, oom_killed: true, pids_max_hit: true }
    );

    bx.kill_all().unwrap();
    assert_eq!(host.ops(), vec![write(&format!("{b1}/cgroup.kill"), "1")]);
    assert_eq!(host.read(&format!("{b1}/cgroup.procs")), "");

    bx.remove().unwrap();
    assert_eq!(host.ops(), vec![rmdir(&b1)]);
    assert!(!host.exists(&b1));
    assert!(bx.v2_dir_fd().is_none());
    bx.remove().unwrap();
    drop(bx);
    assert_eq!(host.ops(), vec![], "remove is idempotent, drop does nothing more");

    cg.remove_parents().unwrap();
    assert_eq!(host.ops(), vec![rmdir(&format!("{V2_OWN}/evald-t"))]);
}

#[test]
fn v2_usage_without_memory_peak_reads_memory_current_and_zero_counters() {
    let host = v2_host("cpu io memory pids\n", "");
    let cg = host.detect("t").unwrap();
    let bx = cg.create_box("b1", &LIMITS).unwrap();
    let b1 = format!("{V2_OWN}/evald-t/b1");
    fs::remove_file(host.path(&format!("{b1}/memory.peak"))).unwrap();
    host.file(&format!("{b1}/memory.current"), "4096\n");
    assert_eq!(
        bx.usage().unwrap(),
        CgroupUsage { cpu_ns: 0, memory_peak_bytes: 4096, oom_killed: false, pids_max_hit: false }
    );
}

#[test]
fn v2_delegation_moves_only_this_process_into_the_service_leaf() {
    let me = std::process::id();
    let host = v2_host("cpu io memory pids\n", &format!("{me}\n"));
    let cg = host.detect("t").unwrap();
    let own = V2_OWN;
    let leaf = format!("{own}/evald-t-service");
    assert_eq!(
        host.ops(),
        vec![
            mkdir(&leaf),
            write(&format!("{leaf}/cgroup.procs"), &me.to_string()),
            write(&format!("{own}/cgroup.subtree_control"), "+memory +pids"),
            write(&format!("{own}/cgroup.subtree_control"), "+cpu"),
            mkdir(&format!("{own}/evald-t")),
            write(&format!("{own}/evald-t/cgroup.subtree_control"), "+memory +pids"),
            write(&format!("{own}/evald-t/cgroup.subtree_control"), "+cpu"),
        ]
    );
    assert_eq!(host.read(&format!("{own}/cgroup.procs")), "");
    assert!(!cg.needs_v2_delegation().unwrap());
    // Idempotent: nothing to move any more.
    cg.prepare_v2_delegation().unwrap();
    assert_eq!(host.ops(), vec![]);
}

#[test]
fn v2_other_processes_in_own_cgroup_are_not_moved() {
    let host = v2_host("cpu io memory pids\n", "1234\n");
    let cg = host.detect("t").unwrap();
    // Only this process may be moved; a real kernel would now refuse the
    // controller write with EBUSY (the fake does not model that).
    drop(cg);
    let ops = host.ops();
    assert!(!ops.contains(&mkdir(&format!("{V2_OWN}/evald-t-service"))), "{ops:?}");
    assert_eq!(host.read(&format!("{V2_OWN}/cgroup.procs")), "1234\n");
}

#[test]
fn v2_missing_controller_is_named() {
    let host = v2_host("cpu io memory\n", "");
    assert!(matches!(host.detect("t"), Err(CgroupError::NoController("pids"))));
    let host = v2_host("cpu io pids\n", "");
    assert!(matches!(host.detect("t"), Err(CgroupError::NoController("memory"))));
    assert_eq!(host.ops(), vec![], "nothing is created on failure");
}

#[test]
fn no_cgroup_mount_at_all_is_no_controller() {
    let host = Host::new("22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n", "0::/\n", |k| k);
    assert!(matches!(host.detect("t"), Err(CgroupError::NoController("memory"))));
}

#[test]
fn v2_periods_reset_the_peak_through_a_descriptor() {
    let host = v2_host("cpu io memory pids\n", "");
    let cg = host.detect("t").unwrap();
    let b1 = format!("{V2_OWN}/evald-t/b1");
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    host.file(&format!("{b1}/cpu.stat"), "usage_usec 10\nuser_usec 5\nsystem_usec 5\n");
    host.file(&format!("{b1}/memory.current"), "4096\n");
    host.file(&format!("{b1}/memory.peak"), "9\n");
    host.file(&format!("{b1}/memory.events"), "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 1\n");
    assert!(bx.begin_period().unwrap());
    // The reset is a write through the descriptor kept for later reads.
    assert_eq!(host.read(&format!("{b1}/memory.peak")), "reset\n");
    assert!(bx.reusable());
    // What the kernel reports through that descriptor afterwards.
    host.file(&format!("{b1}/memory.peak"), "12288\n");
    host.file(&format!("{b1}/cpu.stat"), "usage_usec 30\nuser_usec 15\nsystem_usec 15\n");
    assert_eq!(
        bx.usage().unwrap(),
        CgroupUsage { cpu_ns: 20_000, memory_peak_bytes: 8192, oom_killed: false, pids_max_hit: false }
    );
    bx.remove().unwrap();
}

#[test]
fn v2_without_a_resettable_peak_is_not_reusable() {
    let host = v2_host("cpu io memory pids\n", "");
    let cg = host.detect("t").unwrap();
    let b1 = format!("{V2_OWN}/evald-t/b1");
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    fs::remove_file(host.path(&format!("{b1}/memory.peak"))).unwrap();
    host.file(&format!("{b1}/memory.current"), "4096\n");
    assert!(!bx.begin_period().unwrap());
    assert!(!bx.reusable());
    host.file(&format!("{b1}/memory.current"), "16384\n");
    assert_eq!(bx.usage().unwrap().memory_peak_bytes, 12288, "memory.current minus the start");
    bx.remove().unwrap();
}
