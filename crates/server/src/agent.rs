//! The HAProxy agent-check endpoint (`--agent-listen`): on each connection
//! the node writes one line and closes.
//!
//! - `up NN%\n` while the node serves, NN its free capacity in percent (at
//!   least 1);
//! - `down\n` from the start of a drain (its window included): HAProxy
//!   marks the server down and sends it no new connections; the node's
//!   own `up` brings it back after an undrain or a restart.
//!
//! A server in HAProxy has two states with two owners. The operational
//! state (up or down) is the node's: its agent and its readiness check set
//! it. The administrative state (ready, drain, maintenance) is the
//! operator's, set through the Runtime API (`set server ... state drain`,
//! Ansible's `community.general.haproxy`): the agent never says `ready`,
//! `drain` or `maint`, the words that would change it, so an operator's
//! drain or maintenance holds for as long as the operator wants. See
//! docs/operations.md ("Who owns a node's state").

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::AppState;

/// What the node's capacity looks like now, as shares in `0.0..=1.0`;
/// `draining` from the start of a drain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub draining: bool,
    pub free_slots: f64,
    pub free_memory: f64,
    /// Sessions headroom (1.0 when sessions are not served).
    pub free_sessions: f64,
}

/// The agent's reply line for `capacity`.
pub fn line(capacity: &Capacity) -> String {
    if capacity.draining {
        return "down\n".to_owned();
    }
    let share = capacity.free_slots.min(capacity.free_memory).min(capacity.free_sessions);
    // At least 1%: weight 0 would mean drain, which is not the node's state;
    // a full node still takes connections that wait in its queue.
    let pct = ((share * 100.0).floor() as i64).clamp(1, 100);
    format!("up {pct}%\n")
}

/// The capacity of the node behind `state`.
pub fn capacity(state: &AppState) -> Capacity {
    let capacity = state.engine().capacity();
    let share = |free: f64, total: f64| if total > 0.0 { (free / total).clamp(0.0, 1.0) } else { 0.0 };
    let sessions = state.sessions();
    let max_sessions = sessions.config().max_sessions;
    Capacity {
        draining: state.out_of_service(),
        free_slots: share(capacity.free_slots() as f64, f64::from(capacity.slots())),
        free_memory: share(capacity.free_memory_bytes() as f64, capacity.config().memory_budget_bytes as f64),
        free_sessions: share(max_sessions.saturating_sub(sessions.len()) as f64, max_sessions as f64),
    }
}

/// Binds the agent listener (so a bad address fails at startup).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers agent checks on `listener` until the node stops. One
/// connection at a time is plenty: a reply is a few bytes, and the write is
/// bounded so a stuck peer cannot stall the next check.
pub async fn serve(listener: TcpListener, state: AppState) {
    let lifecycle = state.lifecycle().clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = lifecycle.stopped() => return,
        };
        let Ok((mut stream, _)) = accepted else { continue };
        let reply = line(&capacity(&state));
        let write = async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(1), write).await {
            Ok(Ok(())) => state.metrics().record_agent_check(),
            Ok(Err(e)) => tracing::debug!(error = %e, "agent check peer went away"),
            Err(_) => tracing::debug!("agent check peer too slow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(slots: f64, memory: f64, sessions: f64) -> Capacity {
        Capacity { draining: false, free_slots: slots, free_memory: memory, free_sessions: sessions }
    }

    #[test]
    fn lines() {
        assert_eq!(line(&cap(1.0, 1.0, 1.0)), "up 100%\n");
        assert_eq!(line(&cap(0.75, 0.9, 1.0)), "up 75%\n");
        assert_eq!(line(&cap(1.0, 0.5, 0.999)), "up 50%\n");
        assert_eq!(line(&cap(1.0, 1.0, 0.666)), "up 66%\n", "sessions headroom counts");
        assert_eq!(line(&cap(0.0, 1.0, 1.0)), "up 1%\n", "never 0%: that would mean drain");
        assert_eq!(line(&Capacity { draining: true, ..cap(1.0, 1.0, 1.0) }), "down\n");
    }
}
