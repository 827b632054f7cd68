//! The routes, Judge0's authentication and CORS, and its error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::service::{Judge0, Refused};
use crate::wire::{parse_fields, Ordered};
use crate::{info, languages};

type Q = Query<HashMap<String, String>>;

pub const NOT_UTF8_ONE: &str =
    "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter";
pub const NOT_UTF8_MANY: &str =
    "some attributes for one or more submissions cannot be converted to UTF-8, use base64_encoded=true query parameter";

/// The most submissions in a batch (`MAX_SUBMISSION_BATCH_SIZE`).
pub const MAX_BATCH: usize = 20;

/// Judge0's routes, at the root of the router (nest it under a prefix).
pub fn router<S: Clone + Send + Sync + 'static>(j0: Arc<Judge0>) -> Router<S> {
    Router::new()
        .route("/", get(home).options(preflight))
        .route("/submissions", post(create).get(list).options(preflight))
        .route("/submissions/batch", post(batch_create).get(batch_get).options(preflight))
        .route("/submissions/{token}", get(show).delete(destroy).options(preflight))
        .route("/languages", get(languages_active).options(preflight))
        .route("/languages/all", get(languages_all).options(preflight))
        .route("/languages/{id}", get(language).options(preflight))
        .route("/statuses", get(info::statuses).options(preflight))
        .route("/about", get(info::about).options(preflight))
        .route("/version", get(info::version).options(preflight))
        .route("/isolate", get(info::isolate).options(preflight))
        .route("/license", get(info::license).options(preflight))
        .route("/system_info", get(info::system_info).options(preflight))
        .route("/config_info", get(info::config_info).options(preflight))
        .route("/statistics", get(info::statistics).options(preflight))
        .route("/workers", get(info::workers).options(preflight))
        .route("/authenticate", post(authenticate).options(preflight))
        .route("/authorize", post(authorize).options(preflight))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(j0.clone(), authenticate_layer))
        .layer(middleware::from_fn(cors))
        .with_state(j0)
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], bytes).into_response()
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// Rails' 404: empty unless the client asks for JSON.
fn not_found_for(headers: &HeaderMap) -> Response {
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    if wants_json {
        json_response(StatusCode::NOT_FOUND, &json!({"status": 404, "error": "Not Found"}))
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

async fn not_found(headers: HeaderMap) -> Response {
    not_found_for(&headers)
}

/// `GET /`: empty (also `/judge0/` on the main listener, see the server).
pub async fn home() -> Response {
    empty(StatusCode::OK)
}

/// A CORS preflight, as Rack::Cors answers it for Judge0 (any origin,
/// method and header).
/// An OPTIONS request that is not a preflight is not allowed.
async fn preflight(headers: HeaderMap) -> Response {
    if !headers.contains_key(header::ORIGIN) || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    {
        let mut r = empty(StatusCode::OK);
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"),
        );
        if let Some(asked) = asked {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("7200"));
        r
    }
}

/// Rack::Cors as Judge0 configures it: any origin may read the answers.
async fn cors(req: Request, next: Next) -> Response {
    let has_origin = req.headers().contains_key(header::ORIGIN);
    let mut r = next.run(req).await;
    if has_origin {
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    r
}

/// A header, or a query parameter of the same name.
fn credential(req: &Request, name: &str) -> Option<String> {
    if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    let query = req.uri().query()?;
    url_pairs(query).into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

/// `X-Auth-Token` on every route but `/`: 401 with an empty body.
async fn authenticate_layer(State(j0): State<Arc<Judge0>>, req: Request, next: Next) -> Response {
    let tokens = &j0.config().auth_tokens;
    // The home page, and CORS preflights (which carry no credentials).
    if tokens.is_empty() || req.uri().path() == "/" || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let given = credential(&req, "X-Auth-Token").unwrap_or_default();
    if !tokens.iter().any(|t| constant_time_eq(t.as_bytes(), given.as_bytes())) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `X-Auth-User`: 403 unless it is the configured authorization token.
fn authorized(j0: &Judge0, headers: &HeaderMap, q: &HashMap<String, String>) -> bool {
    let Some(want) = &j0.config().authz_token else { return false };
    let given = headers
        .get("X-Auth-User")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.iter().find(|(k, _)| k.eq_ignore_ascii_case("X-Auth-User")).map(|(_, v)| v.clone()))
        .unwrap_or_default();
    constant_time_eq(want.as_bytes(), given.as_bytes())
}

async fn authenticate() -> Response {
    empty(StatusCode::OK)
}

async fn authorize(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Query(q): Q) -> Response {
    if authorized(&j0, &headers, &q) {
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::FORBIDDEN)
    }
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true")
}

/// The request's parameters as Rails merges them: the body (JSON, or a
/// form) over the query string. `None`: a body that does not parse.
fn params(headers: &HeaderMap, q: &HashMap<String, String>, body: &Bytes) -> Option<Map<String, Value>> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let mut map: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else if form {
        url_pairs(std::str::from_utf8(body).ok()?).into_iter().map(|(k, v)| (k, Value::String(v))).collect()
    } else {
        match serde_json::from_slice::<Value>(body).ok()? {
            Value::Object(m) => m,
            _ => return None,
        }
    };
    for (k, v) in q {
        map.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
    }
    Some(map)
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::Invalid(e) => json_response(StatusCode::UNPROCESSABLE_ENTITY, &e.to_json()),
        Refused::QueueFull => error(StatusCode::SERVICE_UNAVAILABLE, "queue is full"),
        Refused::Store(e) => store_error(e),
    }
}

fn store_error(e: evald_state::StateError) -> Response {
    tracing::warn!(error = %e, "the submission store failed");
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "the submission store is unavailable, retry later");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn create(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Query(q): Q, body: Bytes) -> Response {
    let wait = flag(&q, "wait");
    let base64 = flag(&q, "base64_encoded");
    // A cluster's `wait=false` submissions are bounded by its run queue.
    if (wait || !j0.clustered()) && j0.queue_full(1) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "queue is full");
    }
    let fields = match parse_fields(q.get("fields").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(params) = params(&headers, &q, &body) else { return empty(StatusCode::BAD_REQUEST) };
    let (stored, task) = match j0.submit(&params, base64, wait).await {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    let task = match task {
        Some(task) if wait => task,
        task => {
            if let Some(task) = task {
                tokio::spawn(task);
            }
            return json_response(StatusCode::CREATED, &json!({ "token": stored.token }));
        }
    };
    let done = task.await;
    match done.render(&fields, base64) {
        Ok(body) => json_response(StatusCode::CREATED, &body),
        Err(_) => json_response(StatusCode::CREATED, &json!({"error": NOT_UTF8_ONE, "token": done.token})),
    }
}

async fn show(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Path(token): Path<String>, Query(q): Q) -> Response {
    let fields = match parse_fields(q.get("fields").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match j0.get(&token).await {
        Err(e) => store_error(e),
        Ok(None) => not_found_for(&headers),
        Ok(Some(s)) => match s.render(&fields, flag(&q, "base64_encoded")) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(_) => error(StatusCode::BAD_REQUEST, NOT_UTF8_ONE),
        },
    }
}

/// Ruby's `to_i`: the leading integer, else 0.
fn to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse::<i64>().map_or(0, |n| sign * n)
}

#[derive(Serialize)]
struct Meta {
    current_page: i64,
    next_page: Option<i64>,
    prev_page: Option<i64>,
    total_pages: i64,
    total_count: u64,
}

#[derive(Serialize)]
struct ListBody {
    submissions: Vec<Ordered>,
    meta: Meta,
}

async fn list(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Query(q): Q) -> Response {
    if !authorized(&j0, &headers, &q) {
        return empty(StatusCode::FORBIDDEN);
    }
    let page = q.get("page").map_or(1, |p| to_i(p));
    let per_page = q.get("per_page").map_or(20, |p| to_i(p));
    if page <= 0 {
        return error(StatusCode::BAD_REQUEST, &format!("invalid page: {page}"));
    }
    if per_page < 0 {
        return error(StatusCode::BAD_REQUEST, &format!("invalid per_page: {per_page}"));
    }
    let fields = match parse_fields(q.get("fields").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let per_page = if per_page == 0 { 20 } else { per_page };
    let offset = (page - 1).saturating_mul(per_page) as u64;
    let records = match j0.store().list(offset, per_page as u64).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let base64 = flag(&q, "base64_encoded");
    let mut submissions = Vec::new();
    for b in &records.bodies {
        let Ok(s) = serde_json::from_slice::<crate::wire::Submission>(b) else { continue };
        match s.render(&fields, base64) {
            Ok(o) => submissions.push(o),
            Err(_) => return error(StatusCode::BAD_REQUEST, NOT_UTF8_MANY),
        }
    }
    let total_pages = (records.total as i64 + per_page - 1) / per_page;
    let meta = Meta {
        current_page: page,
        next_page: (page < total_pages).then_some(page + 1),
        prev_page: (page > 1).then_some(page - 1),
        total_pages,
        total_count: records.total,
    };
    json_response(StatusCode::OK, &ListBody { submissions, meta })
}

async fn destroy(
    State(j0): State<Arc<Judge0>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Query(q): Q,
) -> Response {
    if !authorized(&j0, &headers, &q) {
        return empty(StatusCode::FORBIDDEN);
    }
    if !j0.config().enable_submission_delete {
        return error(StatusCode::BAD_REQUEST, "delete not allowed");
    }
    let fields = match parse_fields(q.get("fields").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let s = match j0.get(&token).await {
        Err(e) => return store_error(e),
        Ok(None) => return not_found_for(&headers),
        Ok(Some(s)) => s,
    };
    if s.status_id == 1 || s.status_id == 2 {
        let name = crate::wire::STATUSES[usize::from(s.status_id) - 1];
        let message = format!("submission cannot be deleted because its status is {} ({name})", s.status_id);
        return error(StatusCode::BAD_REQUEST, &message);
    }
    if let Err(e) = j0.store().remove(&token).await {
        return store_error(e);
    }
    match s.render(&fields, true) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(_) => error(StatusCode::BAD_REQUEST, NOT_UTF8_ONE),
    }
}

fn batch_count_error(n: usize) -> Option<Response> {
    if n == 0 {
        return Some(error(StatusCode::BAD_REQUEST, "there should be at least one submission in a batch"));
    }
    if n > MAX_BATCH {
        let m = format!("number of submissions in a batch should be less than or equal to {MAX_BATCH}");
        return Some(error(StatusCode::BAD_REQUEST, &m));
    }
    None
}

async fn batch_create(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Query(q): Q, body: Bytes) -> Response {
    let Some(params) = params(&headers, &q, &body) else { return empty(StatusCode::BAD_REQUEST) };
    let items: Vec<Map<String, Value>> = match params.get("submissions") {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_object().cloned()).collect(),
        _ => Vec::new(),
    };
    if let Some(r) = batch_count_error(items.len()) {
        return r;
    }
    if !j0.clustered() && j0.queue_full(items.len()) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "queue is full");
    }
    let base64 = flag(&q, "base64_encoded");
    let mut out = Vec::with_capacity(items.len());
    let mut any = false;
    for item in &items {
        match j0.submit(item, base64, false).await {
            Ok((stored, task)) => {
                if let Some(task) = task {
                    tokio::spawn(task);
                }
                any = true;
                out.push(Ordered(vec![("token".into(), Value::String(stored.token))]));
            }
            Err(Refused::Invalid(e)) => out.push(e.to_json()),
            Err(Refused::QueueFull) => return error(StatusCode::SERVICE_UNAVAILABLE, "queue is full"),
            Err(Refused::Store(e)) => return store_error(e),
        }
    }
    let status = if any { StatusCode::CREATED } else { StatusCode::UNPROCESSABLE_ENTITY };
    json_response(status, &out)
}

#[derive(Serialize)]
struct BatchBody {
    submissions: Vec<Option<Ordered>>,
}

async fn batch_get(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Query(q): Q) -> Response {
    let tokens = q
        .get("tokens")
        .cloned()
        .or_else(|| headers.get("tokens").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .unwrap_or_default();
    let tokens: Vec<&str> = tokens.trim().split(',').filter(|t| !t.is_empty()).collect();
    if let Some(r) = batch_count_error(tokens.len()) {
        return r;
    }
    let fields = match parse_fields(q.get("fields").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let base64 = flag(&q, "base64_encoded");
    let mut submissions = Vec::with_capacity(tokens.len());
    for t in tokens {
        match j0.get(t).await {
            Err(e) => return store_error(e),
            Ok(None) => submissions.push(None),
            Ok(Some(s)) => match s.render(&fields, base64) {
                Ok(o) => submissions.push(Some(o)),
                Err(_) => return error(StatusCode::BAD_REQUEST, NOT_UTF8_MANY),
            },
        }
    }
    json_response(StatusCode::OK, &BatchBody { submissions })
}

async fn languages_active(State(j0): State<Arc<Judge0>>) -> Response {
    let mut list: Vec<_> = j0.languages().iter().filter(|l| !l.archived).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let body: Vec<Value> = list.iter().map(|l| json!({"id": l.id, "name": l.name})).collect();
    json_response(StatusCode::OK, &body)
}

async fn languages_all(State(j0): State<Arc<Judge0>>) -> Response {
    let mut list: Vec<_> = j0.languages().iter().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let body: Vec<Ordered> = list
        .iter()
        .map(|l| {
            Ordered(vec![
                ("id".into(), json!(l.id)),
                ("name".into(), json!(l.name)),
                ("is_archived".into(), json!(l.archived)),
            ])
        })
        .collect();
    json_response(StatusCode::OK, &body)
}

async fn language(State(j0): State<Arc<Judge0>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let id = to_i(&id);
    let Some(l) = j0.languages().iter().find(|l| i64::from(l.id) == id) else { return not_found_for(&headers) };
    let spec = l.language.as_ref().filter(|_| l.id != languages::MULTI_FILE).map(|l| &l.spec);
    let body = Ordered(vec![
        ("id".into(), json!(l.id)),
        ("name".into(), json!(l.name)),
        ("is_archived".into(), json!(l.archived)),
        ("source_file".into(), json!(spec.map(|s| s.main.clone()))),
        ("compile_cmd".into(), json!(spec.and_then(|s| s.compile.as_ref()).map(|c| c.join(" ")))),
        ("run_cmd".into(), json!(spec.map(|s| s.run.join(" ")))),
    ]);
    json_response(StatusCode::OK, &body)
}

pub(crate) fn plain(text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from(text)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn to_i_is_rubys() {
        assert_eq!([super::to_i("12abc"), super::to_i("abc"), super::to_i("-3"), super::to_i(" 7")], [12, 0, -3, 7]);
    }
}
