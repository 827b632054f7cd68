//! Descriptors of a box registered with tokio's reactor (`AsyncFd`).

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers a non-blocking descriptor with the current runtime's reactor
/// for `interest`. Panics outside a runtime.
pub(crate) fn watch(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd: the descriptor
    // stays open and the same until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into())
}
