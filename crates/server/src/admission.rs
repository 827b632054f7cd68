//! Admission control: how many boxes run at once, how much memory they may
//! reserve together, and how many requests may wait for either.
//!
//! A job reserves one slot and its memory limit (the larger of its compile
//! and run limits: its stages run one after the other) for its whole life.
//! Both are tokio semaphores, which are fair (first come, first served), so a
//! large job is not starved by small ones. Waiting is bounded twice: at most
//! `queue` requests wait (more get 429 at once), and none waits longer than
//! `queue_timeout` (it then gets 503). Nothing ever waits without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Why a job was not admitted.
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

/// Whether admission takes new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// New and waiting jobs are refused; may reopen ([`Admission::undrain`]).
    Draining,
    /// For good: the process is exiting.
    Closed,
}

/// Settings of [`Admission`].
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    pub slots: u32,
    pub memory_budget_bytes: u64,
    pub queue: usize,
    pub queue_timeout: Duration,
}

struct Inner {
    config: AdmissionConfig,
    slots: Arc<Semaphore>,
    /// Memory in KiB units (permits are `u32` per acquisition).
    memory: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// A watch so that waiting tickets learn at once that they are refused.
    gate: watch::Sender<Gate>,
    /// Number of admitted jobs, observable so shutdown and tests can await it.
    active: watch::Sender<usize>,
}

/// Cheap to clone; clones share the same budget.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Admission {
        let budget_kib = kib(config.memory_budget_bytes).min(Semaphore::MAX_PERMITS as u64) as usize;
        Admission {
            inner: Arc::new(Inner {
                config,
                slots: Arc::new(Semaphore::new(config.slots as usize)),
                memory: Arc::new(Semaphore::new(budget_kib)),
                waiting: AtomicUsize::new(0),
                gate: watch::channel(Gate::Open).0,
                active: watch::channel(0).0,
            }),
        }
    }

    pub fn config(&self) -> AdmissionConfig {
        self.inner.config
    }

    /// Takes a place in line for a job reserving `memory_bytes`: refused at
    /// once when the job can never fit or the queue is full. A request that
    /// finds capacity free does not count as waiting (if another takes that
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
        Ok(Ticket { admission: self.clone(), need: need as u32, counted })
    }

    /// `enqueue` then `Ticket::admit`.
    pub async fn admit(&self, memory_bytes: u64) -> Result<Permit, Refusal> {
        self.enqueue(memory_bytes)?.admit().await
    }

    /// Refuses every new and waiting job for good; admitted ones keep their
    /// permits.
    pub fn close(&self) {
        self.inner.gate.send_replace(Gate::Closed);
        self.inner.slots.close();
        self.inner.memory.close();
    }

    /// Refuses every new and waiting job with [`Refusal::Draining`] until
    /// [`Admission::undrain`]; admitted ones keep their permits.
    pub fn drain(&self) {
        self.inner.gate.send_if_modified(|g| {
            *g == Gate::Open && {
                *g = Gate::Draining;
                true
            }
        });
    }

    /// Takes new jobs again after a drain (not after `close`).
    pub fn undrain(&self) {
        self.inner.gate.send_if_modified(|g| {
            *g == Gate::Draining && {
                *g = Gate::Open;
                true
            }
        });
    }

    /// Why a job would be refused now whatever its size, if it would.
    fn refusal(&self) -> Option<Refusal> {
        match *self.inner.gate.borrow() {
            Gate::Open => None,
            Gate::Draining => Some(Refusal::Draining),
            Gate::Closed => Some(Refusal::ShuttingDown),
        }
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Bytes of the memory budget not reserved by admitted jobs.
    pub fn free_memory_bytes(&self) -> u64 {
        (self.inner.memory.available_permits() as u64 * 1024).min(self.inner.config.memory_budget_bytes)
    }

    /// The number of admitted jobs, as a watch (await `wait_for`).
    pub fn active(&self) -> watch::Receiver<usize> {
        self.inner.active.subscribe()
    }

    /// Requests waiting for capacity now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }
}

/// The gate closed (or the semaphores did) while a ticket waited.
struct AcquireClosed;

/// A place in line; dropping it leaves the line.
pub struct Ticket {
    admission: Admission,
    need: u32,
    counted: bool,
}

impl Ticket {
    /// Waits (at most the queue timeout) for a slot and the memory.
    pub async fn admit(self) -> Result<Permit, Refusal> {
        let inner = self.admission.inner.clone();
        let mut gate = inner.gate.subscribe();
        let acquire = async {
            let memory = inner.memory.clone().acquire_many_owned(self.need).await?;
            let slot = inner.slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((slot, memory))
        };
        let refused = async {
            let _ = gate.wait_for(|g| *g != Gate::Open).await;
        };
        let result = tokio::select! {
            r = tokio::time::timeout(inner.config.queue_timeout, acquire) => r.map(|r| r.map_err(|_| AcquireClosed)),
            () = refused => Ok(Err(AcquireClosed)),
        };
        let refusal = self.admission.refusal();
        drop(self);
        match result {
            Err(_) => Err(Refusal::Timeout),
            Ok(Err(AcquireClosed)) => Err(refusal.unwrap_or(Refusal::ShuttingDown)),
            Ok(Ok((slot, memory))) => {
                inner.active.send_modify(|n| *n += 1);
                Ok(Permit { _slot: slot, _memory: memory, admission: Admission { inner } })
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.counted {
            self.admission.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An admitted job's reservation; released on drop.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
    admission: Admission,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.inner.active.send_modify(|n| *n = n.saturating_sub(1));
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

    fn admission(slots: u32, budget: u64, queue: usize) -> Admission {
        Admission::new(AdmissionConfig {
            slots,
            memory_budget_bytes: budget,
            queue,
            queue_timeout: Duration::from_millis(50),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn slots_queue_and_timeout_are_bounded() {
        let a = admission(1, 1 << 30, 1);
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
        let a = admission(4, 100 << 20, 0);
        assert_eq!(a.enqueue(101 << 20).err(), Some(Refusal::TooLarge { need: 101 << 20, budget: 100 << 20 }));
        let _big = a.admit(80 << 20).await.expect("fits");
        assert_eq!(a.enqueue(30 << 20).err(), Some(Refusal::QueueFull), "only 20 MiB left");
        assert!(a.admit(20 << 20).await.is_ok());
        a.close();
        assert_eq!(a.enqueue(1).err(), Some(Refusal::ShuttingDown));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_refuses_new_and_waiting_jobs_and_can_be_undone() {
        let a = admission(1, 1 << 30, 4);
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
        a.drain();
        assert_eq!(waiting.await.expect("task"), Some(Refusal::Draining));
        assert_eq!(a.enqueue(1).err(), Some(Refusal::Draining));
        assert_eq!(*a.active().borrow(), 1, "the admitted job keeps its permit");
        drop(held);
        a.undrain();
        assert!(a.admit(1 << 20).await.is_ok());
        a.close();
        a.undrain();
        assert_eq!(a.enqueue(1).err(), Some(Refusal::ShuttingDown), "a close is for good");
    }
}
