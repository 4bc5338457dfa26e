//! Errors: what the server answers (`{"error": ...}` with a 4xx/5xx status) and what
//! stops it from starting.

use std::any::Any;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("allowed directory {}: {source}", path.display())]
    AllowDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("allowed directory {} is not a directory", .0.display())]
    AllowNotDir(PathBuf),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400: a query value or body field is invalid.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 403: a path outside the allowed roots.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 409: a job is already running.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 500: the job thread died.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<dhurandhar::Error> for ApiError {
    /// A facade error is the caller's input (an option, a file's content): 400, with the
    /// facade's message, which names the field or the file. Cancellation is 409.
    fn from(e: dhurandhar::Error) -> Self {
        match e.root() {
            dhurandhar::Error::Cancelled => Self::busy("cancelled"),
            _ => Self::bad(e.to_string()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(e.status(), format!("invalid query: {}", e.body_text()))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::new(e.status(), format!("invalid body: {}", e.body_text()))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        eprintln!("dhurandhar serve: a job thread failed: {e}");
        Self::internal("internal error: the job failed (see the server log)")
    }
}

/// The 500 answer of a handler that panicked (the panic hook has already printed the
/// message and, with `RUST_BACKTRACE=1`, the backtrace).
pub(crate) fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string());
    eprintln!("dhurandhar serve: a handler panicked: {what}");
    ApiError::internal("internal error: the handler panicked (see the server log)").into_response()
}
