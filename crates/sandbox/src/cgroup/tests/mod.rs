//! The cgroup code against a fake cgroupfs (pure v2, hybrid and v1
//! layouts), and against this machine's real cgroups (`real`, as root).
#![allow(clippy::unwrap_used)]

mod general;
mod real;
mod v1;
mod v2;

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

// ---- pure v2 fixtures ----

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

// ---- v1 fixtures: hybrid as on the development machine ----

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
