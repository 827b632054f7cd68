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
//! job runs in a task of its own and talks to the session over channels, so
//! a slow or silent client never stalls limit enforcement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use evald_proto::piston::{close, ServerMessage, StageName};
use evald_sandbox::Stdin;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Dialect;
use crate::piston::{exit_of, prepare, Prepared};
use crate::stream::{drive, Control, Output, Utf8Chunker};
use crate::{signal_number, AppState};

pub async fn connect(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
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
            Ok(ClientMsg::Init(v)) => match prepare(&state, v) {
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
    let (control_tx, control_rx) = mpsc::unbounded_channel();
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
                let send_control = |c: Control| {
                    if let Some(tx) = &control {
                        let _ = tx.send(c);
                    }
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
                    Ok(ClientMsg::Data { data: Some(d), .. }) if d.is_empty() => send_control(Control::Eof),
                    Ok(ClientMsg::Data { data: Some(d), .. }) => {
                        stdin_bytes += d.len();
                        if stdin_bytes > stdin_cap {
                            break Some(Err(format!("stdin exceeds {stdin_cap} bytes")));
                        }
                        send_control(Control::Stdin(d.into_bytes()));
                    }
                    Ok(ClientMsg::Eof) => send_control(Control::Eof),
                    Ok(ClientMsg::Signal(v)) => match v.as_str().and_then(signal_number) {
                        Some(n) => {
                            if run_started.load(Ordering::SeqCst) {
                                send_control(Control::Signal(n));
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

/// Sends an `error` message, then closes with 4002.
async fn fail(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, message: String) {
    let _ = send(tx, &ServerMessage::Error { message }).await;
    close_with(tx, close::NOTIFIED_ERROR).await;
}

async fn run_job(
    state: AppState,
    p: Prepared,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<JobEvent>,
    run_started: Arc<AtomicBool>,
) {
    let emit = |m: ServerMessage| {
        let _ = events.send(JobEvent::Send(m));
    };
    let fail = |message: String| {
        let _ = events.send(JobEvent::Fail(message));
    };
    let permit = match state.admit(p.memory_bytes, Dialect::Piston).await {
        Ok(permit) => permit,
        Err(e) => return fail(e.message),
    };
    let engine = state.engine().clone();
    let (compile_limits, run_limits) = match engine.limits(&p.language, &p.compile, &p.run) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    if p.language.compiled() {
        emit(ServerMessage::Stage { stage: StageName::Compile });
    }
    let compiled = {
        let (engine, language, files) = (engine.clone(), p.language.clone(), p.files.clone());
        tokio::task::spawn_blocking(move || engine.compile(&language, &files, compile_limits)).await
    };
    let compiled = match compiled {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(crate::engine_error(e, Dialect::Piston).message),
        Err(e) => {
            tracing::error!(error = %e, "compile task failed");
            return fail("internal error".into());
        }
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
    let spec = engine.run_spec(&p.language, &p.files, &compiled, &p.args, Stdin::Pipe, run_limits);
    let sandbox = engine.sandbox().clone();
    let running = match tokio::task::spawn_blocking(move || sandbox.spawn(&spec)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(crate::engine_error(e.into(), Dialect::Piston).message),
        Err(e) => {
            tracing::error!(error = %e, "spawn task failed");
            return fail("internal error".into());
        }
    };
    run_started.store(true, Ordering::SeqCst);
    // The init's `stdin` goes first, then whatever the client sent since.
    let result = stream_run(running, run_limits.output_bytes, p.stdin.into_bytes(), &mut control, &events).await;
    finish_run(result, &events);
    drop(permit);
}

async fn stream_run(
    running: evald_sandbox::Running,
    cap: u64,
    initial_stdin: Vec<u8>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    events: &mpsc::UnboundedSender<JobEvent>,
) -> std::io::Result<evald_sandbox::Outcome> {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let forward = async {
        let (mut o, mut e) = (Utf8Chunker::default(), Utf8Chunker::default());
        while let Some(chunk) = out_rx.recv().await {
            let (stream, text) = match chunk {
                Output::Stdout(b) => ("stdout", o.push(&b)),
                Output::Stderr(b) => ("stderr", e.push(&b)),
            };
            if !text.is_empty() {
                let _ = events.send(JobEvent::Send(ServerMessage::Data { stream: stream.into(), data: text }));
            }
        }
        for (stream, text) in [("stdout", o.finish()), ("stderr", e.finish())] {
            if !text.is_empty() {
                let _ = events.send(JobEvent::Send(ServerMessage::Data { stream: stream.into(), data: text }));
            }
        }
    };
    let run = async move {
        let r = drive(running, cap, initial_stdin, control, &out_tx).await;
        drop(out_tx);
        r
    };
    let (result, ()) = tokio::join!(run, forward);
    result.map(|s| s.outcome)
}

fn finish_run(result: std::io::Result<evald_sandbox::Outcome>, events: &mpsc::UnboundedSender<JobEvent>) {
    match result {
        Ok(outcome) => {
            let (_, _, code, signal) = exit_of(&outcome);
            let _ = events.send(JobEvent::Send(ServerMessage::Exit { stage: StageName::Run, code, signal }));
        }
        Err(e) => {
            tracing::error!(error = %e, "streaming run failed");
            let _ = events.send(JobEvent::Fail("internal error".into()));
        }
    }
}
