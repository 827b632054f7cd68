//! One live process per instance name on a host.
//!
//! Everything of an instance (its cgroups `evald-<instance>`, its stale
//! sweep) is keyed by its name, so two processes with one name would kill
//! each other's boxes. Before anything else, [`crate::Sandbox::new`] takes
//! an exclusive `flock` on `/run/evald-instances/<instance>.lock` and holds
//! it for the sandbox's life (the kernel drops it when the process ends,
//! however it ends). A second process with the same name fails at once with
//! [`InstanceError::Running`], having touched nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Where the lock files live: root-only, outside any state directory (two
/// processes may name different state directories for one instance).
pub const LOCK_DIR: &str = "/run/evald-instances";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "instance {instance:?} is already running on this host (pid {holder}, lock {}); \
         stop it first or choose another --instance",
        path.display()
    )]
    Running { instance: String, holder: String, path: PathBuf },
    #[error("cannot lock instance {instance:?} ({}): {source}", path.display())]
    Io {
        instance: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock of one instance name; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of `instance` in `dir` without waiting. The name must
    /// already be a valid cgroup name (no `/`, not `.` or `..`).
    pub fn acquire(dir: &Path, instance: &str) -> Result<InstanceLock, InstanceError> {
        let path = dir.join(format!("{instance}.lock"));
        let io = |source| InstanceError::Io { instance: instance.to_owned(), path: path.clone(), source };
        if instance.is_empty() || instance.contains('/') || instance == "." || instance == ".." {
            return Err(io(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let meta = fs::symlink_metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(io(io::Error::from(io::ErrorKind::NotADirectory)));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "unknown".to_owned() } else { holder.to_owned() };
                return Err(InstanceError::Running { instance: instance.to_owned(), holder, path });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(InstanceLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_name_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().expect("test step");
        let first = InstanceLock::acquire(dir.path(), "a").expect("test step");
        let err = InstanceLock::acquire(dir.path(), "a").expect_err("refused");
        match &err {
            InstanceError::Running { instance, holder, path } => {
                assert_eq!(instance, "a");
                assert_eq!(holder, &std::process::id().to_string());
                assert_eq!(path, &dir.path().join("a.lock"));
            }
            other => panic!("expected Running, got {other:?}"),
        }
        // Another name is independent.
        let other = InstanceLock::acquire(dir.path(), "b").expect("test step");
        drop(first);
        let again = InstanceLock::acquire(dir.path(), "a").expect("test step");
        assert_eq!(again.path(), dir.path().join("a.lock"));
        drop(other);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("test step");
        for name in ["", "..", "a/b"] {
            assert!(matches!(InstanceLock::acquire(dir.path(), name), Err(InstanceError::Io { .. })), "{name:?}");
        }
    }
}
