//! The reaper thread: tears finished boxes down off the caller's path,
//! prepares each slot's next box, frees the slot, and replaces a zygote
//! that died. It forks the zygote (which dies with it).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use crate::cgroup::BoxCgroup;
use crate::launch::{BoxContext, Zygote};
use crate::pool::{prepare, Pool, Prepared, SlotGuard};
use crate::sys;

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
pub(crate) enum Job {
    /// Tear a finished box down, prepare the slot's next box, free the slot.
    Teardown(Box<Teardown>),
    /// Prepare a box for a slot (at start-up).
    Prepare(Arc<Pool>, u32),
    /// Replace a dead zygote and prepare again the boxes that died with
    /// it; then signal the sender.
    RestartZygote(Arc<Pool>, mpsc::Sender<()>),
}

/// Replaces a dead zygote (see `Zygote::restart`) and prepares again the
/// idle slots' boxes, whose inits died with it. On the reaper thread.
pub(crate) fn restart_zygote(inner: &Pool, ctx: &BoxContext) {
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
        // The init exits by itself after its report; the kill only hurries
        // along whatever the payload left behind.
        sys::kill(&self.pidfd);
        sys::wait_exited(self.pidfd.as_fd());
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
pub(crate) struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    pub(crate) fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }
    pub(crate) fn finish_one(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.done.notify_all();
        }
    }
    pub(crate) fn is_idle(&self) -> bool {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) == 0
    }
    pub(crate) fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.done.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Starts the thread that tears finished boxes down and prepares the next
/// ones. It forks the zygote first (which dies with this thread) and
/// returns it; it keeps `ctx` to fork another if that one dies.
pub(crate) fn start_reaper(pending: Arc<Pending>, ctx: BoxContext) -> io::Result<(mpsc::Sender<Job>, Zygote)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (zygote_tx, zygote_rx) = mpsc::channel();
    std::thread::Builder::new().name("evald-reaper".into()).spawn(move || {
        // The zygote forked here inherits this mask: no signal handler of
        // ours ever runs in it. Box inits clear it.
        sys::block_signals_in_thread();
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
