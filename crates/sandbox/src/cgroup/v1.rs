//! cgroup v1 files of a box: `memory.*` in the memory hierarchy and
//! `cpuacct.usage` in the cpuacct hierarchy. `memory.use_hierarchy` is
//! inherited from the parent and not touched.

use std::path::Path;

use tracing::debug;

use super::{read_keyed, read_u64, CgroupError, Fs};

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

pub(super) fn cpu_ns(dir: &Path) -> Result<u64, CgroupError> {
    read_u64(&dir.join("cpuacct.usage"))
}

pub(super) fn memory_peak(dir: &Path) -> Result<u64, CgroupError> {
    read_u64(&dir.join("memory.max_usage_in_bytes"))
}

pub(super) fn memory_current(dir: &Path) -> Result<u64, CgroupError> {
    read_u64(&dir.join("memory.usage_in_bytes"))
}

/// Sets the peak to the current charge.
pub(super) fn reset_peak(fs: &Fs, dir: &Path) -> Result<(), CgroupError> {
    fs.write(&dir.join("memory.max_usage_in_bytes"), "0")
}

/// `oom_kill N` in `memory.oom_control` (kernel 4.13 and later): OOM kills
/// in the cgroup since it was made.
pub(super) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    read_keyed(&dir.join("memory.oom_control"), "oom_kill")
}
