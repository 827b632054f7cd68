//! The template mount namespace every box copies, and the per-slot network
//! namespaces; both made once, when the sandbox starts.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::WaitOptions;
use rustix::thread::UnshareFlags;

use super::channel::{Channel, ChannelError};
use super::message::{Step, TemplateReport};
use super::plan::Op;
use crate::sys::{self, Forked};

/// Builds the template mount namespace shared by every box: a child in a
/// new mount namespace makes all mounts private, runs `ops` (which build
/// the root under `new_root`), pivots into it, detaches the host's tree and
/// makes the root read-only, reports, and waits until the host has opened
/// its namespace. Returns the namespace's descriptor.
///
/// The child is a clone of this (multi-threaded) process: it runs only
/// async-signal-safe code (system calls on `ops`, reports serialized on its
/// stack).
pub(crate) fn build_template(new_root: &CStr, ops: &[Op]) -> Result<OwnedFd, String> {
    let (host, child) = Channel::pair().map_err(|e| format!("creating a socket pair: {e}"))?;
    // SAFETY: a fork-like clone; the child runs only `template_child`,
    // which is async-signal-safe, and exits.
    let pid = match unsafe { sys::clone_process(libc::CLONE_NEWNS) } {
        Ok(Forked::Child) => template_child(&child, new_root, ops),
        Ok(Forked::Parent { pid, .. }) => pid,
        Err(e) => return Err(format!("cloning: {e}")),
    };
    drop(child);
    let result = match host.recv::<TemplateReport>() {
        Ok(received) => match received.message {
            TemplateReport::Ready => std::fs::File::open(format!("/proc/{}/ns/mnt", pid.as_raw_nonzero()))
                .map(OwnedFd::from)
                .map_err(|e| format!("opening the template namespace: {e}")),
            TemplateReport::Failed { step, errno } => {
                let what = match step {
                    Step::Op(i) => ops.get(i as usize).map_or_else(|| step.name().to_owned(), Op::describe),
                    other => other.name().to_owned(),
                };
                Err(format!("{what}: {}", io::Error::from_raw_os_error(errno)))
            }
        },
        Err(ChannelError::Closed) => Err("the template builder died".to_owned()),
        Err(e) => Err(format!("reading the template builder's report: {e}")),
    };
    // End of file on its socket ends the child; reap it.
    drop(host);
    let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
    result
}

/// The template builder (see [`build_template`]). Never returns.
fn template_child(chan: &Channel, new_root: &CStr, ops: &[Op]) -> ! {
    let fail = |step: Step, e: Errno| -> ! {
        let _ = chan.send_small(&TemplateReport::Failed { step, errno: e.raw_os_error() });
        sys::exit(1)
    };
    // Only our own socket stays open: a copy of another thread's pipe (say,
    // a concurrent template builder's) would keep it open.
    // SAFETY: a fresh child that never returns to the service's code.
    if let Err(e) = unsafe { sys::close_all_except(&mut [chan.as_fd().as_raw_fd()]) } {
        fail(Step::CloseFds, e);
    }
    if let Err(e) = rustix::mount::mount_change(c"/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE) {
        fail(Step::Propagation, e);
    }
    rustix::process::umask(rustix::fs::Mode::empty());
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = op.run(None) {
            fail(Step::Op(i as u32), e);
        }
    }
    let pivot = rustix::process::chdir(new_root)
        .and_then(|()| rustix::process::pivot_root(c".", c"."))
        .and_then(|()| rustix::mount::unmount(c".", UnmountFlags::DETACH))
        .and_then(|()| rustix::process::chdir(c"/"))
        .and_then(|()| {
            let ro = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
            rustix::mount::mount_remount(c"/", ro, c"")
        });
    if let Err(e) = pivot {
        fail(Step::Pivot, e);
    }
    let _ = chan.send_small(&TemplateReport::Ready);
    // Hold the namespace until the host has opened it (it then closes its
    // end of the socket).
    let mut byte = [0u8; 1];
    let _ = rustix::io::read(chan, &mut byte);
    sys::exit(0)
}

/// Creates a network namespace (only its loopback interface, down) and
/// returns a descriptor of it. Runs on a short-lived thread: a network
/// namespace can be unshared per thread, so no process is forked.
pub(crate) fn new_net_ns() -> io::Result<OwnedFd> {
    std::thread::spawn(|| {
        // SAFETY: only this short-lived thread's network namespace changes;
        // NEWNET does not unshare the descriptor table.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
        std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}
