//! cgroup v1 and the hybrid layout against the fake cgroupfs: detection, limits, killing, accounting periods.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn hybrid_detect_uses_own_cgroup_per_controller_and_unified_for_kill() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    assert_eq!(cg.version(), CgroupVersion::V1);
    assert!(!cg.needs_v2_delegation().unwrap());
    let parents = [
        format!("{MEM_OWN}/evald-t"),
        "sys/fs/cgroup/pids/evald-t".to_owned(),
        "sys/fs/cgroup/cpuacct/evald-t".to_owned(),
        "sys/fs/cgroup/unified/evald-t".to_owned(),
    ];
    assert_eq!(cg.parent_dirs(), parents.iter().map(|p| host.path(p)).collect::<Vec<_>>());
    assert_eq!(host.ops(), parents.iter().map(|p| mkdir(p)).collect::<Vec<_>>());
    assert_eq!(cg.roles.kill, Some(3));
}

#[test]
fn hybrid_box_limits_accounting_kill_and_remove() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    host.ops();
    let mem = format!("{MEM_OWN}/evald-t/b1");
    let pids = "sys/fs/cgroup/pids/evald-t/b1";
    let cpu = "sys/fs/cgroup/cpuacct/evald-t/b1";
    let unified = "sys/fs/cgroup/unified/evald-t/b1";

    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    assert_eq!(
        host.ops(),
        vec![
            mkdir(&mem),
            mkdir(pids),
            mkdir(cpu),
            mkdir(unified),
            write(&format!("{mem}/memory.limit_in_bytes"), "67108864"),
            write(&format!("{mem}/memory.memsw.limit_in_bytes"), "67108864"),
            write(&format!("{mem}/memory.swappiness"), "0"),
            write(&format!("{pids}/pids.max"), "16"),
        ]
    );
    assert!(bx.v2_dir_fd().is_none(), "CLONE_INTO_CGROUP only on pure v2");

    bx.add_pid(4242).unwrap();
    assert_eq!(
        host.ops(),
        [&mem[..], pids, cpu, unified].iter().map(|d| write(&format!("{d}/cgroup.procs"), "4242")).collect::<Vec<_>>()
    );

    host.file(&format!("{cpu}/cpuacct.usage"), "123456789\n");
    host.file(&format!("{mem}/memory.max_usage_in_bytes"), "5000000\n");
    host.file(&format!("{mem}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    assert_eq!(
        bx.usage().unwrap(),
        CgroupUsage { cpu_ns: 123_456_789, memory_peak_bytes: 5_000_000, oom_killed: true, pids_max_hit: false }
    );
    host.file(&format!("{pids}/pids.events"), "max 1\n");
    assert!(bx.usage().unwrap().pids_max_hit);

    bx.kill_all().unwrap();
    assert_eq!(host.ops(), vec![write(&format!("{unified}/cgroup.kill"), "1")]);
    for d in [&mem[..], pids, cpu, unified] {
        assert_eq!(host.read(&format!("{d}/cgroup.procs")), "", "{d}");
    }

    bx.remove().unwrap();
    assert_eq!(host.ops(), vec![rmdir(unified), rmdir(cpu), rmdir(pids), rmdir(&mem)]);
    cg.remove_parents().unwrap();
    assert!(!host.exists(&format!("{MEM_OWN}/evald-t")));
    assert!(host.exists(MEM_OWN), "the own cgroup is never removed");
    assert_eq!(host.read(&format!("{MEM_OWN}/cgroup.procs")), "55\n");
}

#[test]
fn v1_set_limits_writes_only_changes_in_a_safe_order() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    let mem = format!("{MEM_OWN}/evald-t/b1");
    let pids = "sys/fs/cgroup/pids/evald-t/b1";
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    host.ops();
    bx.set_limits(&LIMITS).unwrap();
    assert_eq!(host.ops(), vec![], "same limits: nothing written");
    // Raising: memsw first, as it may never be below the memory limit.
    bx.set_limits(&CgroupLimits { memory_bytes: 128 << 20, pids: 16 }).unwrap();
    assert_eq!(
        host.ops(),
        vec![
            write(&format!("{mem}/memory.memsw.limit_in_bytes"), "134217728"),
            write(&format!("{mem}/memory.limit_in_bytes"), "134217728"),
            write(&format!("{mem}/memory.swappiness"), "0"),
        ]
    );
    // Lowering: the memory limit first.
    bx.set_limits(&CgroupLimits { memory_bytes: 32 << 20, pids: 8 }).unwrap();
    assert_eq!(
        host.ops(),
        vec![
            write(&format!("{mem}/memory.limit_in_bytes"), "33554432"),
            write(&format!("{mem}/memory.memsw.limit_in_bytes"), "33554432"),
            write(&format!("{mem}/memory.swappiness"), "0"),
            write(&format!("{pids}/pids.max"), "8"),
        ]
    );
    bx.remove().unwrap();
    cg.remove_parents().unwrap();
}

#[test]
fn v1_without_memsw_or_cgroup_kill_kills_pid_by_pid() {
    // cpu and cpuacct co-mounted; the unified mount lacks cgroup.kill (kernel < 5.14).
    let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    let proc_cgroup = "8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";
    let memory: Vec<_> = V1_MEMORY_FILES.iter().copied().filter(|(n, _)| !n.starts_with("memory.memsw")).collect();
    let unified: Vec<_> = UNIFIED_FILES.iter().copied().filter(|(n, _)| *n != "cgroup.kill").collect();
    let host = hybrid_host(mountinfo, proc_cgroup, &memory, &unified);
    let cg = host.detect("t").unwrap();
    assert_eq!(
        host.ops(),
        vec![
            mkdir(&format!("{MEM_OWN}/evald-t")),
            mkdir("sys/fs/cgroup/pids/evald-t"),
            mkdir("sys/fs/cgroup/cpu,cpuacct/evald-t"),
            mkdir("sys/fs/cgroup/unified/evald-t"),
            rmdir("sys/fs/cgroup/unified/evald-t"),
        ]
    );
    assert_eq!(cg.parent_dirs().len(), 3);

    let bx = cg.create_box("b1", &LIMITS).unwrap();
    let mem = format!("{MEM_OWN}/evald-t/b1");
    let ops = host.ops();
    assert_eq!(
        ops[3..],
        [
            write(&format!("{mem}/memory.limit_in_bytes"), "67108864"),
            write(&format!("{mem}/memory.swappiness"), "0"),
            write("sys/fs/cgroup/pids/evald-t/b1/pids.max", "16"),
        ]
    );
    bx.add_pid(4242).unwrap();
    bx.add_pid(4243).unwrap();
    host.ops();
    host.file("sys/fs/cgroup/cpu,cpuacct/evald-t/b1/cpuacct.usage", "42\n");
    assert_eq!(bx.cpu_ns().unwrap(), 42);
    bx.kill_all().unwrap();
    assert_eq!(host.ops(), vec![Op::Kill(4242), Op::Kill(4243)]);
    drop(bx);
    assert_eq!(
        host.ops(),
        vec![rmdir("sys/fs/cgroup/cpu,cpuacct/evald-t/b1"), rmdir("sys/fs/cgroup/pids/evald-t/b1"), rmdir(&mem),]
    );
}

#[test]
fn v1_periods_count_from_their_start() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    let mem = format!("{MEM_OWN}/evald-t/b1");
    let pids = "sys/fs/cgroup/pids/evald-t/b1";
    let cpu = "sys/fs/cgroup/cpuacct/evald-t/b1";
    let mut bx = cg.create_box("b1", &LIMITS).unwrap();
    assert!(!bx.reusable(), "no period started yet");
    // What an earlier run left: CPU time, an OOM kill, a failed fork, and
    // page cache still charged.
    host.file(&format!("{cpu}/cpuacct.usage"), "1000000\n");
    host.file(&format!("{mem}/memory.usage_in_bytes"), "4096\n");
    host.file(&format!("{mem}/memory.max_usage_in_bytes"), "90000000\n");
    host.file(&format!("{mem}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
    host.file(&format!("{pids}/pids.events"), "max 2\n");
    host.ops();
    assert!(bx.begin_period().unwrap());
    assert_eq!(host.ops(), vec![write(&format!("{mem}/memory.max_usage_in_bytes"), "0")]);
    assert_eq!(host.read(&format!("{mem}/memory.max_usage_in_bytes")), "4096\n", "the peak restarts at the charge");
    assert!(bx.reusable());
    assert_eq!(bx.usage().unwrap(), CgroupUsage::default(), "nothing happened in the new period");

    host.file(&format!("{cpu}/cpuacct.usage"), "3500000\n");
    host.file(&format!("{mem}/memory.max_usage_in_bytes"), "12288\n");
    assert_eq!(bx.cpu_ns().unwrap(), 2_500_000);
    assert_eq!(
        bx.usage().unwrap(),
        CgroupUsage { cpu_ns: 2_500_000, memory_peak_bytes: 8192, oom_killed: false, pids_max_hit: false }
    );
    host.file(&format!("{mem}/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    host.file(&format!("{pids}/pids.events"), "max 3\n");
    let usage = bx.usage().unwrap();
    assert!(usage.oom_killed && usage.pids_max_hit, "{usage:?}");

    bx.remove().unwrap();
    assert!(!bx.reusable(), "a removed cgroup serves no run");
    cg.remove_parents().unwrap();
}
