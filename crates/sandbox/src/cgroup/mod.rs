//! Cgroups for sandbox boxes: one cgroup per box, on cgroup v1 (including
//! the hybrid layout) and on pure cgroup v2.
//!
//! Detection happens once, at start-up, per controller: a controller bound
//! to a v1 hierarchy is used there, otherwise it must be available in the
//! cgroup2 hierarchy. Every box cgroup lives beneath the service's OWN cgroup
//! of each hierarchy, as listed in `/proc/self/cgroup`:
//!
//! ```text
//! <own>/evald-<instance>/<box>       one directory per box and hierarchy
//! <own>/evald-<instance>-service     pure v2 only, when the service had to
//!                                    leave <own> (no-internal-processes rule)
//! ```
//!
//! Architecture invariant: this module creates, writes and removes only
//! directories it made itself beneath `<own>/evald-<instance>`, plus the
//! `-service` leaf and `<own>/cgroup.subtree_control` on pure v2. It never
//! touches a sibling instance (`evald-other`) or anything else.
//!
//! Hierarchies used per layout:
//! - pure v2: one directory per box; memory, pids and cpu accounting there;
//!   `cgroup.kill` kills; [`BoxCgroup::v2_dir_fd`] serves `CLONE_INTO_CGROUP`.
//! - v1 / hybrid: memory, pids and cpuacct hierarchies; if a cgroup2 mount
//!   exists whose cgroups have `cgroup.kill` (the hybrid `unified` mount), the
//!   box is also created there, and only for killing.

mod v1;
mod v2;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, warn};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

/// How many times `kill_all` re-reads `cgroup.procs` and kills again before
/// giving up (about one second in total, see [`backoff`]).
const KILL_ROUNDS: u32 = 60;
/// How many times `rmdir` is tried on `EBUSY` (killed processes may take a
/// moment to leave the cgroup); about 60 ms in total.
const RMDIR_ATTEMPTS: u32 = 7;

/// Which cgroup interface the boxes use. `V1` includes the hybrid layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Limits applied to a box when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit; swap is disabled for the box where the kernel accounts it.
    pub memory_bytes: u64,
    /// Maximum number of processes and threads in the box.
    pub pids: u64,
}

/// Accounting of a box, summed over all of its processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: u64,
    pub memory_peak_bytes: u64,
    /// The kernel OOM-killed at least one process of the box.
    pub oom_killed: bool,
    /// At least one fork or clone failed because of the pids limit.
    pub pids_max_hit: bool,
}

/// One failing step, with the path (or pid) it failed on.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create cgroup {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open cgroup {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot kill pid {pid} of cgroup {}", path.display())]
    Kill {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{remaining} processes still in cgroup {} after killing", path.display())]
    KillIncomplete { path: PathBuf, remaining: usize },
    #[error("no usable cgroup hierarchy offers the {0} controller")]
    NoController(&'static str),
    #[error("the own cgroup of the {hierarchy} hierarchy is not listed in /proc/self/cgroup")]
    NotListed { hierarchy: String },
    #[error("the own {hierarchy} cgroup {cgroup} is not visible beneath any of its mounts")]
    NotMounted { hierarchy: String, cgroup: String },
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    #[error("invalid pid {0}")]
    InvalidPid(i32),
}

/// The kernel-side effects of cgroupfs that a plain directory does not have.
///
/// On the real cgroupfs `mkdir` fills the new directory with the interface
/// files (`cgroup.procs`, `memory.max`, ...), `rmdir` removes a cgroup whose
/// only entries are those files, writing `cgroup.kill` kills, and `kill(2)`
/// makes processes leave `cgroup.procs`. A temp directory does none of this,
/// so unit tests plug in `fake::FakeKernel`, which does exactly these parts
/// (and records every mutation so tests can assert it). Everything else —
/// detection, reading, parsing, deciding what to write — is the same code.
/// No test-only flag exists outside `cfg(test)`.
#[derive(Clone, Debug)]
enum Fs {
    Kernel,
    #[cfg(test)]
    Fake(std::sync::Arc<fake::FakeKernel>),
}

impl Fs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Kernel => fs::create_dir(path),
            #[cfg(test)]
            Fs::Fake(k) => k.mkdir(path),
        }
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Kernel => fs::remove_dir(path),
            #[cfg(test)]
            Fs::Fake(k) => k.rmdir(path),
        }
    }

    fn write_raw(&self, path: &Path, value: &str) -> io::Result<()> {
        match self {
            Fs::Kernel => write_file(path, value),
            #[cfg(test)]
            Fs::Fake(k) => k.write(path, value),
        }
    }

    /// Writes `value` with one `write(2)`, never creating the file.
    fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        self.write_raw(path, value).map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
    }

    /// SIGKILL one process; a process that is already gone is not an error.
    fn kill(&self, pid: i32) -> io::Result<()> {
        match self {
            Fs::Kernel => sigkill(pid),
            #[cfg(test)]
            Fs::Fake(k) => k.kill(pid),
        }
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn sigkill(pid: i32) -> io::Result<()> {
    if pid <= 0 {
        // kill(0) and kill(-1) would signal our own group or every process.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) takes two integers and accesses no memory of this
    // process; pid > 0 was checked above, so it targets exactly one process.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// One hierarchy the boxes use.
#[derive(Debug)]
struct Hierarchy {
    version: CgroupVersion,
    /// Directory of the service's own cgroup in this hierarchy.
    own: PathBuf,
    /// `<own>/evald-<instance>`: the parent of every box of this instance.
    parent: PathBuf,
    /// v2 only: controllers to enable for the boxes (`memory`, `pids`).
    controllers: Vec<&'static str>,
}

/// Which hierarchy (index into `Cgroups::hierarchies` and `BoxCgroup::dirs`)
/// serves which purpose.
#[derive(Clone, Copy, Debug)]
struct Roles {
    memory: usize,
    pids: usize,
    cpu: usize,
    /// A v2 hierarchy whose cgroups have `cgroup.kill`.
    kill: Option<usize>,
}

/// The detected cgroup setup of this service instance. `Send + Sync`; share
/// it with an `Arc`.
#[derive(Debug)]
pub struct Cgroups {
    instance: String,
    version: CgroupVersion,
    hierarchies: Vec<Hierarchy>,
    roles: Roles,
    fs: Fs,
}

impl Cgroups {
    /// Detects the cgroup layout of the real host from
    /// `/proc/self/mountinfo` and `/proc/self/cgroup`, creates the parent
    /// directories `evald-<instance>` and, on pure v2, enables the
    /// controllers (moving this process into `<own>/evald-<instance>-service`
    /// first when the no-internal-processes rule requires it, see
    /// [`Cgroups::prepare_v2_delegation`]).
    pub fn detect(instance: &str) -> Result<Self, CgroupError> {
        let mountinfo = read_string(Path::new(MOUNTINFO))?;
        let proc_self_cgroup = read_string(Path::new(PROC_SELF_CGROUP))?;
        Self::detect_from(Path::new("/"), &mountinfo, &proc_self_cgroup, instance)
    }

    /// Same as [`Cgroups::detect`], from the given texts, with every mount
    /// point re-rooted under `fs_root`. `fs_root` must behave like cgroupfs
    /// (the unit tests of this module use a fake kernel instead, see `Fs`).
    pub fn detect_from(
        fs_root: &Path,
        mountinfo: &str,
        proc_self_cgroup: &str,
        instance: &str,
    ) -> Result<Self, CgroupError> {
        Self::build(fs_root, mountinfo, proc_self_cgroup, instance, Fs::Kernel)
    }

    fn build(
        fs_root: &Path,
        mountinfo: &str,
        proc_self_cgroup: &str,
        instance: &str,
        fs: Fs,
    ) -> Result<Self, CgroupError> {
        validate_name(instance)?;
        if instance.ends_with("-service") {
            // `evald-<x>-service` is the service leaf of instance `x`.
            return Err(CgroupError::InvalidName(instance.to_owned()));
        }
        let mounts = parse_mountinfo(mountinfo)?;
        let lines = parse_proc_cgroup(proc_self_cgroup)?;
        let parent_name = format!("evald-{instance}");

        let v2_own = locate_v2(fs_root, &mounts, &lines);
        let v2_available: Vec<String> = match &v2_own {
            Some(own) => read_words(&own.join("cgroup.controllers"))?,
            None => Vec::new(),
        };
        let v2_has = |c: &str| v2_available.iter().any(|a| a == c);

        let mut hierarchies = Vec::new();
        let place_v2 = |hierarchies: &mut Vec<Hierarchy>, controller: Option<&'static str>| {
            let own = v2_own.clone().unwrap_or_default();
            let i = place(hierarchies, CgroupVersion::V2, own, &parent_name);
            if let Some(c) = controller {
                hierarchies[i].controllers.push(c);
            }
            i
        };

        let memory = match locate_v1(fs_root, &mounts, &lines, "memory")? {
            Some(own) => place(&mut hierarchies, CgroupVersion::V1, own, &parent_name),
            None if v2_has("memory") => place_v2(&mut hierarchies, Some("memory")),
            None => return Err(CgroupError::NoController("memory")),
        };
        let pids = match locate_v1(fs_root, &mounts, &lines, "pids")? {
            Some(own) => place(&mut hierarchies, CgroupVersion::V1, own, &parent_name),
            None if v2_has("pids") => place_v2(&mut hierarchies, Some("pids")),
            None => return Err(CgroupError::NoController("pids")),
        };
        // cpu.stat with usage_usec exists in every v2 cgroup, no controller needed.
        let cpu = match locate_v1(fs_root, &mounts, &lines, "cpuacct")? {
            Some(own) => place(&mut hierarchies, CgroupVersion::V1, own, &parent_name),
            None if v2_own.is_some() => place_v2(&mut hierarchies, None),
            None => return Err(CgroupError::NoController("cpuacct")),
        };
        let version = if [memory, pids, cpu].iter().all(|&i| hierarchies[i].version == CgroupVersion::V2) {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };

        let mut this = Cgroups {
            instance: instance.to_owned(),
            version,
            hierarchies,
            roles: Roles { memory, pids, cpu, kill: None },
            fs,
        };
        if this.needs_v2_delegation()? {
            this.prepare_v2_delegation()?;
        }
        this.create_parents()?;
        // Hybrid: the unified hierarchy carries no controller but can kill.
        if let Some(own) = v2_own {
            if !this.hierarchies.iter().any(|h| h.own == own) {
                this.add_kill_only_hierarchy(own, &parent_name);
            }
        }
        debug!(instance, ?version, hierarchies = ?this.hierarchies, "cgroups detected");
        Ok(this)
    }

    /// Creates the parent directories and enables the v2 controllers in
    /// `<own>` and in the parent.
    fn create_parents(&mut self) -> Result<(), CgroupError> {
        for (i, h) in self.hierarchies.iter().enumerate() {
            let v2_controllers = h.version == CgroupVersion::V2 && !h.controllers.is_empty();
            if v2_controllers {
                v2::enable_controllers(&self.fs, &h.own, &h.controllers)?;
            }
            mkdir_existing_ok(&self.fs, &h.parent)?;
            if v2_controllers {
                v2::enable_controllers(&self.fs, &h.parent, &h.controllers)?;
            }
            if h.version == CgroupVersion::V2 && self.roles.kill.is_none() && h.parent.join("cgroup.kill").exists() {
                self.roles.kill = Some(i);
            }
        }
        Ok(())
    }

    /// Adds the hybrid layout's unified hierarchy if its cgroups support
    /// `cgroup.kill`; any failure only means boxes are killed pid by pid.
    fn add_kill_only_hierarchy(&mut self, own: PathBuf, parent_name: &str) {
        let parent = own.join(parent_name);
        let created = match self.fs.mkdir(&parent) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                warn!(path = %parent.display(), error = %e, "cgroup2 mount unusable, killing boxes pid by pid");
                return;
            }
        };
        if !parent.join("cgroup.kill").exists() {
            debug!(path = %parent.display(), "no cgroup.kill, not using the cgroup2 mount");
            if created {
                if let Err(e) = self.fs.rmdir(&parent) {
                    warn!(path = %parent.display(), error = %e, "cannot remove cgroup");
                }
            }
            return;
        }
        self.hierarchies.push(Hierarchy { version: CgroupVersion::V2, own, parent, controllers: Vec::new() });
        self.roles.kill = Some(self.hierarchies.len() - 1);
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The parent directories `<own>/evald-<instance>`, one per hierarchy.
    pub fn parent_dirs(&self) -> Vec<&Path> {
        self.hierarchies.iter().map(|h| h.parent.as_path()).collect()
    }

    fn v2_controller_hierarchy(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == CgroupVersion::V2 && !h.controllers.is_empty())
    }

    /// Whether controllers must be enabled in a v2 own cgroup that still has
    /// processes, which the kernel refuses (no-internal-processes rule).
    pub fn needs_v2_delegation(&self) -> Result<bool, CgroupError> {
        match self.v2_controller_hierarchy() {
            Some(h) => v2::needs_delegation(&h.own, &h.controllers),
            None => Ok(false),
        }
    }

    /// Pure v2: moves THIS process (and so all its threads) from the own
    /// cgroup into the leaf `<own>/evald-<instance>-service`, so that
    /// controllers can be enabled in `<own>`. Other processes in the own
    /// cgroup are left alone; if there are any, enabling fails afterwards.
    /// [`Cgroups::detect`] calls this only when
    /// [`Cgroups::needs_v2_delegation`] says so.
    pub fn prepare_v2_delegation(&self) -> Result<(), CgroupError> {
        let Some(h) = self.v2_controller_hierarchy() else {
            return Ok(());
        };
        let leaf = h.own.join(format!("evald-{}-service", self.instance));
        v2::move_self(&self.fs, &h.own, &leaf)
    }

    /// Kills and removes every box cgroup beneath `evald-<instance>` (left by
    /// an earlier process of this instance that did not clean up). Returns
    /// how many boxes were removed; a box counts once however many
    /// hierarchies it spans.
    pub fn sweep_stale(&self) -> Result<usize, CgroupError> {
        let mut stale: BTreeMap<OsString, Vec<PathBuf>> = BTreeMap::new();
        for h in &self.hierarchies {
            let entries = match fs::read_dir(&h.parent) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CgroupError::Read { path: h.parent.clone(), source }),
            };
            for entry in entries {
                let entry = entry.map_err(|source| CgroupError::Read { path: h.parent.clone(), source })?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stale.entry(entry.file_name()).or_default().push(entry.path());
                }
            }
        }
        for (name, dirs) in &stale {
            warn!(instance = %self.instance, name = ?name, "removing stale box cgroup");
            let paths: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let kill_dir = paths.iter().copied().find(|d| d.join("cgroup.kill").exists());
            kill_dirs(&self.fs, &paths, kill_dir)?;
            for dir in &paths {
                remove_tree(&self.fs, dir)?;
            }
        }
        Ok(stale.len())
    }

    /// Creates the box cgroup `name` in every hierarchy and applies the
    /// limits. `name` must be a plain file name (`[A-Za-z0-9_.-]`, not
    /// starting with a dot) and not in use. On failure nothing is left.
    pub fn create_box(&self, name: &str, limits: &CgroupLimits) -> Result<BoxCgroup, CgroupError> {
        let mut b = self.create_unlimited(name)?;
        b.set_limits(limits)?;
        debug!(name, ?limits, "box cgroup created");
        Ok(b)
    }

    /// Creates the box cgroup `name` in every hierarchy without limits yet
    /// (a box prepared ahead of its run; see [`BoxCgroup::set_limits`]).
    /// Same naming rules and clean-up on failure as [`Cgroups::create_box`].
    pub fn create_unlimited(&self, name: &str) -> Result<BoxCgroup, CgroupError> {
        validate_name(name)?;
        let mut b = BoxCgroup {
            name: name.to_owned(),
            dirs: Vec::with_capacity(self.hierarchies.len()),
            roles: self.roles,
            v2_fd: None,
            fs: self.fs.clone(),
            limits: None,
            base: Baseline::default(),
            peak_fd: None,
            reusable: false,
            counters: None,
        };
        // Each directory is pushed only once created, so that dropping `b`
        // on an error below removes exactly what this call made.
        for h in &self.hierarchies {
            let path = h.parent.join(name);
            self.fs.mkdir(&path).map_err(|source| CgroupError::Create { path: path.clone(), source })?;
            b.dirs.push(BoxDir { version: h.version, path, removed: false });
        }
        if self.version == CgroupVersion::V2 {
            b.v2_fd = Some(open_path_fd(&b.dirs[self.roles.memory].path)?);
        }
        b.counters = Some(Counters::open(&b.dirs, self.roles)?);
        Ok(b)
    }

    /// Removes the parent directories `evald-<instance>` (at clean shutdown,
    /// after every box was removed). Fails with [`CgroupError::Remove`] if a
    /// parent still holds a box; missing parents are fine.
    pub fn remove_parents(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            match self.fs.rmdir(&h.parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(CgroupError::Remove { path: h.parent.clone(), source }),
            }
        }
        Ok(())
    }
}

fn place(hierarchies: &mut Vec<Hierarchy>, version: CgroupVersion, own: PathBuf, parent_name: &str) -> usize {
    if let Some(i) = hierarchies.iter().position(|h| h.own == own) {
        return i;
    }
    hierarchies.push(Hierarchy { version, parent: own.join(parent_name), own, controllers: Vec::new() });
    hierarchies.len() - 1
}

#[derive(Debug)]
struct BoxDir {
    version: CgroupVersion,
    path: PathBuf,
    removed: bool,
}

/// A file of a box cgroup kept open for the box's lifetime and read with
/// `pread`: no path lookup per read (cgroup paths are deep).
#[derive(Debug)]
struct Counter {
    path: PathBuf,
    file: fs::File,
}

impl Counter {
    fn open(path: PathBuf) -> Result<Counter, CgroupError> {
        match fs::File::open(&path) {
            Ok(file) => Ok(Counter { path, file }),
            Err(source) => Err(CgroupError::Open { path, source }),
        }
    }

    fn text(&self) -> Result<String, CgroupError> {
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

    fn number(&self) -> Result<u64, CgroupError> {
        let text = self.text()?;
        text.trim().parse().map_err(|_| CgroupError::Parse {
            path: self.path.clone(),
            reason: format!("not a number: {:?}", text.trim()),
        })
    }

    fn keyed(&self, key: &str) -> Result<u64, CgroupError> {
        keyed_value(&self.text()?, key)
            .ok_or_else(|| CgroupError::Parse { path: self.path.clone(), reason: format!("no numeric {key:?} line") })
    }
}

/// The files of a box read or written at every run.
#[derive(Debug)]
struct Counters {
    /// v1 `cpuacct.usage` (ns), v2 `cpu.stat` (`usage_usec`).
    cpu: Counter,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    current: Counter,
    /// v1 `memory.max_usage_in_bytes` (v2: see `BoxCgroup::peak_fd`).
    peak: Option<Counter>,
    /// v1 `memory.oom_control`, v2 `memory.events` (`oom_kill`).
    oom: Counter,
    /// `pids.events` (`max`).
    pids: Counter,
    /// Each directory's `cgroup.procs`, open for writing.
    procs: Vec<fs::File>,
}

impl Counters {
    fn open(dirs: &[BoxDir], roles: Roles) -> Result<Counters, CgroupError> {
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
struct Baseline {
    cpu_ns: u64,
    /// Memory charged at the start (what earlier runs left charged, such as
    /// page cache, plus the waiting init).
    memory_bytes: u64,
    oom_kills: u64,
    pids_max: u64,
}

/// The cgroup directories of one box, one per hierarchy. Dropping it kills
/// what is left in it and removes the directories (best effort, logged).
#[derive(Debug)]
pub struct BoxCgroup {
    name: String,
    dirs: Vec<BoxDir>,
    roles: Roles,
    v2_fd: Option<OwnedFd>,
    fs: Fs,
    /// The limits written so far.
    limits: Option<CgroupLimits>,
    base: Baseline,
    /// v2: `memory.peak`, reset through this descriptor at the start of the
    /// period (its peak then counts from there, kernel 6.12 and later).
    peak_fd: Option<Counter>,
    /// The last period's start could reset the memory peak, so the cgroup
    /// can serve another run.
    reusable: bool,
    /// `None` once removed.
    counters: Option<Counters>,
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

    fn counters(&self) -> Result<&Counters, CgroupError> {
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

    fn total_cpu_ns(&self) -> Result<u64, CgroupError> {
        let cpu = &self.counters()?.cpu;
        match self.dirs[self.roles.cpu].version {
            CgroupVersion::V1 => cpu.number(),
            // `usage_usec`, which every v2 cgroup has.
            CgroupVersion::V2 => Ok(cpu.keyed("usage_usec")?.saturating_mul(1000)),
        }
    }

    fn pids_max_events(&self) -> Result<u64, CgroupError> {
        self.counters()?.pids.keyed("max")
    }

    /// OOM kills in the cgroup since it was made (v1: `oom_kill` in
    /// `memory.oom_control`, kernel 4.13 and later).
    fn oom_kills(&self) -> Result<u64, CgroupError> {
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

/// An error with all its sources, for logs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn kill_dirs(fs: &Fs, dirs: &[&Path], kill_dir: Option<&Path>) -> Result<(), CgroupError> {
    let mut round = 0;
    loop {
        let mut pids = BTreeSet::new();
        let mut first_busy = None;
        for dir in dirs {
            let procs = dir.join("cgroup.procs");
            if !procs.exists() {
                continue;
            }
            let listed = read_pids(&procs)?;
            if first_busy.is_none() && !listed.is_empty() {
                first_busy = Some(*dir);
            }
            pids.extend(listed);
        }
        let Some(busy) = first_busy else {
            return Ok(());
        };
        if round == KILL_ROUNDS {
            return Err(CgroupError::KillIncomplete { path: busy.to_owned(), remaining: pids.len() });
        }
        match kill_dir {
            Some(dir) => fs.write(&dir.join("cgroup.kill"), "1")?,
            None => {
                for pid in pids {
                    fs.kill(pid).map_err(|source| CgroupError::Kill { pid, path: busy.to_owned(), source })?;
                }
            }
        }
        round += 1;
        // The first re-check is immediate; killed processes usually are gone.
        if round > 1 {
            std::thread::sleep(backoff(round));
        }
    }
}

fn backoff(round: u32) -> Duration {
    Duration::from_millis((1u64 << round.min(5)).min(20))
}

/// Removes `dir` and any cgroups beneath it, deepest first.
fn remove_tree(fs: &Fs, dir: &Path) -> Result<(), CgroupError> {
    // A box's directory has no children: one rmdir usually does it.
    match fs.rmdir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: dir.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read { path: dir.to_owned(), source })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(fs, &entry.path())?;
        }
    }
    let mut attempt = 0;
    loop {
        match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < RMDIR_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(1 << attempt));
                attempt += 1;
            }
            Err(source) => return Err(CgroupError::Remove { path: dir.to_owned(), source }),
        }
    }
}

fn mkdir_existing_ok(fs: &Fs, path: &Path) -> Result<(), CgroupError> {
    match fs.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create { path: path.to_owned(), source }),
    }
}

fn open_path_fd(dir: &Path) -> Result<OwnedFd, CgroupError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Open { path: dir.to_owned(), source })
}

/// Box and instance names: one path component of `[A-Za-z0-9_.-]`, not
/// starting with a dot, at most 64 bytes.
fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_owned()))
    }
}

// ---- reading cgroup files ----

fn read_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_owned(), source })
}

fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read_string(path)?.split_whitespace().map(str::to_owned).collect())
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| CgroupError::Parse { path: path.to_owned(), reason: format!("not a number: {:?}", text.trim()) })
}

/// The value of `key` in a flat keyed file (`key value` per line), such as
/// `memory.events`, `pids.events`, `cpu.stat`, `memory.oom_control`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok()).flatten()
    })
}

fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    read_string(path)?
        .split_whitespace()
        .map(|word| match word.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(CgroupError::Parse { path: path.to_owned(), reason: format!("not a pid: {word:?}") }),
        })
        .collect()
}

// ---- detection ----

#[derive(Debug)]
struct Mount {
    /// The directory of the hierarchy that is mounted (field 4).
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
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
fn unescape(field: &str) -> PathBuf {
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
struct ProcCgroupLine {
    id: String,
    controllers: Vec<String>,
    path: String,
}

/// Parses `/proc/self/cgroup`: `hierarchy-id:controller,list:/path`.
fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupLine>, CgroupError> {
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

fn reroot(fs_root: &Path, mount_point: &Path) -> PathBuf {
    fs_root.join(mount_point.strip_prefix("/").unwrap_or(mount_point))
}

/// The directory of `cgroup` (a path within the hierarchy) under the first
/// of `mounts` whose mounted root contains it.
fn own_dir(fs_root: &Path, mounts: &[&Mount], cgroup: &str) -> Option<PathBuf> {
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
fn locate_v1(
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
fn locate_v2(fs_root: &Path, mounts: &[Mount], lines: &[ProcCgroupLine]) -> Option<PathBuf> {
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

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
