//! Linux isolation of one untrusted run.
//!
//! A [`Sandbox`] launches each [`RunSpec`] in a fresh *box*: new pid, mount,
//! ipc, uts and network namespaces; a read-only root built on a tmpfs and
//! entered with `pivot_root`; size-capped tmpfs for the workspace (`/box`),
//! `/tmp` and `/dev/shm`; a cgroup (v1 or v2) for memory, process count and
//! CPU accounting; a non-root user with no capabilities, `no_new_privs` and a
//! seccomp filter. [`Sandbox::run`] returns an [`Outcome`];
//! [`Sandbox::spawn`] hands back a [`Running`] box, which
//! [`Running::drive`] runs to its end from async code, with standard input
//! and [`Control`]s from a client and output to a [`Sink`].
//!
//! This crate knows nothing of languages or HTTP, and is the only crate of
//! evald with `unsafe` code.

mod asyncio;
pub mod cgroup;
mod drive;
pub mod instance;
mod launch;
mod layout;
mod outcome;
mod pool;
mod reaper;
mod running;
mod sandbox;
pub mod seccomp;
mod spec;
mod stdio;
mod sys;
mod workspace;

pub use drive::{Capture, Control, Sink, Stream};
pub use outcome::{signal_name, Outcome, Status};
pub use running::Running;
pub use sandbox::{Sandbox, SandboxConfig, SandboxError, DEFAULT_READ_ONLY_BINDS};
pub use spec::{
    FileSpec, Limits, Network, RunSpec, SpecError, Stdin, DEFAULT_STACK_BYTES, MIN_MEMORY_BYTES, MIN_STACK_BYTES,
};
pub use workspace::{Entry, Workspace, WorkspaceError};

/// The workspace directory inside every box, and the default working
/// directory.
pub const WORKSPACE_DIR: &str = "/box";

/// Raises this process's soft limit of open files to its hard limit (a
/// server holds several descriptors per box and per connection). Returns
/// the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })?;
    Ok(limit.maximum.unwrap_or(u64::MAX))
}
