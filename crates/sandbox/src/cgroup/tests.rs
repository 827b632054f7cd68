#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::fake::{FakeKernel, Op};
use super::*;

const LIMITS: CgroupLimits = CgroupLimits { memory_bytes: 64 << 20, pids: 16 };

fn mkdir(rel: &str) -> Op {
    Op::Mkdir(rel.to_owned())
}
fn rmdir(rel: &str) -> Op {
    Op::Rmdir(rel.to_owned())
}
fn write(rel: &str, value: &str) -> Op {
    Op::Write(rel.to_owned(), value.to_owned())
}

/// A fake cgroupfs in a temp dir plus the /proc texts that describe it.
struct Host {
    tmp: tempfile::TempDir,
    kernel: Arc<FakeKernel>,
    mountinfo: String,
    proc_cgroup: String,
}

impl Host {
    fn new(mountinfo: &str, proc_cgroup: &str, kernel: impl FnOnce(FakeKernel) -> FakeKernel) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = Arc::new(kernel(FakeKernel::new(tmp.path())));
        Host { tmp, kernel, mountinfo: mountinfo.to_owned(), proc_cgroup: proc_cgroup.to_owned() }
    }

    fn detect(&self, instance: &str) -> Result<Cgroups, CgroupError> {
        Cgroups::build(self.tmp.path(), &self.mountinfo, &self.proc_cgroup, instance, Fs::Fake(self.kernel.clone()))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Creates a file as the kernel would have it (not recorded).
    fn file(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    fn ops(&self) -> Vec<Op> {
        self.kernel.take_ops()
    }
}

// ---- pure v2 ----

const V2_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
const V2_CGROUP: &str = "0::/system.slice/evald.service\n";
const V2_OWN: &str = "sys/fs/cgroup/system.slice/evald.service";

const V2_FILES: &[(&str, &str)] = &[
    ("cgroup.controllers", "cpu memory pids\n"),
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", ""),
    ("cgroup.type", "domain\n"),
    ("cgroup.kill", ""),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
    ("memory.max", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.oom.group", "0\n"),
    ("memory.current", "0\n"),
    ("memory.peak", "0\n"),
    ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"),
    ("pids.max", "max\n"),
    ("pids.events", "max 0\n"),
];

fn v2_host(own_controllers: &str, own_procs: &str) -> Host {
    let host = Host::new(V2_MOUNTINFO, V2_CGROUP, |k| k.mount("sys/fs/cgroup", V2_FILES));
    // The root cgroup has no cgroup.type; the own cgroup is a delegated one.
    host.file("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
    host.file("sys/fs/cgroup/cgroup.subtree_control", "cpu io memory pids\n");
    host.file("sys/fs/cgroup/cgroup.procs", "1\n");
    for (name, content) in V2_FILES {
        host.file(&format!("{V2_OWN}/{name}"), content);
    }
    host.file(&format!("{V2_OWN}/cgroup.controllers"), own_controllers);
    host.file(&format!("{V2_OWN}/cgroup.procs"), own_procs);
    host.file("sys/fs/cgroup/system.slice/other.service/cgroup.procs", "77\n");
    host
}

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

// ---- v1: hybrid as on the development machine ----

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";
const MEM_OWN: &str = "sys/fs/cgroup/memory/process_api/abc";

const V1_MEMORY_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("memory.limit_in_bytes", "9223372036854771712\n"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
    ("memory.swappiness", "60\n"),
    ("memory.usage_in_bytes", "0\n"),
    ("memory.max_usage_in_bytes", "0\n"),
    ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
    ("memory.use_hierarchy", "1\n"),
];
const V1_PIDS_FILES: &[(&str, &str)] =
    &[("cgroup.procs", ""), ("pids.max", "max\n"), ("pids.current", "0\n"), ("pids.events", "max 0\n")];
const V1_CPUACCT_FILES: &[(&str, &str)] = &[("cgroup.procs", ""), ("cpuacct.usage", "0\n")];
const UNIFIED_FILES: &[(&str, &str)] = &[
    ("cgroup.controllers", ""),
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", ""),
    ("cgroup.type", "domain\n"),
    ("cgroup.kill", ""),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
];

fn hybrid_host(mountinfo: &str, proc_cgroup: &str, memory: &[(&str, &str)], unified: &[(&str, &str)]) -> Host {
    let host = Host::new(mountinfo, proc_cgroup, |k| {
        k.mount("sys/fs/cgroup/memory", memory)
            .mount("sys/fs/cgroup/pids", V1_PIDS_FILES)
            .mount("sys/fs/cgroup/cpuacct", V1_CPUACCT_FILES)
            .mount("sys/fs/cgroup/cpu,cpuacct", V1_CPUACCT_FILES)
            .mount("sys/fs/cgroup/unified", unified)
    });
    for dir in ["memory", "pids", "cpuacct", "cpu", "cpu,cpuacct", "systemd"] {
        host.file(&format!("sys/fs/cgroup/{dir}/cgroup.procs"), "1\n");
    }
    // Roots have no cgroup.kill, whatever the kernel.
    host.file("sys/fs/cgroup/unified/cgroup.controllers", "");
    host.file("sys/fs/cgroup/unified/cgroup.procs", "1\n");
    host.file(&format!("{MEM_OWN}/cgroup.procs"), "55\n");
    host.file("sys/fs/cgroup/memory/process_api/other/cgroup.procs", "66\n");
    host
}

fn machine_host() -> Host {
    hybrid_host(HYBRID_MOUNTINFO, HYBRID_CGROUP, V1_MEMORY_FILES, UNIFIED_FILES)
}

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
fn detection_follows_the_mounted_root_and_escapes() {
    // A container-style bind mount of a subtree, at a path with a space.
    let mountinfo = "\
35 31 0:32 /process_api /sys/fs/cgroup/mem\\040ory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
";
    let proc_cgroup = "8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n";
    let host = Host::new(mountinfo, proc_cgroup, |k| k);
    for dir in ["mem ory/abc", "pids", "cpuacct"] {
        host.file(&format!("sys/fs/cgroup/{dir}/cgroup.procs"), "");
    }
    let cg = host.detect("t").unwrap();
    assert_eq!(cg.hierarchies[cg.roles.memory].own, host.path("sys/fs/cgroup/mem ory/abc"));
    assert_eq!(cg.parent_dirs()[0], host.path("sys/fs/cgroup/mem ory/abc/evald-t"));

    // The own cgroup outside the mounted subtree cannot be used.
    let outside = Host::new(mountinfo, "8:pids:/\n4:memory:/elsewhere/abc\n2:cpuacct:/\n", |k| k);
    match outside.detect("t") {
        Err(CgroupError::NotMounted { hierarchy, cgroup }) => {
            assert_eq!((hierarchy.as_str(), cgroup.as_str()), ("memory", "/elsewhere/abc"));
        }
        other => panic!("{other:?}"),
    }
    let unlisted = Host::new(mountinfo, "8:pids:/\n2:cpuacct:/\n", |k| k);
    assert!(matches!(
        unlisted.detect("t"),
        Err(CgroupError::NotListed { hierarchy }) if hierarchy == "memory"
    ));
}

#[test]
fn malformed_proc_texts_are_parse_errors() {
    let host = machine_host();
    let bad_mountinfo = Host { mountinfo: "35 31 0:32 / /sys/fs/cgroup/memory rw\n".to_owned(), ..host };
    assert!(matches!(bad_mountinfo.detect("t"), Err(CgroupError::Parse { .. })));
    let bad_cgroup =
        Host { mountinfo: HYBRID_MOUNTINFO.to_owned(), proc_cgroup: "4:memory\n".to_owned(), ..bad_mountinfo };
    assert!(matches!(bad_cgroup.detect("t"), Err(CgroupError::Parse { .. })));
}

#[test]
fn sweep_stale_removes_only_this_instances_boxes() {
    let host = machine_host();
    // An earlier process of instance "t" crashed with two boxes, one busy.
    let crashed = host.detect("t").unwrap();
    let old1 = crashed.create_box("old1", &LIMITS).unwrap();
    old1.add_pid(777).unwrap();
    std::mem::forget(old1);
    std::mem::forget(crashed.create_box("old2", &LIMITS).unwrap());
    // Another instance's box and a foreign cgroup beside ours.
    let other = host.detect("other").unwrap();
    std::mem::forget(other.create_box("x", &LIMITS).unwrap());
    host.file(&format!("{MEM_OWN}/foreign/cgroup.procs"), "88\n");
    host.file("sys/fs/cgroup/pids/evald-t-service/cgroup.procs", "");
    host.ops();

    let cg = host.detect("t").unwrap();
    assert_eq!(cg.sweep_stale().unwrap(), 2);
    let ops = host.ops();
    assert_eq!(
        ops.iter().filter(|op| matches!(op, Op::Write(..) | Op::Kill(_))).collect::<Vec<_>>(),
        vec![&write("sys/fs/cgroup/unified/evald-t/old1/cgroup.kill", "1")],
        "{ops:?}"
    );
    for hierarchy in [MEM_OWN, "sys/fs/cgroup/pids", "sys/fs/cgroup/cpuacct", "sys/fs/cgroup/unified"] {
        assert!(host.exists(&format!("{hierarchy}/evald-t")));
        assert!(!host.exists(&format!("{hierarchy}/evald-t/old1")));
        assert!(!host.exists(&format!("{hierarchy}/evald-t/old2")));
        assert!(host.exists(&format!("{hierarchy}/evald-other/x")));
    }
    assert!(ops.iter().all(|op| match op {
        Op::Rmdir(p) => p.contains("/evald-t/old"),
        _ => true,
    }));
    assert_eq!(host.read(&format!("{MEM_OWN}/foreign/cgroup.procs")), "88\n");
    assert!(host.exists("sys/fs/cgroup/pids/evald-t-service"));
    assert_eq!(cg.sweep_stale().unwrap(), 0);
}

#[test]
fn remove_parents_refuses_a_parent_with_a_box() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    let _bx = cg.create_box("b1", &LIMITS).unwrap();
    match cg.remove_parents() {
        Err(CgroupError::Remove { path, source }) => {
            assert_eq!(path, host.path(&format!("{MEM_OWN}/evald-t")));
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_box_twice_fails_and_leaves_the_first_intact() {
    let host = machine_host();
    let cg = host.detect("t").unwrap();
    let _bx = cg.create_box("b1", &LIMITS).unwrap();
    host.ops();
    assert!(matches!(
        cg.create_box("b1", &LIMITS),
        Err(CgroupError::Create { path, .. }) if path == host.path(&format!("{MEM_OWN}/evald-t/b1"))
    ));
    assert_eq!(host.ops(), vec![]);
}

#[test]
fn failed_limit_write_removes_what_was_created() {
    let memory: Vec<_> = V1_MEMORY_FILES.iter().copied().filter(|(n, _)| *n != "memory.limit_in_bytes").collect();
    let host = hybrid_host(HYBRID_MOUNTINFO, HYBRID_CGROUP, &memory, UNIFIED_FILES);
    let cg = host.detect("t").unwrap();
    host.ops();
    assert!(matches!(
        cg.create_box("b1", &LIMITS),
        Err(CgroupError::Write { value, .. }) if value == "67108864"
    ));
    let ops = host.ops();
    assert_eq!(ops.iter().filter(|op| matches!(op, Op::Mkdir(_))).count(), 4);
    assert_eq!(ops.iter().filter(|op| matches!(op, Op::Rmdir(_))).count(), 4);
}

#[test]
fn names_and_pids_are_validated() {
    let host = machine_host();
    for instance in ["", "a/b", "..", ".hidden", "x-service", "sp ace"] {
        assert!(matches!(host.detect(instance), Err(CgroupError::InvalidName(_))), "{instance:?}");
    }
    let cg = host.detect("t").unwrap();
    for name in ["", "../x", "a/b", ".", "..", "nul\0"] {
        assert!(matches!(cg.create_box(name, &LIMITS), Err(CgroupError::InvalidName(_))), "{name:?}");
    }
    let bx = cg.create_box("b1", &LIMITS).unwrap();
    host.ops();
    for pid in [0, -1] {
        assert!(matches!(bx.add_pid(pid), Err(CgroupError::InvalidPid(p)) if p == pid));
    }
    assert_eq!(host.ops(), vec![]);
}

#[test]
fn keyed_files_parse_exact_keys() {
    let events = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 3\noom_group_kill 1\n";
    assert_eq!(keyed_value(events, "oom_kill"), Some(3));
    assert_eq!(keyed_value(events, "max"), Some(7));
    assert_eq!(keyed_value(events, "oom"), Some(1));
    assert_eq!(keyed_value("max.imposed 4\nmax 0\n", "max"), Some(0));
    assert_eq!(keyed_value("usage_usec 12\n", "usage"), None);
    assert_eq!(keyed_value("oom_kill x\n", "oom_kill"), None);
    assert_eq!(unescape("/a\\040b\\134c\\011"), PathBuf::from("/a b\\c\t"));
    assert_eq!(unescape("/trailing\\04"), PathBuf::from("/trailing\\04"));
}

#[test]
fn errors_name_the_path_in_lowercase_without_period() {
    let err = CgroupError::Write {
        path: PathBuf::from("/x/pids.max"),
        value: "16".to_owned(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    };
    assert_eq!(err.to_string(), "cannot write \"16\" to /x/pids.max");
    assert_eq!(chain(&err), "cannot write \"16\" to /x/pids.max: Invalid argument (os error 22)");
    assert_eq!(
        CgroupError::NoController("memory").to_string(),
        "no usable cgroup hierarchy offers the memory controller"
    );
}

#[test]
fn shared_types_are_send_and_sync() {
    fn is<T: Send + Sync>() {}
    is::<Cgroups>();
    is::<BoxCgroup>();
    is::<CgroupError>();
}

/// Real cgroups of this machine; run as root (CI does).
mod real {
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
        let v1_only: String =
            mountinfo.lines().filter(|l| !l.contains(" - cgroup2 ")).map(|l| format!("{l}\n")).collect();
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
