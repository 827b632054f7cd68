//! The native API: `/api/v1/languages` and `/api/v1/runs`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use evald_engine::{Case, Job, JobResult, LimitRequest, SourceFile, StageResult, Verdict};
use evald_proto::v1;
use evald_sandbox::Outcome;

use crate::error::{ApiError, Dialect, JsonBody};
use crate::{engine_error, signal_name, AppState, Refusal};

pub async fn languages(State(state): State<AppState>) -> Json<Vec<v1::Language>> {
    Json(
        state
            .engine()
            .languages()
            .iter()
            .map(|l| v1::Language {
                id: l.spec.id.clone(),
                name: l.spec.name.clone(),
                version: l.version.to_string(),
                aliases: l.spec.aliases.clone(),
                compiled: l.compiled(),
                repl: l.spec.repl.is_some(),
            })
            .collect(),
    )
}

fn limit_request(l: &v1::StageLimits) -> LimitRequest {
    LimitRequest {
        wall_ms: l.wall_ms,
        cpu_ms: l.cpu_ms,
        memory_bytes: l.memory_bytes,
        processes: l.processes,
        output_bytes: l.output_bytes,
        ..LimitRequest::default()
    }
}

/// Checks a run request and turns it into a job and its memory reservation.
pub(crate) fn prepare(state: &AppState, req: v1::RunRequest) -> Result<(Job, u64), ApiError> {
    let engine = state.engine();
    let Some(language) = engine.resolve(&req.language, req.version.as_deref()) else {
        let message = match &req.version {
            Some(v) => format!("no installed language {:?} matches version {v:?}", req.language),
            None => format!("no installed language {:?}", req.language),
        };
        return Err(ApiError::bad_request("unknown_language", message));
    };
    let mut files = Vec::with_capacity(req.files.len());
    for (i, f) in req.files.into_iter().enumerate() {
        let content = match f.encoding {
            v1::Encoding::Utf8 => f.content.into_bytes(),
            v1::Encoding::Base64 => {
                base64::engine::general_purpose::STANDARD.decode(f.content.trim()).map_err(|_| {
                    ApiError::bad_request("invalid_file", format!("files[{i}].content is not valid base64"))
                })?
            }
        };
        files.push(SourceFile { path: f.path, content });
    }
    engine.check_files(&files).map_err(|e| engine_error(e, Dialect::Native))?;
    let cases = match req.cases {
        Some(_) if req.stdin.is_some() || req.args.is_some() => {
            return Err(ApiError::bad_request("invalid_body", "give either cases or stdin and args, not both"))
        }
        Some(cases) if cases.is_empty() => {
            return Err(ApiError::bad_request("invalid_body", "cases must not be empty when given"))
        }
        Some(cases) => cases
            .into_iter()
            .map(|c| Case {
                stdin: c.stdin.unwrap_or_default().into_bytes(),
                args: c.args.unwrap_or_default(),
                expected_output: c.expected_output.map(String::into_bytes),
            })
            .collect(),
        None => vec![Case {
            stdin: req.stdin.unwrap_or_default().into_bytes(),
            args: req.args.unwrap_or_default(),
            expected_output: None,
        }],
    };
    let max_cases = engine.config().max_cases;
    if cases.len() > max_cases {
        return Err(ApiError::bad_request(
            "invalid_job",
            format!("{} test cases, more than the maximum of {max_cases}", cases.len()),
        ));
    }
    if cases.iter().flat_map(|c| &c.args).any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request("invalid_job", "an argument contains a NUL byte"));
    }
    let compile = limit_request(&req.limits.compile);
    let run = limit_request(&req.limits.run);
    let (cl, rl) = engine.limits(&language, &compile, &run).map_err(|e| engine_error(e, Dialect::Native))?;
    let memory = if language.compiled() { cl.memory_bytes.max(rl.memory_bytes) } else { rl.memory_bytes };
    Ok((Job { language, files, cases, compile_limits: compile, run_limits: run }, memory))
}

fn stage(outcome: &Outcome, verdict: Verdict) -> v1::Stage {
    v1::Stage {
        status: verdict.as_str().to_owned(),
        exit_code: outcome.exit_code,
        signal: outcome.signal.map(signal_name),
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
        cpu_ms: outcome.cpu_time.as_millis() as u64,
        wall_ms: outcome.wall_time.as_millis() as u64,
        memory_bytes: outcome.memory_bytes,
        cached: None,
    }
}

fn result(id: String, r: &JobResult) -> v1::RunResult {
    let compile = match &r.compile.stage {
        Some(StageResult { verdict, outcome }) => {
            if *verdict == Verdict::InternalError {
                tracing::error!(error = outcome.error.as_deref().unwrap_or(""), "compile stage internal error");
            }
            Some(v1::Stage { cached: Some(false), ..stage(outcome, *verdict) })
        }
        None if r.language.compiled() => Some(v1::Stage {
            status: "ok".into(),
            exit_code: Some(0),
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            cpu_ms: 0,
            wall_ms: 0,
            memory_bytes: 0,
            cached: Some(r.compile.cached),
        }),
        None => None,
    };
    let cases: Vec<v1::Stage> = r
        .cases
        .iter()
        .map(|c| {
            if c.verdict == Verdict::InternalError {
                tracing::error!(error = c.outcome.error.as_deref().unwrap_or(""), "run stage internal error");
            }
            stage(&c.outcome, c.verdict)
        })
        .collect();
    let status = match &compile {
        Some(c) if c.status != "ok" => c.status.clone(),
        _ => cases.iter().map(|c| c.status.as_str()).find(|s| *s != "ok").unwrap_or("ok").to_owned(),
    };
    v1::RunResult {
        id,
        language: r.language.spec.id.clone(),
        version: r.language.version.to_string(),
        compile,
        cases,
        status,
    }
}

pub(crate) async fn execute(
    state: &AppState,
    id: String,
    job: Job,
    permit: crate::admission::Permit,
) -> Result<v1::RunResult, ApiError> {
    let engine = state.engine().clone();
    let language = job.language.spec.id.clone();
    let started = std::time::Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        let r = engine.run_job(&job);
        drop(permit);
        r
    })
    .await;
    let took = started.elapsed();
    let r = match r {
        Ok(Ok(r)) => result(id, &r),
        Ok(Err(e)) => {
            state.metrics().record_run(&language, "internal_error", took);
            return Err(engine_error(e, Dialect::Native));
        }
        Err(e) => {
            state.metrics().record_run(&language, "internal_error", took);
            return Err(ApiError::internal(e));
        }
    };
    state.metrics().record_run(&language, &r.status, took);
    Ok(r)
}

pub async fn create_run(State(state): State<AppState>, body: JsonBody) -> Result<Response, ApiError> {
    let req: v1::RunRequest = serde_json::from_slice(&body.0)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid request body: {e}")))?;
    let wait = req.wait.unwrap_or(true);
    let queued = (!wait).then(|| state.queue().cloned()).flatten().map(|q| (q, req.clone()));
    let (job, memory) = prepare(&state, req)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    if let Some((queue, req)) = queued {
        // A cluster: any node runs it and answers its status (crate::queue).
        drop(job);
        let budget = state.admission().config().memory_budget_bytes;
        if memory > budget {
            return Err(crate::refusal(Refusal::TooLarge { need: memory, budget }, Dialect::Native));
        }
        queue.submit(&id, &req).await?;
        return Ok((StatusCode::ACCEPTED, Json(v1::Accepted { id })).into_response());
    }
    let ticket = state.admission().enqueue(memory).map_err(|r| crate::refusal(r, Dialect::Native))?;
    if wait {
        let permit = ticket.admit().await.map_err(|r| crate::refusal(r, Dialect::Native))?;
        let r = execute(&state, id, job, permit).await?;
        return Ok(Json(r).into_response());
    }
    state
        .jobs()
        .insert(&id)
        .map_err(|e| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string()).retry_after(5))?;
    let task_state = state.clone();
    let task_id = id.clone();
    tokio::spawn(async move {
        let jobs = task_state.jobs();
        let done = |result: Option<v1::RunResult>, error: Option<ApiError>| v1::RunStatus {
            id: task_id.clone(),
            state: v1::JobState::Done,
            result,
            error: error.map(|e| v1::ErrorDetail { code: e.code.to_owned(), message: e.message }),
        };
        let permit = match ticket.admit().await {
            Ok(p) => p,
            Err(r) => return jobs.update(done(None, Some(crate::refusal(r, Dialect::Native)))),
        };
        jobs.update(v1::RunStatus { id: task_id.clone(), state: v1::JobState::Running, result: None, error: None });
        match execute(&task_state, task_id.clone(), job, permit).await {
            Ok(r) => jobs.update(done(Some(r), None)),
            Err(e) => jobs.update(done(None, Some(e))),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(v1::Accepted { id })).into_response())
}

pub async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<v1::RunStatus>, ApiError> {
    let status = match state.queue() {
        Some(queue) => queue.get(&id).await?,
        None => state.jobs().get(&id),
    };
    status.map(Json).ok_or_else(|| ApiError::not_found(format!("no run with id {id:?}")))
}
