//! Async adapters (feature `tokio`): the descriptors a [`crate::Running`]
//! hands out (pipes, PTY master, pidfd) registered with tokio's reactor.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers a non-blocking descriptor (as handed out by [`crate::Running`])
/// with tokio; reads and writes go through the returned `File`.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<File>> {
    // SAFETY: the AsyncFd takes ownership of the File, which owns the
    // descriptor: it cannot be closed or replaced while registered.
    unsafe { AsyncFd::register(File::from(fd)) }.map_err(|e| e.into())
}
