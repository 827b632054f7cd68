//! The zygote: a small single-threaded process forked once from the
//! service (in the template mount namespace) that forks box inits on
//! request. [`Zygote`] is the host's handle; [`zygote_main`] its code.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use rustix::thread::LinkNameSpaceType;

use super::channel::Channel;
use super::init::{init_main, BoxInit};
use super::message::{ZygoteReply, ZygoteRequest};
use super::BoxContext;
use crate::sys::{self, Forked};

/// The host's handle on the zygote process. Requests are served one at a
/// time. A zygote that died (killed from outside) is replaced with
/// [`Zygote::restart`].
pub(crate) struct Zygote {
    process: Mutex<ZygoteProcess>,
}

/// One zygote process: its socket and pidfd. Dropping it closes the socket
/// (the zygote then exits) and reaps it.
struct ZygoteProcess {
    ctl: Option<Channel>,
    pid: Pid,
    pidfd: OwnedFd,
}

impl ZygoteProcess {
    /// Forks a zygote; see [`Zygote::start`].
    fn fork(ctx: &BoxContext) -> io::Result<ZygoteProcess> {
        let (host_end, zygote_end) = Channel::pair()?;
        // SAFETY: glibc's fork leaves the allocator usable in the child,
        // which is single-threaded and runs only `zygote_main`.
        let pid = match unsafe { sys::fork() }? {
            Forked::Child => zygote_main(zygote_end, ctx),
            Forked::Parent { pid, .. } => pid,
        };
        drop(zygote_end);
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(ZygoteProcess { ctl: Some(host_end), pid, pidfd }),
            Err(e) => {
                // Ending and reaping our own child: its pid cannot have
                // been reused before we wait for it.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                Err(e.into())
            }
        }
    }

    fn alive(&self) -> bool {
        !sys::exited(self.pidfd.as_fd())
    }
}

impl Drop for ZygoteProcess {
    fn drop(&mut self) {
        // End of file on its socket ends the zygote; then reap it.
        self.ctl = None;
        loop {
            match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED) {
                Err(Errno::INTR) => continue,
                _ => return,
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

    fn process(&self) -> io::Result<MutexGuard<'_, ZygoteProcess>> {
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
        self.process().ok().map(|p| p.pid.as_raw_nonzero().get())
    }

    /// Has the zygote fork a box init for `slot`: pid 1 of new pid, mount
    /// (a copy of the template), ipc and uts namespaces, in the slot's
    /// network namespace, waiting for requests.
    pub(crate) fn new_box(&self, slot: u32) -> io::Result<BoxInit> {
        let process = self.process()?;
        let ctl = process.ctl.as_ref().ok_or_else(|| io::Error::other("the zygote is gone"))?;
        ctl.send(&ZygoteRequest::NewBox { slot }, &[])?;
        let received = ctl.recv::<ZygoteReply>()?;
        let mut fds = received.fds.into_iter();
        match (received.message, fds.next(), fds.next()) {
            (ZygoteReply::Forked { pid }, Some(pidfd), Some(chan)) => {
                let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("the zygote sent pid 0"))?;
                Ok(BoxInit { pid, pidfd, chan: Some(Channel::from_fd(chan)) })
            }
            (ZygoteReply::Failed { errno }, ..) => Err(io::Error::from_raw_os_error(errno)),
            (ZygoteReply::Forked { .. }, ..) => Err(io::Error::other("the zygote sent no descriptors")),
        }
    }
}

/// The zygote: forks box inits on request. Never returns; only in the
/// child of [`ZygoteProcess::fork`].
fn zygote_main(ctl: Channel, ctx: &BoxContext) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let mut keep: Vec<RawFd> = ctx.net_ns.iter().map(AsRawFd::as_raw_fd).collect();
    keep.push(ctl.as_fd().as_raw_fd());
    keep.push(ctx.template.as_raw_fd());
    // SAFETY: a fresh child that never returns to the service's code; what
    // it uses afterwards (`ctl`, `ctx`'s namespaces) is kept.
    if unsafe { sys::close_all_except(&mut keep) }.is_err() {
        sys::exit(1);
    }
    // Inits are reaped by the kernel; the host watches them through their
    // pidfds.
    sys::ignore_children(true);
    // Give back the free pages of the heap we inherited: every init copies
    // (and later unmaps) the page tables of what we hold.
    sys::trim_heap();
    if rustix::thread::move_into_link_name_space(ctx.template.as_fd(), Some(LinkNameSpaceType::Mount)).is_err()
        || rustix::process::chdir(c"/").is_err()
    {
        sys::exit(1);
    }
    // SAFETY: nothing here uses the template's descriptor again, and `ctx`
    // (this process's copy) is never dropped: the zygote never returns.
    unsafe { sys::close(ctx.template.as_raw_fd()) };
    let mut current_net = None;
    loop {
        let slot = match ctl.recv::<ZygoteRequest>() {
            Ok(received) => match received.message {
                ZygoteRequest::NewBox { slot } => slot,
            },
            Err(_) => sys::exit(0),
        };
        let sent = match fork_init(ctx, slot, &mut current_net) {
            Ok((pid, pidfd, chan)) => {
                ctl.send(&ZygoteReply::Forked { pid: pid.as_raw_nonzero().get() }, &[pidfd.as_fd(), chan.as_fd()])
            }
            Err(e) => ctl.send(&ZygoteReply::Failed { errno: e.raw_os_error() }, &[]),
        };
        if sent.is_err() {
            // The host is gone.
            sys::exit(0);
        }
    }
}

/// In the zygote: forks one box init for `slot`. Returns its pid, pidfd and
/// the host's end of its socket.
fn fork_init(ctx: &BoxContext, slot: u32, current_net: &mut Option<u32>) -> Result<(Pid, OwnedFd, Channel), Errno> {
    let net = ctx.net_ns.get(slot as usize).ok_or(Errno::INVAL)?;
    if *current_net != Some(slot) {
        rustix::thread::move_into_link_name_space(net.as_fd(), Some(LinkNameSpaceType::Network))?;
        *current_net = Some(slot);
    }
    let (host_end, box_end) = Channel::pair()?;
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD;
    // SAFETY: a fork-like clone of this small, single-threaded process;
    // the child runs only `init_main`.
    match unsafe { sys::clone_process(flags) }? {
        Forked::Child => init_main(box_end, ctx),
        Forked::Parent { pid, pidfd: Some(pidfd) } => Ok((pid, pidfd, host_end)),
        Forked::Parent { .. } => Err(Errno::NOSYS),
    }
}
