//! The one HTTP error type of the server, and the JSON body extractor.
//!
//! Client errors carry their message; server errors (5xx) answer a generic
//! sentence and log the details, so no internal state leaks to clients.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use evald_proto::{piston, v1};

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

    pub fn piston(mut self) -> ApiError {
        self.dialect = Dialect::Piston;
        self
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
