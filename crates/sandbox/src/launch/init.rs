//! The box init: pid 1 of a box, forked by the zygote ahead of its run.
//! [`BoxInit`] is the host's handle on one; [`init_main`] is its code: it
//! moves itself into the box's cgroups when asked, then takes the plan,
//! builds the box's file system, starts the payload, reaps everything and
//! reports the payload's end.

use std::ffi::c_char;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use super::channel::{Channel, ChannelError};
use super::message::{InitReport, InitRequest, Step};
use super::payload::{payload_entry, Launch, PayloadFailure, PAYLOAD_STACK};
use super::plan::Plan;
use super::BoxContext;
use crate::sys;

/// The host's handle on a box init forked by the zygote. Dropping it kills
/// the init and waits until it has exited.
pub(crate) struct BoxInit {
    pub(super) pid: Pid,
    pub(super) pidfd: OwnedFd,
    /// The init's socket; `None` once handed over.
    pub(super) chan: Option<Channel>,
}

impl BoxInit {
    /// Whether the init is still running.
    pub(crate) fn alive(&self) -> bool {
        !sys::exited(self.pidfd.as_fd())
    }

    /// Descriptors held for this init.
    pub(crate) fn fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut fds = vec![self.pidfd.as_raw_fd()];
        fds.extend(self.chan.as_ref().map(|c| c.as_fd().as_raw_fd()));
        fds
    }

    fn chan(&self) -> io::Result<&Channel> {
        self.chan.as_ref().ok_or_else(|| io::Error::other("the box init was handed over"))
    }

    /// Has the init move itself into the cgroups whose `cgroup.procs` files
    /// are `procs` (opened for writing), and waits until it has.
    pub(crate) fn enter_cgroups(&self, procs: &[BorrowedFd<'_>]) -> io::Result<()> {
        let chan = self.chan()?;
        chan.send(&InitRequest::<&Plan>::EnterCgroups, procs)?;
        match chan.recv::<InitReport>()?.message {
            InitReport::Moved(Ok(())) => Ok(()),
            InitReport::Moved(Err(errno)) | InitReport::SetupFailed { errno, .. } => {
                Err(io::Error::from_raw_os_error(errno))
            }
            other => Err(ChannelError::UnexpectedMessage { expected: "Moved", received: other.name() }.into()),
        }
    }

    /// Sends the plan with its descriptors (stdin, stdout, stderr[,
    /// workspace]); the init starts the run. Returns the init's pid, pidfd
    /// and socket (on which its report comes).
    pub(crate) fn run(mut self, plan: &Plan, fds: &[BorrowedFd<'_>]) -> io::Result<(Pid, OwnedFd, OwnedFd)> {
        let pidfd = self.pidfd.try_clone()?;
        self.chan()?.send(&InitRequest::Run(plan), fds)?;
        // From here the caller's pidfd watches the init (see `Drop`).
        let chan = self.chan.take().ok_or_else(|| io::Error::other("no socket"))?;
        Ok((self.pid, pidfd, chan.into_fd()))
    }
}

impl Drop for BoxInit {
    fn drop(&mut self) {
        // An init given its run lives on under the caller's pidfd.
        if self.chan.take().is_none() {
            return;
        }
        sys::kill(&self.pidfd);
        sys::wait_exited(self.pidfd.as_fd());
    }
}

/// Reports a failed step to the host and exits.
fn fail(chan: &Channel, step: Step, errno: Errno) -> ! {
    let _ = chan.send_small(&InitReport::SetupFailed { step, errno: errno.raw_os_error() });
    sys::exit(1)
}

/// A box init (see the module docs): serves the host's requests, then runs
/// the plan. Never returns; only in the child of the zygote's clone.
pub(super) fn init_main(chan: Channel, ctx: &BoxContext) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // SAFETY: a fresh child that never returns to its parent's code; the
    // socket it keeps is `chan`.
    if let Err(e) = unsafe { sys::close_all_except(&mut [chan.as_fd().as_raw_fd()]) } {
        fail(&chan, Step::CloseFds, e);
    }
    // The zygote's signal mask (all blocked) and ignored SIGCHLD are
    // inherited; the init waits for its children, and the program starts
    // with none blocked and none ignored.
    sys::unblock_signals();
    sys::ignore_children(false);
    if let Err(e) = rustix::system::sethostname(b"evald") {
        fail(&chan, Step::Hostname, e);
    }
    loop {
        let received = match chan.recv::<InitRequest<Plan>>() {
            Ok(received) => received,
            Err(ChannelError::Decode(_)) => fail(&chan, Step::ReceivePlan, Errno::INVAL),
            // The host closed the socket (or dropped the box).
            Err(_) => sys::exit(0),
        };
        match received.message {
            InitRequest::EnterCgroups => {
                let mut result = Ok(());
                for fd in &received.fds {
                    if let (Err(e), Ok(())) = (sys::write_all(fd.as_fd(), b"0"), result) {
                        result = Err(e.raw_os_error());
                    }
                }
                drop(received.fds);
                let _ = chan.send_small(&InitReport::Moved(result));
                if result.is_err() {
                    sys::exit(1);
                }
            }
            InitRequest::Run(plan) => run_plan(&chan, ctx, plan, received.fds),
        }
    }
}

/// In the box init, in its cgroups: builds the box's file system, starts
/// the payload, reaps everything and reports. Never returns.
fn run_plan(chan: &Channel, ctx: &BoxContext, plan: Plan, mut fds: Vec<OwnedFd>) -> ! {
    if fds.len() != 3 + usize::from(plan.workspace) {
        fail(chan, Step::ReceivePlan, Errno::BADF);
    }
    // The cgroup namespace is rooted where the init now is.
    // SAFETY: this process is single-threaded: no other thread shares the
    // descriptor table or namespaces that change here.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWCGROUP) } {
        fail(chan, Step::UnshareCgroup, e);
    }
    if plan.loopback {
        // SAFETY: as above.
        let unshared = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) };
        if let Err(e) = unshared.and_then(|()| sys::loopback_up()) {
            fail(chan, Step::Loopback, e);
        }
    }
    rustix::process::umask(rustix::fs::Mode::empty());
    let workspace = fds.get(3).map(AsFd::as_fd);
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = op.run(workspace) {
            fail(chan, Step::Op(i as u32), e);
        }
    }
    // The workspace is attached: keep only stdin, stdout and stderr.
    fds.truncate(3);
    let pid = match start_payload(ctx, &plan, &fds) {
        Ok(Ok(pid)) => pid,
        Ok(Err(failure)) => fail(chan, Step::Payload(failure.step), Errno::from_raw_os_error(failure.errno)),
        Err(e) => fail(chan, Step::StartPayload, e),
    };
    // Our copy of stdin goes (the program's closing its own is then the
    // end of input for the host), our copies of stdout and stderr stay
    // until the report is sent: the host then learns of the program's end
    // once, from the report, and reads what it wrote without waiting,
    // rather than waking up for each stream's end first.
    let outputs = fds.split_off(1);
    drop(fds);
    // Reap everything until the payload itself is reaped.
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((reaped, status))) if reaped == pid => {
                let max_rss = sys::max_rss_bytes(libc::RUSAGE_CHILDREN);
                let _ = chan.send_small(&InitReport::Exited { wait_status: status.as_raw(), max_rss });
                drop(outputs);
                sys::exit(0);
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => sys::exit(1),
        }
    }
}

/// Starts the payload like vfork: it borrows this process's memory (no
/// copy of the page tables) on a stack of its own while this one waits,
/// until its `execve` (the failure pipe closes) or its failure (a record
/// on the pipe). It writes nothing of ours but its stack.
fn start_payload(ctx: &BoxContext, plan: &Plan, fds: &[OwnedFd]) -> Result<Result<Pid, PayloadFailure>, Errno> {
    let [stdin, stdout, stderr] = [0, 1, 2].map(|i| fds[i].as_fd());
    let mut argv: Vec<*const c_char> = plan.argv.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = plan.env.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (err_read, err_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let mut stack = sys::Stack::new(PAYLOAD_STACK)?;
    let launch = Launch {
        plan,
        stdio: [stdin, stdout, stderr],
        err: err_write.as_fd(),
        argv: &argv,
        envp: &envp,
        seccomp: &ctx.seccomp,
        last_cap: ctx.last_cap,
    };
    let arg: *const Launch<'_> = &launch;
    // SAFETY: `launch` lives on this frame until the payload exec'd or
    // exited (CLONE_VFORK suspends us until then); the payload only reads
    // it and allocates nothing (see `payload`).
    let pid = unsafe { sys::clone_vfork(payload_entry, &mut stack, arg.cast_mut().cast()) }?;
    drop(stack);
    drop(err_write);
    let mut record = [0u8; PayloadFailure::LEN];
    match sys::read_exact(err_read.as_fd(), &mut record) {
        Ok(true) => match PayloadFailure::decode(&record) {
            Some(failure) => Ok(Err(failure)),
            None => Err(Errno::PROTO),
        },
        // End of file: the payload exec'd.
        _ => Ok(Ok(pid)),
    }
}
