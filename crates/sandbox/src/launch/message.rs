//! The messages between the host and the processes of a box, one enum per
//! direction and peer. The descriptors each carries are named on its
//! variant; they travel with it (see `channel`).

use serde::{Deserialize, Serialize};

use super::payload::PayloadStep;

/// Host → zygote.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ZygoteRequest {
    /// Fork a box init for `slot` (in the slot's network namespace).
    NewBox { slot: u32 },
}

/// Zygote → host, the answer to [`ZygoteRequest::NewBox`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ZygoteReply {
    /// Descriptors: the init's pidfd, the host's end of its socket.
    Forked {
        pid: i32,
    },
    Failed {
        errno: i32,
    },
}

/// Host → box init. Generic over the plan so that the host sends a
/// borrowed one (`InitRequest<&Plan>`) and the init receives it owned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitRequest<P> {
    /// Descriptors: the box's `cgroup.procs` files, open for writing. The
    /// init writes `0` (itself) to each and answers [`InitReport::Moved`].
    EnterCgroups,
    /// Descriptors: stdin, stdout, stderr[, the workspace's detached mount].
    /// The init runs the plan and reports its end.
    Run(P),
}

/// Box init → host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum InitReport {
    /// The init is in the box's cgroups, or the errno of the write that
    /// failed (the init then exits).
    Moved(Result<(), i32>),
    /// The payload ended with this raw wait status. `max_rss` is the
    /// largest resident set of the payload and every process of the box
    /// the init reaped before it (`getrusage(RUSAGE_CHILDREN)`, bytes; at
    /// least the init's own, as the payload starts on the init's memory).
    Exited { wait_status: i32, max_rss: u64 },
    /// A step failed with this errno (the init then exits).
    SetupFailed { step: Step, errno: i32 },
}

impl InitReport {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            InitReport::Moved(_) => "Moved",
            InitReport::Exited { .. } => "Exited",
            InitReport::SetupFailed { .. } => "SetupFailed",
        }
    }
}

/// Template builder → host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TemplateReport {
    /// The root is built; its mount namespace is ready to be opened.
    Ready,
    Failed {
        step: Step,
        errno: i32,
    },
}

/// A step of building or starting a box that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Step {
    ReceivePlan,
    CloseFds,
    Propagation,
    Hostname,
    Loopback,
    Pivot,
    StartPayload,
    UnshareCgroup,
    /// A root-building step: its index in the template's or the plan's
    /// list of [`super::Op`]s.
    Op(u32),
    /// A step of the payload, before its `execve`.
    Payload(PayloadStep),
}

impl Step {
    /// What was being done, for messages ("the box failed while ...").
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::ReceivePlan => "receiving the plan",
            Step::CloseFds => "closing inherited descriptors",
            Step::Propagation => "making mounts private",
            Step::Hostname => "setting the host name",
            Step::Loopback => "bringing loopback up",
            Step::Pivot => "pivot_root",
            Step::StartPayload => "forking the payload",
            Step::UnshareCgroup => "unsharing the cgroup namespace",
            Step::Op(_) => "building the root file system",
            Step::Payload(step) => step.name(),
        }
    }
}
