//! Capacity: how many boxes run at once, how much memory they may reserve
//! together, and how many requests may wait for either. The one owner of
//! the node's capacity: batch jobs, Piston WebSocket runs and session
//! processes all hold a [`Permit`] while their boxes run, and every engine
//! call that starts a box takes one.
//!
//! A permit reserves one slot and a memory limit for its whole life (a job:
//! the larger of its compile and run limits, since its stages run one after
//! the other). Both are tokio semaphores, which are fair (first come, first
//! served), so a large job is not starved by small ones. Waiting is bounded
//! twice: at most `queue` requests wait (more are refused at once), and none
//! waits longer than `queue_timeout`. Nothing ever waits without end. New
//! and waiting requests are refused while the node drains or stops (see
//! [`crate::Lifecycle`]); admitted ones keep their permits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::lifecycle::Phase;

/// Why work was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the job's memory limit of {need} bytes is more than this node's budget of {budget} bytes")]
    TooLarge { need: u64, budget: u64 },
    #[error("too many requests are waiting; retry later")]
    QueueFull,
    #[error("no capacity became free in time; retry later")]
    Timeout,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("this node is draining; retry (another node will take the run)")]
    Draining,
}

/// Settings of [`Capacity`] (its slots are the sandbox's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    /// Memory the admitted work may reserve together.
    pub memory_budget_bytes: u64,
    /// Requests that may wait for capacity.
    pub queue: usize,
    /// The longest a request waits.
    pub queue_timeout: Duration,
}

impl CapacityConfig {
    /// Requests that may wait, unless configured.
    pub const DEFAULT_QUEUE: usize = 64;
    /// The longest wait, unless configured.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
}

struct Inner {
    config: CapacityConfig,
    /// Boxes at once: the sandbox's slots.
    slot_count: u32,
    slots: Arc<Semaphore>,
    /// Memory in KiB units (permits are `u32` per acquisition).
    memory: Arc<Semaphore>,
    waiting: AtomicUsize,
    phase: watch::Receiver<Phase>,
    /// Number of admitted permits, observable so a drain can await zero.
    active: watch::Sender<usize>,
}

/// Cheap to clone; clones share the same budget.
#[derive(Clone)]
pub struct Capacity {
    inner: Arc<Inner>,
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

impl Capacity {
    /// Capacity that refuses work as `phase` says (a [`crate::Lifecycle`]
    /// subscription).
    pub fn new(slots: u32, config: CapacityConfig, phase: watch::Receiver<Phase>) -> Capacity {
        let budget_kib = kib(config.memory_budget_bytes).min(Semaphore::MAX_PERMITS as u64) as usize;
        Capacity {
            inner: Arc::new(Inner {
                config,
                slot_count: slots,
                slots: Arc::new(Semaphore::new(slots as usize)),
                memory: Arc::new(Semaphore::new(budget_kib)),
                waiting: AtomicUsize::new(0),
                phase,
                active: watch::channel(0).0,
            }),
        }
    }

    pub fn config(&self) -> CapacityConfig {
        self.inner.config
    }

    /// Boxes that may run at once.
    pub fn slots(&self) -> u32 {
        self.inner.slot_count
    }

    /// Takes a place in line for work reserving `memory_bytes`: refused at
    /// once when it can never fit or the queue is full. A request that finds
    /// capacity free does not count as waiting (if another takes that
    /// capacity first it waits uncounted, so the queue bound may be exceeded
    /// by the few requests of such a race).
    pub fn enqueue(&self, memory_bytes: u64) -> Result<Ticket, Refusal> {
        let inner = &self.inner;
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let need = kib(memory_bytes);
        let budget = inner.config.memory_budget_bytes;
        if memory_bytes > budget || need > u32::MAX as u64 {
            return Err(Refusal::TooLarge { need: memory_bytes, budget });
        }
        let free_now = inner.slots.available_permits() > 0 && inner.memory.available_permits() as u64 >= need;
        let mut counted = false;
        if !free_now {
            if inner.waiting.fetch_add(1, Ordering::SeqCst) >= inner.config.queue {
                inner.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(Refusal::QueueFull);
            }
            counted = true;
        }
        Ok(Ticket { capacity: self.clone(), need: need as u32, counted })
    }

    /// `enqueue` then `Ticket::admit`.
    pub async fn admit(&self, memory_bytes: u64) -> Result<Permit, Refusal> {
        self.enqueue(memory_bytes)?.admit().await
    }

    /// Why work would be refused now whatever its size, if it would.
    fn refusal(&self) -> Option<Refusal> {
        match *self.inner.phase.borrow() {
            Phase::Serving | Phase::Leaving => None,
            Phase::Draining => Some(Refusal::Draining),
            Phase::Stopping => Some(Refusal::ShuttingDown),
        }
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Bytes of the memory budget not reserved by admitted work.
    pub fn free_memory_bytes(&self) -> u64 {
        (self.inner.memory.available_permits() as u64 * 1024).min(self.inner.config.memory_budget_bytes)
    }

    /// The number of admitted permits, as a watch (await `wait_for`).
    pub fn active(&self) -> watch::Receiver<usize> {
        self.inner.active.subscribe()
    }

    /// Requests waiting for capacity now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }
}

/// A place in line; dropping it leaves the line.
pub struct Ticket {
    capacity: Capacity,
    need: u32,
    counted: bool,
}

impl Ticket {
    /// Waits (at most the queue timeout) for a slot and the memory.
    pub async fn admit(self) -> Result<Permit, Refusal> {
        let inner = self.capacity.inner.clone();
        let mut phase = inner.phase.clone();
        let acquire = async {
            let memory = inner.memory.clone().acquire_many_owned(self.need).await?;
            let slot = inner.slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((slot, memory))
        };
        let refused = async {
            let _ = phase.wait_for(|p| !p.takes_work()).await;
        };
        let result = tokio::select! {
            r = tokio::time::timeout(inner.config.queue_timeout, acquire) => r.map(|r| r.ok()),
            () = refused => Ok(None),
        };
        let refusal = self.capacity.refusal();
        drop(self);
        match result {
            Err(_) => Err(Refusal::Timeout),
            Ok(None) => Err(refusal.unwrap_or(Refusal::ShuttingDown)),
            Ok(Some((slot, memory))) => {
                inner.active.send_modify(|n| *n += 1);
                Ok(Permit { _slot: slot, _memory: memory, capacity: Capacity { inner } })
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.counted {
            self.capacity.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Admitted work's reservation; released on drop. Every engine call that
/// starts a box takes one.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
    capacity: Capacity,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.capacity.inner.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k * 1024)
        .ok_or_else(|| std::io::Error::other("no MemTotal in /proc/meminfo"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lifecycle;

    fn capacity(slots: u32, budget: u64, queue: usize) -> (Capacity, Lifecycle) {
        let lifecycle = Lifecycle::new();
        let config = CapacityConfig { memory_budget_bytes: budget, queue, queue_timeout: Duration::from_millis(50) };
        (Capacity::new(slots, config, lifecycle.subscribe()), lifecycle)
    }

    #[tokio::test(start_paused = true)]
    async fn slots_queue_and_timeout_are_bounded() {
        let (a, _l) = capacity(1, 1 << 30, 1);
        let first = a.admit(1 << 20).await.expect("free");
        assert_eq!(*a.active().borrow(), 1);
        let waiting = a.enqueue(1 << 20).expect("queued");
        assert_eq!(a.waiting(), 1);
        assert_eq!(a.enqueue(1 << 20).err(), Some(Refusal::QueueFull));
        assert_eq!(waiting.admit().await.err(), Some(Refusal::Timeout));
        assert_eq!(a.waiting(), 0);
        drop(first);
        assert_eq!(*a.active().borrow(), 0);
        assert!(a.admit(1 << 20).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_budget_is_shared() {
        let (a, lifecycle) = capacity(4, 100 << 20, 0);
        assert_eq!(a.enqueue(101 << 20).err(), Some(Refusal::TooLarge { need: 101 << 20, budget: 100 << 20 }));
        let _big = a.admit(80 << 20).await.expect("fits");
        assert_eq!(a.enqueue(30 << 20).err(), Some(Refusal::QueueFull), "only 20 MiB left");
        assert!(a.admit(20 << 20).await.is_ok());
        lifecycle.stop();
        assert_eq!(a.enqueue(1).err(), Some(Refusal::ShuttingDown));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_refuses_new_and_waiting_work_and_can_be_undone() {
        let (a, lifecycle) = capacity(1, 1 << 30, 4);
        assert_eq!((a.free_slots(), a.free_memory_bytes()), (1, 1 << 30));
        let held = a.admit(1 << 20).await.expect("free");
        assert_eq!((a.free_slots(), a.free_memory_bytes()), (0, (1 << 30) - (1 << 20)));
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.admit(1 << 20).await.err() }
        });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        lifecycle.drain(Duration::from_millis(10));
        assert_eq!(a.enqueue(1 << 20).map(drop).err(), None, "the drain window still takes work");
        assert_eq!(
            waiting.await.expect("task"),
            Some(Refusal::Draining),
            "refused at the window's end (10 ms, before the 50 ms queue timeout)"
        );
        assert_eq!(a.enqueue(1).err(), Some(Refusal::Draining));
        assert_eq!(*a.active().borrow(), 1, "the admitted work keeps its permit");
        drop(held);
        lifecycle.undrain();
        assert!(a.admit(1 << 20).await.is_ok());
        lifecycle.stop();
        lifecycle.undrain();
        assert_eq!(a.enqueue(1).err(), Some(Refusal::ShuttingDown), "a stop is for good");
    }
}
