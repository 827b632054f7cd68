//! The child side of a run: everything between `clone` and `execve`.
//!
//! The launching process may be multi-threaded (the tokio server), so after
//! `clone` the child must only call async-signal-safe functions: no
//! allocation, no locks, no panics. [`Plan`] is therefore built completely on
//! the host side first (every path a `CString`, every argv/envp pointer
//! array ready), and the child only walks it making raw system calls.
//!
//! Process tree of a box:
//! ```text
//! host (evald) --clone(VM|FILES)--> launcher (ahead of the run, in the box's
//!     cgroups: enters the slot's network namespace and a copy of the
//!     template, unshares ipc, uts and pid namespaces, waits for a plan)
//! launcher --clone(PARENT)--> box init (pid 1; the host's child), launcher exits
//!     (without a launcher: host --clone(NEWPID|NEWIPC|NEWUTS[|NEWNET])-->
//!      box init, which enters the namespaces and waits to be moved into its
//!      cgroups)
//!     box init: mounts /proc and the per-run tmpfs, waits until the host
//!               reaped the launcher, starts vfork-style:
//!         payload (pid 2): stdio, rlimits, drop privileges, seccomp, execve
//!     box init reaps everything, writes the payload's wait status to the
//!     status pipe and exits (or is killed by the host's reaper); the kernel
//!     then kills what is left in the pid namespace, so daemonized survivors
//!     cannot outlive the run.
//! ```

use std::ffi::{c_char, c_int, c_ulong, CStr, CString};
use std::os::fd::RawFd;
use std::ptr;

use crate::seccomp::SeccompPolicy;

/// One step of building a box's file system: the template's (paths under
/// the new root, before `pivot_root`) or a run's (paths inside the box).
#[derive(Clone)]
pub(crate) enum Op {
    /// Attach a detached mount (from `open_tree(OPEN_TREE_CLONE)`) at `dst`.
    MoveMount {
        fd: RawFd,
        dst: CString,
    },
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    Mount {
        src: CString,
        dst: CString,
        fstype: CString,
        flags: c_ulong,
        data: CString,
    },
    /// Bind `src` on `dst`, then remount it read-only with `flags`.
    BindRo {
        src: CString,
        dst: CString,
        flags: c_ulong,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Mknod {
        path: CString,
        mode: libc::mode_t,
        dev: libc::dev_t,
    },
    WriteFile {
        path: CString,
        content: Vec<u8>,
        mode: libc::mode_t,
        owner: Option<(u32, u32)>,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
    },
    /// Make an already mounted file system read-only.
    RemountRo {
        path: CString,
        flags: c_ulong,
    },
}

impl Op {
    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Op::Mount { dst, fstype, .. } => format!("mount {} on {}", s(fstype), s(dst)),
            Op::BindRo { src, dst, .. } => format!("bind {} on {}", s(src), s(dst)),
            Op::Symlink { link, .. } => format!("symlink {}", s(link)),
            Op::Mknod { path, .. } => format!("mknod {}", s(path)),
            Op::WriteFile { path, .. } => format!("write {}", s(path)),
            Op::Chown { path, .. } => format!("chown {}", s(path)),
            Op::RemountRo { path, .. } => format!("remount read-only {}", s(path)),
            Op::MoveMount { dst, .. } => format!("attach the workspace on {}", s(dst)),
        }
    }
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A resource limit applied to the payload.
pub(crate) struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

/// Everything the child needs, prepared by the host.
pub(crate) struct Plan<'a> {
    /// Read end of the pipe the init waits on until the host has moved it
    /// into the box's cgroups (at its start), or, for a box from a launcher
    /// (born in its cgroups), until the host has reaped the launcher (before
    /// the payload starts: nothing that shares the host's memory may sit in
    /// the box's cgroups while untrusted code runs, and the launcher must
    /// not count against the box's process limit).
    pub sync_read: RawFd,
    /// The launcher already made the namespaces (see [`Launcher`]).
    pub prepared_ns: bool,
    /// The highest capability number of this kernel (`cap_last_cap`).
    pub last_cap: c_ulong,
    pub status_write: RawFd,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub pty: bool,
    /// The template mount namespace (see [`build_template`]).
    pub mnt_ns: RawFd,
    /// A network namespace to enter, or -1 when the clone made a new one.
    pub net_ns: RawFd,
    /// The persistent workspace directory to bind on `/box`, or -1.
    pub workspace: RawFd,
    /// Per-run steps, run inside the private copy of the template.
    pub ops: Vec<Op>,
    pub loopback: bool,
    pub uid: u32,
    pub gid: u32,
    pub rlimits: Vec<Rlimit>,
    pub cwd: CString,
    pub program: CString,
    /// Keeps the strings that `argv` and `envp` point into alive.
    pub _strings: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    pub seccomp: &'a SeccompPolicy,
}

/// Steps reported through the status pipe when they fail. The number of a
/// root-building step is `STEP_OPS + index into Plan::ops`.
pub(crate) mod step {
    pub const SYNC: u32 = 1;
    pub const CLOSE_FDS: u32 = 2;
    pub const PROPAGATION: u32 = 3;
    pub const HOSTNAME: u32 = 4;
    pub const LOOPBACK: u32 = 5;
    pub const PIVOT: u32 = 6;
    pub const NAMESPACES: u32 = 10;
    pub const FORK: u32 = 7;
    pub const OOM_ADJ: u32 = 8;
    pub const UNSHARE_CGROUP: u32 = 9;
    pub const PAYLOAD_STDIO: u32 = 20;
    pub const PAYLOAD_SESSION: u32 = 21;
    pub const PAYLOAD_RLIMIT: u32 = 22;
    pub const PAYLOAD_CWD: u32 = 23;
    pub const PAYLOAD_CAPS: u32 = 24;
    pub const PAYLOAD_IDS: u32 = 25;
    pub const PAYLOAD_SECCOMP: u32 = 26;
    pub const PAYLOAD_EXEC: u32 = 27;
    pub const OPS: u32 = 1000;

    pub fn name(step: u32) -> &'static str {
        match step {
            SYNC => "waiting for the host",
            CLOSE_FDS => "closing inherited descriptors",
            PROPAGATION => "making mounts private",
            HOSTNAME => "setting the host name",
            LOOPBACK => "bringing loopback up",
            PIVOT => "pivot_root",
            NAMESPACES => "entering the box namespaces",
            FORK => "forking the payload",
            OOM_ADJ => "setting oom_score_adj",
            UNSHARE_CGROUP => "unsharing the cgroup namespace",
            PAYLOAD_STDIO => "setting up standard streams",
            PAYLOAD_SESSION => "creating a session",
            PAYLOAD_RLIMIT => "setting resource limits",
            PAYLOAD_CWD => "changing to the working directory",
            PAYLOAD_CAPS => "dropping capabilities",
            PAYLOAD_IDS => "switching to the box user",
            PAYLOAD_SECCOMP => "installing the seccomp filter",
            PAYLOAD_EXEC => "executing the program",
            _ => "building the root file system",
        }
    }
}

/// Message kinds on the status pipe: `[kind, a, b]` as three native u32.
pub(crate) mod report {
    /// `a` = the payload's raw wait status.
    pub const EXITED: u32 = 1;
    /// `a` = step, `b` = errno.
    pub const SETUP_FAILED: u32 = 2;
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Writes a 12-byte report; async-signal-safe.
fn send(fd: RawFd, kind: u32, a: u32, b: u32) {
    let mut buf = [0u8; 12];
    buf[0..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..8].copy_from_slice(&a.to_ne_bytes());
    buf[8..12].copy_from_slice(&b.to_ne_bytes());
    // SAFETY: buf is a valid 12-byte buffer; a short or failed write only
    // loses the report, which the host treats as an internal error.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

fn fail(fd: RawFd, step: u32) -> ! {
    send(fd, report::SETUP_FAILED, step, errno() as u32);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(1) }
}

/// Closes every descriptor except those in `keep` (any order, at most 8).
fn close_all_except(keep: &[RawFd]) -> Result<(), ()> {
    let mut sorted = [-1; 12];
    let n = keep.len().min(sorted.len());
    sorted[..n].copy_from_slice(&keep[..n]);
    sorted[..n].sort_unstable();
    let mut next: c_int = 0;
    for &fd in &sorted[..n] {
        if fd < next {
            continue;
        }
        if fd > next {
            // SAFETY: close_range only closes descriptors of this process.
            if unsafe { libc::close_range(next as u32, (fd - 1) as u32, 0) } != 0 {
                return Err(());
            }
        }
        next = fd + 1;
    }
    // SAFETY: as above.
    if unsafe { libc::close_range(next as u32, u32::MAX, 0) } != 0 {
        return Err(());
    }
    Ok(())
}

/// Runs in the child right after `clone`: becomes the box's init. Never
/// returns.
///
/// # Safety
/// Must only be called in a freshly cloned child process (pid 1 of a new pid
/// namespace, in new mount/ipc/uts/net namespaces) with a `plan` whose
/// descriptors are open in this process.
pub(crate) unsafe fn box_init(plan: &Plan) -> ! {
    let st = plan.status_write;
    let keep = [plan.sync_read, st, plan.stdin, plan.stdout, plan.stderr, plan.mnt_ns, plan.net_ns, plan.workspace];
    if close_all_except(&keep).is_err() {
        fail(st, step::CLOSE_FDS);
    }
    // The cloning thread's signal mask is inherited (a launcher blocks
    // everything); the program starts with none blocked.
    // SAFETY: sigemptyset fills a local set; sigprocmask only changes this
    // process's mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
    }
    if !plan.prepared_ns {
        // Wait until the host has moved us into the box cgroups.
        wait_for_host(plan.sync_read);
    }
    // SAFETY: plain system calls on valid, NUL-terminated arguments and
    // descriptors of the plan; each failure is reported and ends the child.
    unsafe {
        if plan.prepared_ns {
            // The launcher entered the network namespace, copied the
            // template and made the ipc, uts and pid namespaces.
            if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                fail(st, step::NAMESPACES);
            }
        } else {
            if plan.net_ns >= 0 && libc::setns(plan.net_ns, libc::CLONE_NEWNET) != 0 {
                fail(st, step::NAMESPACES);
            }
            // Enter the template root, then take a private copy of it: the
            // template's few mounts are cheap to copy, unlike the host's.
            if libc::setns(plan.mnt_ns, libc::CLONE_NEWNS) != 0
                || libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) != 0
            {
                fail(st, step::NAMESPACES);
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                fail(st, step::NAMESPACES);
            }
            let host = b"evald";
            if libc::sethostname(host.as_ptr().cast(), host.len()) != 0 {
                fail(st, step::HOSTNAME);
            }
        }
        libc::close(plan.mnt_ns);
        if plan.net_ns >= 0 {
            libc::close(plan.net_ns);
        }
        if plan.loopback && loopback_up().is_err() {
            fail(st, step::LOOPBACK);
        }
        libc::umask(0);
        for (i, op) in plan.ops.iter().enumerate() {
            if run_op(op).is_err() {
                fail(st, step::OPS + i as u32);
            }
        }
        if plan.workspace >= 0 {
            libc::close(plan.workspace);
        }

        if plan.prepared_ns {
            // Wait until the host has reaped the launcher.
            wait_for_host(plan.sync_read);
        }
        let mut err_pipe = [0; 2];
        if libc::pipe2(err_pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            fail(st, step::FORK);
        }
        // The payload is started like vfork: it borrows our memory (no copy
        // of the page tables) on a stack of its own while we wait, until its
        // execve or its exit. It writes nothing of ours but its stack (and
        // errno in our thread-local storage, unused while we wait).
        let stack = libc::mmap(
            ptr::null_mut(),
            PAYLOAD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            fail(st, step::FORK);
        }
        let args = PayloadArgs { plan, err: err_pipe[1] };
        let pid = libc::clone(
            payload_entry,
            stack.cast::<u8>().add(PAYLOAD_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const PayloadArgs).cast_mut().cast(),
        );
        if pid < 0 {
            fail(st, step::FORK);
        }
        libc::munmap(stack, PAYLOAD_STACK);
        libc::close(err_pipe[1]);
        libc::close(plan.stdin);
        libc::close(plan.stdout);
        libc::close(plan.stderr);
        // Wait for the payload's exec (the pipe closes) or its setup failure.
        let mut buf = [0u8; 8];
        let n = libc::read(err_pipe[0], buf.as_mut_ptr().cast(), buf.len());
        if n == 8 {
            let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let err = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            send(st, report::SETUP_FAILED, step, err);
            libc::_exit(1);
        }
        libc::close(err_pipe[0]);
        // Reap everything until the payload itself is reaped.
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r == pid {
                send(st, report::EXITED, status as u32, 0);
                libc::_exit(0);
            }
            if r < 0 && errno() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

/// Reads the host's go-ahead byte from `sync_read` and closes it; exits
/// quietly if the host is gone.
fn wait_for_host(sync_read: RawFd) {
    let mut byte = 0u8;
    // SAFETY: reading one byte into a valid buffer, closing our descriptor.
    unsafe {
        while libc::read(sync_read, (&mut byte as *mut u8).cast(), 1) != 1 {
            if errno() != libc::EINTR {
                libc::_exit(1);
            }
        }
        libc::close(sync_read);
    }
}

/// Stack of the payload until its `execve`.
const PAYLOAD_STACK: usize = 64 << 10;

/// What the payload reads from its parent's memory.
struct PayloadArgs<'a, 'p> {
    plan: &'a Plan<'p>,
    err: RawFd,
}

/// Entry of the payload on its own stack (see [`box_init`]).
extern "C" fn payload_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the PayloadArgs on the stack of the box init, which
    // is suspended (CLONE_VFORK) until this process execs or exits.
    unsafe {
        let args = &*(arg as *const PayloadArgs);
        payload(args.plan, args.err)
    }
}

/// The payload: pid 2 of the box. Never returns.
///
/// # Safety
/// Only in the child forked by [`box_init`], after `pivot_root`.
unsafe fn payload(plan: &Plan, err: RawFd) -> ! {
    let mut err = err;
    // SAFETY: plain system calls on valid arguments prepared by the host.
    unsafe {
        // Make the payload and its children the OOM killer's first choice
        // in the box's cgroup: the init must live to report the outcome.
        // (Raising needs no capability; lowering the init would.)
        if write_file_at(c"/proc/self/oom_score_adj", b"500").is_err() {
            payload_fail(err, step::OOM_ADJ);
        }
        libc::umask(0o022);
        if libc::setsid() < 0 {
            payload_fail(err, step::PAYLOAD_SESSION);
        }
        // Move the error pipe out of the way of 0..2, then install stdio.
        err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 10);
        if err < 0 {
            payload_fail(err, step::PAYLOAD_STDIO);
        }
        let fds = [plan.stdin, plan.stdout, plan.stderr];
        let mut high = [0; 3];
        for (i, fd) in fds.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
            if high[i] < 0 {
                payload_fail(err, step::PAYLOAD_STDIO);
            }
        }
        for (target, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, target as c_int) < 0 {
                payload_fail(err, step::PAYLOAD_STDIO);
            }
        }
        if plan.pty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            payload_fail(err, step::PAYLOAD_SESSION);
        }
        if close_all_except(&[0, 1, 2, err]).is_err() {
            payload_fail(err, step::PAYLOAD_STDIO);
        }
        for rl in &plan.rlimits {
            let lim = libc::rlimit { rlim_cur: rl.value, rlim_max: rl.value };
            if libc::setrlimit(rl.resource, &lim) != 0 {
                payload_fail(err, step::PAYLOAD_RLIMIT);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            payload_fail(err, step::PAYLOAD_CWD);
        }
        // Empty the bounding set while we still have CAP_SETPCAP.
        for cap in 0..=plan.last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno() != libc::EINVAL {
                payload_fail(err, step::PAYLOAD_CAPS);
            }
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            payload_fail(err, step::PAYLOAD_CAPS);
        }
        // Raw system calls, not glibc's wrappers: in a child forked from a
        // multi-threaded process glibc still believes the other threads
        // exist and would wait forever for them to change their ids too.
        if libc::syscall(libc::SYS_setgroups, 0usize, ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0
            || libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0
        {
            payload_fail(err, step::PAYLOAD_IDS);
        }
        // setresuid from root to a non-root uid cleared the permitted and
        // effective sets; clear the inheritable set too.
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            payload_fail(err, step::PAYLOAD_CAPS);
        }
        if let Err(e) = plan.seccomp.install() {
            *libc::__errno_location() = e;
            payload_fail(err, step::PAYLOAD_SECCOMP);
        }
        libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        payload_fail(err, step::PAYLOAD_EXEC)
    }
}

/// Reports a payload setup failure to the box init and exits 127.
fn payload_fail(err: RawFd, step: u32) -> ! {
    let mut buf = [0u8; 8];
    buf[0..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..8].copy_from_slice(&(errno() as u32).to_ne_bytes());
    // SAFETY: writing a valid 8-byte buffer, then leaving.
    unsafe {
        libc::write(err, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Opens, writes and closes a file; async-signal-safe.
fn write_file_at(path: &CStr, content: &[u8]) -> Result<(), ()> {
    // SAFETY: path is NUL-terminated; content is a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(());
        }
        let n = libc::write(fd, content.as_ptr().cast(), content.len());
        libc::close(fd);
        if n != content.len() as isize {
            return Err(());
        }
    }
    Ok(())
}

/// Runs one root-building step; async-signal-safe.
fn run_op(op: &Op) -> Result<(), ()> {
    let ok = |r: c_int| if r == 0 { Ok(()) } else { Err(()) };
    // SAFETY: every pointer comes from a live CString or Vec of the plan.
    unsafe {
        match op {
            Op::Mkdir { path, mode } => ok(libc::mkdir(path.as_ptr(), *mode)),
            Op::Mount { src, dst, fstype, flags, data } => {
                ok(libc::mount(src.as_ptr(), dst.as_ptr(), fstype.as_ptr(), *flags, data.as_ptr().cast()))
            }
            Op::BindRo { src, dst, flags } => {
                ok(libc::mount(src.as_ptr(), dst.as_ptr(), ptr::null(), libc::MS_BIND | libc::MS_REC, ptr::null()))?;
                let f = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | *flags;
                ok(libc::mount(ptr::null(), dst.as_ptr(), ptr::null(), f, ptr::null()))
            }
            Op::Symlink { target, link } => ok(libc::symlink(target.as_ptr(), link.as_ptr())),
            Op::Mknod { path, mode, dev } => ok(libc::mknod(path.as_ptr(), *mode, *dev)),
            Op::WriteFile { path, content, mode, owner } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    *mode as c_int,
                );
                if fd < 0 {
                    return Err(());
                }
                let mut rest: &[u8] = content;
                let mut result = Ok(());
                while !rest.is_empty() {
                    let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
                    if n <= 0 {
                        if n < 0 && errno() == libc::EINTR {
                            continue;
                        }
                        result = Err(());
                        break;
                    }
                    rest = &rest[n as usize..];
                }
                if let Some((uid, gid)) = owner {
                    if libc::fchown(fd, *uid, *gid) != 0 {
                        result = Err(());
                    }
                }
                libc::close(fd);
                result
            }
            Op::Chown { path, uid, gid } => ok(libc::lchown(path.as_ptr(), *uid, *gid)),
            Op::MoveMount { fd, dst } => ok(libc::syscall(
                libc::SYS_move_mount,
                *fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) as c_int),
            Op::RemountRo { path, flags } => ok(libc::mount(
                ptr::null(),
                path.as_ptr(),
                ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | *flags,
                ptr::null(),
            )),
        }
    }
}

/// Sets IFF_UP on `lo` of the current network namespace.
fn loopback_up() -> Result<(), ()> {
    // SAFETY: a datagram socket used only for the interface ioctls; the
    // ifreq is zeroed and NUL-terminated.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as c_char;
        req.ifr_name[1] = b'o' as c_char;
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as i16;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(sock);
        if r == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// Clone flags of a box's init. The mount namespace comes from the
/// template, the network namespace from the slot (or `CLONE_NEWNET`).
const CLONE_FLAGS: c_ulong = (libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD)
    as c_ulong
    | libc::SIGCHLD as c_ulong;

/// Clones the box init. Returns (pid, pidfd) in the parent.
///
/// # Safety
/// `plan`'s descriptors must be open; the caller must not rely on anything
/// in the child (it never returns there).
pub(crate) unsafe fn spawn(plan: &Plan) -> std::io::Result<(libc::pid_t, RawFd)> {
    let flags = CLONE_FLAGS | if plan.net_ns < 0 { libc::CLONE_NEWNET as c_ulong } else { 0 };
    // SAFETY: the caller's contract.
    unsafe { clone_init(plan, flags) }.map_err(std::io::Error::from_raw_os_error)
}

/// [`spawn`] with the given clone flags (which must include
/// `CLONE_PIDFD`); the error is an errno (no allocation, so a launcher may
/// call it).
///
/// # Safety
/// As [`spawn`].
unsafe fn clone_init(plan: &Plan, flags: c_ulong) -> Result<(libc::pid_t, RawFd), i32> {
    let mut pidfd: c_int = -1;
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a
    // copy of this address space and only runs `box_init`, which is
    // async-signal-safe.
    // SAFETY: see above.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, &mut pidfd as *mut c_int, 0usize, 0usize) };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        // SAFETY: we are the fresh child.
        unsafe { box_init(plan) }
    }
    Ok((pid as libc::pid_t, pidfd))
}

/// A box prepared ahead of its run: a small process that shares our memory
/// and descriptor table (`CLONE_VM | CLONE_FILES`, its own stack) and waits,
/// already moved into the next box's cgroups, for a [`Plan`]. It then clones
/// the box init, which is born in those cgroups, reports the init's pid and
/// pidfd (a descriptor in our shared table) and exits.
///
/// Why: moving a process between cgroups takes the kernel's cgroup
/// threadgroup lock for writing, which waits for an RCU grace period when
/// no move happened recently: several milliseconds on an idle machine, and
/// all moves queue behind one another. Launchers take that cost before the
/// run is asked for.
///
/// The launcher runs only [`launcher_main`]: raw system calls on its own
/// stack. It uses the thread-local storage of the thread that started it
/// (no `CLONE_SETTLS`), so a failing system call in it could overwrite that
/// thread's `errno`; only the sandbox's reaper thread starts launchers, and
/// it reads `errno` only right after its own calls.
pub(crate) struct Launcher {
    pid: libc::pid_t,
    pidfd: std::os::fd::OwnedFd,
    /// Write end of the request pipe; closing it tells the launcher to exit.
    go: Option<std::os::fd::OwnedFd>,
    done: std::os::fd::OwnedFd,
    /// The launcher's own pipe ends, its arguments and its stack: it uses
    /// them until it is reaped (in `drop`, before the fields go).
    ends: [std::os::fd::OwnedFd; 2],
    _args: Box<LauncherArgs>,
    _stack: Stack,
}

struct LauncherArgs {
    go: RawFd,
    done: RawFd,
    /// The template mount namespace and the slot's network namespace.
    mnt_ns: RawFd,
    net_ns: RawFd,
}

/// First request to a launcher: make the box's namespaces (sent once the
/// launcher is in the box's cgroups). Any other value is a plan's address.
const SETUP: usize = 1;

/// An anonymous mapping used as a launcher's stack.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by the Stack alone and only unmapped in Drop.
unsafe impl Send for Stack {}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in Launcher::start,
        // once nothing runs on it any more (the launcher was reaped).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

const LAUNCHER_STACK: usize = 256 << 10;

impl Launcher {
    /// Starts a launcher. Its parent is the calling thread: when that
    /// thread ends, the kernel kills the launcher (`PR_SET_PDEATHSIG`).
    pub(crate) fn start(mnt_ns: RawFd, net_ns: RawFd) -> std::io::Result<Launcher> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two fresh descriptors on success.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fresh descriptors owned by nobody else.
            Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
        };
        let (go_r, go_w) = pipe()?;
        let (done_r, done_w) = pipe()?;
        let args = Box::new(LauncherArgs { go: go_r.as_raw_fd(), done: done_w.as_raw_fd(), mnt_ns, net_ns });
        // SAFETY: a fresh private anonymous mapping; checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                LAUNCHER_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len: LAUNCHER_STACK };
        // A guard page at the bottom: an overflow faults instead of writing
        // into whatever is mapped below.
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut pidfd: c_int = -1;
        // SAFETY: the child runs `launcher_main` on the new stack (top of the
        // mapping, 16-byte aligned as mmap returns page-aligned memory) with
        // `args`, which stays alive (boxed, owned by the Launcher) until the
        // child is reaped; see `launcher_main` for what it touches.
        let pid = unsafe {
            libc::clone(
                launcher_main,
                base.cast::<u8>().add(LAUNCHER_STACK).cast(),
                libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&*args as *const LauncherArgs).cast_mut().cast(),
                &mut pidfd as *mut c_int,
            )
        };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: CLONE_PIDFD stored a fresh descriptor that we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Launcher { pid, pidfd, go: Some(go_w), done: done_r, ends: [go_r, done_w], _args: args, _stack: stack })
    }

    /// Every descriptor this launcher holds open.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = vec![self.pidfd.as_raw_fd(), self.done.as_raw_fd()];
        fds.extend(self.go.as_ref().map(|f| f.as_raw_fd()));
        fds.extend(self.ends.iter().map(|f| f.as_raw_fd()));
        fds
    }

    /// The launcher's pid, to move it into the box's cgroups.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Has the launcher make the box's namespaces: enter the slot's network
    /// namespace, a private copy of the template mount namespace, new ipc
    /// and uts namespaces (hostname `evald`), and a new pid namespace for
    /// its child. Call once it is in the box's cgroups.
    pub(crate) fn setup(&self) -> std::io::Result<()> {
        self.request(SETUP)?;
        match self.reply::<4>()? {
            [0, 0, 0, 0] => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        }
    }

    fn request(&self, word: usize) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let word = word.to_ne_bytes();
        let go = self.go.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: writing a valid 8-byte buffer.
        if unsafe { libc::write(go, word.as_ptr().cast(), word.len()) } != word.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn reply<const N: usize>(&self) -> std::io::Result<[u8; N]> {
        use std::os::fd::AsRawFd;
        let mut reply = [0u8; N];
        let mut got = 0;
        while got < N {
            // SAFETY: reading into the unfilled part of a valid buffer.
            let n = unsafe { libc::read(self.done.as_raw_fd(), reply[got..].as_mut_ptr().cast(), N - got) };
            if n <= 0 {
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                return Err(std::io::Error::other("the launcher ended without an answer"));
            }
            got += n as usize;
        }
        Ok(reply)
    }

    /// Hands `plan` to the launcher and returns the box init's pid and
    /// pidfd. The launcher then exits; dropping `self` reaps it, which must
    /// happen before the host lets the init go on (see [`Plan::sync_read`]).
    ///
    /// # Safety
    /// As [`spawn`]: `plan`'s descriptors must be open.
    pub(crate) unsafe fn launch(&self, plan: &Plan) -> std::io::Result<(libc::pid_t, RawFd)> {
        // The launcher reads `plan` through our shared memory while we wait
        // for its reply.
        self.request(plan as *const Plan as usize)?;
        let reply = self.reply::<12>()?;
        let word = |i: usize| i32::from_ne_bytes([reply[i], reply[i + 1], reply[i + 2], reply[i + 3]]);
        let (pid, pidfd, err) = (word(0), word(4), word(8));
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(err));
        }
        Ok((pid, pidfd))
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing the request pipe ends a waiting launcher; then reap it
        // before its stack and arguments go away.
        self.go = None;
        reap(std::os::fd::AsFd::as_fd(&self.pidfd));
    }
}

/// Waits for the end of our child behind `pidfd` and reaps it; returns at
/// once if it was reaped already.
pub(crate) fn reap(pidfd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: siginfo_t is plain old data (all-zero is valid); waitid
        // writes into it for our own child's pidfd.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED)
        };
        if r == 0 || errno() != libc::EINTR {
            return;
        }
    }
}

/// The launcher process (see [`Launcher`]): waits for a plan's address,
/// clones the box init from it, replies and exits. Only raw system calls,
/// on its own stack; reads `args` and the plan through shared memory.
extern "C" fn launcher_main(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` points to the LauncherArgs kept alive by the Launcher
    // until this process is reaped; the plan address comes from
    // Launcher::launch, whose caller keeps the plan alive and unchanged until
    // our reply.
    unsafe {
        let args = &*(arg as *const LauncherArgs);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0usize, 0usize, 0usize);
        let next = || {
            let mut word = [0u8; 8];
            let mut got = 0;
            while got < word.len() {
                let n = libc::read(args.go, word[got..].as_mut_ptr().cast(), word.len() - got);
                if n <= 0 {
                    if n < 0 && errno() == libc::EINTR {
                        continue;
                    }
                    libc::_exit(0);
                }
                got += n as usize;
            }
            usize::from_ne_bytes(word)
        };
        let mut word = next();
        let ready = word == SETUP;
        if ready {
            let host = b"evald";
            let err = if libc::setns(args.net_ns, libc::CLONE_NEWNET) != 0
                || libc::setns(args.mnt_ns, libc::CLONE_NEWNS) != 0
                || libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID) != 0
                || libc::chdir(c"/".as_ptr()) != 0
                || libc::sethostname(host.as_ptr().cast(), host.len()) != 0
            {
                errno()
            } else {
                0
            };
            libc::write(args.done, err.to_ne_bytes().as_ptr().cast(), 4);
            if err != 0 {
                libc::_exit(0);
            }
            word = next();
        }
        let plan = &*(word as *const Plan);
        // The init's parent is ours (evald), which reaps it through the
        // pidfd; it joins the namespaces made above (a fresh network
        // namespace instead when the plan asks for one).
        let mut flags = if ready {
            (libc::CLONE_PARENT | libc::CLONE_PIDFD | libc::SIGCHLD) as c_ulong
        } else {
            CLONE_FLAGS | libc::CLONE_PARENT as c_ulong
        };
        if plan.net_ns < 0 {
            flags |= libc::CLONE_NEWNET as c_ulong;
        }
        let result = if plan.prepared_ns == ready { clone_init(plan, flags) } else { Err(libc::EINVAL) };
        let (pid, pidfd, err) = match result {
            Ok((pid, pidfd)) => (pid, pidfd, 0),
            Err(e) => (-1, -1, e),
        };
        let mut reply = [0u8; 12];
        reply[0..4].copy_from_slice(&pid.to_ne_bytes());
        reply[4..8].copy_from_slice(&pidfd.to_ne_bytes());
        reply[8..12].copy_from_slice(&err.to_ne_bytes());
        libc::write(args.done, reply.as_ptr().cast(), reply.len());
        libc::_exit(0)
    }
}

/// Builds the template mount namespace shared by every box: a child in a
/// new mount namespace makes all mounts private, runs `ops` (which build
/// the root under `new_root`), pivots into it, detaches the host's tree and
/// makes the root read-only. The host keeps a descriptor of the namespace;
/// the child then exits. Returns the namespace descriptor.
///
/// # Safety
/// Clones this process; the child runs only async-signal-safe code.
pub(crate) unsafe fn build_template(new_root: &CStr, ops: &[Op]) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut ready = [0; 2];
    let mut hold = [0; 2];
    // SAFETY: pipe2 fills valid descriptors on success.
    if unsafe {
        libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 || libc::pipe2(hold.as_mut_ptr(), libc::O_CLOEXEC) != 0
    } {
        return Err(format!("creating pipes: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the four descriptors are fresh and owned here.
    let (ready_r, ready_w, hold_r, hold_w) = unsafe {
        (
            OwnedFd::from_raw_fd(ready[0]),
            OwnedFd::from_raw_fd(ready[1]),
            OwnedFd::from_raw_fd(hold[0]),
            OwnedFd::from_raw_fd(hold[1]),
        )
    };
    use std::os::fd::AsRawFd;
    let (rw, hr) = (ready_w.as_raw_fd(), hold_r.as_raw_fd());
    let (rr, hw) = (ready_r.as_raw_fd(), hold_w.as_raw_fd());
    // SAFETY: fork-like clone; the child only runs async-signal-safe calls
    // on the prepared `ops` and exits.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (libc::CLONE_NEWNS | libc::SIGCHLD) as c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid < 0 {
        return Err(format!("cloning: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the fresh child; see the function's contract.
        unsafe {
            // Only our own pipe ends stay open: a copy of another thread's
            // pipe (say, a concurrent template builder's) would keep it open.
            let _ = (rr, hw);
            if close_all_except(&[rw, hr]).is_err() {
                fail(rw, step::CLOSE_FDS);
            }
            if libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), libc::MS_REC | libc::MS_PRIVATE, ptr::null()) != 0 {
                fail(rw, step::PROPAGATION);
            }
            libc::umask(0);
            for (i, op) in ops.iter().enumerate() {
                if run_op(op).is_err() {
                    fail(rw, step::OPS + i as u32);
                }
            }
            if libc::chdir(new_root.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                fail(rw, step::PIVOT);
            }
            let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
            if libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), ro, ptr::null()) != 0 {
                fail(rw, step::PIVOT);
            }
            send(rw, report::EXITED, 0, 0);
            let mut b = 0u8;
            libc::read(hr, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(hold_r);
    let mut buf = [0u8; 12];
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(ready_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let result = if n == 12 && word(0) == report::EXITED {
        std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map(OwnedFd::from)
            .map_err(|e| format!("opening the template namespace: {e}"))
    } else if n == 12 {
        let what = match word(4).checked_sub(step::OPS).and_then(|i| ops.get(i as usize)) {
            Some(op) => op.describe(),
            None => step::name(word(4)).to_owned(),
        };
        Err(format!("{what}: {}", std::io::Error::from_raw_os_error(word(8) as i32)))
    } else {
        Err("the template builder died".to_owned())
    };
    drop(hold_w);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    result
}

/// Creates a network namespace (only its loopback interface, down) and
/// returns a descriptor of it. Runs on a short-lived thread: a network
/// namespace can be unshared per thread, so no process is forked.
pub(crate) fn new_net_ns() -> std::io::Result<std::os::fd::OwnedFd> {
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this short-lived thread's namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::File::open("/proc/thread-self/ns/net").map(std::os::fd::OwnedFd::from)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
}
