//! The compile cache of `evald run`, kept on disk between invocations: what
//! a successful compilation left in the box's workspace, under the engine's
//! cache key (language, version, compile command and sources). Before a
//! compile the entry is put into the engine's in-memory cache, so the
//! engine serves it exactly as a server serves a repeated submission.
//!
//! The directory is root's (mode 0700) and no box ever sees it: an entry is
//! copied into a fresh box's workspace like any other file. Entries are
//! written to a temporary directory and renamed into place, so a reader
//! never sees half of one; the least recently used are removed beyond
//! [`MAX_ENTRIES`]. Every failure of the cache is logged and ignored: the
//! program then just compiles.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use evald_engine::cache::Key;
use evald_engine::FileSpec;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 64;

/// A compile cache directory.
pub struct DiskCache {
    dir: PathBuf,
}

fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl DiskCache {
    pub fn new(dir: PathBuf) -> DiskCache {
        DiskCache { dir }
    }

    /// The files of `key`'s entry, if there is a whole one.
    pub fn load(&self, key: &Key) -> Option<Vec<FileSpec>> {
        let entry = self.dir.join(hex(key));
        let mut files = Vec::new();
        match read_tree(&entry, "", &mut files) {
            Ok(()) => {
                // Its last use, for the eviction order.
                if let Err(e) = fs::File::open(&entry).and_then(|d| d.set_modified(SystemTime::now())) {
                    tracing::debug!(error = %e, "marking a compile cache entry used");
                }
                Some(files)
            }
            Err(e) => {
                if e.downcast_ref::<std::io::Error>().is_none_or(|e| e.kind() != ErrorKind::NotFound) {
                    tracing::warn!(entry = %entry.display(), error = format!("{e:#}"), "ignoring a compile cache entry");
                }
                None
            }
        }
    }

    /// Stores `files` as `key`'s entry (best effort).
    pub fn store(&self, key: &Key, files: &[FileSpec]) {
        if let Err(e) = self.try_store(key, files) {
            tracing::warn!(dir = %self.dir.display(), error = format!("{e:#}"), "could not keep the compilation");
        }
    }

    fn try_store(&self, key: &Key, files: &[FileSpec]) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let name = hex(key);
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let written = write_tree(&tmp, files);
        let renamed = written.and_then(|()| match fs::rename(&tmp, self.dir.join(&name)) {
            // Another invocation stored the same entry first.
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty || e.kind() == ErrorKind::AlreadyExists => Ok(()),
            other => other.context("renaming the entry into place"),
        });
        let _ = fs::remove_dir_all(&tmp);
        renamed?;
        self.evict();
        Ok(())
    }

    /// Removes the least recently used entries beyond [`MAX_ENTRIES`].
    fn evict(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort();
        for (_, path) in &entries[..entries.len() - MAX_ENTRIES] {
            let _ = fs::remove_dir_all(path);
        }
    }
}

fn write_tree(root: &Path, files: &[FileSpec]) -> Result<()> {
    fs::DirBuilder::new().mode(0o700).create(root).with_context(|| format!("creating {}", root.display()))?;
    for f in files {
        check_path(&f.path)?;
        let path = root.join(&f.path);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        fs::write(&path, &f.content).with_context(|| format!("writing {}", path.display()))?;
        let mode = if f.executable { 0o700 } else { 0o600 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// A compiled file's path is relative and stays beneath the entry.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        bail!("unexpected file path {path:?} in a compilation");
    }
    Ok(())
}

/// Reads every regular file under `dir` (anything else makes the entry
/// unusable).
fn read_tree(dir: &Path, prefix: &str, out: &mut Vec<FileSpec>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name =
            entry.file_name().into_string().map_err(|n| anyhow::anyhow!("a file name that is not UTF-8: {n:?}"))?;
        let path = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            read_tree(&entry.path(), &format!("{path}/"), out)?;
        } else if meta.is_file() {
            let content = fs::read(entry.path())?;
            out.push(FileSpec { path, content, executable: meta.permissions().mode() & 0o100 != 0 });
        } else {
            bail!("{path} is neither a file nor a directory");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8], executable: bool) -> FileSpec {
        FileSpec { path: path.into(), content: content.to_vec(), executable }
    }

    fn sorted(mut files: Vec<FileSpec>) -> Vec<(String, Vec<u8>, bool)> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.into_iter().map(|f| (f.path, f.content, f.executable)).collect()
    }

    #[test]
    fn an_entry_comes_back_as_stored_and_a_broken_one_is_ignored() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = DiskCache::new(dir.path().join("cache"));
        let files = vec![file("a.out", b"\x7fELF", true), file("pkg/Main.class", b"\xca\xfe", false)];
        assert!(cache.load(&[1; 32]).is_none(), "nothing stored yet");
        cache.store(&[1; 32], &files);
        assert_eq!(sorted(cache.load(&[1; 32]).expect("stored")), sorted(files.clone()));
        let mode = fs::metadata(dir.path().join("cache")).expect("the cache directory").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "root's alone");
        // A symlink (planted by anyone) makes the entry unusable.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("cache").join(hex(&[1; 32])).join("link"))
            .expect("symlink");
        assert!(cache.load(&[1; 32]).is_none());
        let escape = [file("../x", b"", false)];
        cache.store(&[2; 32], &escape);
        assert!(cache.load(&[2; 32]).is_none(), "a path leaving the entry is not stored");
    }

    #[test]
    fn the_least_recently_used_entries_go_beyond_the_maximum() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = DiskCache::new(dir.path().to_owned());
        let key = |i: usize| -> Key { [i as u8; 32] };
        for i in 0..MAX_ENTRIES {
            cache.store(&key(i), &[file("a.out", b"x", true)]);
            // Distinct use times, oldest first.
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            fs::File::open(dir.path().join(hex(&key(i)))).and_then(|d| d.set_modified(t)).expect("set the time");
        }
        assert!(cache.load(&key(0)).is_some(), "entry 0 used now: the most recent");
        cache.store(&key(MAX_ENTRIES), &[file("a.out", b"y", true)]);
        assert!(cache.load(&key(1)).is_none(), "the least recently used went");
        assert!(cache.load(&key(0)).is_some() && cache.load(&key(MAX_ENTRIES)).is_some());
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), MAX_ENTRIES);
    }
}
