//! The state every clone of a [`crate::Sandbox`] shares: the slots, the
//! box prepared ahead for each idle slot, the zygote and the reaper's
//! queue; taking a slot and preparing a box.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cgroup::{BoxCgroup, CgroupLimits, Cgroups};
use crate::launch::{BoxContext, BoxInit, Zygote};
use crate::reaper::{restart_zygote, Job, Pending};
use crate::sandbox::{io_err, SandboxConfig, SandboxError};
use crate::spec::Limits;

/// How long a start waits for a slot whose box is being torn down.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// The state all clones of a sandbox share.
pub(crate) struct Pool {
    pub(crate) config: SandboxConfig,
    pub(crate) cgroups: Cgroups,
    /// Forks the box inits (see [`Zygote`]).
    pub(crate) zygote: Zygote,
    pub(crate) dev_null: OwnedFd,
    pub(crate) free_slots: Mutex<Vec<u32>>,
    /// Signalled when a slot returns to `free_slots`.
    pub(crate) slot_freed: Condvar,
    pub(crate) counter: AtomicU64,
    /// Processors the kernel has (a box cannot use more at once).
    pub(crate) cpus: u32,
    /// Hands finished boxes to the reaper thread.
    pub(crate) reaper: mpsc::Sender<Job>,
    /// Per slot, the next box prepared ahead of its run; `None` when not
    /// ready (the run then prepares its box itself).
    pub(crate) prepared: Mutex<Vec<Option<Prepared>>>,
    /// Set by [`crate::Sandbox::shutdown`]: prepare no more boxes.
    pub(crate) closing: AtomicBool,
    pub(crate) teardowns: Arc<Pending>,
    /// Held for the pool's life; the last field, so released after the
    /// pool's drop removed everything of the instance.
    pub(crate) _instance_lock: crate::instance::InstanceLock,
}

impl Drop for Pool {
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
    pub(crate) inner: Arc<Pool>,
    pub(crate) slot: Option<u32>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let (Some(slot), Ok(mut free)) = (self.slot.take(), self.inner.free_slots.lock()) {
            free.push(slot);
            self.inner.slot_freed.notify_one();
        }
    }
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
pub(crate) struct Prepared {
    pub(crate) init: BoxInit,
    pub(crate) cgroup: BoxCgroup,
}

impl Prepared {
    /// Forks an init into `reused` (the slot's cgroups after their last
    /// run, keeping that run's limits) or into new cgroups with `limits`.
    pub(crate) fn new(
        inner: &Pool,
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
pub(crate) fn prepare(inner: &Pool, ctx: Option<&BoxContext>, slot: u32, reused: Option<BoxCgroup>) {
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

impl Pool {
    /// Takes a free slot. When every slot is taken but some are only
    /// waiting for their box's teardown (which takes about a millisecond),
    /// waits for one of those instead of failing.
    pub(crate) fn take_slot(&self) -> Result<u32, SandboxError> {
        let busy = SandboxError::Busy(self.config.slots);
        let deadline = Instant::now() + TEARDOWN_WAIT;
        let mut free = self.free_slots.lock().map_err(|_| SandboxError::Busy(0))?;
        loop {
            if let Some(slot) = free.pop() {
                return Ok(slot);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.teardowns.is_idle() {
                return Err(busy);
            }
            free = self.slot_freed.wait_timeout(free, left).map_err(|_| SandboxError::Busy(0))?.0;
        }
    }

    /// A box for `slot` made now (no prepared one), with `limits`; replaces
    /// the zygote first if it died.
    pub(crate) fn new_box(self: &Arc<Self>, slot: u32, limits: &CgroupLimits) -> Result<Prepared, SandboxError> {
        match Prepared::new(self, slot, limits, None) {
            Err(_) if !self.zygote.alive() => {
                // Only the reaper thread may fork a zygote (it is the
                // zygote's parent): ask it, wait (bounded), try again.
                let (tx, rx) = mpsc::channel();
                self.teardowns.add();
                if self.reaper.send(Job::RestartZygote(self.clone(), tx)).is_err() {
                    self.teardowns.finish_one();
                }
                let _ = rx.recv_timeout(TEARDOWN_WAIT);
                Prepared::new(self, slot, limits, None)
            }
            result => result,
        }
    }
}
