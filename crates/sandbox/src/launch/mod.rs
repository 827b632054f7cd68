//! The box side of a run: the zygote, the box init and the payload, one
//! file per process, and the typed messages between them and the host.
//!
//! A box's processes never share or copy the service's memory. At start-up
//! the sandbox forks one small **zygote** process (single-threaded, in the
//! template mount namespace); every box init is a fork of it, so creating
//! one copies a few page tables instead of the (large, busy,
//! multi-threaded) service's, and the service takes no copy-on-write faults
//! and no TLB shootdowns for it. The zygote and the inits only run code of
//! this module; they may allocate (the zygote was forked by glibc's
//! `fork`, which leaves the allocator usable, and is single-threaded). The
//! payload shares its init's memory until `execve` and allocates nothing;
//! so does the template builder, a clone of the (multi-threaded) service.
//!
//! Processes talk over sockets with typed messages (`message`), framed and
//! serialized by `channel` (postcard, length-prefixed, descriptors by
//! `SCM_RIGHTS`); only the payload reports a failure through a fixed-size,
//! allocation-free record on a pipe (`payload`).
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
//!     socket (holding its copies of stdout and stderr until then) and
//!     exits (or is killed by the host); the kernel then kills
//!     what is left in the pid namespace, so daemonized survivors cannot
//!     outlive the run.
//! ```

mod channel;
mod init;
mod message;
mod payload;
mod plan;
mod template;
mod zygote;

use std::os::fd::OwnedFd;

use crate::seccomp::SeccompPolicy;

pub(crate) use channel::{Channel, SmallFrame};
pub(crate) use init::BoxInit;
pub(crate) use message::{InitReport, Step};
pub(crate) use payload::PayloadStep;
pub(crate) use plan::{Limit, Op, Plan, Rlimit};
pub(crate) use template::{build_template, new_net_ns};
pub(crate) use zygote::Zygote;

/// What the zygote and every init inherit from the host at the fork.
pub(crate) struct BoxContext {
    /// The template mount namespace (see [`build_template`]).
    pub template: OwnedFd,
    /// Per slot, its network namespace.
    pub net_ns: Vec<OwnedFd>,
    pub seccomp: SeccompPolicy,
    /// The highest capability number of this kernel (`cap_last_cap`).
    pub last_cap: u32,
}
