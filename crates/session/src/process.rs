//! The process of a session: compile (for a run of a compiled language),
//! then a program, shell or REPL on a PTY, driven by one task that owns the
//! sandbox's `Running` handle.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use evald_engine::{SourceFile, Verdict};
use evald_sandbox::{Outcome, RunSpec, Running, Status, Stdin};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::{Control, Kind, Manager, Session, SessionError};

/// How often the CPU and wall-clock limits are checked.
const LIMIT_CHECK: Duration = Duration::from_millis(20);

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

/// Starts `kind` in `session` unless something already runs there.
pub(crate) fn start(
    manager: &Arc<Manager>,
    session: &Arc<Session>,
    kind: Kind,
    rows: u16,
    cols: u16,
) -> Result<(), SessionError> {
    let (tx, rx) = mpsc::channel(256);
    let language = {
        let mut inner = session.inner.lock().map_err(|_| SessionError::Internal("poisoned".into()))?;
        if inner.running.is_some() {
            return Err(SessionError::BadRequest("busy".into()));
        }
        if kind == Kind::Repl && inner.language.spec.repl.is_none() {
            return Err(SessionError::BadRequest("no_repl".into()));
        }
        inner.running = Some(kind);
        inner.control = Some(tx);
        inner.language.clone()
    };
    let (manager, session) = (manager.clone(), session.clone());
    tokio::spawn(async move {
        let outcome = drive(&manager, &session, &language, kind, rows, cols, rx).await;
        let (status, o) = match outcome {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "session process failed");
                (Verdict::InternalError, Outcome::internal(e))
            }
        };
        if let Ok(mut inner) = session.inner.lock() {
            inner.running = None;
            inner.control = None;
        }
        session.emit(json!({
            "type": "exit",
            "kind": kind.as_str(),
            "status": status.as_str(),
            "exit_code": o.exit_code,
            "signal": o.signal.map(evald_sandbox::signal_name),
            "cpu_ms": o.cpu_time.as_millis() as u64,
            "wall_ms": o.wall_time.as_millis() as u64,
            "memory_bytes": o.memory_bytes,
        }));
        manager.sync_back(&session).await;
    });
    Ok(())
}

async fn drive(
    manager: &Arc<Manager>,
    session: &Arc<Session>,
    language: &evald_engine::Language,
    kind: Kind,
    rows: u16,
    cols: u16,
    mut control: mpsc::Receiver<Control>,
) -> Result<(Verdict, Outcome), String> {
    let engine = manager.engine.clone();
    let (compile_limits, mut run_limits) =
        engine.limits(language, &Default::default(), &Default::default()).map_err(|e| e.to_string())?;
    run_limits.wall_time = manager.config.run_wall;
    run_limits.cpu_time = manager.config.run_wall;
    run_limits.disk_bytes = manager.config.disk_bytes;
    let sources = main_first(session, language)?;
    session.emit(json!({"type": "started", "kind": kind.as_str()}));
    let argv: Vec<String> = match kind {
        Kind::Run => {
            if let Some(compile) = &language.spec.compile {
                let argv = evald_engine::expand(compile, &sources);
                let mut spec = RunSpec::new(argv[0].clone(), argv[1..].to_vec());
                spec.env = language.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                spec.limits = compile_limits;
                spec.limits.disk_bytes = manager.config.disk_bytes;
                let s = session.clone();
                let sandbox = engine.sandbox().clone();
                let outcome = tokio::task::spawn_blocking(move || sandbox.run_in(&spec, &s.workspace))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let text = [outcome.stdout.as_slice(), outcome.stderr.as_slice()].concat();
                if !text.is_empty() {
                    session.emit(json!({"type": "output", "data": b64(&crlf(&text))}));
                }
                if outcome.status != Status::Ok {
                    let v = match outcome.status {
                        Status::RuntimeError | Status::Signaled => Verdict::CompileError,
                        other => Verdict::of(other),
                    };
                    return Ok((v, outcome));
                }
            }
            evald_engine::expand(&language.spec.run, &sources)
        }
        Kind::Shell => vec!["/bin/bash".into(), "-i".into()],
        Kind::Repl => language.spec.repl.clone().unwrap_or_default(),
    };
    let mut spec = RunSpec::new(argv[0].clone(), argv[1..].to_vec());
    spec.env = language.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Shell history stays out of the user's files.
    spec.env.push(("HISTFILE".into(), "/tmp/.bash_history".into()));
    spec.stdin = Stdin::Pty { rows: rows.max(1), cols: cols.max(1) };
    spec.limits = run_limits;
    let sandbox = engine.sandbox().clone();
    let s = session.clone();
    let mut running = tokio::task::spawn_blocking(move || sandbox.spawn_in(&spec, &s.workspace))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let master = running.take_pty().ok_or("no terminal")?;
    let pidfd = running.pidfd().try_clone_to_owned().map_err(|e| e.to_string())?;
    let master = evald_sandbox::asyncio::register(master).map_err(|e| e.to_string())?;
    let exited = evald_sandbox::asyncio::register(pidfd).map_err(|e| e.to_string())?;
    let mut check = tokio::time::interval(LIMIT_CHECK);
    let mut buf = vec![0u8; 8192];
    let mut pty_open = true;
    loop {
        tokio::select! {
            r = master.readable(), if pty_open => {
                let Ok(mut guard) = r else { pty_open = false; continue };
                match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => pty_open = false,
                    Ok(Ok(n)) => { session.emit(json!({"type": "output", "data": b64(&buf[..n])})); }
                    Err(_would_block) => {}
                }
            }
            _ = exited.readable() => break,
            msg = control.recv() => match msg {
                Some(Control::Stdin(bytes)) => write_all(&master, &bytes).await,
                Some(Control::Eof) => write_all(&master, &[0x04]).await,
                Some(Control::Resize(r, c)) => { let _ = Running::resize(master.get_ref().as_fd(), r, c); }
                Some(Control::Signal(sig)) => { let _ = running.signal(sig); }
                Some(Control::Kill) | None => running.kill(),
            },
            _ = check.tick() => { running.check_limits(); }
        }
    }
    // The box is gone: what is left in the terminal is read without waiting.
    while let Ok(n) = master.get_ref().read(&mut buf) {
        if n == 0 {
            break;
        }
        session.emit(json!({"type": "output", "data": b64(&buf[..n])}));
    }
    let outcome = tokio::task::spawn_blocking(move || running.wait()).await.map_err(|e| e.to_string())?;
    Ok((Verdict::of(outcome.status), outcome))
}

async fn write_all(master: &AsyncFd<std::fs::File>, mut data: &[u8]) {
    while !data.is_empty() {
        let Ok(mut guard) = master.writable().await else { return };
        match guard.try_io(|f| f.get_ref().write(data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(_)) => return,
            Err(_would_block) => {}
        }
    }
}

/// The session's sources with the main file first: the language's main file
/// name when present, else the first file; then the other files with the
/// main file's extension.
fn main_first(session: &Session, language: &evald_engine::Language) -> Result<Vec<SourceFile>, String> {
    let entries = session.workspace.list(10_000).map_err(|e| e.to_string())?;
    let mut files: Vec<SourceFile> =
        entries.into_iter().filter(|e| !e.is_dir).map(|e| SourceFile { path: e.path, content: Vec::new() }).collect();
    if let Some(i) = files.iter().position(|f| f.path == language.spec.main) {
        let main = files.remove(i);
        files.insert(0, main);
    }
    let Some(main) = files.first() else {
        return Err("the workspace has no files".into());
    };
    // `{files}` means the sources of the main file's kind, not notes or
    // earlier build outputs.
    let ext = main.path.rsplit_once('.').map(|(_, e)| e.to_owned());
    let main_path = main.path.clone();
    files.retain(|f| {
        f.path == main_path || (ext.is_some() && f.path.rsplit_once('.').map(|(_, e)| e) == ext.as_deref())
    });
    Ok(files)
}
