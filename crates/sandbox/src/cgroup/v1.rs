//! cgroup v1 files of a box written by path: `memory.*` in the memory
//! hierarchy. `memory.use_hierarchy` is
//! inherited from the parent and not touched.

use std::path::Path;

use tracing::debug;

use super::{CgroupError, Fs};

/// Sets the memory limit and, where the kernel accounts swap
/// (`memory.memsw.*` exists), the memory+swap limit to the same value, so the
/// box cannot swap. memsw may never be below the memory limit, so when
/// raising an earlier limit (`before`) memsw goes first, else the memory
/// limit does.
pub(super) fn set_memory(fs: &Fs, dir: &Path, bytes: u64, before: Option<u64>) -> Result<(), CgroupError> {
    let value = bytes.to_string();
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let memsw = memsw.exists().then_some(memsw);
    let raising = before.is_some_and(|b| bytes > b);
    if raising {
        if let Some(memsw) = &memsw {
            fs.write(memsw, &value)?;
        }
        fs.write(&limit, &value)?;
    } else {
        fs.write(&limit, &value)?;
        if let Some(memsw) = &memsw {
            fs.write(memsw, &value)?;
        }
    }
    // Best effort: not writable on every kernel, and only a preference.
    let swappiness = dir.join("memory.swappiness");
    if let Err(e) = fs.write(&swappiness, "0") {
        debug!(error = %e, "memory.swappiness not set");
    }
    Ok(())
}

/// Sets the peak to the current charge.
pub(super) fn reset_peak(fs: &Fs, dir: &Path) -> Result<(), CgroupError> {
    fs.write(&dir.join("memory.max_usage_in_bytes"), "0")
}
