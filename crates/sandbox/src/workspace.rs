//! Persistent workspaces: a size-capped tmpfs mounted on the host, bound as
//! `/box` into each box that uses it, kept between runs (compile then run,
//! or an interactive session).
//!
//! Untrusted code writes into a workspace, so the host treats every path
//! inside it as hostile: all access goes through `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` from the workspace's directory descriptor, files are
//! opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files, and
//! sizes are checked before reading. Because the workspace is its own
//! file system, a hard link to a host file cannot exist in it.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use rustix::mount::{MountFlags, OpenTreeFlags, UnmountFlags};

use crate::spec::{check_relative_path, SpecError};

/// Why a workspace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Path(#[from] SpecError),
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: {size} bytes, more than the limit of {max}")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: io::Error },
}

/// An entry of [`Workspace::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path with `/` separators.
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    /// Any execute bit is set.
    pub executable: bool,
}

/// A mounted workspace. [`Workspace::destroy`] (or drop) unmounts it.
#[derive(Debug)]
pub struct Workspace {
    path: PathBuf,
    dir: OwnedFd,
    uid: u32,
    mounted: bool,
}

impl Workspace {
    /// Mounts a fresh tmpfs of `size_bytes` at `path` (created if missing),
    /// owned by `uid`:`uid`.
    pub fn create(path: &Path, size_bytes: u64, uid: u32) -> Result<Workspace, WorkspaceError> {
        let shown = path.display().to_string();
        let io = |what| {
            let shown = shown.clone();
            move |source| WorkspaceError::Io { what, path: shown, source }
        };
        fs::create_dir_all(path).map_err(io("creating"))?;
        let data = std::ffi::CString::new(format!("size={size_bytes},mode=0755,uid={uid},gid={uid}"))
            .map_err(|_| SpecError::NulByte("options"))?;
        rustix::mount::mount(c"tmpfs", path, c"tmpfs", MountFlags::NOSUID | MountFlags::NODEV, data.as_c_str())
            .map_err(|e| io("mounting a tmpfs on")(e.into()))?;
        let dir = match fs::File::open(path) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                unmount(path);
                return Err(io("opening")(e));
            }
        };
        Ok(Workspace { path: path.to_owned(), dir, uid, mounted: true })
    }

    /// The host path of the mount (for binding into a box only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A detached copy of the workspace's mount (`open_tree` with
    /// `OPEN_TREE_CLONE`), which a box attaches in its own mount namespace.
    pub(crate) fn detached_copy(&self) -> io::Result<OwnedFd> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH;
        Ok(rustix::mount::open_tree(&self.dir, c"", flags)?)
    }

    /// The owner of every file the host makes in the workspace.
    fn owner(&self) -> (Uid, Gid) {
        (Uid::from_raw_unchecked(self.uid), Gid::from_raw_unchecked(self.uid))
    }

    /// The user id that owns the workspace; boxes using it run as this id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Writes `content` to `rel`, creating parent directories; replaces an
    /// existing regular file.
    pub fn write_file(&self, rel: &str, content: &[u8], executable: bool) -> Result<(), WorkspaceError> {
        check_relative_path(rel)?;
        let (parent, name) = self.parent_of(rel, true)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let fd = openat(
            parent.as_fd(),
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::from_raw_mode(mode),
        )
        .map_err(|source| WorkspaceError::Io { what: "creating", path: rel.into(), source })?;
        let mut file = fs::File::from(fd);
        let meta = file.metadata().map_err(|source| WorkspaceError::Io { what: "stat", path: rel.into(), source })?;
        if !meta.is_file() {
            return Err(WorkspaceError::NotAFile { path: rel.into() });
        }
        file.write_all(content).map_err(|source| WorkspaceError::Io { what: "writing", path: rel.into(), source })?;
        let _ = rustix::fs::fchown(&file, Some(self.owner().0), Some(self.owner().1));
        let _ = rustix::fs::fchmod(&file, Mode::from_raw_mode(mode));
        Ok(())
    }

    /// Reads `rel` if it is a regular file of at most `max` bytes.
    pub fn read_file(&self, rel: &str, max: u64) -> Result<Vec<u8>, WorkspaceError> {
        check_relative_path(rel)?;
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK)?;
        let mut file = fs::File::from(fd);
        let meta = file.metadata().map_err(|source| WorkspaceError::Io { what: "stat", path: rel.into(), source })?;
        if !meta.is_file() {
            return Err(WorkspaceError::NotAFile { path: rel.into() });
        }
        if meta.len() > max {
            return Err(WorkspaceError::TooLarge { path: rel.into(), size: meta.len(), max });
        }
        let mut out = Vec::with_capacity(meta.len() as usize);
        Read::by_ref(&mut file).take(max + 1).read_to_end(&mut out).map_err(|source| WorkspaceError::Io {
            what: "reading",
            path: rel.into(),
            source,
        })?;
        if out.len() as u64 > max {
            return Err(WorkspaceError::TooLarge { path: rel.into(), size: out.len() as u64, max });
        }
        Ok(out)
    }

    /// Lists every file and directory (depth first, sorted), at most `max`
    /// entries. Symlinks and special files are skipped.
    pub fn list(&self, max: usize) -> Result<Vec<Entry>, WorkspaceError> {
        let mut out = Vec::new();
        self.list_dir(None, "", &mut out, max, 0)?;
        Ok(out)
    }

    fn list_dir(
        &self,
        dir: Option<&OwnedFd>,
        prefix: &str,
        out: &mut Vec<Entry>,
        max: usize,
        depth: usize,
    ) -> Result<(), WorkspaceError> {
        let fd = match dir {
            Some(d) => d.as_fd(),
            None => self.dir.as_fd(),
        };
        let io = |source| WorkspaceError::Io { what: "listing", path: prefix.to_owned(), source };
        // Reading /proc/self/fd/N lists the directory we hold open, not
        // whatever its path may point to now.
        let mut names: Vec<_> = fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        for name in names {
            if out.len() >= max || depth > 32 {
                return Ok(());
            }
            let Ok(child) = openat(fd, &name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK, Mode::empty())
            else {
                continue;
            };
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let file = fs::File::from(child);
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_dir() {
                out.push(Entry { path: path.clone(), is_dir: true, size: 0, executable: false });
                self.list_dir(Some(&OwnedFd::from(file)), &path, out, max, depth + 1)?;
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let executable = meta.permissions().mode() & 0o111 != 0;
                out.push(Entry { path, is_dir: false, size: meta.len(), executable });
            }
        }
        Ok(())
    }

    /// Deletes a file, or an empty directory.
    pub fn remove(&self, rel: &str) -> Result<(), WorkspaceError> {
        check_relative_path(rel)?;
        let (parent, name) = self.parent_of(rel, false)?;
        // unlinkat follows no symlink itself.
        let removed = match rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::empty()) {
            // An (empty) directory.
            Err(Errno::ISDIR) => rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR),
            other => other,
        };
        match removed {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(WorkspaceError::NotFound { path: rel.into() }),
            Err(e) => Err(WorkspaceError::Io { what: "removing", path: rel.into(), source: e.into() }),
        }
    }

    /// Renames `from` to `to` (creating `to`'s parent directories).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), WorkspaceError> {
        check_relative_path(from)?;
        check_relative_path(to)?;
        let (src_dir, src_name) = self.parent_of(from, false)?;
        let (dst_dir, dst_name) = self.parent_of(to, true)?;
        match rustix::fs::renameat(&src_dir, src_name.as_str(), &dst_dir, dst_name.as_str()) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(WorkspaceError::NotFound { path: from.into() }),
            Err(e) => Err(WorkspaceError::Io { what: "renaming", path: from.into(), source: e.into() }),
        }
    }

    /// Unmounts the workspace and removes its mount point.
    pub fn destroy(mut self) {
        self.unmount_now();
    }

    fn unmount_now(&mut self) {
        if self.mounted {
            self.mounted = false;
            unmount(&self.path);
        }
    }

    /// The directory holding `rel`'s last component, and that component.
    fn parent_of(&self, rel: &str, create: bool) -> Result<(OwnedFd, String), WorkspaceError> {
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let (name, dirs) =
            components.split_last().ok_or(SpecError::BadPath { path: rel.into(), reason: "empty path" })?;
        let mut current =
            self.dir.try_clone().map_err(|source| WorkspaceError::Io { what: "dup", path: rel.into(), source })?;
        for dir in dirs {
            if create && rustix::fs::mkdirat(&current, *dir, Mode::from_raw_mode(0o755)).is_ok() {
                let (uid, gid) = self.owner();
                let _ = rustix::fs::chownat(&current, *dir, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW);
            }
            current =
                openat(current.as_fd(), dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).map_err(|source| {
                    match source.kind() {
                        io::ErrorKind::NotFound => WorkspaceError::NotFound { path: rel.into() },
                        _ => WorkspaceError::Io { what: "opening", path: rel.into(), source },
                    }
                })?;
        }
        Ok((current, (*name).to_owned()))
    }

    fn open_beneath(&self, rel: &str, flags: OFlags) -> Result<OwnedFd, WorkspaceError> {
        openat(self.dir.as_fd(), rel, flags, Mode::empty()).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => WorkspaceError::NotFound { path: rel.into() },
            _ => WorkspaceError::Io { what: "opening", path: rel.into(), source },
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.unmount_now();
    }
}

fn unmount(path: &Path) {
    let _ = rustix::mount::unmount(path, UnmountFlags::DETACH);
    let _ = fs::remove_dir(path);
}

/// openat2 beneath `dir`: no symlinks, no magic links, no mount crossing.
fn openat(dir: BorrowedFd<'_>, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let resolve =
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    Ok(rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, resolve)?)
}
