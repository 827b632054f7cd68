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

mod box_cgroup;
mod cgroupfs;
mod detect;
mod v1;
mod v2;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

pub use box_cgroup::BoxCgroup;
use box_cgroup::{Baseline, BoxDir, Counters};
#[cfg(test)]
use cgroupfs::{chain, keyed_value, write_file};
use cgroupfs::{kill_dirs, mkdir_existing_ok, open_path_fd, read_string, read_words, remove_tree, validate_name, Fs};
use cgroupfs::{read_pids, read_u64};
#[cfg(test)]
use detect::unescape;
use detect::{locate_v1, locate_v2, parse_mountinfo, parse_proc_cgroup};

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

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
