//! Piston's WebSocket `GET /api/v2/connect`, without Piston's defects:
//!
//! - `signal` reaches the program (SIGINT, SIGTERM, SIGKILL, SIGQUIT, SIGHUP,
//!   SIGUSR1, SIGUSR2; any other name closes with 4005). Signals sent before
//!   the run stage has started are dropped: there is nothing to signal.
//! - stdin sent before the run stage starts is buffered and delivered.
//! - an empty `data` message, or `{"type":"eof"}`, closes the program's stdin.
//! - output is capped at the run limit's `output_bytes` per stream; beyond it
//!   the box is killed (exit signal `SIGKILL`).
//!
//! The session task reads client messages and writes server messages; the
//! job runs in a task of its own (the engine's compile step, then its driver)
//! and talks to the session over channels, so a slow or silent client never
//! stalls limit enforcement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use evald_engine::{Control, Io, Launch, Place, Program, Sink, Stream};
use evald_proto::piston::{close, ServerMessage, StageName};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{upgrade_refused, ApiError, Dialect};
use crate::piston::{exit_of, prepare, Prepared};
use crate::AppState;

/// The signals a client may send.
fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "SIGINT" => 2,
        "SIGTERM" => 15,
        "SIGKILL" => 9,
        "SIGQUIT" => 3,
        "SIGHUP" => 1,
        "SIGUSR1" => 10,
        "SIGUSR2" => 12,
        _ => return None,
    })
}

/// Control messages a client may have in flight before the box takes them.
const CONTROL_QUEUE: usize = 256;

pub async fn connect(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => return upgrade_refused(r, Dialect::Piston).into_response(),
    };
    let max = state.max_body_bytes();
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| session(state, socket))
}

enum JobEvent {
    Send(ServerMessage),
    Fail(String),
}

async fn send(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => tx.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn close_with(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, (code, reason): (u16, &str)) {
    let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    let _ = tx.close().await;
}

/// A client message, parsed.
enum ClientMsg {
    Init(Value),
    Data { stream: String, data: Option<String> },
    Signal(Value),
    Eof,
    Other,
}

fn parse(text: &str) -> Result<ClientMsg, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid message: {e}"))?;
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("init") => ClientMsg::Init(v),
        Some("data") => ClientMsg::Data {
            stream: v.get("stream").and_then(Value::as_str).unwrap_or_default().to_owned(),
            data: v.get("data").and_then(Value::as_str).map(str::to_owned),
        },
        Some("signal") => ClientMsg::Signal(v.get("signal").cloned().unwrap_or(Value::Null)),
        Some("eof") => ClientMsg::Eof,
        _ => ClientMsg::Other,
    })
}

async fn session(state: AppState, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    // Phase 1: an init within one second.
    let deadline = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(deadline);
    let prepared = loop {
        let msg = tokio::select! {
            () = &mut deadline => return close_with(&mut tx, close::INIT_TIMEOUT).await,
            m = rx.next() => m,
        };
        let text = match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(_)) => continue,
        };
        match parse(&text) {
            Err(message) => return fail(&mut tx, message).await,
            Ok(ClientMsg::Init(v)) => match prepare(state.engine(), v) {
                Ok(p) => break p,
                Err(e) => return fail(&mut tx, e.message).await,
            },
            Ok(ClientMsg::Data { .. } | ClientMsg::Signal(_) | ClientMsg::Eof) => {
                return close_with(&mut tx, close::NOT_INITIALIZED).await
            }
            Ok(ClientMsg::Other) => continue,
        }
    };
    let runtime = ServerMessage::Runtime {
        language: prepared.language.spec.id.clone(),
        version: prepared.language.version.to_string(),
    };
    if !send(&mut tx, &runtime).await {
        return;
    }
    // Phase 2: the job runs; client messages steer it.
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let run_started = Arc::new(AtomicBool::new(false));
    let stdin_cap = state.max_body_bytes();
    let mut stdin_bytes = 0usize;
    let job = tokio::spawn(run_job(state.clone(), prepared, control_rx, event_tx, run_started.clone()));
    let mut control = Some(control_tx);
    let outcome = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(JobEvent::Send(m)) => {
                    if !send(&mut tx, &m).await {
                        break None;
                    }
                }
                Some(JobEvent::Fail(message)) => break Some(Err(message)),
                None => break Some(Ok(())),
            },
            msg = rx.next() => {
                let text = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(_)) => continue,
                };
                match parse(&text) {
                    Err(message) => break Some(Err(message)),
                    Ok(ClientMsg::Init(_)) => {
                        close_with(&mut tx, close::ALREADY_INITIALIZED).await;
                        break None;
                    }
                    Ok(ClientMsg::Data { stream, .. }) if stream != "stdin" => {
                        close_with(&mut tx, close::STDIN_ONLY).await;
                        break None;
                    }
                    Ok(ClientMsg::Data { data: None, .. }) => break Some(Err("data must be a string".into())),
                    Ok(ClientMsg::Data { data: Some(d), .. }) if d.is_empty() => send_control(&control, Control::Eof).await,
                    Ok(ClientMsg::Data { data: Some(d), .. }) => {
                        stdin_bytes += d.len();
                        if stdin_bytes > stdin_cap {
                            break Some(Err(format!("stdin exceeds {stdin_cap} bytes")));
                        }
                        send_control(&control, Control::Stdin(d.into_bytes())).await;
                    }
                    Ok(ClientMsg::Eof) => send_control(&control, Control::Eof).await,
                    Ok(ClientMsg::Signal(v)) => match v.as_str().and_then(signal_number) {
                        Some(n) => {
                            if run_started.load(Ordering::SeqCst) {
                                send_control(&control, Control::Signal(n)).await;
                            }
                        }
                        None => {
                            close_with(&mut tx, close::INVALID_SIGNAL).await;
                            break None;
                        }
                    },
                    Ok(ClientMsg::Other) => {}
                }
            }
        }
    };
    // Dropping the control channel kills a box that is still running.
    control.take();
    match outcome {
        Some(Ok(())) => close_with(&mut tx, close::JOB_COMPLETED).await,
        Some(Err(message)) => fail(&mut tx, message).await,
        None => {}
    }
    if let Err(e) = job.await {
        tracing::error!(error = %e, "websocket job task failed");
    }
}

/// Passes a client's request to the running job (backpressure: waits while
/// the job has a full queue of them).
async fn send_control(control: &Option<mpsc::Sender<Control>>, c: Control) {
    if let Some(tx) = control {
        let _ = tx.send(c).await;
    }
}

/// Sends an `error` message, then closes with 4002.
async fn fail(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, message: String) {
    let _ = send(tx, &ServerMessage::Error { message }).await;
    close_with(tx, close::NOTIFIED_ERROR).await;
}

async fn run_job(
    state: AppState,
    p: Prepared,
    mut control: mpsc::Receiver<Control>,
    events: mpsc::UnboundedSender<JobEvent>,
    run_started: Arc<AtomicBool>,
) {
    let emit = |m: ServerMessage| {
        let _ = events.send(JobEvent::Send(m));
    };
    let fail = |message: String| {
        let _ = events.send(JobEvent::Fail(message));
    };
    let engine = state.engine();
    let permit = match engine.admit(p.memory_bytes).await {
        Ok(permit) => permit,
        Err(r) => return fail(r.to_string()),
    };
    let (compile_limits, run_limits) = match engine.limits(&p.language, &p.compile, &p.run) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    if p.language.compiled() {
        emit(ServerMessage::Stage { stage: StageName::Compile });
    }
    let compiled = match engine.compile(&permit, &p.language, &p.files, compile_limits, &Place::Fresh).await {
        Ok(c) => c,
        Err(e) => return fail(ApiError::from(e).piston().message),
    };
    if p.language.compiled() {
        let (code, signal) = match &compiled.stage {
            Some(s) => {
                for (stream, bytes) in [("stdout", &s.outcome.stdout), ("stderr", &s.outcome.stderr)] {
                    if !bytes.is_empty() {
                        let data = String::from_utf8_lossy(bytes).into_owned();
                        emit(ServerMessage::Data { stream: stream.into(), data });
                    }
                }
                let (_, _, code, signal) = exit_of(&s.outcome);
                (code, signal)
            }
            None => (Some(0), None),
        };
        emit(ServerMessage::Exit { stage: StageName::Compile, code, signal });
        if !compiled.ok() {
            return;
        }
    }
    emit(ServerMessage::Stage { stage: StageName::Run });
    let launch = Launch {
        language: &p.language,
        sources: &p.files,
        program: Program::Run { compiled: &compiled, args: &p.args },
        io: Io::Pipes,
        limits: run_limits,
        workspace: None,
    };
    let process = match engine.start(&permit, launch).await {
        Ok(process) => process,
        Err(e) => return fail(ApiError::from(e).piston().message),
    };
    run_started.store(true, Ordering::SeqCst);
    // The init's `stdin` goes first, then whatever the client sent since.
    let mut sink = DataSink { events: &events, stdout: Utf8Chunker::default(), stderr: Utf8Chunker::default() };
    let outcome = process.drive(p.stdin.into_bytes(), Some(&mut control), &mut sink).await;
    sink.finish();
    let (_, _, code, signal) = exit_of(&outcome);
    emit(ServerMessage::Exit { stage: StageName::Run, code, signal });
    drop(permit);
}

/// Passes output on as `data` messages, never splitting a UTF-8 sequence.
struct DataSink<'a> {
    events: &'a mpsc::UnboundedSender<JobEvent>,
    stdout: Utf8Chunker,
    stderr: Utf8Chunker,
}

impl DataSink<'_> {
    fn send(&self, stream: &str, data: String) {
        if !data.is_empty() {
            let _ = self.events.send(JobEvent::Send(ServerMessage::Data { stream: stream.into(), data }));
        }
    }

    /// Whatever is left of an incomplete sequence, lossily.
    fn finish(&mut self) {
        let (out, err) = (self.stdout.finish(), self.stderr.finish());
        self.send("stdout", out);
        self.send("stderr", err);
    }
}

impl Sink for DataSink<'_> {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout | Stream::Terminal => {
                let text = self.stdout.push(bytes);
                self.send("stdout", text);
            }
            Stream::Stderr => {
                let text = self.stderr.push(bytes);
                self.send("stderr", text);
            }
        }
    }
}

/// Turns byte chunks into text without splitting a UTF-8 sequence across
/// messages: an incomplete sequence at the end waits for the next chunk.
#[derive(Default)]
struct Utf8Chunker {
    carry: Vec<u8>,
}

impl Utf8Chunker {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.carry) {
                Ok(s) => {
                    out.push_str(s);
                    self.carry.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.carry[..valid]));
                    match e.error_len() {
                        None => {
                            self.carry.drain(..valid);
                            return out;
                        }
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.carry.drain(..valid + len);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left, lossily.
    fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_sequences_are_not_split() {
        let mut c = Utf8Chunker::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), "a");
        assert_eq!(c.push(&[e[1], b'b']), "éb");
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(c.push(&[e[0]]), "");
        assert_eq!(c.finish(), "\u{fffd}");
    }

    #[test]
    fn signal_numbers_are_linuxs() {
        assert_eq!(signal_number("SIGINT"), Some(2));
        assert_eq!(signal_number("SIGUSR2"), Some(12));
        assert_eq!(signal_number("SIGSTOP"), None);
    }
}
