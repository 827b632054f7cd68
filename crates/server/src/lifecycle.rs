//! The node's drain and shutdown, as the HTTP edge drives them.
//!
//! `POST /admin/drain` and SIGTERM start the same drain: the node's
//! [`evald_engine::Lifecycle`] moves to draining, which every part
//! subscribes to: readiness answers 503 `draining` and the agent says
//! `drain`; capacity refuses new and waiting work (admitted work goes on);
//! new sessions and WebSockets are refused; each session client is told to
//! reconnect after a random delay within the drain window, then closed with
//! 4503; the cluster queue hands its unstarted runs back. SIGTERM then waits
//! for [`AppState::drained`] and stops the node for good.

use std::time::Duration;

use crate::AppState;

impl AppState {
    /// Starts a drain; whether the node was serving.
    pub fn begin_drain(&self) -> bool {
        self.lifecycle().drain()
    }

    /// Ends a drain started by `POST /admin/drain`; `false` once the node
    /// stops (a SIGTERM drain cannot be undone).
    pub fn end_drain(&self) -> bool {
        if self.shutting_down() {
            return false;
        }
        self.lifecycle().undrain();
        true
    }

    /// Stops the node for good: remaining session clients are closed with
    /// 4503, background tasks end.
    pub fn begin_shutdown(&self) {
        self.lifecycle().stop();
    }

    /// Waits until the drain has done its work, at most `bound`: no session
    /// client left (then the sessions' processes are ended and their files
    /// saved), no admitted run left, and at least the drain window passed
    /// (so balancers have learnt that the node drains). Returns whether
    /// everything finished within the bound.
    pub async fn drained(&self, bound: Duration) -> bool {
        let started = tokio::time::Instant::now();
        let window = self.sessions().config().drain_window;
        let mut clients = self.sessions().clients();
        let mut active = self.engine().capacity().active();
        let work = async {
            let _ = clients.wait_for(|n| *n == 0).await;
            self.sessions().end_processes().await;
            let _ = active.wait_for(|n| *n == 0).await;
            tokio::time::sleep_until(started + window).await;
        };
        tokio::time::timeout(bound, work).await.is_ok()
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
