//! A recording fake of the kernel side of cgroupfs, for the unit tests (see
//! `Fs` in the parent module for what it models and why).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One mutation, with paths relative to the fake root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Mkdir(String),
    Rmdir(String),
    Write(String, String),
    Kill(i32),
}

#[derive(Debug)]
pub(super) struct FakeKernel {
    root: PathBuf,
    /// Mount point (relative to `root`) and the interface files, with their
    /// initial contents, that `mkdir` creates in every cgroup beneath it.
    mounts: Vec<(PathBuf, Vec<(String, String)>)>,
    ops: Mutex<Vec<Op>>,
}

impl FakeKernel {
    pub(super) fn new(root: &Path) -> Self {
        FakeKernel { root: root.to_owned(), mounts: Vec::new(), ops: Mutex::new(Vec::new()) }
    }

    pub(super) fn mount(mut self, mount_point: &str, files: &[(&str, &str)]) -> Self {
        let files = files.iter().map(|(n, c)| ((*n).to_owned(), (*c).to_owned())).collect();
        self.mounts.push((self.root.join(mount_point), files));
        self
    }

    /// The mutations since the last call.
    pub(super) fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().into_owned()
    }

    fn mount_of(&self, path: &Path) -> Option<&(PathBuf, Vec<(String, String)>)> {
        self.mounts.iter().filter(|(m, _)| path.starts_with(m)).max_by_key(|(m, _)| m.components().count())
    }

    pub(super) fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        self.record(Op::Mkdir(self.rel(path)));
        if let Some((_, files)) = self.mount_of(path) {
            for (name, content) in files {
                fs::write(path.join(name), content)?;
            }
        }
        Ok(())
    }

    /// Like the kernel: `EBUSY` while child cgroups or processes remain.
    pub(super) fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut files = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            files.push(entry.path());
        }
        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        for file in files {
            fs::remove_file(file)?;
        }
        fs::remove_dir(path)?;
        self.record(Op::Rmdir(self.rel(path)));
        Ok(())
    }

    pub(super) fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.record(Op::Write(self.rel(path), value.to_owned()));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = path.parent().unwrap();
        match name {
            "cgroup.procs" => {
                // A process is in one cgroup per hierarchy: move it.
                let pid: i32 = value.trim().parse().unwrap();
                if let Some((mount, _)) = self.mount_of(path) {
                    remove_pids(mount, &[pid])?;
                }
                let mut procs = fs::read_to_string(path)?;
                procs.push_str(&format!("{pid}\n"));
                fs::write(path, procs)
            }
            "cgroup.subtree_control" => {
                let mut enabled: Vec<String> =
                    fs::read_to_string(path)?.split_whitespace().map(str::to_owned).collect();
                for token in value.split_whitespace() {
                    let (sign, name) = token.split_at(1);
                    enabled.retain(|c| c != name);
                    if sign == "+" {
                        enabled.push(name.to_owned());
                    }
                }
                fs::write(path, format!("{}\n", enabled.join(" ")))
            }
            "memory.max_usage_in_bytes" => {
                // v1: any write sets the peak to the current charge.
                fs::write(path, fs::read_to_string(dir.join("memory.usage_in_bytes"))?)
            }
            "cgroup.kill" => {
                let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))?
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
                remove_pids(&self.root, &pids)
            }
            _ => super::write_file(path, value),
        }
    }

    /// The process "exits": it leaves every cgroup. No signal is sent.
    pub(super) fn kill(&self, pid: i32) -> io::Result<()> {
        self.record(Op::Kill(pid));
        remove_pids(&self.root, &[pid])
    }
}

/// Removes `pids` from every `cgroup.procs` beneath `dir`.
fn remove_pids(dir: &Path, pids: &[i32]) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_pids(&path, pids)?;
        } else if entry.file_name() == "cgroup.procs" {
            let kept: String = fs::read_to_string(&path)?
                .lines()
                .filter(|l| !pids.iter().any(|p| l.trim() == p.to_string()))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(&path, kept)?;
        }
    }
    Ok(())
}
