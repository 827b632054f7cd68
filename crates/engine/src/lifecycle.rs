//! The node's one drain and shutdown signal.
//!
//! A [`Lifecycle`] is a watch of the node's [`Phase`]. Everything that takes
//! in work or runs in the background subscribes to it: capacity refuses new
//! and waiting work while the node drains or stops, sessions tell their
//! clients to reconnect, the cluster queue hands unstarted runs back, and
//! background tasks end at [`Phase::Stopping`] (their owner awaits them).

use std::sync::Arc;

use tokio::sync::watch;

/// What the node takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Everything is taken.
    Serving,
    /// New work is refused (the balancer moves it elsewhere); admitted work
    /// goes on. May return to [`Phase::Serving`].
    Draining,
    /// For good: the process is exiting.
    Stopping,
}

/// The signal; clones share it.
#[derive(Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle { phase: Arc::new(watch::channel(Phase::Serving).0) }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether the node takes no new work (draining or stopping).
    pub fn draining(&self) -> bool {
        self.phase() != Phase::Serving
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `to` when the phase is `from`; whether it did.
    fn transition(&self, from: &[Phase], to: Phase) -> bool {
        self.phase.send_if_modified(|p| {
            let moves = from.contains(p);
            if moves {
                *p = to;
            }
            moves
        })
    }

    /// Starts a drain; false when the node was not serving.
    pub fn drain(&self) -> bool {
        self.transition(&[Phase::Serving], Phase::Draining)
    }

    /// Ends a drain; false when the node was not draining (a stop is for
    /// good).
    pub fn undrain(&self) -> bool {
        self.transition(&[Phase::Draining], Phase::Serving)
    }

    /// Stops the node for good.
    pub fn stop(&self) {
        self.transition(&[Phase::Serving, Phase::Draining], Phase::Stopping);
    }

    /// Resolves once the node stops (at once if it has).
    pub async fn stopped(&self) {
        let mut rx = self.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Stopping).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_move_only_forward_except_an_undrain() {
        let l = Lifecycle::new();
        let mut rx = l.subscribe();
        assert_eq!(l.phase(), Phase::Serving);
        assert!(!l.undrain(), "nothing to undrain");
        assert!(l.drain());
        assert!(!l.drain(), "a second drain changes nothing");
        assert!(rx.has_changed().expect("open"));
        assert_eq!(*rx.borrow_and_update(), Phase::Draining);
        assert!(l.undrain());
        assert_eq!(l.phase(), Phase::Serving);
        l.stop();
        assert!(!l.undrain() && !l.drain(), "a stop is for good");
        assert_eq!(l.phase(), Phase::Stopping);
        l.stopped().await;
    }
}
