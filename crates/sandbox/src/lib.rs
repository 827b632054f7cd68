//! Linux isolation of one untrusted run.
//!
//! A [`Sandbox`] launches each [`RunSpec`] in a fresh *box*: new pid, mount,
//! ipc, uts and network namespaces; a read-only root built on a tmpfs and
//! entered with `pivot_root`; size-capped tmpfs for the workspace (`/box`),
//! `/tmp` and `/dev/shm`; a cgroup (v1 or v2) for memory, process count and
//! CPU accounting; a non-root user with no capabilities, `no_new_privs` and a
//! seccomp filter. [`Sandbox::run`] returns an [`Outcome`];
//! [`Sandbox::spawn`] hands back a [`Running`] box for interactive use.
//!
//! This crate knows nothing of languages or HTTP, and is the only crate of
//! evald with `unsafe` code.

#[cfg(feature = "tokio")]
pub mod asyncio;
pub mod cgroup;
mod launch;
mod outcome;
mod sandbox;
pub mod seccomp;
mod spec;
mod workspace;

pub use outcome::{Outcome, Status};
pub use sandbox::{Running, Sandbox, SandboxConfig, SandboxError, DEFAULT_READ_ONLY_BINDS};
pub use spec::{check_relative_path, FileSpec, Limits, Network, RunSpec, SpecError, Stdin};
pub use workspace::{Entry, Workspace, WorkspaceError};

/// The workspace directory inside every box, and the default working
/// directory.
pub const WORKSPACE_DIR: &str = "/box";
