//! The node's drain and shutdown, as the HTTP edge drives them.
//!
//! `POST /admin/drain` and SIGTERM start the same drain (see
//! [`evald_engine::Lifecycle`]), which every part subscribes to:
//!
//! - at once, for the drain window: readiness answers 503 `draining` and
//!   the agent reports the node `down`, so balancers stop sending it work,
//!   but every request is still taken and served (a balancer needs time to
//!   see readiness fail); each session client is told to reconnect after a
//!   random delay within the rest of the window, then closed with 4503; the
//!   cluster queue takes no new entry and hands its unstarted ones back;
//! - after the window: capacity refuses new and waiting work (admitted work
//!   goes on); new sessions and WebSockets are refused.
//!
//! SIGTERM then waits for [`AppState::drained`] and stops the node for good.

use std::time::Duration;

use crate::AppState;

impl AppState {
    /// Starts a drain; whether the node was serving.
    pub fn begin_drain(&self) -> bool {
        self.lifecycle().drain(self.drain_window())
    }

    /// Starts the drain before exit (SIGTERM): it cannot be undone.
    pub fn begin_final_drain(&self) {
        self.lifecycle().drain_for_exit(self.drain_window());
    }

    /// How long a drain keeps taking work while balancers learn of it.
    pub fn drain_window(&self) -> Duration {
        self.sessions().config().drain_window
    }

    /// Ends a drain started by `POST /admin/drain`; `false` once the node
    /// exits (a SIGTERM drain cannot be undone).
    pub fn end_drain(&self) -> bool {
        if self.lifecycle().exiting() {
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

    /// Waits until the drain has done its work, at most `bound` after the
    /// drain window: the window passed (balancers have learnt that the node
    /// drains, and it takes no new work), no session client left (then the
    /// sessions' processes are ended and their files saved), no admitted
    /// run left. Returns whether everything finished within the bound.
    pub async fn drained(&self, bound: Duration) -> bool {
        let mut clients = self.sessions().clients();
        let mut active = self.engine().capacity().active();
        self.lifecycle().refusing().await;
        let work = async {
            let _ = clients.wait_for(|n| *n == 0).await;
            self.sessions().end_processes().await;
            let _ = active.wait_for(|n| *n == 0).await;
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
