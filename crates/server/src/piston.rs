//! Piston v2: `GET /api/v2/runtimes` and `POST /api/v2/execute`.
//!
//! Differences from Piston that clients cannot rely on either way: `output`
//! is stdout followed by stderr (evald captures the streams separately, so
//! their interleaving is unknown), and output is capped at the run limit's
//! `output_bytes` per stream (Piston: 1024 characters by default).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use evald_engine::{signal_name, Case, Engine, Job, Language, LimitRequest, Outcome, SourceFile, Status};
use evald_proto::piston::{
    Encoding, ExecuteRequest, ExecuteResponse, LimitKind, Runtime, Stage, StageName, LIMIT_FIELDS,
};

use crate::error::{ApiError, JsonBody};
use crate::AppState;

pub async fn runtimes(State(state): State<AppState>) -> Json<Vec<Runtime>> {
    Json(
        state
            .engine()
            .languages()
            .iter()
            .map(|l| Runtime {
                language: l.spec.id.clone(),
                version: l.version.to_string(),
                aliases: l.spec.aliases.clone(),
            })
            .collect(),
    )
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message).piston()
}

/// A Piston request checked and turned into an engine job.
pub struct Prepared {
    pub language: Arc<Language>,
    pub files: Vec<SourceFile>,
    pub compile: LimitRequest,
    pub run: LimitRequest,
    pub stdin: String,
    pub args: Vec<String>,
    /// The larger of the stages' memory limits: what admission reserves.
    pub memory_bytes: u64,
}

/// Parses and checks an execute body (or a WebSocket `init`), in Piston's
/// order and with its messages; every error is a 400 `{"message"}`.
pub fn prepare(engine: &Engine, body: serde_json::Value) -> Result<Prepared, ApiError> {
    let req = ExecuteRequest::parse(body).map_err(bad)?;
    let language = engine.resolve(&req.language, Some(&req.version)).or_else(|| {
        // A version Piston published for this language runs on the installed one.
        let installed = engine.resolve(&req.language, None)?;
        let names =
            std::iter::once(installed.spec.id.as_str()).chain(installed.spec.aliases.iter().map(String::as_str));
        crate::piston_versions::published(names, &req.version).then_some(installed)
    });
    let Some(language) = language else {
        return Err(bad(format!("{}-{} runtime is unknown", req.language, req.version)));
    };
    let main_index = req.check_main_file().map_err(bad)?;
    if req.args.iter().any(|a| a.contains('\0')) {
        return Err(bad("argument contains a NUL byte"));
    }
    let cfg = engine.config();
    let (mut compile, mut run) = (LimitRequest::default(), LimitRequest::default());
    for field in &LIMIT_FIELDS {
        let (stage_max, target) = match field.stage {
            StageName::Compile => (&cfg.compile.max, &mut compile),
            StageName::Run => (&cfg.run.max, &mut run),
        };
        let max = match field.kind {
            LimitKind::Timeout => stage_max.wall_time.as_millis() as u64,
            LimitKind::CpuTime => stage_max.cpu_time.as_millis() as u64,
            LimitKind::MemoryLimit => stage_max.memory_bytes,
        };
        let value = req.limit(field, max).map_err(bad)?;
        match field.kind {
            LimitKind::Timeout => target.wall_ms = value,
            LimitKind::CpuTime => target.cpu_ms = value,
            LimitKind::MemoryLimit => target.memory_bytes = value,
        }
    }
    let mut files = Vec::with_capacity(req.files.len());
    for (i, f) in req.files.iter().enumerate() {
        let content = match f.encoding {
            Encoding::Utf8 => f.content.clone().into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(f.content.trim())
                .map_err(|_| bad(format!("files[{i}].content is not valid base64")))?,
            Encoding::Hex => {
                decode_hex(&f.content).ok_or_else(|| bad(format!("files[{i}].content is not valid hex")))?
            }
        };
        let path = match &f.name {
            Some(name) => name.clone(),
            None if i == main_index => language.spec.main.clone(),
            None => format!("file{i}.code"),
        };
        files.push(SourceFile { path, content });
    }
    // The first utf8 file is the main file: the engine takes the first.
    let main = files.remove(main_index);
    files.insert(0, main);
    engine.check_files(&files).map_err(|e| ApiError::from(e).piston())?;
    let (compile_limits, run_limits) =
        engine.limits(&language, &compile, &run).map_err(|e| ApiError::from(e).piston())?;
    let memory_bytes = Engine::reservation(&language, &compile_limits, &run_limits);
    Ok(Prepared { language, files, compile, run, stdin: req.stdin, args: req.args, memory_bytes })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Piston's status, message, code and signal of an outcome.
pub fn stage(outcome: &Outcome) -> Stage {
    let stdout = String::from_utf8_lossy(&outcome.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&outcome.stderr).into_owned();
    let (status, message, code, signal) = exit_of(outcome);
    Stage {
        output: format!("{stdout}{stderr}"),
        stdout,
        stderr,
        code,
        signal,
        message,
        status: status.map(str::to_owned),
        cpu_time: outcome.cpu_time.as_millis() as u64,
        wall_time: outcome.wall_time.as_millis() as u64,
        memory: outcome.memory_bytes,
    }
}

type Exit = (Option<&'static str>, Option<String>, Option<i32>, Option<String>);

/// The number of SIGKILL (the same on every Linux architecture).
const SIGKILL: i32 = 9;

/// (status, message, code, signal) as Piston reports them.
pub fn exit_of(o: &Outcome) -> Exit {
    let killed = Some("SIGKILL".to_owned());
    match o.status {
        Status::Ok => (None, None, o.exit_code, None),
        Status::RuntimeError => {
            let code = o.exit_code.unwrap_or(1);
            (Some("RE"), Some(format!("Exited with error status {code}")), Some(code), None)
        }
        Status::Signaled => {
            let n = o.signal.unwrap_or(SIGKILL);
            (Some("SG"), Some(format!("Caught fatal signal {n}")), None, Some(signal_name(n)))
        }
        Status::TimeLimitCpu => (Some("TO"), Some("Time limit exceeded".into()), None, killed),
        Status::TimeLimitWall => (Some("TO"), Some("Time limit exceeded (wall clock)".into()), None, killed),
        Status::MemoryLimit => (Some("SG"), Some("Memory limit exceeded".into()), None, killed),
        Status::OutputLimit if o.stderr_truncated && !o.stdout_truncated => {
            (Some("EL"), Some("stderr length exceeded".into()), None, killed)
        }
        Status::OutputLimit => (Some("OL"), Some("stdout length exceeded".into()), None, killed),
        Status::InternalError => {
            tracing::error!(error = o.error.as_deref().unwrap_or(""), "sandbox internal error");
            (Some("XX"), Some("Internal error".into()), None, None)
        }
    }
}

/// A compile stage served from the compile cache: it succeeded earlier and
/// printed `printed` (its warnings), which is shown again.
pub fn cached_stage(printed: Option<&evald_engine::cache::Printed>) -> Stage {
    let text = |b: Option<&Vec<u8>>| b.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let (stdout, stderr) = (text(printed.map(|p| &p.stdout)), text(printed.map(|p| &p.stderr)));
    Stage {
        output: format!("{stdout}{stderr}"),
        stdout,
        stderr,
        code: Some(0),
        signal: None,
        message: None,
        status: None,
        cpu_time: 0,
        wall_time: 0,
        memory: 0,
    }
}

pub async fn execute(State(state): State<AppState>, body: JsonBody) -> Result<Json<ExecuteResponse>, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(&body.0).map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let engine = state.engine();
    let p = prepare(engine, value)?;
    let permit = engine.admit(p.memory_bytes).await.map_err(|r| ApiError::from(r).piston())?;
    let job = Job {
        language: p.language.clone(),
        files: p.files,
        cases: vec![Case { stdin: p.stdin.into_bytes(), args: p.args, expected_output: None }],
        compile_limits: p.compile,
        run_limits: p.run,
    };
    let started = std::time::Instant::now();
    let result = engine.run_job(&permit, job).await;
    drop(permit);
    let language = &p.language.spec.id;
    let result = match result {
        Ok(r) => {
            state.metrics().record_run(language, r.verdict().as_str(), started.elapsed());
            r
        }
        Err(e) => {
            state.metrics().record_run(language, "internal_error", started.elapsed());
            return Err(ApiError::from(e).piston());
        }
    };
    let compile = match (&result.compile.stage, p.language.compiled()) {
        (Some(s), _) => Some(stage(&s.outcome)),
        (None, true) => Some(cached_stage(result.compile.printed.as_deref())),
        (None, false) => None,
    };
    let run = match result.cases.first() {
        Some(case) => stage(&case.outcome),
        // Compilation failed: Piston answers run = compile.
        None => compile.clone().ok_or_else(|| ApiError::internal("no run and no compile stage").piston())?,
    };
    Ok(Json(ExecuteResponse {
        language: p.language.spec.id.clone(),
        version: p.language.version.to_string(),
        run,
        compile,
    }))
}
