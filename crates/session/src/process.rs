//! The process of a session: admitted by the engine's capacity, compiled in
//! place for a run of a compiled language, then a program, shell or REPL on
//! a terminal, driven by the engine's one driver.

use std::sync::Arc;

use base64::Engine as _;
use evald_engine::{
    signal_name, Compiled, Control, Io, Language, Launch, LimitRequest, Outcome, Permit, Place, Program, Refusal, Sink,
    SourceFile, Stream, Verdict, Workspace,
};
use evald_proto::session::{ErrorCode, Event, Exit, ProcessKind, ServerMessage};
use tokio::sync::mpsc;

use crate::session::Session;
use crate::{Manager, SessionError};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Terminal output wants CRLF line ends.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Why a process could not start.
pub(crate) enum StartError {
    Busy,
    NoRepl,
    /// Capacity refused it at once (queue full, draining, too large).
    Refused(Refusal),
    Internal(SessionError),
}

/// Passes terminal output on as `output` events.
struct Events<'a> {
    session: &'a Session,
}

impl Sink for Events<'_> {
    fn output(&mut self, _stream: Stream, bytes: &[u8]) {
        self.session.emit(Event::Output { data: b64(bytes) });
    }
}

/// Starts `kind` in `session` unless something already runs there: takes a
/// place in the capacity's line at once (refused when the line is full or
/// the node drains), then waits for capacity, compiles and runs in a task.
pub(crate) fn start(
    manager: &Arc<Manager>,
    session: &Arc<Session>,
    kind: ProcessKind,
    rows: u16,
    cols: u16,
) -> Result<(), StartError> {
    let (tx, rx) = mpsc::channel(256);
    let language = {
        let mut inner =
            session.inner.lock().map_err(|_| StartError::Internal(SessionError::Internal("poisoned".into())))?;
        if inner.running.is_some() {
            return Err(StartError::Busy);
        }
        if kind == ProcessKind::Repl && inner.language.spec.repl.is_none() {
            return Err(StartError::NoRepl);
        }
        let language = inner.language.clone();
        let (compile, run) = limits(manager, &language).map_err(StartError::Internal)?;
        let memory = evald_engine::Engine::reservation(&language, &compile, &run);
        let ticket = manager.engine.capacity().enqueue(memory).map_err(StartError::Refused)?;
        inner.running = Some(kind);
        inner.control = Some(tx);
        (language, ticket)
    };
    let (manager, session) = (manager.clone(), session.clone());
    tokio::spawn(async move {
        let (language, ticket) = language;
        let permit = match ticket.admit().await {
            Ok(p) => p,
            Err(refusal) => {
                set_idle(&session);
                session.notify(&ServerMessage::error(ErrorCode::Overloaded, refusal.to_string()));
                return;
            }
        };
        let outcome = run(&manager, &session, &language, kind, (rows, cols), &permit, rx).await;
        drop(permit);
        let (status, o) = match outcome {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "session process failed");
                (Verdict::InternalError, Outcome::internal(e.to_string()))
            }
        };
        set_idle(&session);
        session.emit(Event::Exit(Exit {
            kind,
            status: status.into(),
            exit_code: o.exit_code,
            signal: o.signal.map(signal_name),
            cpu_ms: o.cpu_time.as_millis() as u64,
            wall_ms: o.wall_time.as_millis() as u64,
            memory_bytes: o.memory_bytes,
        }));
        manager.sync_back(&session).await;
    });
    Ok(())
}

fn set_idle(session: &Session) {
    if let Ok(mut inner) = session.inner.lock() {
        inner.running = None;
        inner.control = None;
    }
}

/// The compile and run limits of a session's process: the language's, with
/// the session's wall limit (also its CPU limit) and disk size.
fn limits(
    manager: &Manager,
    language: &Language,
) -> Result<(evald_engine::Limits, evald_engine::Limits), SessionError> {
    let none = LimitRequest::default();
    let (mut compile, mut run) =
        manager.engine.limits(language, &none, &none).map_err(|e| SessionError::Internal(e.to_string()))?;
    let config = &manager.config;
    compile.disk_bytes = config.disk_bytes;
    run.wall_time = config.run_wall;
    run.cpu_time = config.run_wall;
    run.disk_bytes = config.disk_bytes;
    Ok((compile, run))
}

async fn run(
    manager: &Arc<Manager>,
    session: &Arc<Session>,
    language: &Language,
    kind: ProcessKind,
    (rows, cols): (u16, u16),
    permit: &Permit,
    mut control: mpsc::Receiver<Control>,
) -> Result<(Verdict, Outcome), SessionError> {
    let engine = &manager.engine;
    let (compile_limits, run_limits) = limits(manager, language)?;
    let (workspace, main) = (session.workspace.clone(), language.spec.main.clone());
    let sources = crate::blocking(move || main_first(&workspace, &main)).await?;
    if sources.is_empty() {
        return Err(SessionError::BadRequest("the workspace has no files".into()));
    }
    session.emit(Event::Started { kind });
    let compiled = match kind {
        ProcessKind::Run => {
            let place = Place::In(session.workspace.clone());
            let compiled = engine
                .compile(permit, language, &sources, compile_limits, &place)
                .await
                .map_err(|e| SessionError::Internal(e.to_string()))?;
            if let Some(stage) = &compiled.stage {
                let text = [stage.outcome.stdout.as_slice(), stage.outcome.stderr.as_slice()].concat();
                if !text.is_empty() {
                    session.emit(Event::Output { data: b64(&crlf(&text)) });
                }
                if stage.verdict != Verdict::Ok {
                    return Ok((stage.verdict, stage.outcome.clone()));
                }
            }
            compiled
        }
        ProcessKind::Shell | ProcessKind::Repl => Compiled::none(),
    };
    let program = match kind {
        ProcessKind::Run => Program::Run { compiled: &compiled, args: &[] },
        ProcessKind::Shell => Program::Shell,
        ProcessKind::Repl => Program::Repl,
    };
    let launch = Launch {
        language,
        sources: &sources,
        program,
        io: Io::Terminal { rows, cols },
        limits: run_limits,
        workspace: Some(&session.workspace),
    };
    let process = engine.start(permit, launch).await.map_err(|e| SessionError::Internal(e.to_string()))?;
    let outcome = process.drive(Vec::new(), Some(&mut control), &mut Events { session }).await;
    Ok((Verdict::of(outcome.status), outcome))
}

/// The workspace's sources with the main file first: the language's main
/// file name (`main`) when present, else the first file; then the other
/// files with the main file's extension. Empty when it has no files.
fn main_first(workspace: &Workspace, main: &str) -> std::io::Result<Vec<SourceFile>> {
    let entries = workspace.list(10_000).map_err(std::io::Error::other)?;
    let mut files: Vec<SourceFile> =
        entries.into_iter().filter(|e| !e.is_dir).map(|e| SourceFile { path: e.path, content: Vec::new() }).collect();
    if let Some(i) = files.iter().position(|f| f.path == main) {
        let main = files.remove(i);
        files.insert(0, main);
    }
    let Some(main) = files.first() else { return Ok(files) };
    // `{files}` means the sources of the main file's kind, not notes or
    // earlier build outputs.
    let ext = main.path.rsplit_once('.').map(|(_, e)| e.to_owned());
    let main_path = main.path.clone();
    files.retain(|f| {
        f.path == main_path || (ext.is_some() && f.path.rsplit_once('.').map(|(_, e)| e) == ext.as_deref())
    });
    Ok(files)
}
