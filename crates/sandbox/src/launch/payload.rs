//! The payload: pid 2 of a box, started by its init like vfork (sharing
//! the init's memory on a stack of its own until its `execve`). It sets up
//! stdio, its session, rlimits, the working directory, drops every
//! privilege, installs the seccomp filter and execs the program.
//!
//! Sharing the init's memory, it may not allocate, lock or write anything
//! of the init's: every call here is a system call on the stack's or the
//! plan's data, and a failure travels back as a fixed-size record (step,
//! errno) on a pipe ([`PayloadFailure`]), then the payload exits 127.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Rlimit as Limits;
use rustix::thread::{CapabilitySet, CapabilitySets};
use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::seccomp::SeccompPolicy;
use crate::sys;

/// Stack of the payload until its `execve`.
pub(crate) const PAYLOAD_STACK: usize = 64 << 10;

/// The payload's steps that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u32)]
pub(crate) enum PayloadStep {
    OomAdj = 1,
    Session,
    Stdio,
    Rlimit,
    Cwd,
    Caps,
    Ids,
    Seccomp,
    Exec,
}

impl PayloadStep {
    const ALL: [PayloadStep; 9] = [
        PayloadStep::OomAdj,
        PayloadStep::Session,
        PayloadStep::Stdio,
        PayloadStep::Rlimit,
        PayloadStep::Cwd,
        PayloadStep::Caps,
        PayloadStep::Ids,
        PayloadStep::Seccomp,
        PayloadStep::Exec,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            PayloadStep::OomAdj => "setting oom_score_adj",
            PayloadStep::Session => "creating a session",
            PayloadStep::Stdio => "setting up standard streams",
            PayloadStep::Rlimit => "setting resource limits",
            PayloadStep::Cwd => "changing to the working directory",
            PayloadStep::Caps => "dropping capabilities",
            PayloadStep::Ids => "switching to the box user",
            PayloadStep::Seccomp => "installing the seccomp filter",
            PayloadStep::Exec => "executing the program",
        }
    }
}

/// The payload's failure report: its step and errno, 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PayloadFailure {
    pub step: PayloadStep,
    pub errno: i32,
}

impl PayloadFailure {
    pub(crate) const LEN: usize = 8;

    fn encode(self) -> [u8; Self::LEN] {
        let mut buf = [0u8; Self::LEN];
        buf[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&self.errno.to_ne_bytes());
        buf
    }

    pub(crate) fn decode(buf: &[u8; Self::LEN]) -> Option<PayloadFailure> {
        let code = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let step = PayloadStep::ALL.into_iter().find(|s| *s as u32 == code)?;
        Some(PayloadFailure { step, errno: i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) })
    }
}

/// Everything the payload reads, prepared by its init before the start:
/// the plan, the descriptors, and `execve`'s pointer arrays.
pub(crate) struct Launch<'a> {
    pub plan: &'a Plan,
    pub stdio: [BorrowedFd<'a>; 3],
    /// Write end of the failure pipe (close-on-exec).
    pub err: BorrowedFd<'a>,
    /// `argv` and `envp`, each ending with a null pointer.
    pub argv: &'a [*const c_char],
    pub envp: &'a [*const c_char],
    pub seccomp: &'a SeccompPolicy,
    pub last_cap: u32,
}

/// Entry of the payload on its own stack (see `sys::clone_vfork`).
pub(crate) extern "C" fn payload_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Launch` on the stack of the box init, which is
    // suspended (CLONE_VFORK) until this process execs or exits.
    let launch = unsafe { &*arg.cast::<Launch<'_>>() };
    // The failure pipe moves above 0..2 first: stdio takes those.
    match rustix::io::fcntl_dupfd_cloexec(launch.err, 10) {
        Ok(err) => fail(err.as_fd(), payload(launch, err.as_fd())),
        Err(e) => fail(launch.err, (PayloadStep::Stdio, e)),
    }
}

/// Reports a failed step to the init and exits 127.
fn fail(err: BorrowedFd<'_>, (step, errno): (PayloadStep, Errno)) -> ! {
    // Best effort: without the record the init reports the payload's exit.
    let _ = sys::write_all(err, &PayloadFailure { step, errno: errno.raw_os_error() }.encode());
    sys::exit(127)
}

/// The payload's steps, reporting failures on `err`; returns only the
/// failing step.
fn payload(l: &Launch<'_>, err: BorrowedFd<'_>) -> (PayloadStep, Errno) {
    match setup(l, err) {
        Ok(()) => (PayloadStep::Exec, sys::execve(&l.plan.program, l.argv, l.envp)),
        Err(failure) => failure,
    }
}

/// Everything before `execve`.
fn setup(l: &Launch<'_>, err: BorrowedFd<'_>) -> Result<(), (PayloadStep, Errno)> {
    let plan = l.plan;
    let at = |step| move |e| (step, e);
    // The payload and its children are the OOM killer's first choice in
    // the box's cgroup: the init must live to report the outcome. (Raising
    // needs no capability; lowering the init would.)
    let adj = rustix::fs::open(c"/proc/self/oom_score_adj", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(at(PayloadStep::OomAdj))?;
    sys::write_all(adj.as_fd(), b"500").map_err(at(PayloadStep::OomAdj))?;
    drop(adj);
    rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::setsid().map_err(at(PayloadStep::Session))?;
    let high = stdio_above(l.stdio).map_err(at(PayloadStep::Stdio))?;
    rustix::stdio::dup2_stdin(&high[0]).map_err(at(PayloadStep::Stdio))?;
    rustix::stdio::dup2_stdout(&high[1]).map_err(at(PayloadStep::Stdio))?;
    rustix::stdio::dup2_stderr(&high[2]).map_err(at(PayloadStep::Stdio))?;
    if plan.pty {
        rustix::process::ioctl_tiocsctty(&high[0]).map_err(at(PayloadStep::Session))?;
    }
    drop(high);
    // SAFETY: this process never returns to the init's code, and owns
    // nothing but `err`, which is kept.
    unsafe { sys::close_all_except(&mut [0, 1, 2, err.as_raw_fd()]) }.map_err(at(PayloadStep::Stdio))?;
    for rl in &plan.rlimits {
        let limits = Limits { current: Some(rl.value), maximum: Some(rl.value) };
        rustix::process::setrlimit(rl.limit.resource(), limits).map_err(at(PayloadStep::Rlimit))?;
    }
    rustix::process::chdir(plan.cwd.as_c_str()).map_err(at(PayloadStep::Cwd))?;
    drop_privileges(plan, l.last_cap)?;
    l.seccomp.install().map_err(|e| (PayloadStep::Seccomp, e))
}

/// Duplicates stdin, stdout and stderr to descriptors above 10.
fn stdio_above(stdio: [BorrowedFd<'_>; 3]) -> Result<[OwnedFd; 3], Errno> {
    let [a, b, c] = stdio;
    Ok([
        rustix::io::fcntl_dupfd_cloexec(a, 10)?,
        rustix::io::fcntl_dupfd_cloexec(b, 10)?,
        rustix::io::fcntl_dupfd_cloexec(c, 10)?,
    ])
}

/// Empties the capability sets (bounding and ambient too) and switches to
/// the box user.
fn drop_privileges(plan: &Plan, last_cap: u32) -> Result<(), (PayloadStep, Errno)> {
    let caps = |e| (PayloadStep::Caps, e);
    // Empty the bounding set while we still have CAP_SETPCAP.
    for cap in 0..=last_cap.min(63) {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << cap)) {
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(caps(e)),
        }
    }
    rustix::thread::clear_ambient_capability_set().map_err(caps)?;
    // Per-thread system calls, not glibc's wrappers: this process was made
    // by raw clones, and glibc's wrappers signal every thread they believe
    // exists to change its ids too (which hangs when one does not).
    let ids = |e| (PayloadStep::Ids, e);
    let (uid, gid) =
        (rustix::process::Uid::from_raw_unchecked(plan.uid), rustix::process::Gid::from_raw_unchecked(plan.gid));
    rustix::thread::set_thread_groups(&[]).map_err(ids)?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(ids)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(ids)?;
    // setresuid from root to a non-root uid cleared the permitted and
    // effective sets; clear the inheritable set too.
    let none = CapabilitySet::empty();
    let sets = CapabilitySets { effective: none, permitted: none, inheritable: none };
    rustix::thread::set_capabilities(None, sets).map_err(caps)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip_and_unknown_steps_are_refused() {
        for step in PayloadStep::ALL {
            let failure = PayloadFailure { step, errno: libc::EACCES };
            assert_eq!(PayloadFailure::decode(&failure.encode()), Some(failure));
        }
        assert_eq!(PayloadFailure::decode(&[0; PayloadFailure::LEN]), None);
        assert_eq!(PayloadStep::Exec.name(), "executing the program");
    }
}
