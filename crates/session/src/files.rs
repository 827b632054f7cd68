//! A session's files, as the HTTP routes reach them: the store is written
//! first (a write is acknowledged once durable), then the working copy; the
//! clients get a `files` event after every change.

use std::io;
use std::sync::Arc;

use evald_engine::{Entry, WorkspaceError};
use evald_state::StoredFile;

use crate::session::Session;
use crate::{blocking, Manager, SessionError};

fn check(path: &str) -> Result<(), SessionError> {
    evald_proto::path::check_relative_path(path).map_err(|e| SessionError::BadPath(e.to_string()))
}

/// A workspace error as an I/O error of the kind the session errors are
/// sorted by (see `crate::blocking`): the file system's own kind is kept.
fn workspace_error(e: WorkspaceError) -> io::Error {
    match e {
        WorkspaceError::NotFound { .. } => io::Error::from(io::ErrorKind::NotFound),
        WorkspaceError::Path(p) => io::Error::new(io::ErrorKind::InvalidInput, p.to_string()),
        WorkspaceError::NotAFile { path } => {
            io::Error::new(io::ErrorKind::IsADirectory, format!("{path} is not a regular file"))
        }
        WorkspaceError::Io { what, path, source } => match source.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(source.kind(), format!("{what} {path}: {source}")),
        },
        other => io::Error::other(other.to_string()),
    }
}

/// A path under a file is a file that does not exist.
fn under_a_file_is_missing(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotADirectory {
        io::Error::from(io::ErrorKind::NotFound)
    } else {
        e
    }
}

impl Manager {
    /// Every file and directory of a session's workspace, sorted, depth
    /// first.
    pub async fn list_files(&self, id: &str) -> Result<Vec<Entry>, SessionError> {
        let s = self.get(id).await?;
        let max = self.config.max_files * 4;
        blocking(move || s.workspace.list(max).map_err(io::Error::other)).await
    }

    /// The bytes of one file.
    pub async fn read_file(&self, id: &str, path: String) -> Result<Vec<u8>, SessionError> {
        check(&path)?;
        let s = self.get(id).await?;
        let max = self.config.disk_bytes;
        blocking(move || s.workspace.read_file(&path, max).map_err(workspace_error).map_err(under_a_file_is_missing))
            .await
    }

    /// Writes a file (its parents are created), within the quota.
    pub async fn write_file(&self, id: &str, path: String, content: Vec<u8>) -> Result<(), SessionError> {
        check(&path)?;
        let s = self.get(id).await?;
        let (max_files, disk) = (self.config.max_files, self.config.disk_bytes);
        let (s2, p2) = (s.clone(), path.clone());
        let len = content.len() as u64;
        // Where it goes, and the quota: the other files plus this one.
        blocking(move || {
            let entries = s2.workspace.list(max_files * 4).map_err(io::Error::other)?;
            let blocked = entries.iter().find(|e| {
                (e.is_dir && e.path == p2)
                    || (!e.is_dir && p2.strip_prefix(e.path.as_str()).is_some_and(|r| r.starts_with('/')))
            });
            if let Some(e) = blocked {
                let what = if e.is_dir { "a directory" } else { "a file" };
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is {what}", e.path)));
            }
            let others: Vec<_> = entries.iter().filter(|e| !e.is_dir && e.path != p2).collect();
            let used: u64 = others.iter().map(|e| e.size).sum();
            if others.len() + 1 > max_files || used + len > disk {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "quota"));
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            SessionError::Internal(_) | SessionError::Quota(_) => {
                SessionError::Quota(format!("a workspace holds at most {max_files} files and {disk} bytes"))
            }
            other => other,
        })?;
        let store = self.store.clone();
        let file = StoredFile { path, content, executable: false };
        let s2 = s.clone();
        // Stored first: the write is acknowledged only once it is durable.
        blocking(move || {
            store.put(&s2.id, &file)?;
            s2.workspace.write_file(&file.path, &file.content, false).map_err(workspace_error)
        })
        .await?;
        self.notify_files(&s).await;
        Ok(())
    }

    /// Deletes a file or an empty directory.
    pub async fn delete_file(&self, id: &str, path: String) -> Result<(), SessionError> {
        check(&path)?;
        let s = self.get(id).await?;
        let store = self.store.clone();
        let s2 = s.clone();
        blocking(move || {
            s2.workspace.remove(&path).map_err(workspace_error).map_err(under_a_file_is_missing)?;
            match store.delete(&s2.id, &path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
        .await?;
        self.notify_files(&s).await;
        Ok(())
    }

    /// Moves a file or a directory.
    pub async fn rename_file(&self, id: &str, from: String, to: String) -> Result<(), SessionError> {
        check(&from)?;
        check(&to)?;
        let s = self.get(id).await?;
        let store = self.store.clone();
        let s2 = s.clone();
        blocking(move || {
            s2.workspace.rename(&from, &to).map_err(workspace_error)?;
            store.rename(&s2.id, &from, &to)
        })
        .await?;
        self.notify_files(&s).await;
        Ok(())
    }

    async fn notify_files(&self, s: &Arc<Session>) {
        let max = self.config.max_files * 4;
        let s2 = s.clone();
        if let Ok(entries) = blocking(move || s2.workspace.list(max).map_err(io::Error::other)).await {
            s.emit(Session::files_event(&entries));
        }
    }
}
