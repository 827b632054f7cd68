//! Where the service's own cgroups are: parsing `/proc/self/mountinfo` and
//! `/proc/self/cgroup`, per controller (v1) and for the cgroup2 mount.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{CgroupError, MOUNTINFO, PROC_SELF_CGROUP};

#[derive(Debug)]
pub(super) struct Mount {
    /// The directory of the hierarchy that is mounted (field 4).
    pub(super) root: PathBuf,
    pub(super) mount_point: PathBuf,
    pub(super) fstype: String,
    pub(super) super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub(super) fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6).filter(|&sep| fields.len() >= sep + 4);
        let Some(sep) = sep else {
            return Err(CgroupError::Parse {
                path: PathBuf::from(MOUNTINFO),
                reason: format!("malformed line {line:?}"),
            });
        };
        mounts.push(Mount {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            fstype: fields[sep + 1].to_owned(),
            super_options: fields[sep + 3].split(',').map(str::to_owned).collect(),
        });
    }
    Ok(mounts)
}

/// Undoes the kernel's octal escapes (`\040` for a space) in mountinfo.
pub(super) fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.and_then(|d| {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            u8::try_from(v).ok()
        });
        match value {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[derive(Debug)]
pub(super) struct ProcCgroupLine {
    pub(super) id: String,
    pub(super) controllers: Vec<String>,
    pub(super) path: String,
}

/// Parses `/proc/self/cgroup`: `hierarchy-id:controller,list:/path`.
pub(super) fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupLine>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(id), Some(controllers), Some(path)) if path.starts_with('/') => Ok(ProcCgroupLine {
                    id: id.to_owned(),
                    controllers: controllers.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
                    path: path.to_owned(),
                }),
                _ => Err(CgroupError::Parse {
                    path: PathBuf::from(PROC_SELF_CGROUP),
                    reason: format!("malformed line {line:?}"),
                }),
            }
        })
        .collect()
}

pub(super) fn reroot(fs_root: &Path, mount_point: &Path) -> PathBuf {
    fs_root.join(mount_point.strip_prefix("/").unwrap_or(mount_point))
}

/// The directory of `cgroup` (a path within the hierarchy) under the first
/// of `mounts` whose mounted root contains it.
pub(super) fn own_dir(fs_root: &Path, mounts: &[&Mount], cgroup: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|m| {
        let rel = Path::new(cgroup).strip_prefix(&m.root).ok()?;
        let mut dir = reroot(fs_root, &m.mount_point);
        if !rel.as_os_str().is_empty() {
            dir.push(rel);
        }
        dir.is_dir().then_some(dir)
    })
}

/// The own cgroup directory in the v1 hierarchy of `controller`, or `None`
/// if no v1 hierarchy has it.
pub(super) fn locate_v1(
    fs_root: &Path,
    mounts: &[Mount],
    lines: &[ProcCgroupLine],
    controller: &str,
) -> Result<Option<PathBuf>, CgroupError> {
    let candidates: Vec<&Mount> =
        mounts.iter().filter(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller)).collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let line = lines
        .iter()
        .find(|l| l.id != "0" && l.controllers.iter().any(|c| c == controller))
        .ok_or_else(|| CgroupError::NotListed { hierarchy: controller.to_owned() })?;
    own_dir(fs_root, &candidates, &line.path)
        .map(Some)
        .ok_or_else(|| CgroupError::NotMounted { hierarchy: controller.to_owned(), cgroup: line.path.clone() })
}

/// The own cgroup directory in the cgroup2 hierarchy, if mounted and visible.
pub(super) fn locate_v2(fs_root: &Path, mounts: &[Mount], lines: &[ProcCgroupLine]) -> Option<PathBuf> {
    let candidates: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    let line = lines.iter().find(|l| l.id == "0" && l.controllers.is_empty())?;
    if candidates.is_empty() {
        return None;
    }
    let dir = own_dir(fs_root, &candidates, &line.path);
    if dir.is_none() {
        warn!(cgroup = %line.path, "own cgroup2 cgroup is not visible beneath any cgroup2 mount");
    }
    dir
}
