//! What a box init is told to do: the steps that build a box's file system
//! and the run's [`Plan`], and how the init carries the steps out.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;

use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags};
use serde::{Deserialize, Serialize};

/// One step of building a box's file system: the template's (paths under
/// the new root, before `pivot_root`) or a run's (paths inside the box).
/// Mount flags are `MS_*` bits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Attach the persistent workspace that came with the plan (a detached
    /// mount from `open_tree(OPEN_TREE_CLONE)`) at `dst`.
    AttachWorkspace {
        dst: CString,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    Mount {
        src: CString,
        dst: CString,
        fstype: CString,
        flags: u32,
        data: CString,
    },
    /// Bind `src` on `dst`, then remount it read-only with `flags`.
    BindRo {
        src: CString,
        dst: CString,
        flags: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// A character device.
    Mknod {
        path: CString,
        mode: u32,
        dev: u64,
    },
    WriteFile {
        path: CString,
        content: Vec<u8>,
        mode: u32,
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
        flags: u32,
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
            Op::AttachWorkspace { dst } => format!("attach the workspace on {}", s(dst)),
        }
    }

    /// Carries the step out; `workspace` is the detached mount for
    /// [`Op::AttachWorkspace`]. Async-signal-safe: the template builder
    /// runs it in a clone of the multi-threaded service.
    pub(crate) fn run(&self, workspace: Option<BorrowedFd<'_>>) -> Result<(), Errno> {
        let flags = |bits: &u32| MountFlags::from_bits_retain(*bits);
        match self {
            Op::Mkdir { path, mode } => rustix::fs::mkdir(path.as_c_str(), Mode::from_raw_mode(*mode)),
            Op::Mount { src, dst, fstype, flags: f, data } => {
                rustix::mount::mount(src.as_c_str(), dst.as_c_str(), fstype.as_c_str(), flags(f), data.as_c_str())
            }
            Op::BindRo { src, dst, flags: f } => {
                rustix::mount::mount_bind_recursive(src.as_c_str(), dst.as_c_str())?;
                rustix::mount::mount_remount(dst.as_c_str(), MountFlags::BIND | MountFlags::RDONLY | flags(f), c"")
            }
            Op::Symlink { target, link } => rustix::fs::symlink(target.as_c_str(), link.as_c_str()),
            Op::Mknod { path, mode, dev } => {
                rustix::fs::mknodat(CWD, path.as_c_str(), FileType::CharacterDevice, Mode::from_raw_mode(*mode), *dev)
            }
            Op::WriteFile { path, content, mode, owner } => write_file(path, content, *mode, *owner),
            Op::Chown { path, uid, gid } => rustix::fs::chownat(
                CWD,
                path.as_c_str(),
                Some(rustix::fs::Uid::from_raw_unchecked(*uid)),
                Some(rustix::fs::Gid::from_raw_unchecked(*gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ),
            Op::AttachWorkspace { dst } => {
                let Some(workspace) = workspace else { return Err(Errno::BADF) };
                rustix::mount::move_mount(workspace, c"", CWD, dst.as_c_str(), MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            }
            Op::RemountRo { path, flags: f } => {
                rustix::mount::mount_remount(path.as_c_str(), MountFlags::RDONLY | flags(f), c"")
            }
        }
    }
}

/// Creates `path` (never through a symlink, never an existing file) with
/// `content`, `mode` and, if given, `owner`; async-signal-safe.
fn write_file(path: &CStr, content: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(mode))?;
    crate::sys::write_all(std::os::fd::AsFd::as_fd(&fd), content)?;
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw_unchecked(uid)),
            Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        )?;
    }
    Ok(())
}

/// A resource limit of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Limit {
    Core,
    FileSize,
    OpenFiles,
    LockedMemory,
    MessageQueues,
    CpuSeconds,
    RealtimePriority,
    Processes,
    Stack,
    AddressSpace,
}

impl Limit {
    pub(crate) fn resource(self) -> rustix::process::Resource {
        use rustix::process::Resource;
        match self {
            Limit::Core => Resource::Core,
            Limit::FileSize => Resource::Fsize,
            Limit::OpenFiles => Resource::Nofile,
            Limit::LockedMemory => Resource::Memlock,
            Limit::MessageQueues => Resource::Msgqueue,
            Limit::CpuSeconds => Resource::Cpu,
            Limit::RealtimePriority => Resource::Rtprio,
            Limit::Processes => Resource::Nproc,
            Limit::Stack => Resource::Stack,
            Limit::AddressSpace => Resource::As,
        }
    }
}

/// A resource limit applied to the payload (soft and hard alike).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Rlimit {
    pub limit: Limit,
    pub value: u64,
}

/// What a box init needs for one run, built by the host and sent to the
/// init with the descriptors: stdin, stdout, stderr, then the persistent
/// workspace's detached mount when `workspace` is set.
#[derive(Debug, Serialize, Deserialize)]
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
