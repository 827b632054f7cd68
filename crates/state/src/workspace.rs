//! Where session workspaces are kept: the store is the source of truth; the
//! tmpfs workspace a box sees is a working copy, filled from the store when
//! a session is opened and written back when a process ends.
//!
//! Two implementations: [`crate::LocalStore`] (the host's disk, one node)
//! and [`crate::RedisWorkspaceStore`] (shared by every node of a cluster).

use std::io;

use serde::{Deserialize, Serialize};

/// Metadata of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub language: String,
    /// Seconds since the epoch of the last activity.
    pub touched: u64,
}

/// A file of a stored workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub path: String,
    pub content: Vec<u8>,
    pub executable: bool,
}

/// Storage of session workspaces. A write returns only once it is stored.
pub trait WorkspaceStore: Send + Sync + 'static {
    fn create(&self, id: &str, meta: &Meta) -> io::Result<()>;
    fn meta(&self, id: &str) -> io::Result<Option<Meta>>;
    fn set_meta(&self, id: &str, meta: &Meta) -> io::Result<()>;
    fn put(&self, id: &str, file: &StoredFile) -> io::Result<()>;
    fn delete(&self, id: &str, path: &str) -> io::Result<()>;
    fn rename(&self, id: &str, from: &str, to: &str) -> io::Result<()>;
    /// Every file, sorted by path.
    fn files(&self, id: &str) -> io::Result<Vec<StoredFile>>;
    /// Replaces the whole file set (after a process changed the workspace).
    fn replace_all(&self, id: &str, files: &[StoredFile]) -> io::Result<()>;
    fn remove(&self, id: &str) -> io::Result<()>;
    /// Ids of every stored session.
    fn ids(&self) -> io::Result<Vec<String>>;
}
