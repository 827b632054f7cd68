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

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
        let target = CString::new(path.as_os_str().as_bytes()).map_err(|_| SpecError::NulByte("path"))?;
        let data = CString::new(format!("size={size_bytes},mode=0755,uid={uid},gid={uid}"))
            .map_err(|_| SpecError::NulByte("options"))?;
        // SAFETY: mount with valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io("mounting a tmpfs on")(io::Error::last_os_error()));
        }
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
        const OPEN_TREE_CLONE: libc::c_uint = 1;
        let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
        // SAFETY: open_tree on a directory descriptor we own, with an empty
        // path; it returns a fresh descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_open_tree, self.dir.as_raw_fd(), c"".as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
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
            parent.as_raw_fd(),
            &name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            mode,
        )
        .map_err(|source| WorkspaceError::Io { what: "creating", path: rel.into(), source })?;
        let mut file = fs::File::from(fd);
        let meta = file.metadata().map_err(|source| WorkspaceError::Io { what: "stat", path: rel.into(), source })?;
        if !meta.is_file() {
            return Err(WorkspaceError::NotAFile { path: rel.into() });
        }
        file.write_all(content).map_err(|source| WorkspaceError::Io { what: "writing", path: rel.into(), source })?;
        // SAFETY: fchown/fchmod on a descriptor we own.
        unsafe {
            libc::fchown(file.as_raw_fd(), self.uid, self.uid);
            libc::fchmod(file.as_raw_fd(), mode);
        }
        Ok(())
    }

    /// Reads `rel` if it is a regular file of at most `max` bytes.
    pub fn read_file(&self, rel: &str, max: u64) -> Result<Vec<u8>, WorkspaceError> {
        check_relative_path(rel)?;
        let fd = self.open_beneath(rel, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)?;
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
            Some(d) => d.as_raw_fd(),
            None => self.dir.as_raw_fd(),
        };
        let io = |source| WorkspaceError::Io { what: "listing", path: prefix.to_owned(), source };
        // Reading /proc/self/fd/N lists the directory we hold open, not
        // whatever its path may point to now.
        let mut names: Vec<_> = fs::read_dir(format!("/proc/self/fd/{fd}"))
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        for name in names {
            if out.len() >= max || depth > 32 {
                return Ok(());
            }
            let Ok(child) = openat(fd, &name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) else {
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
        let c = CString::new(name).map_err(|_| SpecError::NulByte("path"))?;
        // SAFETY: unlinkat relative to a directory we hold; no symlink is
        // followed by unlinkat itself.
        let mut r = unsafe { libc::unlinkat(parent.as_raw_fd(), c.as_ptr(), 0) };
        if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EISDIR) {
            // SAFETY: as above, for an (empty) directory.
            r = unsafe { libc::unlinkat(parent.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) };
        }
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Err(WorkspaceError::NotFound { path: rel.into() });
            }
            return Err(WorkspaceError::Io { what: "removing", path: rel.into(), source: e });
        }
        Ok(())
    }

    /// Renames `from` to `to` (creating `to`'s parent directories).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), WorkspaceError> {
        check_relative_path(from)?;
        check_relative_path(to)?;
        let (src_dir, src_name) = self.parent_of(from, false)?;
        let (dst_dir, dst_name) = self.parent_of(to, true)?;
        let (a, b) = (
            CString::new(src_name).map_err(|_| SpecError::NulByte("path"))?,
            CString::new(dst_name).map_err(|_| SpecError::NulByte("path"))?,
        );
        // SAFETY: renameat between directories we hold open.
        let r = unsafe { libc::renameat(src_dir.as_raw_fd(), a.as_ptr(), dst_dir.as_raw_fd(), b.as_ptr()) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Err(WorkspaceError::NotFound { path: from.into() });
            }
            return Err(WorkspaceError::Io { what: "renaming", path: from.into(), source: e });
        }
        Ok(())
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
            if create {
                let c = CString::new(*dir).map_err(|_| SpecError::NulByte("path"))?;
                // SAFETY: mkdirat relative to a directory we hold.
                if unsafe { libc::mkdirat(current.as_raw_fd(), c.as_ptr(), 0o755) } == 0 {
                    // SAFETY: fchownat without following a symlink.
                    unsafe {
                        libc::fchownat(current.as_raw_fd(), c.as_ptr(), self.uid, self.uid, libc::AT_SYMLINK_NOFOLLOW)
                    };
                }
            }
            current =
                openat(current.as_raw_fd(), dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(
                    |source| match source.kind() {
                        io::ErrorKind::NotFound => WorkspaceError::NotFound { path: rel.into() },
                        _ => WorkspaceError::Io { what: "opening", path: rel.into(), source },
                    },
                )?;
        }
        Ok((current, (*name).to_owned()))
    }

    fn open_beneath(&self, rel: &str, flags: i32) -> Result<OwnedFd, WorkspaceError> {
        openat(self.dir.as_raw_fd(), rel, flags, 0).map_err(|source| match source.kind() {
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
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: umount2 with a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir(path);
}

/// openat2 beneath `dir`: no symlinks, no magic links, no mount crossing.
fn openat(dir: RawFd, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain old data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { u64::from(mode) } else { 0 };
    how.resolve =
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
    // SAFETY: openat2 with a valid path and open_how of the right size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
