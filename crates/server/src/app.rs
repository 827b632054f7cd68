//! The router: every route, and the middleware around them (request span
//! and id, request timeout, panic catcher, body limit, drain gate, API
//! keys), plus the operations routes (health, metrics, admin, OpenAPI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use evald_engine::Refusal;
use serde_json::json;
use tracing::Instrument;

use crate::error::{ApiError, Dialect};
use crate::{auth, metrics, native, piston, piston_ws, sessions, web, AppState};

/// Every route of the router, as (method, path); the OpenAPI document
/// describes exactly these (a test checks both ways).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz/live"),
    ("get", "/healthz/ready"),
    ("get", "/api/v1/languages"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{id}"),
    ("patch", "/api/v1/sessions/{id}"),
    ("delete", "/api/v1/sessions/{id}"),
    ("get", "/api/v1/sessions/{id}/files"),
    ("get", "/api/v1/sessions/{id}/files/{path}"),
    ("put", "/api/v1/sessions/{id}/files/{path}"),
    ("delete", "/api/v1/sessions/{id}/files/{path}"),
    ("post", "/api/v1/sessions/{id}/rename"),
    ("get", "/api/v1/sessions/{id}/ws"),
    ("get", "/api/v2/runtimes"),
    ("post", "/api/v2/execute"),
    ("get", "/api/v2/connect"),
    ("get", "/metrics"),
    ("post", "/admin/drain"),
    ("post", "/admin/undrain"),
    ("get", "/judge0"),
    ("get", "/judge0/"),
    ("post", "/judge0/submissions"),
    ("get", "/judge0/submissions"),
    ("post", "/judge0/submissions/batch"),
    ("get", "/judge0/submissions/batch"),
    ("get", "/judge0/submissions/{token}"),
    ("delete", "/judge0/submissions/{token}"),
    ("get", "/judge0/languages"),
    ("get", "/judge0/languages/all"),
    ("get", "/judge0/languages/{id}"),
    ("get", "/judge0/statuses"),
    ("get", "/judge0/about"),
    ("get", "/judge0/version"),
    ("get", "/judge0/isolate"),
    ("get", "/judge0/license"),
    ("get", "/judge0/system_info"),
    ("get", "/judge0/config_info"),
    ("get", "/judge0/statistics"),
    ("get", "/judge0/workers"),
    ("post", "/judge0/authenticate"),
    ("post", "/judge0/authorize"),
    // Judge0's CORS preflights (Rack::Cors answers OPTIONS on every path).
    ("options", "/judge0"),
    ("options", "/judge0/submissions"),
    ("options", "/judge0/submissions/batch"),
    ("options", "/judge0/submissions/{token}"),
    ("options", "/judge0/languages"),
    ("options", "/judge0/languages/all"),
    ("options", "/judge0/languages/{id}"),
    ("options", "/judge0/statuses"),
    ("options", "/judge0/about"),
    ("options", "/judge0/version"),
    ("options", "/judge0/isolate"),
    ("options", "/judge0/license"),
    ("options", "/judge0/system_info"),
    ("options", "/judge0/config_info"),
    ("options", "/judge0/statistics"),
    ("options", "/judge0/workers"),
    ("options", "/judge0/authenticate"),
    ("options", "/judge0/authorize"),
];

/// The OpenAPI 3.1 document of the HTTP API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The router of a node.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/languages", get(native::languages))
        .route("/api/v1/runs", post(native::create_run))
        .route("/api/v1/runs/{id}", get(native::get_run))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v2/runtimes", get(piston::runtimes))
        .route("/api/v2/execute", post(piston::execute))
        .route("/api/v2/connect", get(piston_ws::connect))
        .merge(sessions::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), drain_gate))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/admin/drain", post(admin_drain))
        .route("/admin/undrain", post(admin_undrain))
        .merge(web::router())
        .merge(api)
        .nest("/judge0", evald_judge0::router(state.judge0().clone()))
        // A Judge0 client's base URL joined with `/`.
        .route("/judge0/", get(evald_judge0::home))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if let Some(redis) = state.redis() {
        let answered = tokio::time::timeout(Duration::from_secs(1), redis.ping()).await;
        if !matches!(answered, Ok(Ok(()))) {
            let mut resp =
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "state_unavailable"}))).into_response();
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
    }
    if state.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting_down"}))).into_response()
    } else if state.out_of_service() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

/// New sessions, session WebSockets and Piston WebSockets are refused on a
/// draining node once its drain window has passed (batch runs are refused
/// by capacity, which also refuses the runs waiting in its queue). Everything else, such as the files of
/// existing sessions, is still served.
async fn drain_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.draining() {
        let path = req.uri().path();
        let new_work = (req.method() == axum::http::Method::POST && path == "/api/v1/sessions")
            || (path.starts_with("/api/v1/sessions/") && path.ends_with("/ws"))
            || path == "/api/v2/connect";
        if new_work {
            let why = if state.shutting_down() { Refusal::ShuttingDown } else { Refusal::Draining };
            return ApiError::from(why).with_dialect(Dialect::of_path(path)).into_response();
        }
    }
    next.run(req).await
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let capacity = state.engine().capacity();
    let (cache_entries, cache_bytes, cache_hits, cache_misses) = state.engine().cache().stats();
    let gauges = metrics::Gauges {
        sessions_active: state.sessions().len(),
        session_clients_connected: *state.sessions().clients().borrow(),
        queue_depth: capacity.waiting(),
        free_slots: capacity.free_slots(),
        free_memory_bytes: capacity.free_memory_bytes(),
        draining: state.out_of_service(),
        cache_entries,
        cache_bytes,
        cache_hits,
        cache_misses,
    };
    let text = metrics::render(state.metrics(), &gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Checks `Authorization: Bearer <admin key>`: 404 when the node has no
/// admin key (the routes do not exist for it), 401 when the key is wrong.
fn check_admin(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(key) = state.http().admin_key.as_deref() else {
        return Err(ApiError::not_found("the admin routes are off: this node has no admin key"));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if auth::constant_time_eq(given.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid admin key is required"))
    }
}

async fn admin_drain(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    if state.begin_drain() {
        tracing::info!("draining (admin request)");
    }
    let window = state.sessions().config().drain_window.as_millis() as u64;
    Ok(Json(json!({"status": "draining", "drain_window_ms": window})).into_response())
}

async fn admin_undrain(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    if !state.end_drain() {
        return Err(ApiError::new(StatusCode::CONFLICT, "shutting_down", "the node is shutting down"));
    }
    tracing::info!("taking work again (admin request)");
    Ok(Json(json!({"status": "ok"})).into_response())
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
        .with_dialect(Dialect::of_path(req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .with_dialect(Dialect::of_path(req.uri().path()))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error").into_response()
}

/// Bounds every request (reading its body and running its job) by the
/// longest a job may legitimately take.
async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(req.uri().path());
    match tokio::time::timeout(state.request_timeout(), next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long")
            .with_dialect(dialect)
            .retry_after(5)
            .into_response(),
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A span per request with its id (also returned as `x-request-id`).
async fn request_span(req: Request, next: Next) -> Response {
    let id = format!("{:x}-{}", std::process::id(), REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "answered")
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
