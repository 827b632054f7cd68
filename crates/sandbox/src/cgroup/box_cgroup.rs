//! One box's cgroups: limits, the files read at every run (kept open),
//! accounting periods, killing and removal.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::cgroupfs::{chain, keyed_value, kill_dirs, kill_dirs_now, remove_tree, Fs};
use super::{v1, v2, CgroupError, CgroupLimits, CgroupUsage, CgroupVersion, Roles};

#[derive(Debug)]
pub(super) struct BoxDir {
    pub(super) version: CgroupVersion,
    pub(super) path: PathBuf,
    pub(super) removed: bool,
}

/// A file of a box cgroup kept open for the box's lifetime and read with
/// `pread`: no path lookup per read (cgroup paths are deep).
#[derive(Debug)]
pub(super) struct Counter {
    pub(super) path: PathBuf,
    pub(super) file: fs::File,
}

impl Counter {
    pub(super) fn open(path: PathBuf) -> Result<Counter, CgroupError> {
        match fs::File::open(&path) {
            Ok(file) => Ok(Counter { path, file }),
            Err(source) => Err(CgroupError::Open { path, source }),
        }
    }

    pub(super) fn text(&self) -> Result<String, CgroupError> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[len..], len as u64)
                .map_err(|source| CgroupError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                break;
            }
            len += n;
        }
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    pub(super) fn number(&self) -> Result<u64, CgroupError> {
        let text = self.text()?;
        text.trim().parse().map_err(|_| CgroupError::Parse {
            path: self.path.clone(),
            reason: format!("not a number: {:?}", text.trim()),
        })
    }

    pub(super) fn keyed(&self, key: &str) -> Result<u64, CgroupError> {
        keyed_value(&self.text()?, key)
            .ok_or_else(|| CgroupError::Parse { path: self.path.clone(), reason: format!("no numeric {key:?} line") })
    }
}

/// The files of a box read or written at every run.
#[derive(Debug)]
pub(super) struct Counters {
    /// v1 `cpuacct.usage` (ns), v2 `cpu.stat` (`usage_usec`).
    pub(super) cpu: Counter,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub(super) current: Counter,
    /// v1 `memory.max_usage_in_bytes` (v2: see `BoxCgroup::peak_fd`).
    pub(super) peak: Option<Counter>,
    /// v1 `memory.oom_control`, v2 `memory.events` (`oom_kill`).
    pub(super) oom: Counter,
    /// `pids.events` (`max`).
    pub(super) pids: Counter,
    /// Each directory's `cgroup.procs`, open for writing.
    pub(super) procs: Vec<fs::File>,
}

impl Counters {
    pub(super) fn open(dirs: &[BoxDir], roles: Roles) -> Result<Counters, CgroupError> {
        let cpu = &dirs[roles.cpu];
        let memory = &dirs[roles.memory];
        let v1 = memory.version == CgroupVersion::V1;
        let at = |dir: &BoxDir, name: &str| Counter::open(dir.path.join(name));
        let procs = dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                OpenOptions::new().write(true).open(&path).map_err(|source| CgroupError::Open { path, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Counters {
            cpu: at(cpu, if cpu.version == CgroupVersion::V1 { "cpuacct.usage" } else { "cpu.stat" })?,
            current: at(memory, if v1 { "memory.usage_in_bytes" } else { "memory.current" })?,
            peak: if v1 { Some(at(memory, "memory.max_usage_in_bytes")?) } else { None },
            oom: at(memory, if v1 { "memory.oom_control" } else { "memory.events" })?,
            pids: at(&dirs[roles.pids], "pids.events")?,
            procs,
        })
    }
}

/// The cumulative counters of a box cgroup at the start of its current
/// accounting period (see [`BoxCgroup::begin_period`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Baseline {
    pub(super) cpu_ns: u64,
    /// Memory charged at the start (what earlier runs left charged, such as
    /// page cache, plus the waiting init).
    pub(super) memory_bytes: u64,
    pub(super) oom_kills: u64,
    pub(super) pids_max: u64,
}

/// The cgroup directories of one box, one per hierarchy. Dropping it kills
/// what is left in it and removes the directories (best effort, logged).
#[derive(Debug)]
pub struct BoxCgroup {
    pub(super) name: String,
    pub(super) dirs: Vec<BoxDir>,
    pub(super) roles: Roles,
    pub(super) v2_fd: Option<OwnedFd>,
    pub(super) fs: Fs,
    /// The limits written so far.
    pub(super) limits: Option<CgroupLimits>,
    pub(super) base: Baseline,
    /// v2: `memory.peak`, reset through this descriptor at the start of the
    /// period (its peak then counts from there, kernel 6.12 and later).
    pub(super) peak_fd: Option<Counter>,
    /// The last period's start could reset the memory peak, so the cgroup
    /// can serve another run.
    pub(super) reusable: bool,
    /// `None` once removed.
    pub(super) counters: Option<Counters>,
}

impl BoxCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The box's directories, one per hierarchy.
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// The `cgroup.procs` file of each of the box's directories, open for
    /// writing (a process that writes `0` into each moves itself into the
    /// box).
    pub fn procs_files(&self) -> Vec<BorrowedFd<'_>> {
        self.counters.iter().flat_map(|c| c.procs.iter().map(AsFd::as_fd)).collect()
    }

    /// Every descriptor the box holds open (its counter files and
    /// directory), so that leak checks can tell them from leaks.
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds: Vec<_> = self.v2_fd.iter().map(AsRawFd::as_raw_fd).collect();
        fds.extend(self.peak_fd.iter().map(|k| k.file.as_raw_fd()));
        if let Some(c) = &self.counters {
            fds.extend([&c.cpu, &c.current, &c.oom, &c.pids].iter().map(|k| k.file.as_raw_fd()));
            fds.extend(c.peak.iter().map(|k| k.file.as_raw_fd()));
            fds.extend(c.procs.iter().map(AsRawFd::as_raw_fd));
        }
        fds
    }

    pub(super) fn counters(&self) -> Result<&Counters, CgroupError> {
        self.counters.as_ref().ok_or_else(|| CgroupError::Read {
            path: self.dirs[0].path.clone(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        })
    }

    /// Applies the memory and process limits; writes only what differs
    /// from the limits applied before (a box prepared ahead of its run gets
    /// the usual limits, and most runs keep them).
    pub fn set_limits(&mut self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let before = self.limits;
        if before.map(|b| b.memory_bytes) != Some(limits.memory_bytes) {
            let memory = &self.dirs[self.roles.memory];
            match memory.version {
                CgroupVersion::V1 => {
                    v1::set_memory(&self.fs, &memory.path, limits.memory_bytes, before.map(|b| b.memory_bytes))?
                }
                CgroupVersion::V2 => v2::set_memory(&self.fs, &memory.path, limits.memory_bytes)?,
            }
        }
        if before.map(|b| b.pids) != Some(limits.pids) {
            let pids_max = self.dirs[self.roles.pids].path.join("pids.max");
            self.fs.write(&pids_max, &limits.pids.to_string())?;
        }
        self.limits = Some(*limits);
        Ok(())
    }

    /// Moves `pid` into the box in every hierarchy. On v1 the new process
    /// must not run untrusted code before this returned.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            // Writing 0 would move the writing process itself.
            return Err(CgroupError::InvalidPid(pid));
        }
        let value = pid.to_string();
        for dir in &self.dirs {
            self.fs.write(&dir.path.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// CPU time of all processes of the box in the current period; one
    /// small file read.
    pub fn cpu_ns(&self) -> Result<u64, CgroupError> {
        Ok(self.total_cpu_ns()?.saturating_sub(self.base.cpu_ns))
    }

    pub(super) fn total_cpu_ns(&self) -> Result<u64, CgroupError> {
        let cpu = &self.counters()?.cpu;
        match self.dirs[self.roles.cpu].version {
            CgroupVersion::V1 => cpu.number(),
            // `usage_usec`, which every v2 cgroup has.
            CgroupVersion::V2 => Ok(cpu.keyed("usage_usec")?.saturating_mul(1000)),
        }
    }

    pub(super) fn pids_max_events(&self) -> Result<u64, CgroupError> {
        self.counters()?.pids.keyed("max")
    }

    /// OOM kills in the cgroup since it was made (v1: `oom_kill` in
    /// `memory.oom_control`, kernel 4.13 and later).
    pub(super) fn oom_kills(&self) -> Result<u64, CgroupError> {
        self.counters()?.oom.keyed("oom_kill")
    }

    /// Starts a new accounting period: from now on [`BoxCgroup::usage`] and
    /// [`BoxCgroup::cpu_ns`] count only what happens from here (CPU time,
    /// OOM kills and failed forks as differences of the kernel's cumulative
    /// counters; the memory peak reset to the current charge, which is then
    /// subtracted). Call it with the box's processes gone (except a waiting
    /// init). Returns whether the peak could be reset (v1: always; v2:
    /// `memory.peak` is resettable from kernel 6.12); only then may the
    /// cgroup serve another run, see [`BoxCgroup::reusable`].
    pub fn begin_period(&mut self) -> Result<bool, CgroupError> {
        let memory = &self.dirs[self.roles.memory];
        let reset = match memory.version {
            CgroupVersion::V1 => {
                v1::reset_peak(&self.fs, &memory.path)?;
                true
            }
            CgroupVersion::V2 => {
                let path = memory.path.join("memory.peak");
                self.peak_fd = v2::reset_peak(&path).map(|file| Counter { path, file });
                self.peak_fd.is_some()
            }
        };
        self.base = Baseline {
            cpu_ns: self.total_cpu_ns()?,
            memory_bytes: self.counters()?.current.number()?,
            oom_kills: self.oom_kills()?,
            pids_max: self.pids_max_events()?,
        };
        self.reusable = reset;
        Ok(reset)
    }

    /// Whether the cgroup may serve another run after this one: its last
    /// period started with a memory peak reset (see
    /// [`BoxCgroup::begin_period`]) and its directories are all there.
    pub fn reusable(&self) -> bool {
        self.reusable && self.dirs.iter().all(|d| !d.removed)
    }

    /// Final accounting of the box's current period.
    pub fn usage(&self) -> Result<CgroupUsage, CgroupError> {
        let cpu_ns = self.cpu_ns()?;
        let memory = &self.dirs[self.roles.memory];
        let counters = self.counters()?;
        // v1's peak, else v2's since the period's reset, else v2's since
        // the cgroup was made (kernel 5.19 and later), else the charge now.
        let peak = match counters.peak.as_ref().or(self.peak_fd.as_ref()) {
            Some(peak) => peak.number()?,
            None => match v2::memory_peak(&memory.path)? {
                Some(peak) => peak,
                None => counters.current.number()?,
            },
        };
        Ok(CgroupUsage {
            cpu_ns,
            memory_peak_bytes: peak.saturating_sub(self.base.memory_bytes),
            oom_killed: self.oom_kills()? > self.base.oom_kills,
            pids_max_hit: self.pids_max_events()? > self.base.pids_max,
        })
    }

    /// Kills every process in the box and returns once none is listed any
    /// more: with `cgroup.kill` where available (race-free, forks included),
    /// else by SIGKILL to each pid in `cgroup.procs`, repeated until empty
    /// (at most about a second). The per-pid fallback has the usual pid-reuse
    /// race between reading `cgroup.procs` and `kill(2)`.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let live: Vec<&Path> = self.dirs.iter().filter(|d| !d.removed).map(|d| d.path.as_path()).collect();
        let kill_dir = self.roles.kill.and_then(|i| self.dirs.get(i)).filter(|d| !d.removed).map(|d| d.path.as_path());
        kill_dirs(&self.fs, &live, kill_dir)
    }

    /// Sends SIGKILL to every process of the box without waiting for them
    /// to leave (for async callers: the box's end is awaited elsewhere).
    pub fn kill_now(&self) -> Result<(), CgroupError> {
        let live: Vec<&Path> = self.dirs.iter().filter(|d| !d.removed).map(|d| d.path.as_path()).collect();
        let kill_dir = self.roles.kill.and_then(|i| self.dirs.get(i)).filter(|d| !d.removed).map(|d| d.path.as_path());
        kill_dirs_now(&self.fs, &live, kill_dir)
    }

    /// Removes every directory of the box, retrying briefly on `EBUSY`
    /// (killed processes leaving). Call [`BoxCgroup::kill_all`] first.
    /// Idempotent: directories already removed are skipped.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        for dir in self.dirs.iter_mut().rev() {
            if !dir.removed {
                remove_tree(&self.fs, &dir.path)?;
                dir.removed = true;
            }
        }
        self.v2_fd = None;
        self.peak_fd = None;
        self.counters = None;
        Ok(())
    }

    /// Pure v2 only: an `O_PATH | O_DIRECTORY` fd of the box's cgroup, for
    /// `clone3` with `CLONE_INTO_CGROUP`. `None` on v1 and hybrid, where the
    /// caller must use [`BoxCgroup::add_pid`] before the child runs.
    pub fn v2_dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.v2_fd.as_ref().map(|fd| fd.as_fd())
    }
}

impl Drop for BoxCgroup {
    fn drop(&mut self) {
        if self.dirs.iter().all(|d| d.removed) {
            return;
        }
        if let Err(e) = self.kill_all() {
            warn!(name = %self.name, error = %chain(&e), "cannot kill box processes");
        }
        if let Err(e) = self.remove() {
            warn!(name = %self.name, error = %chain(&e), "cannot remove box cgroup");
        }
    }
}
