//! The node's one drain and shutdown signal.
//!
//! A [`Lifecycle`] is a watch of the node's [`Phase`]. Everything that takes
//! in work or runs in the background subscribes to it. A drain has two
//! steps, so that it needs no balancer that retries a refusal:
//!
//! 1. [`Phase::Leaving`] for the drain window (sized to the balancers'
//!    detection time): readiness fails and the agent reports the node down,
//!    but every request is still taken and served; session clients are told
//!    to reconnect at times spread over the window.
//! 2. [`Phase::Draining`]: capacity refuses new and waiting work (admitted
//!    work goes on), new sessions are refused, the cluster queue hands its
//!    unstarted runs back.
//!
//! Background tasks end at [`Phase::Stopping`] (their owner awaits them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What the node takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Everything is taken; the node says it is ready.
    Serving,
    /// The drain window: the node says it is not ready, so balancers stop
    /// sending it work, but it still takes everything. May return to
    /// [`Phase::Serving`].
    Leaving,
    /// New work is refused; admitted work goes on. May return to
    /// [`Phase::Serving`].
    Draining,
    /// For good: the process is exiting.
    Stopping,
}

impl Phase {
    /// Whether new work is taken (serving, or leaving within the window).
    pub fn takes_work(self) -> bool {
        matches!(self, Phase::Serving | Phase::Leaving)
    }
}

/// The signal; clones share it.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    phase: watch::Sender<Phase>,
    /// Counts drains, so that the end of an old drain's window does not cut
    /// a later drain's window short.
    drains: AtomicU64,
    /// When the current drain's window ends.
    window_end: Mutex<Option<Instant>>,
    /// Set when the drain is the one before the process exits: it cannot
    /// be undone.
    for_exit: AtomicBool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle {
            inner: Arc::new(Inner {
                phase: watch::channel(Phase::Serving).0,
                drains: AtomicU64::new(0),
                window_end: Mutex::new(None),
                for_exit: AtomicBool::new(false),
            }),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Whether the node says it is out of service (leaving, draining or
    /// stopping): readiness fails, the agent reports it down.
    pub fn out_of_service(&self) -> bool {
        self.phase() != Phase::Serving
    }

    /// Whether the node takes no new work (draining or stopping).
    pub fn draining(&self) -> bool {
        !self.phase().takes_work()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// When the current drain's window ends (`None` when serving).
    pub fn window_end(&self) -> Option<Instant> {
        if self.phase() == Phase::Serving {
            return None;
        }
        *self.inner.window_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `to` when the phase is one of `from`; whether it did.
    fn transition(&self, from: &[Phase], to: Phase) -> bool {
        self.inner.phase.send_if_modified(|p| {
            let moves = from.contains(p);
            if moves {
                *p = to;
            }
            moves
        })
    }

    /// Starts a drain: [`Phase::Leaving`] for `window`, then
    /// [`Phase::Draining`] (at once when `window` is zero). False when the
    /// node was not serving. Call it within a tokio runtime (the end of the
    /// window is a task).
    pub fn drain(&self, window: Duration) -> bool {
        // Held across the change, so that a drain that finds the node
        // already out of service changes nothing.
        let mut end = self.inner.window_end.lock().unwrap_or_else(|e| e.into_inner());
        if self.phase() != Phase::Serving {
            return false;
        }
        *end = Some(Instant::now() + window);
        let drain = self.inner.drains.fetch_add(1, Ordering::SeqCst) + 1;
        let to = if window.is_zero() { Phase::Draining } else { Phase::Leaving };
        if !self.transition(&[Phase::Serving], to) {
            return false;
        }
        drop(end);
        if to == Phase::Leaving {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                if this.inner.drains.load(Ordering::SeqCst) == drain {
                    this.transition(&[Phase::Leaving], Phase::Draining);
                }
            });
        }
        true
    }

    /// Makes the drain under way (or the next one) the last: it cannot be
    /// undone, the process exits after it.
    pub fn drain_for_exit(&self, window: Duration) {
        self.inner.for_exit.store(true, Ordering::SeqCst);
        self.drain(window);
    }

    /// Ends a drain; false when the node was not leaving or draining, or
    /// when the drain is the one before exit (a stop is for good).
    pub fn undrain(&self) -> bool {
        if self.inner.for_exit.load(Ordering::SeqCst) {
            return false;
        }
        self.inner.drains.fetch_add(1, Ordering::SeqCst);
        self.transition(&[Phase::Leaving, Phase::Draining], Phase::Serving)
    }

    /// Whether the node exits after its drain.
    pub fn exiting(&self) -> bool {
        self.inner.for_exit.load(Ordering::SeqCst) || self.phase() == Phase::Stopping
    }

    /// Stops the node for good.
    pub fn stop(&self) {
        self.transition(&[Phase::Serving, Phase::Leaving, Phase::Draining], Phase::Stopping);
    }

    /// Resolves once the node stops (at once if it has).
    pub async fn stopped(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Stopping).await;
    }

    /// Resolves once the node takes no new work (at once if it does not).
    pub async fn refusing(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|p| !p.takes_work()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_leaves_for_its_window_then_refuses() {
        let l = Lifecycle::new();
        let mut rx = l.subscribe();
        assert_eq!(l.phase(), Phase::Serving);
        assert!(!l.undrain(), "nothing to undrain");
        assert!(l.drain(Duration::from_secs(5)));
        assert!(!l.drain(Duration::from_secs(5)), "a second drain changes nothing");
        assert_eq!(*rx.borrow_and_update(), Phase::Leaving);
        assert!(l.out_of_service() && !l.draining(), "leaving: not ready, still taking work");
        let started = Instant::now();
        l.refusing().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5), "refusing exactly at the window's end");
        assert_eq!(l.phase(), Phase::Draining);
        assert!(l.undrain());
        assert_eq!(l.phase(), Phase::Serving);
        assert_eq!(l.window_end(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_window_does_not_cut_a_later_drain_short() {
        let l = Lifecycle::new();
        assert!(l.drain(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(l.undrain());
        assert!(l.drain(Duration::from_secs(5)));
        let started = Instant::now();
        l.refusing().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5), "the second drain's own window");
    }

    #[tokio::test]
    async fn a_zero_window_refuses_at_once_and_an_exit_drain_is_for_good() {
        let l = Lifecycle::new();
        l.drain_for_exit(Duration::ZERO);
        assert_eq!(l.phase(), Phase::Draining);
        assert!(l.exiting());
        assert!(!l.undrain(), "the drain before exit cannot be undone");
        l.stop();
        assert!(!l.drain(Duration::ZERO), "a stop is for good");
        assert_eq!(l.phase(), Phase::Stopping);
        l.stopped().await;
    }
}
