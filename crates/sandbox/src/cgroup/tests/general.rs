//! What holds on every layout: parsing, sweeping, naming, errors.
#![allow(clippy::unwrap_used)]

use super::*;

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
