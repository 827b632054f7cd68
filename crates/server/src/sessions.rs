//! The HTTP routes of interactive sessions and their WebSocket (the protocol
//! itself lives in `evald_session`; this is its HTTP edge).

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use evald_proto::session::{FileEntry, NewSession, Rename, UpdateSession};
use evald_proto::v1;
use evald_session::client::{Incoming, Transport};
use evald_session::SessionError;
use evald_state::StoredFile;
use serde::Deserialize;

use crate::error::{upgrade_refused, ApiError, Dialect, SessionBody, SessionJson};
use crate::AppState;

/// The session routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", post(create))
        .route("/api/v1/sessions/{id}", get(info).patch(update).delete(remove))
        .route("/api/v1/sessions/{id}/files", get(list))
        .route("/api/v1/sessions/{id}/files/{*path}", get(read).put(write).delete(delete))
        .route("/api/v1/sessions/{id}/rename", post(rename))
        .route("/api/v1/sessions/{id}/ws", get(websocket))
}

async fn create(
    State(state): State<AppState>,
    SessionJson(req): SessionJson<NewSession>,
) -> Result<Response, ApiError> {
    let mut files = Vec::with_capacity(req.files.len());
    for f in req.files {
        let content = match f.encoding.unwrap_or_default() {
            v1::Encoding::Utf8 => f.content.into_bytes(),
            v1::Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|_| SessionError::BadRequest(format!("file {:?} is not valid base64", f.path)))?,
        };
        files.push(StoredFile { path: f.path, content, executable: false });
    }
    let sessions = state.sessions();
    let session = sessions.create(&req.language, files).await?;
    Ok((StatusCode::CREATED, Json(session.info(sessions.config()))).into_response())
}

async fn info(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sessions = state.sessions();
    let s = sessions.get(&id).await?;
    Ok(Json(s.info(sessions.config())).into_response())
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SessionJson(req): SessionJson<UpdateSession>,
) -> Result<Response, ApiError> {
    let sessions = state.sessions();
    let s = sessions.set_language(&id, &req.language).await?;
    Ok(Json(s.info(sessions.config())).into_response())
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sessions = state.sessions();
    sessions.get(&id).await?;
    sessions.remove(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let entries = state.sessions().list_files(&id).await?;
    let list: Vec<FileEntry> =
        entries.into_iter().map(|e| FileEntry { path: e.path, size: e.size, is_dir: e.is_dir }).collect();
    Ok(Json(list).into_response())
}

async fn read(State(state): State<AppState>, Path((id, path)): Path<(String, String)>) -> Result<Response, ApiError> {
    let bytes = state.sessions().read_file(&id, path).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn write(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    SessionBody(bytes): SessionBody,
) -> Result<Response, ApiError> {
    state.sessions().write_file(&id, path, bytes.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(State(state): State<AppState>, Path((id, path)): Path<(String, String)>) -> Result<Response, ApiError> {
    state.sessions().delete_file(&id, path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SessionJson(req): SessionJson<Rename>,
) -> Result<Response, ApiError> {
    state.sessions().rename_file(&id, req.from, req.to).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct WsQuery {
    last_seq: Option<u64>,
}

async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::from(SessionError::BadRequest(e.body_text())).into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => return upgrade_refused(r, Dialect::Native).into_response(),
    };
    let sessions = state.sessions().clone();
    let session = sessions.get(&id).await.ok();
    let last_seq = q.last_seq.unwrap_or(0);
    // Small buffers: a connected but idle client should cost little memory
    // (the defaults reserve 128 KiB per connection); client messages are
    // keystrokes and commands.
    let upgrade =
        upgrade.read_buffer_size(4096).write_buffer_size(4096).max_message_size(1 << 20).max_frame_size(1 << 20);
    upgrade.on_upgrade(move |socket| evald_session::client::serve(sessions, session, last_seq, Socket(socket)))
}

/// A session client's WebSocket as the session protocol's transport.
struct Socket(WebSocket);

impl Transport for Socket {
    async fn send(&mut self, text: &str) -> bool {
        self.0.send(Message::Text(text.into())).await.is_ok()
    }

    async fn recv(&mut self) -> Incoming {
        match self.0.recv().await {
            Some(Ok(Message::Text(t))) => Incoming::Text(t.to_string()),
            Some(Ok(Message::Binary(_))) => Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Ping,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Incoming::Closed,
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = self.0.send(Message::Close(Some(frame))).await;
    }
}
