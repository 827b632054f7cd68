//! The host side: a [`Sandbox`] owns the cgroup subtree, the seccomp program,
//! the pool of box user ids and the root file system layout; it launches
//! boxes and supervises them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::cgroup::{CgroupLimits, Cgroups};
use crate::drive::Capture;
use crate::instance::{InstanceLock, LOCK_DIR};
use crate::launch::{self, BoxContext};
use crate::layout::{base_ops, build_plan, cpath, stdin_bytes};
use crate::outcome::{Facts, Outcome};
use crate::pool::{Pool, Prepared, SlotGuard};
use crate::reaper::{start_reaper, Job, Pending};
use crate::running::Running;
use crate::seccomp::SeccompPolicy;
use crate::spec::{RunSpec, SpecError, Stdin};
use crate::stdio::Stdio;
use crate::sys;
use crate::workspace::Workspace;

/// Host paths bound read-only into every box (when they exist), besides
/// `/usr` and the `/bin`, `/lib*`, `/sbin` links.
pub const DEFAULT_READ_ONLY_BINDS: &[&str] = &[
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ssl",
    "/etc/java-17-openjdk",
    "/etc/localtime",
    "/etc/mime.types",
    // Runtime configuration some languages read (mono, GnuCOBOL, R, racket)
    // and GHC's package database (/usr/lib/ghc/package.conf.d links there).
    "/etc/mono",
    "/etc/gnucobol",
    "/etc/R",
    "/etc/racket",
    "/var/lib/ghc",
];

/// Start-up settings of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Names this service instance: its cgroups are `evald-<instance>` and a
    /// restart sweeps the stale boxes of the same instance only.
    pub instance: String,
    /// A root-owned directory for the sandbox's own mount points.
    pub state_dir: PathBuf,
    /// Box user ids are `uid_base + slot` (same for groups).
    pub uid_base: u32,
    /// Boxes that may run at once.
    pub slots: u32,
    /// Host paths bound read-only into every box.
    pub read_only_binds: Vec<PathBuf>,
    /// Prepare each idle slot's next box ahead of its run (its cgroups, with
    /// its init already in them); without it every start does that itself.
    pub prepare_ahead: bool,
}

impl SandboxConfig {
    /// The defaults: the one place they are defined (the command line's
    /// defaults are these).
    pub const DEFAULT_INSTANCE: &'static str = "default";
    pub const DEFAULT_STATE_DIR: &'static str = "/run/evald";
    pub const DEFAULT_UID_BASE: u32 = 61000;
    pub const DEFAULT_SLOTS: u32 = 8;
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            instance: SandboxConfig::DEFAULT_INSTANCE.into(),
            state_dir: PathBuf::from(SandboxConfig::DEFAULT_STATE_DIR),
            uid_base: SandboxConfig::DEFAULT_UID_BASE,
            slots: SandboxConfig::DEFAULT_SLOTS,
            read_only_binds: DEFAULT_READ_ONLY_BINDS.iter().map(PathBuf::from).collect(),
            prepare_ahead: true,
        }
    }
}

/// Why a box could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid run specification: {0}")]
    Spec(#[from] SpecError),
    #[error("all {0} sandbox slots are busy")]
    Busy(u32),
    #[error("cgroup setup failed: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("seccomp setup failed: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    #[error("the box failed while {0}")]
    Setup(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// Launches boxes and hands them out as [`Running`]. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Pool>,
}

impl Sandbox {
    /// Detects cgroups, sweeps this instance's stale boxes, compiles the
    /// seccomp program and prepares the root layout. Needs root.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        ensure_std_fds_open();
        if config.slots == 0 {
            return Err(SandboxError::Setup("configuring: at least one slot is needed".into()));
        }
        // First of all: a second process of this instance must not touch
        // the first one's state directory, cgroups or boxes.
        let instance_lock = InstanceLock::acquire(Path::new(LOCK_DIR), &config.instance)?;
        let new_root = config.state_dir.join("root");
        fs::create_dir_all(&new_root).map_err(io_err(format!("creating {}", new_root.display())))?;
        // Only root may look into the state directory: workspaces are
        // mounted beneath it.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&config.state_dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("restricting {}", config.state_dir.display())))?;
        }
        let cgroups = Cgroups::detect(&config.instance)?;
        let swept = cgroups.sweep_stale()?;
        if swept > 0 {
            tracing::warn!(swept, "removed stale boxes of an earlier run");
        }
        let seccomp = SeccompPolicy::compile()?;
        let users: Vec<u32> = (0..=config.slots).map(|i| config.uid_base + i).collect();
        let base_ops = base_ops(&new_root, &config.read_only_binds, &users);
        let template = launch::build_template(&cpath(&new_root), &base_ops)
            .map_err(|e| SandboxError::Setup(format!("building the box root: {e}")))?;
        let net_ns = (0..config.slots)
            .map(|_| launch::new_net_ns())
            .collect::<io::Result<Vec<_>>>()
            .map_err(io_err("creating network namespaces"))?;
        let dev_null = fs::File::open("/dev/null").map_err(io_err("opening /dev/null"))?.into();
        let free_slots = Mutex::new((0..config.slots).rev().collect());
        let teardowns = Arc::new(Pending::default());
        let ctx = BoxContext {
            template,
            net_ns,
            seccomp,
            last_cap: fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(63),
        };
        let (reaper, zygote) =
            start_reaper(teardowns.clone(), ctx).map_err(io_err("starting the reaper thread and the zygote"))?;
        let slots = config.slots;
        let sandbox = Sandbox {
            inner: Arc::new(Pool {
                config,
                cgroups,
                zygote,
                dev_null,
                free_slots,
                slot_freed: Condvar::new(),
                counter: AtomicU64::new(0),
                cpus: sys::processors(),
                reaper,
                prepared: Mutex::new((0..slots).map(|_| None).collect()),
                closing: AtomicBool::new(false),
                teardowns,
                _instance_lock: instance_lock,
            }),
        };
        for slot in (0..slots).filter(|_| sandbox.inner.config.prepare_ahead) {
            sandbox.inner.teardowns.add();
            if sandbox.inner.reaper.send(Job::Prepare(sandbox.inner.clone(), slot)).is_err() {
                sandbox.inner.teardowns.finish_one();
            }
        }
        Ok(sandbox)
    }

    /// Removes what earlier processes left behind when their instance name
    /// is `<prefix><pid>` and that pid no longer exists (one-shot command
    /// line runs name their instance so); returns how many were swept.
    pub fn sweep_dead_instances(&self, prefix: &str) -> usize {
        let mut names = BTreeSet::new();
        for parent in self.inner.cgroups.parent_dirs() {
            let Some(dir) = parent.parent() else { continue };
            let Ok(entries) = fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("evald-").and_then(|n| n.strip_prefix(prefix)) else { continue };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    names.insert(format!("{prefix}{pid}"));
                }
            }
        }
        let mut swept = 0;
        for instance in names {
            match Cgroups::detect(&instance).and_then(|c| c.sweep_stale().and_then(|_| c.remove_parents())) {
                Ok(()) => swept += 1,
                Err(e) => tracing::warn!(instance, error = %e, "sweeping a dead instance"),
            }
            if let Some(state_parent) = self.inner.config.state_dir.parent() {
                let _ = fs::remove_dir(state_parent.join(&instance).join("root"));
                let _ = fs::remove_dir(state_parent.join(&instance));
            }
        }
        swept
    }

    /// The cgroup version in use.
    pub fn cgroup_version(&self) -> crate::cgroup::CgroupVersion {
        self.inner.cgroups.version()
    }

    /// Blocks until every box whose outcome was returned is completely gone
    /// (no process, mount or cgroup left) and its slot is free again. Boxes
    /// are torn down in the background after their outcome is known; call
    /// this before the process exits or before checking the host.
    pub fn settle(&self) {
        self.inner.teardowns.wait_idle();
    }

    /// For a service about to exit: waits for the teardowns (see
    /// [`Sandbox::settle`]), ends the inits of prepared boxes and removes
    /// their cgroups. Later runs prepare their boxes themselves.
    pub fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        self.settle();
        if let Ok(mut prepared) = self.inner.prepared.lock() {
            prepared.iter_mut().for_each(|p| *p = None);
        }
        if let Err(e) = self.inner.cgroups.remove_parents() {
            tracing::debug!(error = %e, "cgroup parents not removed at shutdown");
        }
    }

    /// The cgroup directories of the boxes prepared for the next runs (each
    /// holds only its init, waiting for a run).
    pub fn prepared_cgroups(&self) -> Vec<PathBuf> {
        let Ok(prepared) = self.inner.prepared.lock() else { return Vec::new() };
        prepared.iter().flatten().flat_map(|p| p.cgroup.paths().into_iter().map(Path::to_path_buf)).collect()
    }

    /// The descriptors held for the inits of prepared boxes (two each), so
    /// that leak checks can tell them from leaks.
    pub fn prepared_fds(&self) -> Vec<RawFd> {
        let Ok(prepared) = self.inner.prepared.lock() else { return Vec::new() };
        prepared.iter().flatten().flat_map(|p| p.init.fds().into_iter().chain(p.cgroup.fds())).collect()
    }

    /// The pid of the zygote, the process that forks every box init.
    pub fn zygote_pid(&self) -> Option<libc::pid_t> {
        self.inner.zygote.pid()
    }

    /// Slots not in use right now.
    pub fn free_slots(&self) -> usize {
        self.inner.free_slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The configuration this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Runs `spec` to completion in a fresh box with its own workspace and
    /// returns the outcome. Standard input must be `Null` or `Bytes`.
    ///
    /// Blocks the calling thread: it drives the box ([`Running::drive`]) on
    /// the thread's own single-threaded runtime, made at its first run and
    /// kept for the thread's life. Never call it from async code (inside a
    /// runtime it panics); use `spawn_blocking`, or [`Sandbox::spawn`] and
    /// await [`Running::drive`].
    pub fn run(&self, spec: &RunSpec) -> Result<Outcome, SandboxError> {
        self.run_with(spec, None)
    }

    /// Like [`Sandbox::run`], with `workspace` mounted as `/box` instead of a
    /// fresh one; files the program writes stay in it.
    pub fn run_in(&self, spec: &RunSpec, workspace: &Workspace) -> Result<Outcome, SandboxError> {
        self.run_with(spec, Some(workspace))
    }

    fn run_with(&self, spec: &RunSpec, workspace: Option<&Workspace>) -> Result<Outcome, SandboxError> {
        if matches!(spec.stdin, Stdin::Pipe | Stdin::Pty { .. }) {
            return Err(SandboxError::Setup("configuring: run() takes no interactive stdin; use spawn()".into()));
        }
        let running = match self.spawn_with(spec, workspace) {
            Ok(r) => r,
            Err(e @ (SandboxError::Spec(_) | SandboxError::Busy(_))) => return Err(e),
            Err(e) => return Ok(Outcome::internal(e.to_string())),
        };
        let mut capture = Capture::default();
        let driven = crate::drive::block_on(running.drive(stdin_bytes(spec), None, &mut capture));
        Ok(match driven {
            Ok(mut outcome) => {
                outcome.stdout = capture.stdout;
                outcome.stderr = capture.stderr;
                outcome
            }
            Err(e) => Outcome::internal(format!("starting the driver runtime: {e}")),
        })
    }

    /// Starts `spec` in a fresh box and returns at once; the caller runs it
    /// to its end with [`Running::drive`] (from async code).
    pub fn spawn(&self, spec: &RunSpec) -> Result<Running, SandboxError> {
        self.spawn_with(spec, None)
    }

    /// Like [`Sandbox::spawn`] with a persistent workspace.
    pub fn spawn_in(&self, spec: &RunSpec, workspace: &Workspace) -> Result<Running, SandboxError> {
        self.spawn_with(spec, Some(workspace))
    }

    fn spawn_with(&self, spec: &RunSpec, workspace: Option<&Workspace>) -> Result<Running, SandboxError> {
        spec.validate()?;
        let slot = self.inner.take_slot()?;
        let guard = SlotGuard { inner: self.inner.clone(), slot: Some(slot) };
        let limits = CgroupLimits { memory_bytes: spec.limits.memory_bytes, pids: spec.limits.processes.into() };
        let prepared =
            self.inner.prepared.lock().ok().and_then(|mut p| p.get_mut(slot as usize).and_then(Option::take));
        let prepared = match prepared.map(|mut p| p.cgroup.set_limits(&limits).map(|()| p)) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                // A reused cgroup may hold more than a lower memory limit
                // allows (the page cache its earlier runs left charged, which
                // the kernel could not reclaim): start over in new cgroups.
                tracing::debug!(slot, error = %e, "limits refused; new cgroups for this run");
                self.inner.new_box(slot, &limits)?
            }
            None => self.inner.new_box(slot, &limits)?,
        };
        let Prepared { init, mut cgroup } = prepared;
        let uid = match workspace {
            Some(_) => self.workspace_uid(),
            None => self.inner.config.uid_base + slot,
        };
        let stdio = Stdio::new(&spec.stdin)?;
        stdio.give_to(uid);
        let workspace_dir = match workspace {
            Some(w) => Some(w.detached_copy().map_err(io_err(format!("cloning the mount {}", w.path().display())))?),
            None => None,
        };
        let plan = build_plan(spec, workspace.is_some(), uid, stdio.pty())?;
        let mut fds = stdio.child_fds(self.inner.dev_null.as_fd()).to_vec();
        fds.extend(workspace_dir.as_ref().map(AsFd::as_fd));
        // On failure the init is killed (dropped) before its cgroups go.
        let (pid, pidfd, status_read) = match init.run(&plan, &fds) {
            Ok(started) => started,
            Err(e) => {
                // A prepared init that died (its zygote ended, or it was
                // killed from outside): once more in a new box.
                tracing::warn!(slot, error = %e, "a prepared box is gone; starting a new one");
                let fresh = self.inner.new_box(slot, &limits)?;
                cgroup = fresh.cgroup;
                fresh.init.run(&plan, &fds).map_err(io_err("starting the box"))?
            }
        };
        let started = Instant::now();
        drop(workspace_dir);
        let parent_ends = stdio.into_parent_ends();
        Ok(Running {
            slot: Some(guard),
            pid: pid.as_raw_nonzero().get(),
            pidfd,
            status_read: Some(status_read),
            report: None,
            cgroup: Some(cgroup),
            stdin: parent_ends.stdin,
            stdout: parent_ends.stdout,
            stderr: parent_ends.stderr,
            pty: parent_ends.pty,
            limits: spec.limits,
            started,
            cpu_check_at: started + spec.limits.cpu_time / self.inner.cpus,
            cpus: self.inner.cpus,
            killed: Facts::default(),
            finished: false,
            ops: plan.ops,
        })
    }

    /// The user id of every box that runs in a persistent workspace (files
    /// persist across runs, so their owner must too).
    pub fn workspace_uid(&self) -> u32 {
        self.inner.config.uid_base + self.inner.config.slots
    }

    /// Creates a persistent workspace named `name` (letters, digits, `-`,
    /// `_`) of `size_bytes`, owned by [`Sandbox::workspace_uid`].
    pub fn create_workspace(&self, name: &str, size_bytes: u64) -> Result<Workspace, crate::WorkspaceError> {
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SpecError::BadPath {
                path: name.into(),
                reason: "workspace names are 1-64 letters, digits, - or _",
            }
            .into());
        }
        let path = self.inner.config.state_dir.join("workspaces").join(name);
        Workspace::create(&path, size_bytes, self.workspace_uid())
    }
}

/// Makes sure descriptors 0, 1 and 2 are open, so that no pipe of a box
/// ever gets one of those numbers.
fn ensure_std_fds_open() {
    use std::os::fd::IntoRawFd;
    for fd in [rustix::stdio::stdin(), rustix::stdio::stdout(), rustix::stdio::stderr()] {
        if rustix::io::fcntl_getfd(fd) == Err(rustix::io::Errno::BADF) {
            // The lowest free descriptor: the one that was closed. It stays
            // open for the process's life.
            if let Ok(null) = rustix::fs::open(c"/dev/null", rustix::fs::OFlags::RDWR, rustix::fs::Mode::empty()) {
                let _ = null.into_raw_fd();
            }
        }
    }
}
