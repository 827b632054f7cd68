//! The WebSocket of a session: replay, live events and client requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::process;
use crate::{Control, Kind, Manager, Session};

pub(crate) const CLOSE_BAD_MESSAGE: u16 = 4400;
pub(crate) const CLOSE_NOT_FOUND: u16 = 4404;
pub(crate) const CLOSE_IDLE: u16 = 4408;
pub(crate) const CLOSE_LIFETIME: u16 = 4409;
pub(crate) const CLOSE_MOVED: u16 = 4410;
pub(crate) const CLOSE_TOO_MANY: u16 = 4429;
pub(crate) const CLOSE_SHUTDOWN: u16 = 4503;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Run { rows: Option<u16>, cols: Option<u16> },
    Shell { rows: Option<u16>, cols: Option<u16> },
    Repl { rows: Option<u16>, cols: Option<u16> },
    Stdin { data: String },
    Eof,
    Resize { rows: u16, cols: u16 },
    Signal { signal: String },
    Ping,
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn send(socket: &mut WebSocket, text: &str) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// Serves one client of `session` until it leaves or the session ends.
pub(crate) async fn serve(manager: Arc<Manager>, session: Option<Arc<Session>>, last_seq: u64, mut socket: WebSocket) {
    let Some(session) = session else {
        close(&mut socket, CLOSE_NOT_FOUND, "session not found").await;
        return;
    };
    // Attach: replay and subscription are taken under the session lock, so
    // no event is missed or sent twice.
    let attach = {
        let Ok(mut inner) = session.inner.lock() else { return };
        if inner.clients >= manager.config.max_clients {
            None
        } else {
            inner.clients += 1;
            inner.last_activity = Instant::now();
            manager.clients.send_modify(|n| *n += 1);
            let rx = session.events.subscribe();
            let gap = (last_seq < inner.dropped).then(|| (last_seq + 1, inner.dropped));
            let replay: Vec<Arc<str>> =
                inner.buffer.iter().filter(|(s, _)| *s > last_seq).map(|(_, t)| t.clone()).collect();
            let hello = json!({
                "type": "hello",
                "session": session.id,
                "language": inner.language.spec.id,
                "seq": inner.seq,
                "running": inner.running.map(Kind::as_str),
            });
            // A client that saw more events than this copy has was attached
            // to another node, which is gone or gave the session up: what
            // ran there (and its output) is lost; the files are not.
            let lost = last_seq > inner.seq;
            Some((rx, gap, replay, hello, lost))
        }
    };
    let Some((mut rx, gap, replay, hello, lost)) = attach else {
        close(&mut socket, CLOSE_TOO_MANY, "too many clients on this session").await;
        return;
    };
    let code = talk(&manager, &session, &mut socket, &mut rx, gap, replay, (hello, lost)).await;
    if let Some((code, reason)) = code {
        close(&mut socket, code, reason).await;
    }
    let left = session.inner.lock().map(|mut inner| {
        inner.clients -= 1;
        inner.last_activity = Instant::now();
    });
    drop(left);
    manager.clients.send_modify(|n| *n = n.saturating_sub(1));
}

async fn talk(
    manager: &Arc<Manager>,
    session: &Arc<Session>,
    socket: &mut WebSocket,
    rx: &mut tokio::sync::broadcast::Receiver<crate::Event>,
    gap: Option<(u64, u64)>,
    replay: Vec<Arc<str>>,
    (hello, lost): (serde_json::Value, bool),
) -> Option<(u16, &'static str)> {
    if !send(socket, &hello.to_string()).await {
        return None;
    }
    if lost {
        let notice = error(
            "process_lost",
            "this session is now served by another node; what ran before and its output are gone, the files are kept",
        );
        if !send(socket, &notice.to_string()).await {
            return None;
        }
    }
    if let Some((from, to)) = gap {
        if !send(socket, &json!({"type": "gap", "from": from, "to": to}).to_string()).await {
            return None;
        }
    }
    for text in replay {
        if !send(socket, &text).await {
            return None;
        }
    }
    let mut closed = session.closed.subscribe();
    let mut shutdown = manager.shutdown.subscribe();
    if *shutdown.borrow() {
        return Some((CLOSE_SHUTDOWN, "the node is shutting down"));
    }
    let idle = manager.config.idle;
    let mut deadline = tokio::time::Instant::now() + idle;
    let mut draining = manager.draining.subscribe();
    // When set, the client has been told to reconnect and is closed then.
    let mut reconnect_at: Option<tokio::time::Instant> = None;
    loop {
        if reconnect_at.is_none() {
            let window = *draining.borrow_and_update();
            if let Some(window) = window {
                let delay = reconnect_delay(window);
                let hint = json!({"type": "reconnect", "delay_ms": delay.as_millis() as u64});
                if !send(socket, &hint.to_string()).await {
                    return None;
                }
                reconnect_at = Some(tokio::time::Instant::now() + delay);
            }
        }
        let reconnect = async {
            match reconnect_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = reconnect => return Some((CLOSE_SHUTDOWN, "the node is draining; reconnect")),
            _ = draining.changed(), if reconnect_at.is_none() => continue,
            event = rx.recv() => match event {
                Ok((_, text)) => if !send(socket, &text).await { return None },
                Err(RecvError::Lagged(n)) => {
                    // A client too slow for the live stream reconnects and
                    // gets the replay (or a gap notice).
                    tracing::debug!(session = %session.id, lagged = n, "slow client");
                    return Some((CLOSE_BAD_MESSAGE, "client too slow; reconnect to resume"));
                }
                Err(RecvError::Closed) => return Some((CLOSE_NOT_FOUND, "session closed")),
            },
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return None };
                deadline = tokio::time::Instant::now() + idle;
                if let Ok(mut inner) = session.inner.lock() {
                    inner.last_activity = Instant::now();
                }
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => return None,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(_) => return Some((CLOSE_BAD_MESSAGE, "binary frames are not accepted")),
                };
                let Ok(request) = serde_json::from_str::<ClientMessage>(text.as_str()) else {
                    return Some((CLOSE_BAD_MESSAGE, "malformed message"));
                };
                if let Some(reply) = handle(manager, session, request).await {
                    if !send(socket, &reply.to_string()).await {
                        return None;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Some((CLOSE_IDLE, "idle timeout")),
            _ = closed.changed() => {
                let code = (*closed.borrow()).unwrap_or(CLOSE_NOT_FOUND);
                let reason = match code {
                    CLOSE_LIFETIME => "session lifetime reached",
                    CLOSE_MOVED => "the session moved to another node; reconnect",
                    _ => "session closed",
                };
                return Some((code, reason));
            }
            _ = shutdown.changed() => return Some((CLOSE_SHUTDOWN, "the node is shutting down")),
        }
    }
}

/// A delay drawn uniformly from `0..=window` (whole milliseconds).
fn reconnect_delay(window: Duration) -> Duration {
    let window_ms = window.as_millis().min(u64::MAX as u128) as u64;
    let draw = (uuid::Uuid::new_v4().as_u128() % (u128::from(window_ms) + 1)) as u64;
    Duration::from_millis(draw)
}

fn error(code: &str, message: &str) -> serde_json::Value {
    json!({"type": "error", "code": code, "message": message})
}

async fn handle(manager: &Arc<Manager>, session: &Arc<Session>, request: ClientMessage) -> Option<serde_json::Value> {
    let size = |r: Option<u16>, c: Option<u16>| (r.unwrap_or(24).clamp(1, 1000), c.unwrap_or(80).clamp(1, 1000));
    let start = |kind, (rows, cols)| match process::start(manager, session, kind, rows, cols) {
        Ok(()) => None,
        Err(crate::SessionError::BadRequest(code)) if code == "busy" => {
            Some(error("busy", "a process is already running in this session"))
        }
        Err(crate::SessionError::BadRequest(code)) if code == "no_repl" => {
            Some(error("no_repl", "this language has no REPL"))
        }
        Err(e) => Some(error("internal_error", &e.to_string())),
    };
    let control = match request {
        ClientMessage::Run { rows, cols } => return start(Kind::Run, size(rows, cols)),
        ClientMessage::Shell { rows, cols } => return start(Kind::Shell, size(rows, cols)),
        ClientMessage::Repl { rows, cols } => return start(Kind::Repl, size(rows, cols)),
        ClientMessage::Ping => return Some(json!({"type": "pong"})),
        ClientMessage::Stdin { data } => Control::Stdin(data.into_bytes()),
        ClientMessage::Eof => Control::Eof,
        ClientMessage::Resize { rows, cols } => {
            if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
                return Some(error("bad_request", "rows and cols must be between 1 and 1000"));
            }
            Control::Resize(rows, cols)
        }
        ClientMessage::Signal { signal } => match signal.trim_start_matches("SIG") {
            "INT" => Control::Signal(2),
            "TERM" => Control::Signal(15),
            "KILL" => Control::Kill,
            _ => return Some(error("bad_request", "signal must be INT, TERM or KILL")),
        },
    };
    let tx = session.inner.lock().ok().and_then(|i| i.control.clone());
    match tx {
        Some(tx) => {
            let _ = tx.send(control).await;
            None
        }
        None => Some(error("not_running", "no process is running in this session")),
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
