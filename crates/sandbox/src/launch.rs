//! The box side of a run: the zygote, the box init and the payload.
//!
//! A box's processes never share or copy the service's memory. At start-up
//! the sandbox forks one small **zygote** process (single-threaded, in the
//! template mount namespace); every box init is a fork of it, so creating
//! one copies a few page tables instead of the (large, busy,
//! multi-threaded) service's, and the service takes no copy-on-write faults
//! and no TLB shootdowns for it. The zygote and the inits only run code of
//! this module; they may allocate (the zygote was forked by glibc's
//! `fork`, which leaves the allocator usable, and is single-threaded).
//!
//! A run's [`Plan`] travels to its init over a socket, serialized, with the
//! descriptors it needs (`SCM_RIGHTS`).
//!
//! Process tree of a box:
//! ```text
//! host (evald) --fork--> zygote (once; template mount namespace)
//! zygote --clone(NEWNS|NEWPID|NEWIPC|NEWUTS)--> box init (pid 1), ahead of
//!     the run, in the slot's network namespace; the zygote's child, reaped
//!     by the kernel (SIGCHLD ignored there)
//!     box init: moves itself into the box's cgroups (host sends their
//!               files), waits for the plan; then mounts /proc and the
//!               per-run tmpfs, starts vfork-style:
//!         payload (pid 2): stdio, rlimits, drop privileges, seccomp, execve
//!     box init reaps everything, reports the payload's wait status on its
//!     socket and exits (or is killed by the host); the kernel then kills
//!     what is left in the pid namespace, so daemonized survivors cannot
//!     outlive the run.
//! ```

use std::ffi::{c_char, c_int, c_ulong, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::seccomp::SeccompPolicy;

/// One step of building a box's file system: the template's (paths under
/// the new root, before `pivot_root`) or a run's (paths inside the box).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Attach a detached mount (from `open_tree(OPEN_TREE_CLONE)`) at `dst`.
    /// In a plan `fd` is a placeholder: the init uses the workspace
    /// descriptor that came with the plan.
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
#[derive(Serialize, Deserialize)]
pub(crate) struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

/// What a box init needs for one run, built by the host and sent over the
/// init's socket (serialized) with the descriptors: stdin, stdout, stderr,
/// then the persistent workspace's detached mount when `workspace` is set.
#[derive(Serialize, Deserialize)]
pub(crate) struct Plan {
    pub pty: bool,
    /// Per-run steps, run inside the init's private copy of the template.
    pub ops: Vec<Op>,
    pub loopback: bool,
    pub workspace: bool,
    pub uid: u32,
    pub gid: u32,
    pub rlimits: Vec<Rlimit>,
    pub cwd: CString,
    pub program: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
}

/// Steps reported through the init's socket when they fail. The number of a
/// root-building step is `STEP_OPS + index into Plan::ops`.
pub(crate) mod step {
    pub const PLAN: u32 = 1;
    pub const CLOSE_FDS: u32 = 2;
    pub const PROPAGATION: u32 = 3;
    pub const HOSTNAME: u32 = 4;
    pub const LOOPBACK: u32 = 5;
    pub const PIVOT: u32 = 6;
    pub const NAMESPACES: u32 = 10;
    pub const FORK: u32 = 7;
    pub const OOM_ADJ: u32 = 8;
    pub const UNSHARE_CGROUP: u32 = 9;
    pub const CGROUPS: u32 = 11;
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
            PLAN => "receiving the plan",
            CLOSE_FDS => "closing inherited descriptors",
            PROPAGATION => "making mounts private",
            HOSTNAME => "setting the host name",
            LOOPBACK => "bringing loopback up",
            PIVOT => "pivot_root",
            NAMESPACES => "entering the box namespaces",
            FORK => "forking the payload",
            OOM_ADJ => "setting oom_score_adj",
            UNSHARE_CGROUP => "unsharing the cgroup namespace",
            CGROUPS => "entering the box cgroups",
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

/// Messages from a box init on its socket: `[kind, a, b]` as three native
/// u32.
pub(crate) mod report {
    /// `a` = the payload's raw wait status.
    pub const EXITED: u32 = 1;
    /// `a` = step, `b` = errno.
    pub const SETUP_FAILED: u32 = 2;
    /// The init is in the box's cgroups.
    pub const MOVED: u32 = 3;
}

/// A box init's report of the run, decoded from its 12-byte message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The payload ended with this raw wait status.
    Exited { wait_status: i32 },
    /// A step of the run failed with this errno.
    SetupFailed { step: u32, errno: i32 },
}

/// Size of a box init's report on its socket.
pub(crate) const REPORT_LEN: usize = 12;

impl Report {
    /// Decodes a report; `None` for anything but `EXITED` or `SETUP_FAILED`.
    pub(crate) fn decode(buf: &[u8; REPORT_LEN]) -> Option<Report> {
        let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        match word(0) {
            report::EXITED => Some(Report::Exited { wait_status: word(4) as i32 }),
            report::SETUP_FAILED => Some(Report::SetupFailed { step: word(4), errno: word(8) as i32 }),
            _ => None,
        }
    }
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

/// Closes every descriptor except those in `keep` (sorted in place).
fn close_all_except(keep: &mut [RawFd]) -> Result<(), ()> {
    keep.sort_unstable();
    let mut next: c_int = 0;
    for &fd in keep.iter() {
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

/// Sends `data` with `fds` attached (`SCM_RIGHTS`) in one message.
fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds one header with room for `fds`
        // (CMSG_SPACE above); CMSG_FIRSTHDR and CMSG_DATA point into it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        }
    }
    loop {
        // SAFETY: msg points to live buffers described above.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n == data.len() as isize {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if n < 0 { e } else { io::Error::other("short message") });
    }
}

/// Receives one message of exactly `buf.len()` bytes and up to `max_fds`
/// descriptors (close-on-exec). `Ok(None)` at end of file.
fn recv_with_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let n = loop {
        // SAFETY: msg points to live buffers described above.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; the CMSG_* helpers walk
    // the headers it wrote, and every descriptor in them is new and ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if n as usize != buf.len() || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("truncated message"));
    }
    Ok(Some(fds))
}

/// Reads exactly `buf.len()` bytes; false at an early end of file or error.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of a valid buffer.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        got += n as usize;
    }
    true
}

/// Writes all of `data`.
fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Messages from the host to a box init: a 16-byte header `[kind: u32,
/// descriptors: u32, body length: u64]` carrying the descriptors, then the
/// body.
mod request {
    /// Descriptors: the box's `cgroup.procs` files, open for writing. The
    /// init writes `0` (itself) to each and answers `report::MOVED`.
    pub const ENTER_CGROUPS: u32 = 1;
    /// Descriptors: stdin, stdout, stderr[, workspace]; body: the plan.
    pub const RUN: u32 = 2;
}

/// Most descriptors one request carries.
const MAX_FDS: usize = 8;

/// Largest plan body accepted (file contents travel in it).
const MAX_PLAN: u64 = 1 << 30;

fn header(kind: u32, fds: usize, len: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_ne_bytes());
    h[4..8].copy_from_slice(&(fds as u32).to_ne_bytes());
    h[8..16].copy_from_slice(&len.to_ne_bytes());
    h
}

/// What the zygote and every init inherit from the host at the fork.
pub(crate) struct BoxContext {
    /// The template mount namespace (see [`build_template`]).
    pub template: OwnedFd,
    /// Per slot, its network namespace.
    pub net_ns: Vec<OwnedFd>,
    pub seccomp: SeccompPolicy,
    /// The highest capability number of this kernel (`cap_last_cap`).
    pub last_cap: c_ulong,
}

/// The host's handle on the zygote process (see the module docs). Requests
/// are served one at a time. A zygote that died (killed from outside) is
/// replaced with [`Zygote::restart`].
pub(crate) struct Zygote {
    process: Mutex<ZygoteProcess>,
}

/// One zygote process: its socket and pidfd. Dropping it closes the socket
/// (the zygote then exits) and reaps it.
struct ZygoteProcess {
    ctl: Option<OwnedFd>,
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl ZygoteProcess {
    /// Forks a zygote; see [`Zygote::start`].
    fn fork(ctx: &BoxContext) -> io::Result<ZygoteProcess> {
        let (host_end, zygote_end) = socket_pair(libc::SOCK_SEQPACKET)?;
        // SAFETY: glibc's fork leaves the allocator usable in the child,
        // which is single-threaded and runs only `zygote_main`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the fresh child.
            unsafe { zygote_main(zygote_end.as_raw_fd(), ctx) }
        }
        drop(zygote_end);
        // SAFETY: pidfd_open of our own, unreaped child: the pid cannot be
        // reused before we wait for it.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
        if pidfd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: ending and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, ptr::null_mut(), 0);
            }
            return Err(e);
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        Ok(ZygoteProcess { ctl: Some(host_end), pid, pidfd })
    }

    fn alive(&self) -> bool {
        !exited(self.pidfd.as_raw_fd(), 0)
    }
}

impl Drop for ZygoteProcess {
    fn drop(&mut self) {
        // End of file on its socket ends the zygote; then reap it.
        self.ctl = None;
        loop {
            // SAFETY: siginfo_t is plain old data; waitid on our child's pidfd.
            let r = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PIDFD, self.pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED)
            };
            if r == 0 || errno() != libc::EINTR {
                return;
            }
        }
    }
}

impl Zygote {
    /// Forks the zygote. Its parent is the calling thread: when that thread
    /// ends, the kernel kills the zygote (`PR_SET_PDEATHSIG`), so call it
    /// (and [`Zygote::restart`]) from a thread that lives as long as the
    /// sandbox.
    pub(crate) fn start(ctx: &BoxContext) -> io::Result<Zygote> {
        Ok(Zygote { process: Mutex::new(ZygoteProcess::fork(ctx)?) })
    }

    fn process(&self) -> io::Result<std::sync::MutexGuard<'_, ZygoteProcess>> {
        self.process.lock().map_err(|_| io::Error::other("the zygote lock is poisoned"))
    }

    /// Whether the zygote process is running.
    pub(crate) fn alive(&self) -> bool {
        self.process().is_ok_and(|p| p.alive())
    }

    /// Replaces a zygote that died by a new one; returns whether it did.
    /// Box inits of the dead one died with it (`PR_SET_PDEATHSIG`).
    pub(crate) fn restart(&self, ctx: &BoxContext) -> io::Result<bool> {
        let mut process = self.process()?;
        if process.alive() {
            return Ok(false);
        }
        *process = ZygoteProcess::fork(ctx)?;
        Ok(true)
    }

    /// The zygote's pid.
    pub(crate) fn pid(&self) -> Option<libc::pid_t> {
        self.process().ok().map(|p| p.pid)
    }

    /// Has the zygote fork a box init for `slot`: pid 1 of new pid, mount
    /// (a copy of the template), ipc and uts namespaces, in the slot's
    /// network namespace, waiting for requests.
    pub(crate) fn new_box(&self, slot: u32) -> io::Result<BoxInit> {
        let process = self.process()?;
        let sock = process.ctl.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        send_with_fds(sock, &slot.to_ne_bytes(), &[])?;
        let mut reply = [0u8; 8];
        let fds = recv_with_fds(sock, &mut reply, 2)?.ok_or_else(|| io::Error::other("the zygote is gone"))?;
        let pid = i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]);
        let err = i32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]);
        let mut fds = fds.into_iter();
        match (pid, fds.next(), fds.next()) {
            (pid, Some(pidfd), Some(chan)) if pid > 0 => Ok(BoxInit { pid, pidfd, chan: Some(chan) }),
            _ => Err(io::Error::from_raw_os_error(if err == 0 { libc::EPROTO } else { err })),
        }
    }
}

fn socket_pair(kind: c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fresh descriptors on success.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The zygote: forks box inits on request. Never returns.
///
/// # Safety
/// Only in the child of [`Zygote::start`].
unsafe fn zygote_main(ctl: RawFd, ctx: &BoxContext) -> ! {
    // SAFETY: plain system calls on our own descriptors; the child branch of
    // the clone below runs only `init_main`.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0usize, 0usize, 0usize);
        let mut keep: Vec<RawFd> = ctx.net_ns.iter().map(AsRawFd::as_raw_fd).collect();
        keep.push(ctl);
        keep.push(ctx.template.as_raw_fd());
        if close_all_except(&mut keep).is_err() {
            libc::_exit(1);
        }
        // Inits are reaped by the kernel; the host watches them through
        // their pidfds.
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        // Give back the free pages of the heap we inherited: every init
        // copies (and later unmaps) the page tables of what we hold.
        libc::malloc_trim(0);
        if libc::setns(ctx.template.as_raw_fd(), libc::CLONE_NEWNS) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            libc::_exit(1);
        }
        libc::close(ctx.template.as_raw_fd());
        let mut current_net = usize::MAX;
        loop {
            let mut word = [0u8; 4];
            match recv_with_fds(ctl, &mut word, 0) {
                Ok(Some(_)) => {}
                _ => libc::_exit(0),
            }
            let slot = u32::from_ne_bytes(word) as usize;
            let (pid, pidfd, chan, err) = match fork_init(ctx, slot, &mut current_net) {
                Ok((pid, pidfd, chan)) => (pid, pidfd, chan, 0),
                Err(e) => (-1, -1, -1, e),
            };
            let mut reply = [0u8; 8];
            reply[0..4].copy_from_slice(&pid.to_ne_bytes());
            reply[4..8].copy_from_slice(&err.to_ne_bytes());
            let fds: &[RawFd] = if pid > 0 { &[pidfd, chan] } else { &[] };
            if send_with_fds(ctl, &reply, fds).is_err() {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::close(pidfd);
                libc::close(chan);
            }
        }
    }
}

/// In the zygote: forks one box init. Returns (pid, pidfd, host end of the
/// init's socket) or an errno.
///
/// # Safety
/// Only in the zygote.
unsafe fn fork_init(ctx: &BoxContext, slot: usize, current_net: &mut usize) -> Result<(i32, RawFd, RawFd), i32> {
    let net = ctx.net_ns.get(slot).ok_or(libc::EINVAL)?;
    // SAFETY: plain system calls; the child runs only `init_main`.
    unsafe {
        if *current_net != slot {
            if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(errno());
            }
            *current_net = slot;
        }
        let (host_end, box_end) = socket_pair(libc::SOCK_STREAM).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let flags =
            (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD)
                as c_ulong
                | libc::SIGCHLD as c_ulong;
        let mut pidfd: c_int = -1;
        // A fork-like clone of this small, single-threaded process.
        let pid = libc::syscall(libc::SYS_clone, flags, 0usize, &mut pidfd as *mut c_int, 0usize, 0usize);
        if pid < 0 {
            return Err(errno());
        }
        if pid == 0 {
            init_main(box_end.as_raw_fd(), ctx)
        }
        Ok((pid as i32, pidfd, std::os::fd::IntoRawFd::into_raw_fd(host_end)))
    }
}

/// The host's handle on a box init forked by the zygote. Dropping it kills
/// the init and waits until it has exited.
pub(crate) struct BoxInit {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// The init's socket; `None` once handed over.
    chan: Option<OwnedFd>,
}

impl BoxInit {
    /// Whether the init is still running.
    pub(crate) fn alive(&self) -> bool {
        !exited(self.pidfd.as_raw_fd(), 0)
    }

    /// Descriptors held for this init.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.pidfd.as_raw_fd()];
        fds.extend(self.chan.as_ref().map(AsRawFd::as_raw_fd));
        fds
    }

    fn chan(&self) -> RawFd {
        self.chan.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Has the init move itself into the cgroups whose `cgroup.procs` files
    /// are `procs` (opened for writing), and waits until it has.
    pub(crate) fn enter_cgroups(&self, procs: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
        let fds: Vec<RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
        send_with_fds(self.chan(), &header(request::ENTER_CGROUPS, fds.len(), 0), &fds)?;
        let mut reply = [0u8; 12];
        if !read_exact(self.chan(), &mut reply) {
            return Err(io::Error::other("the box init ended"));
        }
        let word = |i: usize| u32::from_ne_bytes([reply[i], reply[i + 1], reply[i + 2], reply[i + 3]]);
        match (word(0), word(4)) {
            (report::MOVED, 0) => Ok(()),
            (report::MOVED, e) | (report::SETUP_FAILED, e) => Err(io::Error::from_raw_os_error(e as i32)),
            _ => Err(io::Error::other("unexpected answer from the box init")),
        }
    }

    /// Sends the plan with its descriptors (stdin, stdout, stderr[,
    /// workspace]); the init starts the run. Returns the init's pid, pidfd
    /// and socket (on which its report comes).
    pub(crate) fn run(mut self, plan: &Plan, fds: &[RawFd]) -> io::Result<(libc::pid_t, OwnedFd, OwnedFd)> {
        let body = postcard::to_stdvec(plan).map_err(io::Error::other)?;
        let pidfd = self.pidfd.try_clone()?;
        send_with_fds(self.chan(), &header(request::RUN, fds.len(), body.len() as u64), fds)?;
        write_all(self.chan(), &body)?;
        // From here the caller's pidfd watches the init (see `Drop`).
        let chan = self.chan.take().ok_or_else(|| io::Error::other("no socket"))?;
        Ok((self.pid, pidfd, chan))
    }
}

impl Drop for BoxInit {
    fn drop(&mut self) {
        // An init given its run lives on under the caller's pidfd.
        if self.chan.is_none() {
            return;
        }
        self.chan = None;
        // SAFETY: signalling through our own pidfd.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32);
        }
        wait_exited(std::os::fd::AsFd::as_fd(&self.pidfd));
    }
}

/// Waits until the process behind `pidfd` has exited (the box inits are
/// not our children: the zygote's, reaped by the kernel). A box init exits
/// only after every process of its pid namespace is gone.
pub(crate) fn wait_exited(pidfd: std::os::fd::BorrowedFd<'_>) {
    exited(pidfd.as_raw_fd(), -1);
}

/// Whether the process behind `pidfd` exited within `timeout_ms` (0: now;
/// -1: waits for it). A poll error counts as exited: nothing to wait for.
pub(crate) fn exited(pidfd: RawFd, timeout_ms: c_int) -> bool {
    let mut p = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: polling one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 || errno() != libc::EINTR {
            return r != 0;
        }
    }
}

/// A box init (see the module docs): serves the host's requests, then runs
/// the plan. Never returns.
///
/// # Safety
/// Only in the child of [`fork_init`].
unsafe fn init_main(chan: RawFd, ctx: &BoxContext) -> ! {
    // SAFETY: plain system calls on our own descriptors and buffers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0usize, 0usize, 0usize);
        if close_all_except(&mut [chan]).is_err() {
            fail(chan, step::CLOSE_FDS);
        }
        // The zygote's signal mask (all blocked) and ignored SIGCHLD are
        // inherited; the init waits for its children, and the program
        // starts with none blocked and none ignored.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let host = b"evald";
        if libc::sethostname(host.as_ptr().cast(), host.len()) != 0 {
            fail(chan, step::HOSTNAME);
        }
        loop {
            let mut head = [0u8; 16];
            let fds = match recv_with_fds(chan, &mut head, MAX_FDS) {
                Ok(Some(fds)) => fds,
                _ => libc::_exit(0),
            };
            let kind = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
            let len =
                u64::from_ne_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
            match kind {
                request::ENTER_CGROUPS => {
                    let mut err = 0;
                    for fd in &fds {
                        if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 && err == 0 {
                            err = errno();
                        }
                    }
                    drop(fds);
                    send(chan, report::MOVED, err as u32, 0);
                    if err != 0 {
                        libc::_exit(1);
                    }
                }
                request::RUN if len <= MAX_PLAN => {
                    let mut body = vec![0u8; len as usize];
                    if !read_exact(chan, &mut body) {
                        libc::_exit(1);
                    }
                    let Ok(plan) = postcard::from_bytes::<Plan>(&body) else {
                        *libc::__errno_location() = libc::EINVAL;
                        fail(chan, step::PLAN)
                    };
                    drop(body);
                    run_plan(chan, ctx, plan, fds)
                }
                _ => {
                    *libc::__errno_location() = libc::EPROTO;
                    fail(chan, step::PLAN)
                }
            }
        }
    }
}

/// A plan with its descriptors, as the payload reads it.
struct Launch<'a> {
    plan: &'a Plan,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    seccomp: &'a SeccompPolicy,
    last_cap: c_ulong,
}

/// In the box init, in its cgroups: builds the box's file system, starts
/// the payload, reaps everything and reports. Never returns.
///
/// # Safety
/// Only in a box init.
unsafe fn run_plan(st: RawFd, ctx: &BoxContext, mut plan: Plan, mut fds: Vec<OwnedFd>) -> ! {
    let fd = |i: usize| fds.get(i).map_or(-1, AsRawFd::as_raw_fd);
    let (stdin, stdout, stderr) = (fd(0), fd(1), fd(2));
    let workspace = if plan.workspace { fd(3) } else { -1 };
    if stdin < 0 || stdout < 0 || stderr < 0 || (plan.workspace && workspace < 0) {
        // SAFETY: setting our errno.
        unsafe { *libc::__errno_location() = libc::EBADF };
        fail(st, step::PLAN);
    }
    for op in &mut plan.ops {
        if let Op::MoveMount { fd, .. } = op {
            *fd = workspace;
        }
    }
    // SAFETY: plain system calls on valid, NUL-terminated arguments and
    // descriptors of the plan; each failure is reported and ends the init.
    unsafe {
        // The cgroup namespace is rooted where the init now is.
        if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
            fail(st, step::UNSHARE_CGROUP);
        }
        if plan.loopback && (libc::unshare(libc::CLONE_NEWNET) != 0 || loopback_up().is_err()) {
            fail(st, step::LOOPBACK);
        }
        libc::umask(0);
        for (i, op) in plan.ops.iter().enumerate() {
            if run_op(op).is_err() {
                fail(st, step::OPS + i as u32);
            }
        }
        // The workspace is attached: keep only stdin, stdout and stderr.
        fds.truncate(3);
        let mut argv: Vec<*const c_char> = plan.argv.iter().map(|s| s.as_ptr()).collect();
        argv.push(ptr::null());
        let mut envp: Vec<*const c_char> = plan.env.iter().map(|s| s.as_ptr()).collect();
        envp.push(ptr::null());
        let launch =
            Launch { plan: &plan, stdin, stdout, stderr, argv, envp, seccomp: &ctx.seccomp, last_cap: ctx.last_cap };
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
        let args = PayloadArgs { launch: &launch, err: err_pipe[1] };
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
        drop(fds);
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

/// Stack of the payload until its `execve`.
const PAYLOAD_STACK: usize = 64 << 10;

/// What the payload reads from its parent's memory.
struct PayloadArgs<'a, 'p> {
    launch: &'a Launch<'p>,
    err: RawFd,
}

/// Entry of the payload on its own stack (see [`run_plan`]).
extern "C" fn payload_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the PayloadArgs on the stack of the box init, which
    // is suspended (CLONE_VFORK) until this process execs or exits.
    unsafe {
        let args = &*(arg as *const PayloadArgs);
        payload(args.launch, args.err)
    }
}

/// The payload: pid 2 of the box. Never returns.
///
/// # Safety
/// Only in the child started by [`run_plan`].
unsafe fn payload(l: &Launch, err: RawFd) -> ! {
    let plan = l.plan;
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
        let fds = [l.stdin, l.stdout, l.stderr];
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
        if close_all_except(&mut [0, 1, 2, err]).is_err() {
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
        for cap in 0..=l.last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno() != libc::EINVAL {
                payload_fail(err, step::PAYLOAD_CAPS);
            }
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            payload_fail(err, step::PAYLOAD_CAPS);
        }
        // Raw system calls, not glibc's wrappers: this process was made by
        // raw clones, and glibc's wrappers signal every thread they believe
        // exists to change its ids too (which hangs when one does not).
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
        if let Err(e) = l.seccomp.install() {
            *libc::__errno_location() = e;
            payload_fail(err, step::PAYLOAD_SECCOMP);
        }
        libc::execve(plan.program.as_ptr(), l.argv.as_ptr(), l.envp.as_ptr());
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
            if close_all_except(&mut [rw, hr]).is_err() {
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
