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
use crate::launch::{self, report, step, BoxContext, BoxInit, Op, Plan, Rlimit, Zygote};
use crate::outcome::{verdict, Facts, Outcome, Status};
use crate::seccomp::SeccompPolicy;
use crate::spec::{Limits, Network, RunSpec, SpecError, Stdin};
use crate::workspace::Workspace;
use crate::WORKSPACE_DIR;

/// How long a start waits for a slot whose box is being torn down.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// The shortest interval between two samples of a box's CPU time.
const CPU_POLL: Duration = Duration::from_millis(10);

/// Largest read from a box's output pipe at once.
const READ_CHUNK: usize = 64 << 10;

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

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            instance: "default".into(),
            state_dir: PathBuf::from("/run/evald"),
            uid_base: 61000,
            slots: 64,
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
struct Teardown {
    pidfd: OwnedFd,
    cgroup: BoxCgroup,
    slot: SlotGuard,
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

/// Launches and supervises boxes. Cheap to clone; all clones share one pool.
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
        let mut running = match self.spawn_with(spec, workspace) {
            Ok(r) => r,
            Err(e @ (SandboxError::Spec(_) | SandboxError::Busy(_))) => return Err(e),
            Err(e) => return Ok(Outcome::internal(e.to_string())),
        };
        Ok(running.supervise(stdin_bytes(spec)))
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
            status_read,
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
struct SlotGuard {
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

/// A running box. Drop kills it and removes its cgroups.
///
/// For interactive use take its stdio with the `take_*` methods (all
/// non-blocking), wait for [`Running::pidfd`] to become readable (the box's
/// init exited), then call [`Running::wait`]. Call
/// [`Running::check_limits`] every few milliseconds meanwhile: it enforces
/// the CPU and wall-clock limits.
pub struct Running {
    /// Moves to the reaper with the cgroup when the outcome is known.
    slot: Option<SlotGuard>,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// The init's socket: its report comes on it.
    status_read: OwnedFd,
    /// The init's 12-byte report, once read.
    report: Option<[u8; 12]>,
    cgroup: Option<BoxCgroup>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    limits: Limits,
    started: Instant,
    /// When the CPU time is next worth reading: a box cannot use more CPU
    /// time than `cpus` times the wall time, so until then it cannot have
    /// reached its limit.
    cpu_check_at: Instant,
    cpus: u32,
    killed: Facts,
    finished: bool,
    /// The root-building steps, to name the one that failed.
    ops: Vec<Op>,
}

impl Running {
    /// Write end of the stdin pipe (`Stdin::Pipe`). Closing it is EOF.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }
    /// Master side of the terminal (`Stdin::Pty`).
    pub fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// Readable once the box's init has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Host pid of the box's init.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Resizes a terminal (only for `Stdin::Pty`, given the master fd).
    pub fn resize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a valid winsize from a live descriptor.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `signal` to the program's process group (like a terminal's ^C).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))?;
        let Some(payload) = children.split_whitespace().next().and_then(|p| p.parse::<libc::pid_t>().ok()) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the program is not running"));
        };
        // SAFETY: kill only sends a signal; the group is the payload's own
        // session, a member of our box.
        if unsafe { libc::kill(-payload, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Enforces the wall-clock and CPU limits; returns the limit that was hit
    /// (the box is then being killed).
    pub fn check_limits(&mut self) -> Option<Status> {
        if self.finished {
            return None;
        }
        if self.started.elapsed() >= self.limits.wall_time {
            self.killed.wall_exceeded = true;
            self.kill();
            return Some(Status::TimeLimitWall);
        }
        let now = Instant::now();
        if now < self.cpu_check_at {
            return None;
        }
        if let Some(Ok(ns)) = self.cgroup.as_ref().map(|c| c.cpu_ns()) {
            let used = Duration::from_nanos(ns);
            if used > self.limits.cpu_time {
                self.killed.cpu_exceeded = true;
                self.kill();
                return Some(Status::TimeLimitCpu);
            }
            self.cpu_check_at = now + ((self.limits.cpu_time - used) / self.cpus).max(CPU_POLL);
        } else {
            self.cpu_check_at = now + CPU_POLL;
        }
        None
    }

    /// Records that the caller stopped reading output because of the output
    /// limit, and kills the box.
    pub fn output_limit_hit(&mut self) {
        self.killed.output_exceeded = true;
        self.kill();
    }

    /// Kills every process of the box.
    pub fn kill(&mut self) {
        // SAFETY: signalling through our own pidfd.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0usize, 0u32);
        }
        if let Some(Err(e)) = self.cgroup.as_ref().map(|c| c.kill_all()) {
            tracing::warn!(error = %e, "killing box processes");
        }
    }

    /// Time until the next limit check is due.
    pub fn next_check(&self) -> Duration {
        let left = self.limits.wall_time.saturating_sub(self.started.elapsed());
        left.min(self.cpu_check_at.saturating_duration_since(Instant::now()))
    }

    /// Blocks until the box has ended and returns its outcome (stdout and
    /// stderr are empty: in streaming mode the caller reads them).
    pub fn wait(mut self) -> Outcome {
        while !self.finished {
            if wait_readable(self.pidfd.as_fd(), self.next_check()) {
                break;
            }
            self.check_limits();
        }
        self.finish(Captured::default())
    }

    /// Runs the box to the end, feeding `stdin` and capturing output.
    fn supervise(&mut self, stdin: Vec<u8>) -> Outcome {
        let cap = usize::try_from(self.limits.output_bytes).unwrap_or(usize::MAX);
        let mut cap_out = Captured::default();
        let mut stdin_left: &[u8] = &stdin;
        if stdin_left.is_empty() {
            self.stdin = None;
        }
        let mut pid_done = false;
        loop {
            let mut fds = Vec::with_capacity(5);
            fds.push(pollfd(self.pidfd.as_fd(), libc::POLLIN));
            fds.push(pollfd(self.status_read.as_fd(), libc::POLLIN));
            let out_i = self.stdout.as_ref().map(|f| {
                fds.push(pollfd(f.as_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let err_i = self.stderr.as_ref().map(|f| {
                fds.push(pollfd(f.as_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let in_i = self.stdin.as_ref().map(|f| {
                fds.push(pollfd(f.as_fd(), libc::POLLOUT));
                fds.len() - 1
            });
            if pid_done && out_i.is_none() && err_i.is_none() {
                break;
            }
            let timeout = if pid_done { Duration::from_secs(1) } else { self.next_check() };
            poll(&mut fds, timeout);
            if fds[0].revents != 0 {
                pid_done = true;
            }
            if fds[1].revents != 0 && !pid_done {
                // The init's report: the payload has ended and everything it
                // wrote is in the pipes. Take what is there and stop; the
                // reaper ends whatever the payload left behind.
                let mut buf = [0u8; 12];
                if read_some(self.status_read.as_fd(), &mut buf) == buf.len() {
                    self.report = Some(buf);
                    for (fd, out, truncated) in [
                        (&mut self.stdout, &mut cap_out.stdout, &mut cap_out.stdout_truncated),
                        (&mut self.stderr, &mut cap_out.stderr, &mut cap_out.stderr_truncated),
                    ] {
                        if drain(fd, out, cap) == Some(true) {
                            *truncated = true;
                            self.killed.output_exceeded = true;
                        }
                    }
                    break;
                }
                // End of file without a report: the init died; its pidfd
                // tells when it is gone.
                pid_done = true;
            }
            if let Some(i) = out_i {
                if fds[i].revents != 0 {
                    if let Some(over) = drain(&mut self.stdout, &mut cap_out.stdout, cap) {
                        cap_out.stdout_truncated = over;
                        if over {
                            self.output_limit_hit();
                        }
                    }
                }
            }
            if let Some(i) = err_i {
                if fds[i].revents != 0 {
                    if let Some(over) = drain(&mut self.stderr, &mut cap_out.stderr, cap) {
                        cap_out.stderr_truncated = over;
                        if over {
                            self.output_limit_hit();
                        }
                    }
                }
            }
            if let Some(i) = in_i {
                if fds[i].revents != 0 {
                    feed(&mut self.stdin, &mut stdin_left);
                }
            }
            if pid_done && timeout == Duration::from_secs(1) && fds.iter().skip(2).all(|f| f.revents == 0) {
                // All box processes are gone, so the pipes must be at EOF;
                // a second without any event means something is wrong.
                break;
            }
            if !pid_done {
                self.check_limits();
            }
        }
        self.finish(cap_out)
    }

    fn finish(&mut self, captured: Captured) -> Outcome {
        let wall_time = self.started.elapsed();
        self.finished = true;
        let buf = match self.report {
            Some(buf) => buf,
            None => {
                // Wait for the init's end (the pidfd is readable, or the
                // box was killed); its report, if any, is on its socket.
                launch::wait_exited(self.pidfd.as_fd());
                let mut buf = [0u8; 12];
                if read_some(self.status_read.as_fd(), &mut buf) != buf.len() {
                    buf = [0; 12];
                }
                buf
            }
        };
        let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let (kind, a, b) = (word(0), word(4), word(8));
        // `finish` runs once, before the cgroup moves to the reaper.
        let usage = self.cgroup.as_ref().map(BoxCgroup::usage);
        let mut facts = self.killed;
        let mut error = None;
        let mut stderr = captured.stderr;
        match kind {
            report::EXITED => {
                let status = a as i32;
                if libc::WIFEXITED(status) {
                    facts.exit_code = Some(libc::WEXITSTATUS(status));
                } else if libc::WIFSIGNALED(status) {
                    facts.signal = Some(libc::WTERMSIG(status));
                }
            }
            report::SETUP_FAILED if a == step::PAYLOAD_EXEC || a == step::PAYLOAD_CWD => {
                // The program could not start: like a shell, exit 127 (not
                // found) or 126 (not executable), with the reason on stderr.
                let e = io::Error::from_raw_os_error(b as i32);
                facts.exit_code = Some(if b as i32 == libc::ENOENT { 127 } else { 126 });
                stderr.extend_from_slice(format!("evald: {}: {e}\n", step::name(a)).as_bytes());
            }
            report::SETUP_FAILED => {
                let e = io::Error::from_raw_os_error(b as i32);
                facts.internal_error = true;
                let what = match a.checked_sub(step::OPS).and_then(|i| self.ops.get(i as usize)) {
                    Some(op) => op.describe(),
                    None => step::name(a).to_owned(),
                };
                error = Some(format!("the box failed while {what}: {e}"));
            }
            _ => {
                // No report: the init was killed (by us for a limit, or by
                // the OOM killer) before the payload ended.
                facts.signal = Some(libc::SIGKILL);
            }
        }
        let (cpu_time, memory_bytes, process_limit_hit) = match &usage {
            Some(Ok(u)) => {
                facts.oom_killed = u.oom_killed;
                (Duration::from_nanos(u.cpu_ns), u.memory_peak_bytes, u.pids_max_hit)
            }
            Some(Err(e)) => {
                facts.internal_error = true;
                error = Some(format!("reading the box's usage: {e}"));
                (Duration::ZERO, 0, false)
            }
            None => {
                facts.internal_error = true;
                error = Some("reading the box's usage: the box was already finished".into());
                (Duration::ZERO, 0, false)
            }
        };
        if cpu_time > self.limits.cpu_time {
            facts.cpu_exceeded = true;
        }
        self.hand_to_reaper();
        Outcome {
            status: verdict(&facts),
            exit_code: facts.exit_code,
            signal: facts.signal,
            cpu_time,
            wall_time,
            memory_bytes,
            stdout: captured.stdout,
            stderr,
            stdout_truncated: captured.stdout_truncated,
            stderr_truncated: captured.stderr_truncated,
            process_limit_hit,
            error,
        }
    }
}

impl Running {
    /// Passes the init, the cgroups and the slot to the reaper thread, or
    /// tears them down here if it is gone.
    fn hand_to_reaper(&mut self) {
        let (Some(cgroup), Some(slot)) = (self.cgroup.take(), self.slot.take()) else { return };
        let pidfd = match self.pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                // Without a second descriptor, finish here.
                tracing::warn!(error = %e, "duplicating a pidfd");
                self.kill();
                launch::wait_exited(self.pidfd.as_fd());
                drop(cgroup);
                drop(slot);
                return;
            }
        };
        let inner = slot.inner.clone();
        let teardown = Teardown { pidfd, cgroup, slot };
        inner.teardowns.add();
        if let Err(unsent) = inner.reaper.send(Job::Teardown(Box::new(teardown))) {
            if let Job::Teardown(t) = unsent.0 {
                t.run(None);
            }
            inner.teardowns.finish_one();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
            self.finish(Captured::default());
        }
    }
}

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

/// Reads what is available into `buf` up to `cap` bytes. Returns
/// `Some(true)` when more than `cap` bytes arrived, `Some(false)` at EOF
/// (the fd is then closed), `None` when it would block.
fn drain(fd: &mut Option<OwnedFd>, buf: &mut Vec<u8>, cap: usize) -> Option<bool> {
    loop {
        let Some(f) = fd.as_ref() else { return Some(false) };
        let room = cap.saturating_sub(buf.len());
        // One byte more than fits tells that the output is over the cap.
        let want = room.saturating_add(1).min(READ_CHUNK);
        buf.reserve(want);
        // SAFETY: reading at most `want` bytes into the reserved, unused
        // capacity of `buf` from a live descriptor.
        let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().add(buf.len()).cast(), want) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return None,
                // EIO on a PTY master once the slave side is closed.
                _ => {
                    *fd = None;
                    return Some(false);
                }
            }
        }
        if n == 0 {
            *fd = None;
            return Some(false);
        }
        let n = n as usize;
        // SAFETY: the kernel wrote `n` (at most `want`) bytes right after
        // the old length, inside the reserved capacity.
        unsafe { buf.set_len(buf.len() + n) };
        if n > room {
            buf.truncate(cap);
            *fd = None;
            return Some(true);
        }
    }
}

fn feed(fd: &mut Option<OwnedFd>, left: &mut &[u8]) {
    while let Some(f) = fd.as_ref() {
        if left.is_empty() {
            *fd = None;
            return;
        }
        // SAFETY: writing from a valid buffer to a live descriptor.
        let n = unsafe { libc::write(f.as_raw_fd(), left.as_ptr().cast(), left.len().min(65536)) };
        if n < 0 {
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return,
                // EPIPE: the program does not read its input.
                _ => {
                    *fd = None;
                    return;
                }
            }
        }
        *left = &left[n as usize..];
    }
}

fn pollfd(fd: BorrowedFd<'_>, events: i16) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 }
}

fn poll(fds: &mut [libc::pollfd], timeout: Duration) {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut fds = [pollfd(fd, libc::POLLIN)];
    poll(&mut fds, timeout);
    fds[0].revents != 0
}

fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of a valid buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    got
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
