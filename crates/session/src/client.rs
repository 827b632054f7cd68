//! One client's connection to a session: the replay on attach, live events,
//! client requests, drain hints, idle and lifetime limits and the close
//! codes, over any [`Transport`] (the server adapts its WebSocket).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use evald_engine::{Control, Phase};
use evald_proto::session::{close, ClientMessage, ErrorCode, ProcessKind, Seq, ServerMessage};
use tokio::sync::broadcast::error::RecvError;

use crate::process::{self, StartError};
use crate::session::{Attachment, Session};
use crate::Manager;

/// A message from the client, as the transport received it.
pub enum Incoming {
    Text(String),
    /// Binary frames are not part of the protocol.
    Binary,
    /// Transport keep-alives.
    Ping,
    /// The client closed the connection, or it broke.
    Closed,
}

/// A message-oriented connection to one client (a WebSocket).
pub trait Transport: Send {
    /// Sends one text message; false when the connection is gone.
    fn send(&mut self, text: &str) -> impl Future<Output = bool> + Send;
    /// The next message. Must be cancel-safe (it races other events).
    fn recv(&mut self) -> impl Future<Output = Incoming> + Send;
    /// Closes the connection with a code and a reason.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// Serves one client of `session` (`None`: not found) that saw events up
/// to `last_seq`, until it leaves or the session or node ends.
pub async fn serve<T: Transport>(manager: Arc<Manager>, session: Option<Arc<Session>>, last_seq: Seq, mut io: T) {
    let Some(session) = session else {
        io.close(close::NOT_FOUND.code, "session not found").await;
        return;
    };
    let clients = manager.clients.clone();
    let detach = Box::new(move || clients.send_modify(|n| *n = n.saturating_sub(1)));
    let Some(attachment) = session.attach(last_seq, manager.config.max_clients, detach) else {
        io.close(close::TOO_MANY.code, "too many clients on this session").await;
        return;
    };
    manager.clients.send_modify(|n| *n += 1);
    if let Some((code, reason)) = talk(&manager, attachment, &mut io).await {
        io.close(code, reason).await;
    }
}

async fn send<T: Transport>(io: &mut T, message: &ServerMessage) -> bool {
    io.send(&message.to_json()).await
}

async fn talk<T: Transport>(manager: &Arc<Manager>, mut a: Attachment, io: &mut T) -> Option<(u16, &'static str)> {
    let session = a.session.clone();
    if !send(io, &a.hello).await {
        return None;
    }
    if a.lost {
        let notice = ServerMessage::error(
            ErrorCode::ProcessLost,
            "this session is now served by another node; what ran before and its output are gone, the files are kept",
        );
        if !send(io, &notice).await {
            return None;
        }
    }
    if let Some((from, to)) = a.gap {
        if !send(io, &ServerMessage::Gap { from, to }).await {
            return None;
        }
    }
    for text in std::mem::take(&mut a.replay) {
        if !io.send(&text).await {
            return None;
        }
    }
    let mut closed = session.closed.subscribe();
    let mut phase = manager.lifecycle.subscribe();
    let idle = manager.config.idle;
    let mut deadline = tokio::time::Instant::now() + idle;
    // When set, the client has been told to reconnect and is closed then.
    let mut reconnect_at: Option<tokio::time::Instant> = None;
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Stopping => return Some((close::SHUTDOWN.code, "the node is shutting down")),
            Phase::Leaving | Phase::Draining if reconnect_at.is_none() => {
                // Spread over what is left of the drain window: a client
                // that came back to this node while the balancer had not
                // yet seen it leave is sent away again before the window's
                // end.
                let now = tokio::time::Instant::now();
                let left =
                    manager.lifecycle.window_end().map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
                let delay = reconnect_delay(left);
                let hint = ServerMessage::Reconnect { delay_ms: delay.as_millis() as u64 };
                if !send(io, &hint).await {
                    return None;
                }
                reconnect_at = Some(tokio::time::Instant::now() + delay);
            }
            _ => {}
        }
        let reconnect = async {
            match reconnect_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = reconnect => return Some((close::SHUTDOWN.code, "the node is draining; reconnect")),
            _ = phase.changed() => continue,
            event = a.live.recv() => match event {
                Ok(text) => if !io.send(&text).await { return None },
                Err(RecvError::Lagged(n)) => {
                    // A client too slow for the live stream reconnects and
                    // gets the replay (or a gap notice).
                    tracing::debug!(session = %session.id, lagged = n, "slow client");
                    return Some((close::BAD_MESSAGE.code, "client too slow; reconnect to resume"));
                }
                Err(RecvError::Closed) => return Some((close::NOT_FOUND.code, "session closed")),
            },
            msg = io.recv() => {
                deadline = tokio::time::Instant::now() + idle;
                session.touch();
                let text = match msg {
                    Incoming::Text(t) => t,
                    Incoming::Closed => return None,
                    Incoming::Ping => continue,
                    Incoming::Binary => return Some((close::BAD_MESSAGE.code, "binary frames are not accepted")),
                };
                let Ok(request) = serde_json::from_str::<ClientMessage>(&text) else {
                    return Some((close::BAD_MESSAGE.code, "malformed message"));
                };
                if let Some(reply) = handle(manager, &session, request).await {
                    if !send(io, &reply).await {
                        return None;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Some((close::IDLE.code, "idle timeout")),
            _ = closed.changed() => {
                let code = (*closed.borrow()).unwrap_or(close::NOT_FOUND.code);
                let reason = match code {
                    c if c == close::LIFETIME.code => "session lifetime reached",
                    c if c == close::MOVED.code => "the session moved to another node; reconnect",
                    _ => "session closed",
                };
                return Some((code, reason));
            }
        }
    }
}

/// A delay drawn uniformly from `0..=window` (whole milliseconds).
fn reconnect_delay(window: Duration) -> Duration {
    let window_ms = window.as_millis().min(u64::MAX as u128) as u64;
    let draw = (uuid::Uuid::new_v4().as_u128() % (u128::from(window_ms) + 1)) as u64;
    Duration::from_millis(draw)
}

/// What a client's request does; the reply, if it gets one.
async fn handle(manager: &Arc<Manager>, session: &Arc<Session>, request: ClientMessage) -> Option<ServerMessage> {
    let size = |r: Option<u16>, c: Option<u16>| (r.unwrap_or(24).clamp(1, 1000), c.unwrap_or(80).clamp(1, 1000));
    let start = |kind, (rows, cols)| match process::start(manager, session, kind, rows, cols) {
        Ok(()) => None,
        Err(StartError::Busy) => {
            Some(ServerMessage::error(ErrorCode::Busy, "a process is already running in this session"))
        }
        Err(StartError::NoRepl) => Some(ServerMessage::error(ErrorCode::NoRepl, "this language has no REPL")),
        Err(StartError::Refused(r)) => Some(ServerMessage::error(ErrorCode::Overloaded, r.to_string())),
        Err(StartError::Internal(e)) => {
            tracing::error!(session = %session.id, error = ?e, "starting a session process");
            Some(ServerMessage::error(ErrorCode::InternalError, "internal error"))
        }
    };
    let control = match request {
        ClientMessage::Run { rows, cols } => return start(ProcessKind::Run, size(rows, cols)),
        ClientMessage::Shell { rows, cols } => return start(ProcessKind::Shell, size(rows, cols)),
        ClientMessage::Repl { rows, cols } => return start(ProcessKind::Repl, size(rows, cols)),
        ClientMessage::Ping => return Some(ServerMessage::Pong),
        ClientMessage::Stdin { data } => Control::Stdin(data.into_bytes()),
        ClientMessage::Eof => Control::Eof,
        ClientMessage::Resize { rows, cols } => {
            if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
                return Some(ServerMessage::error(ErrorCode::BadRequest, "rows and cols must be between 1 and 1000"));
            }
            Control::Resize { rows, cols }
        }
        ClientMessage::Signal { signal } => match signal.trim_start_matches("SIG") {
            "INT" => Control::Signal(2),
            "TERM" => Control::Signal(15),
            "KILL" => Control::Kill,
            _ => return Some(ServerMessage::error(ErrorCode::BadRequest, "signal must be INT, TERM or KILL")),
        },
    };
    let tx = session.inner.lock().ok().and_then(|i| i.control.clone());
    match tx {
        Some(tx) => {
            let _ = tx.send(control).await;
            None
        }
        None => Some(ServerMessage::error(ErrorCode::NotRunning, "no process is running in this session")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_stay_within_the_window_and_spread() {
        let window = Duration::from_millis(100);
        let delays: Vec<u64> = (0..2000).map(|_| reconnect_delay(window).as_millis() as u64).collect();
        assert!(delays.iter().all(|d| *d <= 100));
        assert!(delays.iter().any(|d| *d < 20) && delays.iter().any(|d| *d > 80), "spread over the window");
        assert_eq!(reconnect_delay(Duration::ZERO), Duration::ZERO);
    }
}
