//! The host side: a [`Sandbox`] owns the cgroup subtree, the seccomp program,
//! the pool of box user ids and the root file system layout; it launches
//! boxes and supervises them.

use std::collections::BTreeSet;
use std::ffi::{c_ulong, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cgroup::{BoxCgroup, CgroupLimits, Cgroups};
use crate::drive::Capture;
use crate::launch::{self, BoxContext, BoxInit, Op, Plan, Rlimit, Zygote};
use crate::outcome::{Facts, Outcome};
use crate::running::Running;
use crate::seccomp::SeccompPolicy;
use crate::spec::{Limits, Network, RunSpec, SpecError, Stdin};
use crate::workspace::Workspace;
use crate::WORKSPACE_DIR;

/// How long a start waits for a slot whose box is being torn down.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

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
    #[error("the box failed while {0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

struct Inner {
    config: SandboxConfig,
    cgroups: Cgroups,
    /// Forks the box inits (see [`launch::Zygote`]).
    zygote: Zygote,
    dev_null: OwnedFd,
    free_slots: Mutex<Vec<u32>>,
    /// Signalled when a slot returns to `free_slots`.
    slot_freed: Condvar,
    counter: AtomicU64,
    /// Processors the kernel has (a box cannot use more at once).
    cpus: u32,
    /// Hands finished boxes to the reaper thread.
    reaper: mpsc::Sender<Job>,
    /// Per slot, the next box prepared ahead of its run; `None` when not
    /// ready (the run then prepares its box itself).
    prepared: Mutex<Vec<Option<Prepared>>>,
    /// Set by [`Sandbox::shutdown`]: prepare no more boxes.
    closing: std::sync::atomic::AtomicBool,
    teardowns: Arc<Pending>,
}

/// What is left of a box once its outcome is known: the init, which is
/// exiting (its pid and mount namespaces are being torn down, which waits
/// for an RCU grace period), and the cgroups. The reaper thread finishes the
/// job off the caller's path; the slot returns to the pool only then, so a
/// slot's user id and network namespace are never shared by two boxes.
pub(crate) struct Teardown {
    pub(crate) pidfd: OwnedFd,
    pub(crate) cgroup: BoxCgroup,
    pub(crate) slot: SlotGuard,
}

/// Work for the reaper thread.
enum Job {
    /// Tear a finished box down, prepare the slot's next box, free the slot.
    Teardown(Box<Teardown>),
    /// Prepare a box for a slot (at start-up).
    Prepare(Arc<Inner>, u32),
    /// Replace a dead zygote and prepare again the boxes that died with
    /// it; then signal the sender.
    RestartZygote(Arc<Inner>, mpsc::Sender<()>),
}

/// A slot's next box: its cgroups, with its init (forked by the zygote, in
/// the box's namespaces) already inside them, waiting for a plan.
///
/// Why ahead: moving a process between cgroups takes the kernel's cgroup
/// threadgroup lock for writing, which waits for an RCU grace period when
/// no move happened recently: several milliseconds on an idle machine, and
/// all moves queue behind one another.
///
/// A slot's cgroups serve run after run when the kernel lets each run
/// start its own accounting period (see `BoxCgroup::begin_period`):
/// creating and removing a memory cgroup per run costs more CPU than
/// anything else of a box but the payload.
///
/// Field order matters: the init is gone before its cgroups are removed.
struct Prepared {
    init: BoxInit,
    cgroup: BoxCgroup,
}

impl Prepared {
    /// Forks an init into `reused` (the slot's cgroups after their last
    /// run, keeping that run's limits) or into new cgroups with `limits`.
    fn new(
        inner: &Inner,
        slot: u32,
        limits: &CgroupLimits,
        reused: Option<BoxCgroup>,
    ) -> Result<Prepared, SandboxError> {
        let mut cgroup = match reused {
            Some(c) => c,
            None => {
                let seq = inner.counter.fetch_add(1, Ordering::Relaxed);
                inner.cgroups.create_box(&format!("box-{slot}-{seq}"), limits)?
            }
        };
        let init = inner.zygote.new_box(slot).map_err(io_err("forking a box init"))?;
        init.enter_cgroups(&cgroup.procs_files()).map_err(io_err("moving a box init into its cgroups"))?;
        cgroup.begin_period()?;
        Ok(Prepared { init, cgroup })
    }
}

/// Prepares the next box of `slot` unless one is ready, in `reused` (the
/// slot's cgroups after their last run) if given. With `ctx` (on the reaper
/// thread), a dead zygote is replaced first.
fn prepare(inner: &Inner, ctx: Option<&BoxContext>, slot: u32, reused: Option<BoxCgroup>) {
    if inner.closing.load(Ordering::Relaxed) || !inner.config.prepare_ahead {
        return;
    }
    let ready = inner.prepared.lock().map(|p| p.get(slot as usize).is_some_and(Option::is_some)).unwrap_or(true);
    if ready {
        return;
    }
    // The usual limits; a run with others rewrites what differs.
    let defaults = Limits::default();
    let limits = CgroupLimits { memory_bytes: defaults.memory_bytes, pids: defaults.processes.into() };
    let prepared = match (Prepared::new(inner, slot, &limits, reused), ctx) {
        (Err(_), Some(ctx)) if !inner.zygote.alive() => {
            restart_zygote(inner, ctx);
            Prepared::new(inner, slot, &limits, None)
        }
        (result, _) => result,
    };
    match prepared {
        Ok(p) => {
            if let Ok(mut all) = inner.prepared.lock() {
                if let Some(entry) = all.get_mut(slot as usize) {
                    *entry = Some(p);
                }
            }
        }
        Err(e) => tracing::warn!(slot, error = %e, "preparing a box"),
    }
}

/// Replaces a dead zygote (see `Zygote::restart`) and prepares again the
/// idle slots' boxes, whose inits died with it. On the reaper thread.
fn restart_zygote(inner: &Inner, ctx: &BoxContext) {
    match inner.zygote.restart(ctx) {
        Ok(true) => tracing::warn!("the zygote had ended; started a new one"),
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %e, "starting a new zygote");
            return;
        }
    }
    for slot in 0..inner.config.slots {
        let dead = inner.prepared.lock().ok().and_then(|mut all| {
            let entry = all.get_mut(slot as usize)?;
            if entry.as_ref().is_some_and(|p| !p.init.alive()) {
                entry.take()
            } else {
                None
            }
        });
        if let Some(Prepared { init, cgroup }) = dead {
            drop(init);
            prepare(inner, None, slot, cgroup.reusable().then_some(cgroup));
        }
    }
    let free: Vec<u32> = inner.free_slots.lock().map(|f| f.clone()).unwrap_or_default();
    for slot in free {
        prepare(inner, None, slot, None);
    }
}

impl Teardown {
    /// Hands the teardown to the reaper thread, or does it here if that
    /// thread is gone.
    pub(crate) fn hand_over(self) {
        let inner = self.slot.inner.clone();
        inner.teardowns.add();
        if let Err(unsent) = inner.reaper.send(Job::Teardown(Box::new(self))) {
            if let Job::Teardown(t) = unsent.0 {
                t.run(None);
            }
            inner.teardowns.finish_one();
        }
    }

    /// `ctx`: on the reaper thread, to replace a dead zygote.
    fn run(mut self, ctx: Option<&BoxContext>) {
        // SAFETY: signalling through our own pidfd. The init exits by itself
        // after its report; the kill only hurries along whatever the payload
        // left behind. ESRCH (already reaped) is fine.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32);
        }
        launch::wait_exited(self.pidfd.as_fd());
        let inner = &self.slot.inner;
        let reuse = self.cgroup.reusable() && inner.config.prepare_ahead && !inner.closing.load(Ordering::Relaxed);
        if !reuse {
            if let Err(e) = self.cgroup.remove() {
                tracing::warn!(error = %e, "removing box cgroup");
            }
        }
        if let Some(slot) = self.slot.slot {
            prepare(inner, ctx, slot, reuse.then_some(self.cgroup));
        }
    }
}

/// Count of teardowns handed to the reaper and not done yet.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
    fn finish_one(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.done.notify_all();
        }
    }
    fn is_idle(&self) -> bool {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) == 0
    }
    fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.done.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Starts the thread that tears finished boxes down and prepares the next
/// ones. It forks the zygote first (which dies with this thread) and
/// returns it; it keeps `ctx` to fork another if that one dies.
fn start_reaper(pending: Arc<Pending>, ctx: BoxContext) -> io::Result<(mpsc::Sender<Job>, Zygote)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (zygote_tx, zygote_rx) = mpsc::channel();
    std::thread::Builder::new().name("evald-reaper".into()).spawn(move || {
        // The zygote forked here inherits this mask: no signal handler of
        // ours ever runs in it. Box inits clear it.
        // SAFETY: sigfillset fills a local set; pthread_sigmask only changes
        // this thread's mask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        }
        let started = Zygote::start(&ctx);
        let ok = started.is_ok();
        if zygote_tx.send(started).is_err() || !ok {
            return;
        }
        for job in rx {
            match job {
                Job::Teardown(teardown) => teardown.run(Some(&ctx)),
                Job::Prepare(inner, slot) => prepare(&inner, Some(&ctx), slot, None),
                Job::RestartZygote(inner, done) => {
                    restart_zygote(&inner, &ctx);
                    let _ = done.send(());
                }
            }
            pending.finish_one();
        }
    })?;
    let zygote = zygote_rx.recv().map_err(|_| io::Error::other("the reaper thread ended"))??;
    Ok((tx, zygote))
}

/// Launches boxes and hands them out as [`Running`]. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl Sandbox {
    /// Detects cgroups, sweeps this instance's stale boxes, compiles the
    /// seccomp program and prepares the root layout. Needs root.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        ensure_std_fds_open();
        if config.slots == 0 {
            return Err(SandboxError::Setup("configuring: at least one slot is needed".into()));
        }
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
        // SAFETY: build_template's child only runs the prepared ops.
        let template = unsafe { launch::build_template(&cpath(&new_root), &base_ops) }
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
            inner: Arc::new(Inner {
                config,
                cgroups,
                zygote,
                dev_null,
                free_slots,
                slot_freed: Condvar::new(),
                counter: AtomicU64::new(0),
                // SAFETY: sysconf only reads a system setting.
                cpus: u32::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }).unwrap_or(1).max(1),
                reaper,
                prepared: Mutex::new((0..slots).map(|_| None).collect()),
                closing: std::sync::atomic::AtomicBool::new(false),
                teardowns,
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

    /// Starts `spec` in a fresh box and returns at once; the caller drives
    /// its stdio and awaits its end (see [`Running`]).
    pub fn spawn(&self, spec: &RunSpec) -> Result<Running, SandboxError> {
        self.spawn_with(spec, None)
    }

    /// Like [`Sandbox::spawn`] with a persistent workspace.
    pub fn spawn_in(&self, spec: &RunSpec, workspace: &Workspace) -> Result<Running, SandboxError> {
        self.spawn_with(spec, Some(workspace))
    }

    fn spawn_with(&self, spec: &RunSpec, workspace: Option<&Workspace>) -> Result<Running, SandboxError> {
        spec.validate()?;
        let slot = self.take_slot()?;
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
                self.new_box(slot, &limits)?
            }
            None => self.new_box(slot, &limits)?,
        };
        let Prepared { init, mut cgroup } = prepared;
        let uid = match workspace {
            Some(_) => self.workspace_uid(),
            None => self.inner.config.uid_base + slot,
        };
        let stdio = Stdio::new(&spec.stdin, &self.inner.dev_null)?;
        stdio.give_to(uid);
        let workspace_dir = match workspace {
            Some(w) => Some(w.detached_copy().map_err(io_err(format!("cloning the mount {}", w.path().display())))?),
            None => None,
        };
        let plan = self.plan(spec, workspace.is_some(), uid, stdio.pty)?;
        let mut fds = vec![stdio.child_stdin, stdio.child_stdout, stdio.child_stderr];
        fds.extend(workspace_dir.as_ref().map(|f| f.as_raw_fd()));
        // On failure the init is killed (dropped) before its cgroups go.
        let (pid, pidfd, status_read) = match init.run(&plan, &fds) {
            Ok(started) => started,
            Err(e) => {
                // A prepared init that died (its zygote ended, or it was
                // killed from outside): once more in a new box.
                tracing::warn!(slot, error = %e, "a prepared box is gone; starting a new one");
                let fresh = self.new_box(slot, &limits)?;
                cgroup = fresh.cgroup;
                fresh.init.run(&plan, &fds).map_err(io_err("starting the box"))?
            }
        };
        let started = Instant::now();
        drop(workspace_dir);
        let parent_ends = stdio.into_parent_ends();
        Ok(Running {
            slot: Some(guard),
            pid,
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

    /// A box for `slot` made now (no prepared one), with `limits`; replaces
    /// the zygote first if it died.
    fn new_box(&self, slot: u32, limits: &CgroupLimits) -> Result<Prepared, SandboxError> {
        match Prepared::new(&self.inner, slot, limits, None) {
            Err(_) if !self.inner.zygote.alive() => {
                // Only the reaper thread may fork a zygote (it is the
                // zygote's parent): ask it, wait (bounded), try again.
                let (tx, rx) = mpsc::channel();
                self.inner.teardowns.add();
                if self.inner.reaper.send(Job::RestartZygote(self.inner.clone(), tx)).is_err() {
                    self.inner.teardowns.finish_one();
                }
                let _ = rx.recv_timeout(TEARDOWN_WAIT);
                Prepared::new(&self.inner, slot, limits, None)
            }
            result => result,
        }
    }

    /// Takes a free slot. When every slot is taken but some are only
    /// waiting for their box's teardown (which takes about a millisecond),
    /// waits for one of those instead of failing.
    fn take_slot(&self) -> Result<u32, SandboxError> {
        let busy = SandboxError::Busy(self.inner.config.slots);
        let deadline = Instant::now() + TEARDOWN_WAIT;
        let mut free = self.inner.free_slots.lock().map_err(|_| SandboxError::Busy(0))?;
        loop {
            if let Some(slot) = free.pop() {
                return Ok(slot);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.inner.teardowns.is_idle() {
                return Err(busy);
            }
            free = self.inner.slot_freed.wait_timeout(free, left).map_err(|_| SandboxError::Busy(0))?.0;
        }
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

    fn plan(&self, spec: &RunSpec, workspace: bool, uid: u32, pty: bool) -> Result<Plan, SandboxError> {
        let at = |p: &str| cstr(p);
        let mut ops = Vec::with_capacity(8 + 3 * spec.files.len());
        let size = spec.limits.disk_bytes;
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        ops.push(Op::Mount {
            src: c"proc".into(),
            dst: at("/proc"),
            fstype: c"proc".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: CString::default(),
        });
        ops.push(tmpfs(at("/dev/shm"), nosuid_nodev, &format!("size={size},mode=1777")));
        ops.push(tmpfs(at("/tmp"), nosuid_nodev, &format!("size={size},mode=1777")));
        if workspace {
            // A bind from the host's namespace is refused in the box's; a
            // detached copy of the mount (nosuid, nodev like the original),
            // sent with the plan, can be attached anywhere.
            ops.push(Op::MoveMount { fd: -1, dst: at(WORKSPACE_DIR) });
        } else {
            ops.push(tmpfs(at(WORKSPACE_DIR), nosuid_nodev, &format!("size={size},mode=0755,uid={uid},gid={uid}")));
        }
        if workspace && !spec.files.is_empty() {
            return Err(SandboxError::Setup(
                "configuring: files go into a persistent workspace with Workspace::write_file".into(),
            ));
        }
        let mut dirs = BTreeSet::new();
        let ws_root = Path::new(WORKSPACE_DIR);
        for file in &spec.files {
            let rel = Path::new(&file.path);
            let parents: Vec<_> = rel.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
            for dir in parents.into_iter().rev() {
                if dirs.insert(dir.to_path_buf()) {
                    let path = cpath(&ws_root.join(dir));
                    ops.push(Op::Mkdir { path: path.clone(), mode: 0o755 });
                    ops.push(Op::Chown { path, uid, gid: uid });
                }
            }
            ops.push(Op::WriteFile {
                path: cpath(&ws_root.join(rel)),
                content: file.content.clone(),
                mode: if file.executable { 0o755 } else { 0o644 },
                owner: Some((uid, uid)),
            });
        }

        let l = &spec.limits;
        let mut rlimits = vec![
            Rlimit { resource: libc::RLIMIT_CORE, value: 0 },
            Rlimit { resource: libc::RLIMIT_FSIZE, value: l.file_size_bytes },
            Rlimit { resource: libc::RLIMIT_NOFILE, value: l.open_files.into() },
            Rlimit { resource: libc::RLIMIT_MEMLOCK, value: 64 << 10 },
            Rlimit { resource: libc::RLIMIT_MSGQUEUE, value: 0 },
            Rlimit { resource: libc::RLIMIT_CPU, value: l.cpu_time.as_secs() + 2 },
            Rlimit { resource: libc::RLIMIT_RTPRIO, value: 0 },
        ];
        // RLIMIT_NPROC counts every process of the uid on the host: a backstop
        // for a slot's own uid, but boxes in persistent workspaces share one
        // uid, so for them the pids cgroup alone limits processes.
        if !workspace {
            rlimits.push(Rlimit { resource: libc::RLIMIT_NPROC, value: l.processes.into() });
        }
        let program = resolve_program(&spec.program);
        let mut argv = Vec::with_capacity(spec.args.len() + 1);
        argv.push(cstr(&program));
        argv.extend(spec.args.iter().map(|a| cstr(a)));
        let env = env_with_defaults(&spec.env, pty).iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect();
        Ok(Plan {
            pty,
            ops,
            loopback: spec.network == Network::Loopback,
            workspace,
            uid,
            gid: uid,
            rlimits,
            cwd: cstr(&spec.cwd),
            program: cstr(&program),
            argv,
            env,
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Prepared boxes go first: their cgroups live under the parents.
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.clear();
        }
        if let Err(e) = self.cgroups.remove_parents() {
            tracing::debug!(error = %e, "cgroup parents not removed");
        }
    }
}

/// Returns a slot to the pool when the run is over.
pub(crate) struct SlotGuard {
    inner: Arc<Inner>,
    slot: Option<u32>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let (Some(slot), Ok(mut free)) = (self.slot.take(), self.inner.free_slots.lock()) {
            free.push(slot);
            self.inner.slot_freed.notify_one();
        }
    }
}

/// Shared layout of every box's root (see docs/security.md).
fn base_ops(root: &Path, binds: &[PathBuf], users: &[u32]) -> Vec<Op> {
    let at = |p: &str| cpath(&root.join(p));
    let mut ops = vec![tmpfs(at(""), libc::MS_NOSUID | libc::MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")];
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in ["usr", "etc", "proc", "dev", "tmp", "box"] {
        ops.push(Op::Mkdir { path: at(dir), mode: 0o755 });
        made.insert(PathBuf::from(dir));
    }
    let ro = libc::MS_NOSUID | libc::MS_NODEV;
    ops.push(Op::BindRo { src: cpath(Path::new("/usr")), dst: at("usr"), flags: ro });
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    ops.push(Op::Symlink { target: cpath(&target), link: at(top) });
                }
            }
            Ok(m) if m.is_dir() => {
                ops.push(Op::Mkdir { path: at(top), mode: 0o755 });
                ops.push(Op::BindRo { src: cpath(&host), dst: at(top), flags: ro });
            }
            _ => {}
        }
    }
    for host in binds {
        let Ok(meta) = fs::metadata(host) else { continue };
        let Ok(rel) = host.strip_prefix("/") else { continue };
        let parents: Vec<_> = rel.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
        for dir in parents.into_iter().rev() {
            if made.insert(dir.to_path_buf()) {
                ops.push(Op::Mkdir { path: cpath(&root.join(dir)), mode: 0o755 });
            }
        }
        let dst = cpath(&root.join(rel));
        if meta.is_dir() {
            made.insert(rel.to_path_buf());
            ops.push(Op::Mkdir { path: dst.clone(), mode: 0o755 });
        } else {
            ops.push(Op::WriteFile { path: dst.clone(), content: Vec::new(), mode: 0o644, owner: None });
        }
        ops.push(Op::BindRo { src: cpath(host), dst, flags: ro });
    }
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    for uid in users {
        passwd.push_str(&format!("evald:x:{uid}:{uid}:evald:{WORKSPACE_DIR}:/bin/sh\n"));
        group.push_str(&format!("evald:x:{uid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    for (name, content) in [
        ("etc/passwd", passwd.into_bytes()),
        ("etc/group", group.into_bytes()),
        ("etc/hosts", b"127.0.0.1 localhost evald\n::1 localhost\n".to_vec()),
    ] {
        ops.push(Op::WriteFile { path: at(name), content, mode: 0o644, owner: None });
    }
    ops.push(tmpfs(at("dev"), libc::MS_NOSUID | libc::MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755"));
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        ops.push(Op::Mknod {
            path: at(&format!("dev/{name}")),
            mode: libc::S_IFCHR | 0o666,
            dev: libc::makedev(major, minor),
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink { target: cstr(target), link: at(&format!("dev/{name}")) });
    }
    ops.push(Op::Mkdir { path: at("dev/shm"), mode: 0o755 });
    ops.push(Op::RemountRo { path: at("dev"), flags: libc::MS_NOSUID | libc::MS_NOEXEC });
    ops
}

fn tmpfs(dst: CString, flags: c_ulong, data: &str) -> Op {
    Op::Mount { src: c"tmpfs".into(), dst, fstype: c"tmpfs".into(), flags, data: cstr(data) }
}

fn cpath(p: &Path) -> CString {
    // Paths come from validated specs or from the host configuration.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn cstr(s: &str) -> CString {
    // Validated specs hold no NUL bytes.
    CString::new(s).unwrap_or_default()
}

fn resolve_program(program: &str) -> String {
    if program.contains('/') {
        return program.to_owned();
    }
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let candidate = format!("{dir}/{program}");
        if Path::new(&candidate).is_file() {
            return candidate;
        }
    }
    program.to_owned()
}

fn env_with_defaults(env: &[(String, String)], pty: bool) -> Vec<(String, String)> {
    let mut out = env.to_vec();
    let mut default = |k: &str, v: &str| {
        if !out.iter().any(|(name, _)| name == k) {
            out.push((k.to_owned(), v.to_owned()));
        }
    };
    default("PATH", "/usr/local/bin:/usr/bin:/bin");
    default("HOME", WORKSPACE_DIR);
    default("LANG", "C.UTF-8");
    if pty {
        default("TERM", "xterm-256color");
    }
    out
}

fn stdin_bytes(spec: &RunSpec) -> Vec<u8> {
    match &spec.stdin {
        Stdin::Bytes(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// The descriptors of a box's standard streams on both sides.
struct Stdio {
    pty: bool,
    child_stdin: RawFd,
    child_stdout: RawFd,
    child_stderr: RawFd,
    /// Child-side descriptors to close in the parent after the spawn.
    child_owned: Vec<OwnedFd>,
    parent: ParentEnds,
}

#[derive(Default)]
struct ParentEnds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
}

impl Stdio {
    fn new(stdin: &Stdin, dev_null: &OwnedFd) -> Result<Stdio, SandboxError> {
        if let Stdin::Pty { rows, cols } = stdin {
            let (master, slave) = open_pty(*rows, *cols)?;
            set_nonblocking(master.as_fd())?;
            let fd = slave.as_raw_fd();
            return Ok(Stdio {
                pty: true,
                child_stdin: fd,
                child_stdout: fd,
                child_stderr: fd,
                child_owned: vec![slave],
                parent: ParentEnds { pty: Some(master), ..ParentEnds::default() },
            });
        }
        let mut parent = ParentEnds::default();
        let mut child_owned = Vec::new();
        let child_stdin = match stdin {
            Stdin::Null => dev_null.as_raw_fd(),
            _ => {
                let (r, w) = pipe()?;
                set_nonblocking(w.as_fd())?;
                parent.stdin = Some(w);
                let fd = r.as_raw_fd();
                child_owned.push(r);
                fd
            }
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        set_nonblocking(out_r.as_fd())?;
        set_nonblocking(err_r.as_fd())?;
        parent.stdout = Some(out_r);
        parent.stderr = Some(err_r);
        let (child_stdout, child_stderr) = (out_w.as_raw_fd(), err_w.as_raw_fd());
        child_owned.push(out_w);
        child_owned.push(err_w);
        Ok(Stdio { pty: false, child_stdin, child_stdout, child_stderr, child_owned, parent })
    }

    /// Makes the box user the owner of its pipes and terminal, so that the
    /// program can reopen them (`/dev/stdin`, `tee /dev/stderr`).
    fn give_to(&self, uid: u32) {
        for fd in &self.child_owned {
            // SAFETY: fchown of a descriptor we own.
            unsafe { libc::fchown(fd.as_raw_fd(), uid, uid) };
        }
    }

    fn into_parent_ends(self) -> ParentEnds {
        drop(self.child_owned);
        self.parent
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Io { what: "creating a pipe".into(), source: io::Error::last_os_error() });
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), SandboxError> {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor.
    let r = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
    };
    if r < 0 {
        return Err(SandboxError::Io { what: "setting O_NONBLOCK".into(), source: io::Error::last_os_error() });
    }
    Ok(())
}

fn open_pty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty fills two fresh descriptors; name and termios are null.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
    if r != 0 {
        return Err(SandboxError::Io { what: "opening a terminal".into(), source: io::Error::last_os_error() });
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: setting FD_CLOEXEC on a live descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// Makes sure descriptors 0, 1 and 2 are open, so that no pipe of a box
/// ever gets one of those numbers.
fn ensure_std_fds_open() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open of /dev/null returns the lowest
        // free descriptor, which is `fd` when it was closed.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}
