//! The box's file system and the run's plan, as data: the template's
//! steps (built once) and a run's steps, limits, program and environment.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::launch::{Limit, Op, Plan, Rlimit};
use crate::sandbox::SandboxError;
use crate::spec::{Network, RunSpec, Stdin};
use crate::WORKSPACE_DIR;

/// Shared layout of every box's root (see docs/security.md).
pub(crate) fn base_ops(root: &Path, binds: &[PathBuf], users: &[u32]) -> Vec<Op> {
    let at = |p: &str| cpath(&root.join(p));
    let mut ops = vec![tmpfs(at(""), MountFlags::NOSUID | MountFlags::NODEV, "size=1m,nr_inodes=4096,mode=0755")];
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in ["usr", "etc", "proc", "dev", "tmp", "box"] {
        ops.push(Op::Mkdir { path: at(dir), mode: 0o755 });
        made.insert(PathBuf::from(dir));
    }
    let ro = (MountFlags::NOSUID | MountFlags::NODEV).bits();
    ops.push(Op::BindRo { src: cpath(Path::new("/usr")), dst: at("usr"), flags: ro });
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    ops.push(Op::Symlink { target: cpath(&target), link: at(top) });
                }
            }
            Ok(m) if m.is_dir() => {
                ops.push(Op::Mkdir { path: at(top), mode: 0o755 });
                ops.push(Op::BindRo { src: cpath(&host), dst: at(top), flags: ro });
            }
            _ => {}
        }
    }
    for host in binds {
        let Ok(meta) = fs::metadata(host) else { continue };
        let Ok(rel) = host.strip_prefix("/") else { continue };
        let parents: Vec<_> = rel.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
        for dir in parents.into_iter().rev() {
            if made.insert(dir.to_path_buf()) {
                ops.push(Op::Mkdir { path: cpath(&root.join(dir)), mode: 0o755 });
            }
        }
        let dst = cpath(&root.join(rel));
        if meta.is_dir() {
            made.insert(rel.to_path_buf());
            ops.push(Op::Mkdir { path: dst.clone(), mode: 0o755 });
        } else {
            ops.push(Op::WriteFile { path: dst.clone(), content: Vec::new(), mode: 0o644, owner: None });
        }
        ops.push(Op::BindRo { src: cpath(host), dst, flags: ro });
    }
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    for uid in users {
        passwd.push_str(&format!("evald:x:{uid}:{uid}:evald:{WORKSPACE_DIR}:/bin/sh\n"));
        group.push_str(&format!("evald:x:{uid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    for (name, content) in [
        ("etc/passwd", passwd.into_bytes()),
        ("etc/group", group.into_bytes()),
        ("etc/hosts", b"127.0.0.1 localhost evald\n::1 localhost\n".to_vec()),
    ] {
        ops.push(Op::WriteFile { path: at(name), content, mode: 0o644, owner: None });
    }
    ops.push(tmpfs(at("dev"), MountFlags::NOSUID | MountFlags::NOEXEC, "size=64k,nr_inodes=64,mode=0755"));
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        ops.push(Op::Mknod { path: at(&format!("dev/{name}")), mode: 0o666, dev: rustix::fs::makedev(major, minor) });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink { target: cstr(target), link: at(&format!("dev/{name}")) });
    }
    ops.push(Op::Mkdir { path: at("dev/shm"), mode: 0o755 });
    ops.push(Op::RemountRo { path: at("dev"), flags: (MountFlags::NOSUID | MountFlags::NOEXEC).bits() });
    ops
}

fn tmpfs(dst: CString, flags: MountFlags, data: &str) -> Op {
    Op::Mount { src: c"tmpfs".into(), dst, fstype: c"tmpfs".into(), flags: flags.bits(), data: cstr(data) }
}

pub(crate) fn cpath(p: &Path) -> CString {
    // Paths come from validated specs or from the host configuration.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn cstr(s: &str) -> CString {
    // Validated specs hold no NUL bytes.
    CString::new(s).unwrap_or_default()
}

fn resolve_program(program: &str) -> String {
    if program.contains('/') {
        return program.to_owned();
    }
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let candidate = format!("{dir}/{program}");
        if Path::new(&candidate).is_file() {
            return candidate;
        }
    }
    program.to_owned()
}

fn env_with_defaults(env: &[(String, String)], pty: bool) -> Vec<(String, String)> {
    let mut out = env.to_vec();
    let mut default = |k: &str, v: &str| {
        if !out.iter().any(|(name, _)| name == k) {
            out.push((k.to_owned(), v.to_owned()));
        }
    };
    default("PATH", "/usr/local/bin:/usr/bin:/bin");
    default("HOME", WORKSPACE_DIR);
    default("LANG", "C.UTF-8");
    if pty {
        default("TERM", "xterm-256color");
    }
    out
}

pub(crate) fn stdin_bytes(spec: &RunSpec) -> Vec<u8> {
    match &spec.stdin {
        Stdin::Bytes(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// The plan of a run of `spec` as `uid` (in a persistent workspace when
/// `workspace`, on a terminal when `pty`).
pub(crate) fn build_plan(spec: &RunSpec, workspace: bool, uid: u32, pty: bool) -> Result<Plan, SandboxError> {
    let at = |p: &str| cstr(p);
    let mut ops = Vec::with_capacity(8 + 3 * spec.files.len());
    let size = spec.limits.disk_bytes;
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    ops.push(Op::Mount {
        src: c"proc".into(),
        dst: at("/proc"),
        fstype: c"proc".into(),
        flags: (MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC).bits(),
        data: CString::default(),
    });
    ops.push(tmpfs(at("/dev/shm"), nosuid_nodev, &format!("size={size},mode=1777")));
    ops.push(tmpfs(at("/tmp"), nosuid_nodev, &format!("size={size},mode=1777")));
    if workspace {
        // A bind from the host's namespace is refused in the box's; a
        // detached copy of the mount (nosuid, nodev like the original),
        // sent with the plan, can be attached anywhere.
        ops.push(Op::AttachWorkspace { dst: at(WORKSPACE_DIR) });
    } else {
        ops.push(tmpfs(at(WORKSPACE_DIR), nosuid_nodev, &format!("size={size},mode=0755,uid={uid},gid={uid}")));
    }
    if workspace && !spec.files.is_empty() {
        return Err(SandboxError::Setup(
            "configuring: files go into a persistent workspace with Workspace::write_file".into(),
        ));
    }
    let mut dirs = BTreeSet::new();
    let ws_root = Path::new(WORKSPACE_DIR);
    for file in &spec.files {
        let rel = Path::new(&file.path);
        let parents: Vec<_> = rel.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
        for dir in parents.into_iter().rev() {
            if dirs.insert(dir.to_path_buf()) {
                let path = cpath(&ws_root.join(dir));
                ops.push(Op::Mkdir { path: path.clone(), mode: 0o755 });
                ops.push(Op::Chown { path, uid, gid: uid });
            }
        }
        ops.push(Op::WriteFile {
            path: cpath(&ws_root.join(rel)),
            content: file.content.clone(),
            mode: if file.executable { 0o755 } else { 0o644 },
            owner: Some((uid, uid)),
        });
    }

    let l = &spec.limits;
    let mut rlimits = vec![
        Rlimit { limit: Limit::Core, value: 0 },
        Rlimit { limit: Limit::FileSize, value: l.file_size_bytes },
        Rlimit { limit: Limit::OpenFiles, value: l.open_files.into() },
        Rlimit { limit: Limit::LockedMemory, value: 64 << 10 },
        Rlimit { limit: Limit::MessageQueues, value: 0 },
        Rlimit { limit: Limit::CpuSeconds, value: l.cpu_time.as_secs() + 2 },
        Rlimit { limit: Limit::RealtimePriority, value: 0 },
        Rlimit { limit: Limit::Stack, value: l.stack_bytes },
    ];
    if let Some(bytes) = l.process_memory_bytes {
        rlimits.push(Rlimit { limit: Limit::AddressSpace, value: bytes });
    }
    // RLIMIT_NPROC counts every process of the uid on the host: a backstop
    // for a slot's own uid, but boxes in persistent workspaces share one
    // uid, so for them the pids cgroup alone limits processes. Twice the
    // cgroup's limit: the cgroup must refuse first, as its event is what
    // reports the process limit (on Debian 12's 6.1 kernel an equal
    // RLIMIT_NPROC refused forks first and the limit went unreported).
    if !workspace {
        rlimits.push(Rlimit { limit: Limit::Processes, value: u64::from(l.processes) * 2 });
    }
    let program = resolve_program(&spec.program);
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(cstr(&program));
    argv.extend(spec.args.iter().map(|a| cstr(a)));
    let env = env_with_defaults(&spec.env, pty).iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect();
    Ok(Plan {
        pty,
        ops,
        loopback: spec.network == Network::Loopback,
        workspace,
        uid,
        gid: uid,
        rlimits,
        cwd: cstr(&spec.cwd),
        program: cstr(&program),
        argv,
        env,
    })
}
