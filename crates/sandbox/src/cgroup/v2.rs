//! cgroup v2 files of a box and the delegation steps of a pure v2 host.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use tracing::{debug, warn};

use super::{mkdir_existing_ok, read_pids, read_u64, read_words, CgroupError, Fs};

/// Sets `memory.max`, and where present `memory.swap.max = 0` (no swap) and
/// `memory.oom.group = 1` (an OOM kill takes the whole box).
pub(super) fn set_memory(fs: &Fs, dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    fs.write(&dir.join("memory.max"), &bytes.to_string())?;
    let swap_max = dir.join("memory.swap.max");
    if swap_max.exists() {
        fs.write(&swap_max, "0")?;
    }
    let oom_group = dir.join("memory.oom.group");
    if oom_group.exists() {
        fs.write(&oom_group, "1")?;
    }
    Ok(())
}

/// `memory.peak` (kernel 5.19 and later), the peak since the cgroup was
/// made; `None` where the kernel has none.
pub(super) fn memory_peak(dir: &Path) -> Result<Option<u64>, CgroupError> {
    let peak = dir.join("memory.peak");
    if peak.exists() {
        read_u64(&peak).map(Some)
    } else {
        Ok(None)
    }
}

/// Opens `memory.peak` (at `path`) and resets the peak seen through that
/// descriptor to the current charge (kernel 6.12 and later); `None` where
/// unsupported.
pub(super) fn reset_peak(path: &Path) -> Option<File> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    file.write_all(b"reset\n").ok()?;
    Some(file)
}

/// Enables `required` controllers for the children of `dir` (those not yet
/// enabled, in one write), and `cpu` if available. `cpu` is optional and
/// written on its own: the kernel refuses it while realtime threads run in
/// the subtree, and nothing here depends on it (`cpu.stat` needs no
/// controller).
pub(super) fn enable_controllers(fs: &Fs, dir: &Path, required: &[&'static str]) -> Result<(), CgroupError> {
    let available = read_words(&dir.join("cgroup.controllers"))?;
    let subtree_control = dir.join("cgroup.subtree_control");
    let enabled = read_words(&subtree_control)?;
    let mut missing = Vec::new();
    for &c in required {
        if !available.iter().any(|a| a == c) {
            return Err(CgroupError::NoController(c));
        }
        if !enabled.iter().any(|e| e == c) {
            missing.push(format!("+{c}"));
        }
    }
    if !missing.is_empty() {
        fs.write(&subtree_control, &missing.join(" "))?;
    }
    let has = |list: &[String]| list.iter().any(|c| c == "cpu");
    if has(&available) && !has(&enabled) {
        if let Err(e) = fs.write(&subtree_control, "+cpu") {
            warn!(error = %e, "cpu controller not enabled");
        }
    }
    Ok(())
}

/// Whether `required` controllers must be enabled in `own` while processes
/// are in it. The root cgroup (no `cgroup.type`) is exempt from the rule.
pub(super) fn needs_delegation(own: &Path, required: &[&'static str]) -> Result<bool, CgroupError> {
    if !own.join("cgroup.type").exists() {
        return Ok(false);
    }
    if read_pids(&own.join("cgroup.procs"))?.is_empty() {
        return Ok(false);
    }
    let enabled = read_words(&own.join("cgroup.subtree_control"))?;
    Ok(required.iter().any(|&c| !enabled.iter().any(|e| e == c)))
}

/// Moves this process from `own` into the leaf `leaf` (created if missing).
pub(super) fn move_self(fs: &Fs, own: &Path, leaf: &Path) -> Result<(), CgroupError> {
    let Ok(pid) = i32::try_from(std::process::id()) else {
        return Ok(());
    };
    if !read_pids(&own.join("cgroup.procs"))?.contains(&pid) {
        return Ok(());
    }
    mkdir_existing_ok(fs, leaf)?;
    fs.write(&leaf.join("cgroup.procs"), &pid.to_string())?;
    debug!(pid, leaf = %leaf.display(), "moved the service into its own leaf cgroup");
    Ok(())
}
