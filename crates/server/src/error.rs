//! The one HTTP error type of the server, its conversions from every
//! library's errors, and the JSON body extractor.
//!
//! Client errors carry their message; server errors (5xx) answer a generic
//! sentence and log the details, so no internal state leaks to clients.

use axum::body::Bytes;
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

/// The raw body of a JSON request: the content type is checked (415) and
/// the body read within the size limit (413), with our error shapes. The
/// handler parses the bytes itself, so malformed JSON is its 400 to shape.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let dialect = Dialect::of_path(req.uri().path());
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "requests must be of type application/json",
            )
            .with_dialect(dialect));
        }
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

/// The raw body of a session request (any content type): too large is the
/// workspace quota's 413.
pub struct SessionBody(pub Bytes);

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
