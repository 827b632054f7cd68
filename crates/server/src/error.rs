//! The one HTTP error type of the server, its conversions from every
//! library's errors, and the JSON body extractor.
//!
//! Client errors carry their message; server errors (5xx) answer a generic
//! sentence and log the details, so no internal state leaks to clients.

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use evald_engine::{EngineError, Refusal};
use evald_proto::{piston, v1};
use evald_session::SessionError;
use evald_state::StateError;

/// Which API's error shape to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"code", "message"}}`
    Native,
    /// `{"message"}`
    Piston,
}

impl Dialect {
    /// The dialect of a request path.
    pub fn of_path(path: &str) -> Dialect {
        if path.starts_with("/api/v2/") {
            Dialect::Piston
        } else {
            Dialect::Native
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub dialect: Dialect,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), dialect: Dialect::Native, headers: Vec::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 500 whose details go to the log only.
    pub fn internal(details: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %details, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn piston(self) -> ApiError {
        self.with_dialect(Dialect::Piston)
    }

    pub fn with_dialect(mut self, dialect: Dialect) -> ApiError {
        self.dialect = dialect;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.headers.push((header::RETRY_AFTER, HeaderValue::from(seconds)));
        self
    }

    pub fn header(mut self, name: &'static str, value: u64) -> ApiError {
        self.headers.push((HeaderName::from_static(name), HeaderValue::from(value)));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.dialect {
            Dialect::Native => serde_json::to_value(v1::ErrorBody::new(self.code, self.message)),
            Dialect::Piston => serde_json::to_value(piston::Message { message: self.message }),
        }
        .unwrap_or_default();
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match &r {
            Refusal::TooLarge { .. } => ApiError::bad_request("memory_budget", r.to_string()),
            Refusal::QueueFull => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", r.to_string()).retry_after(1)
            }
            Refusal::Timeout => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", r.to_string()).retry_after(5)
            }
            Refusal::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", r.to_string()).retry_after(5)
            }
            // New work on a draining node: 503, retry (elsewhere) at once.
            Refusal::Draining => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", r.to_string()).retry_after(1)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the sandbox is busy; retry later")
                    .retry_after(1)
            }
            EngineError::Sandbox(_) | EngineError::Start(_) | EngineError::NoSandbox => ApiError::internal(e),
            EngineError::PathConflict(c) => ApiError::new(StatusCode::CONFLICT, "path_conflict", c.to_string()),
            other => ApiError::bad_request("invalid_job", other.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let (status, code) = match &e {
            SessionError::NotFound => (StatusCode::NOT_FOUND, "session_not_found"),
            SessionError::FileNotFound => (StatusCode::NOT_FOUND, "file_not_found"),
            SessionError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            SessionError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            SessionError::UnknownLanguage(_) => (StatusCode::BAD_REQUEST, "unknown_language"),
            SessionError::Quota(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            SessionError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            SessionError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"),
            SessionError::Conflict(_) => (StatusCode::CONFLICT, "path_conflict"),
            SessionError::Internal(detail) => return ApiError::internal(format!("session request failed: {detail}")),
        };
        let error = ApiError::new(status, code, e.to_string());
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after(5)
        } else {
            error
        }
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the shared state is unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                "the shared state is unavailable; retry later",
            )
            .retry_after(5)
        } else {
            ApiError::internal(e)
        }
    }
}

/// The answer to a request to a WebSocket route that is not a WebSocket
/// handshake: 426 with `Upgrade: websocket` for a plain request, 405 for
/// another method than GET, 400 `bad_handshake` for a broken handshake.
pub fn upgrade_refused(rejection: WebSocketUpgradeRejection, dialect: Dialect) -> ApiError {
    use WebSocketUpgradeRejection as R;
    let error = match rejection {
        R::InvalidConnectionHeader(_) | R::InvalidUpgradeHeader(_) | R::ConnectionNotUpgradable(_) => {
            let mut e =
                ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", "a WebSocket upgrade is required");
            e.headers.push((header::UPGRADE, HeaderValue::from_static("websocket")));
            e
        }
        R::MethodNotGet(_) => {
            let mut e =
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "a WebSocket opens with GET");
            e.headers.push((header::ALLOW, HeaderValue::from_static("GET")));
            e
        }
        other => ApiError::bad_request("bad_handshake", other.body_text().to_lowercase()),
    };
    error.with_dialect(dialect)
}

/// The raw body of a JSON request: the content type is checked (415) and
/// the body read within the size limit (413), with our error shapes. The
/// handler parses the bytes itself, so malformed JSON is its 400 to shape.
pub struct JsonBody(pub Bytes);

/// 415 unless the request says its body is JSON.
fn require_json(req: &Request) -> Result<(), ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "requests must be of type application/json",
    )
    .with_dialect(Dialect::of_path(req.uri().path())))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let dialect = Dialect::of_path(req.uri().path());
        require_json(&req)?;
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(JsonBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the configured maximum",
            )
            .with_dialect(dialect)),
            Err(e) => {
                Err(ApiError::bad_request("invalid_body", format!("could not read the body: {e}"))
                    .with_dialect(dialect))
            }
        }
    }
}

/// The raw body of a session request (a file's bytes, any content type):
/// too large is the workspace quota's 413.
pub struct SessionBody(pub Bytes);

/// The JSON body of a session request, read strictly
/// ([`evald_proto::json`]): 415 unless it is JSON, 413 (the quota's) when
/// too large, 400 `bad_request` when malformed.
pub struct SessionJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for SessionJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(&req)?;
        let SessionBody(bytes) = SessionBody::from_request(req, state).await?;
        evald_proto::json::from_slice(&bytes)
            .map(SessionJson)
            .map_err(|e| SessionError::BadRequest(format!("invalid JSON body: {e}")).into())
    }
}

impl<S: Send + Sync> FromRequest<S> for SessionBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(SessionBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(SessionError::Quota("the request body is larger than the server accepts".into()).into())
            }
            Err(e) => Err(SessionError::BadRequest(e.body_text()).into()),
        }
    }
}
