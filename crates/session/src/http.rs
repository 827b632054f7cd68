//! HTTP routes of sessions and their files.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::{blocking, Manager, SessionError, StoredFile};

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            SessionError::NotFound => (StatusCode::NOT_FOUND, "session_not_found"),
            SessionError::FileNotFound => (StatusCode::NOT_FOUND, "file_not_found"),
            SessionError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            SessionError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            SessionError::UnknownLanguage(_) => (StatusCode::BAD_REQUEST, "unknown_language"),
            SessionError::Quota(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            SessionError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            SessionError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"),
            SessionError::Internal(detail) => {
                tracing::error!(detail, "session request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        let mut resp = (status, Json(json!({"error": {"code": code, "message": self.to_string()}}))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        resp
    }
}

/// A request body, or the reason it could not be read (too large: 413).
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

impl From<axum::extract::rejection::BytesRejection> for SessionError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            SessionError::Quota("the request body is larger than the server accepts".into())
        } else {
            SessionError::BadRequest(e.body_text())
        }
    }
}

/// The session routes, to be merged into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>(manager: Arc<Manager>) -> Router<S> {
    Router::new()
        .route("/api/v1/sessions", post(create))
        .route("/api/v1/sessions/{id}", get(info).patch(update).delete(remove))
        .route("/api/v1/sessions/{id}/files", get(list))
        .route("/api/v1/sessions/{id}/files/{*path}", get(read).put(write).delete(delete))
        .route("/api/v1/sessions/{id}/rename", post(rename))
        .route("/api/v1/sessions/{id}/ws", get(websocket))
        .with_state(manager)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFile {
    path: String,
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    language: String,
    #[serde(default)]
    files: Vec<NewFile>,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, SessionError> {
    serde_json::from_slice(bytes).map_err(|e| SessionError::BadRequest(format!("invalid JSON body: {e}")))
}

async fn create(State(m): State<Arc<Manager>>, bytes: Body) -> Result<Response, SessionError> {
    let bytes = bytes?;
    let req: NewSession = body(&bytes)?;
    let mut files = Vec::with_capacity(req.files.len());
    for f in req.files {
        let content = match f.encoding.as_deref() {
            None | Some("utf8") => f.content.into_bytes(),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|_| SessionError::BadRequest(format!("file {:?} is not valid base64", f.path)))?,
            Some(other) => return Err(SessionError::BadRequest(format!("unknown encoding {other:?}"))),
        };
        if files.iter().any(|g: &StoredFile| g.path == f.path) {
            return Err(SessionError::BadPath(format!("duplicate file {:?}", f.path)));
        }
        files.push(StoredFile { path: f.path, content, executable: false });
    }
    let session = m.create(&req.language, files).await?;
    Ok((StatusCode::CREATED, Json(session.info(&m.config))).into_response())
}

async fn info(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Result<Response, SessionError> {
    let s = m.get(&id).await?;
    Ok(Json(s.info(&m.config)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    language: String,
}

async fn update(State(m): State<Arc<Manager>>, Path(id): Path<String>, bytes: Body) -> Result<Response, SessionError> {
    let bytes = bytes?;
    let req: Update = body(&bytes)?;
    let s = m.get(&id).await?;
    let lang = m.engine.resolve(&req.language, None).ok_or(SessionError::UnknownLanguage(req.language))?;
    let meta = crate::Meta { language: lang.spec.id.clone(), touched: crate::now_secs() };
    if let Ok(mut inner) = s.inner.lock() {
        inner.language = lang;
    }
    let store = m.store.clone();
    let sid = s.id.clone();
    blocking(move || store.set_meta(&sid, &meta)).await?;
    Ok(Json(s.info(&m.config)).into_response())
}

async fn remove(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Result<Response, SessionError> {
    m.get(&id).await?;
    m.remove(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Result<Response, SessionError> {
    let s = m.get(&id).await?;
    let max = m.config.max_files * 4;
    let entries = blocking(move || s.workspace.list(max).map_err(std::io::Error::other)).await?;
    let list: Vec<_> = entries.iter().map(|e| json!({"path": e.path, "size": e.size, "is_dir": e.is_dir})).collect();
    Ok(Json(list).into_response())
}

fn check(path: &str) -> Result<(), SessionError> {
    evald_proto::path::check_relative_path(path).map_err(|e| SessionError::BadPath(e.to_string()))
}

fn workspace_error(e: evald_sandbox::WorkspaceError) -> std::io::Error {
    match e {
        evald_sandbox::WorkspaceError::NotFound { .. } => std::io::Error::from(std::io::ErrorKind::NotFound),
        evald_sandbox::WorkspaceError::Path(p) => std::io::Error::new(std::io::ErrorKind::InvalidInput, p.to_string()),
        evald_sandbox::WorkspaceError::NotAFile { path } => {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{path} is not a regular file"))
        }
        other => std::io::Error::other(other.to_string()),
    }
}

async fn read(
    State(m): State<Arc<Manager>>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, SessionError> {
    check(&path)?;
    let s = m.get(&id).await?;
    let max = m.config.disk_bytes;
    let bytes = blocking(move || s.workspace.read_file(&path, max).map_err(workspace_error)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn write(
    State(m): State<Arc<Manager>>,
    Path((id, path)): Path<(String, String)>,
    bytes: Body,
) -> Result<Response, SessionError> {
    let bytes = bytes?;
    check(&path)?;
    let s = m.get(&id).await?;
    let (max_files, disk) = (m.config.max_files, m.config.disk_bytes);
    let s2 = s.clone();
    let p2 = path.clone();
    let len = bytes.len() as u64;
    // Quota: the other files plus this one.
    blocking(move || {
        let entries = s2.workspace.list(max_files * 4).map_err(std::io::Error::other)?;
        let others: Vec<_> = entries.iter().filter(|e| !e.is_dir && e.path != p2).collect();
        let used: u64 = others.iter().map(|e| e.size).sum();
        if others.len() + 1 > max_files || used + len > disk {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "quota"));
        }
        Ok(())
    })
    .await
    .map_err(|e| match e {
        SessionError::Internal(_) => {
            SessionError::Quota(format!("a workspace holds at most {max_files} files and {disk} bytes"))
        }
        other => other,
    })?;
    let store = m.store.clone();
    let sid = s.id.clone();
    let file = StoredFile { path: path.clone(), content: bytes.to_vec(), executable: false };
    // Stored first: the write is acknowledged only once it is durable.
    blocking(move || {
        store.put(&sid, &file)?;
        s.workspace.write_file(&file.path, &file.content, false).map_err(workspace_error)
    })
    .await?;
    notify_files(&m, &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(
    State(m): State<Arc<Manager>>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, SessionError> {
    check(&path)?;
    let s = m.get(&id).await?;
    let store = m.store.clone();
    let sid = s.id.clone();
    blocking(move || {
        s.workspace.remove(&path).map_err(workspace_error)?;
        match store.delete(&sid, &path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    })
    .await?;
    notify_files(&m, &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    from: String,
    to: String,
}

async fn rename(State(m): State<Arc<Manager>>, Path(id): Path<String>, bytes: Body) -> Result<Response, SessionError> {
    let bytes = bytes?;
    let req: Rename = body(&bytes)?;
    check(&req.from)?;
    check(&req.to)?;
    let s = m.get(&id).await?;
    let store = m.store.clone();
    let sid = s.id.clone();
    blocking(move || {
        s.workspace.rename(&req.from, &req.to).map_err(workspace_error)?;
        store.rename(&sid, &req.from, &req.to)
    })
    .await?;
    notify_files(&m, &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn notify_files(m: &Arc<Manager>, id: &str) {
    if let Ok(s) = m.get(id).await {
        let max = m.config.max_files * 4;
        let s2 = s.clone();
        if let Ok(entries) = blocking(move || s2.workspace.list(max).map_err(std::io::Error::other)).await {
            let list: Vec<_> =
                entries.iter().map(|e| json!({"path": e.path, "size": e.size, "is_dir": e.is_dir})).collect();
            s.emit(json!({"type": "files", "files": list}));
        }
    }
}

#[derive(Deserialize)]
struct WsQuery {
    last_seq: Option<u64>,
}

async fn websocket(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let session = m.get(&id).await.ok();
    let last_seq = q.last_seq.unwrap_or(0);
    // Small buffers: a connected but idle client should cost little memory
    // (the defaults reserve 128 KiB per connection); client messages are
    // keystrokes and commands.
    let upgrade =
        upgrade.read_buffer_size(4096).write_buffer_size(4096).max_message_size(1 << 20).max_frame_size(1 << 20);
    upgrade.on_upgrade(move |socket| crate::ws::serve(m, session, last_seq, socket))
}
