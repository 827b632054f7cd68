//! The native API: `/api/v1/languages` and `/api/v1/runs`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use evald_engine::Refusal;
use evald_proto::v1;

use crate::error::{ApiError, JsonBody};
use crate::AppState;

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

pub async fn create_run(State(state): State<AppState>, body: JsonBody) -> Result<Response, ApiError> {
    let req: v1::RunRequest = evald_proto::json::from_slice(&body.0)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid request body: {e}")))?;
    let wait = req.wait.unwrap_or(true);
    let queued = (!wait).then(|| state.queue().cloned()).flatten().map(|q| (q, req.clone()));
    let runner = state.runner();
    let (job, memory) = runner.prepare(req)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    if let Some((queue, req)) = queued {
        // A cluster: any node runs it and answers its status (crate::queue).
        drop(job);
        let budget = state.engine().capacity().config().memory_budget_bytes;
        if memory > budget {
            return Err(Refusal::TooLarge { need: memory, budget }.into());
        }
        queue.submit(&id, &req).await?;
        return Ok((StatusCode::ACCEPTED, Json(v1::Accepted { id })).into_response());
    }
    let ticket = state.engine().capacity().enqueue(memory)?;
    if wait {
        let permit = ticket.admit().await?;
        let r = runner.execute(id, job, permit).await?;
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
            Err(r) => return jobs.update(done(None, Some(r.into()))),
        };
        jobs.update(v1::RunStatus { id: task_id.clone(), state: v1::JobState::Running, result: None, error: None });
        match task_state.runner().execute(task_id.clone(), job, permit).await {
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
