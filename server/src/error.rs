//! The one mapping from everything that can go wrong in a request to an HTTP
//! answer: a status and `{"error": "<readable reason>"}`.

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use natter_shared::ErrorBody;

use crate::auth::{HashError, TokenError};
use crate::blobs::BlobError;
use crate::domain::ValidationError;
use crate::store::StoreError;

/// The refusal of a group change by someone who is not its admin.
pub const NOT_ADMIN: &str = "only the group's admin can do that";

/// Why a request failed. The message is shown to the user as it is, so it
/// says what was wrong with the input and never leaks internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// A service we depend on (the broker, the database) is down for now.
    #[error("{0}")]
    Unavailable(String),
    /// Too many tries of something limited per account (logins): 429, with
    /// how long until the next one as `Retry-After`.
    #[error("{0}")]
    TooManyTries(String, Duration),
    /// A request refused for its form rather than its meaning, with its
    /// status: by the framework before our code saw it (bad JSON, a body
    /// over the limit, a wrong method), or a body too slow to arrive (408).
    #[error("{1}")]
    Rejected(StatusCode, String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyTries(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Rejected(status, _) => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed later as it is: a service we
    /// depend on is down or behind, nothing was wrong with the request.
    pub fn is_temporary(&self) -> bool {
        matches!(self, ApiError::Unavailable(_))
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::BadRequest(reason.into())
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        ApiError::NotFound(reason.into())
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        ApiError::Forbidden(reason.into())
    }

    /// 429 for `reason` (what was done too often), saying when to try
    /// again: "…: try again in 20 minutes", with `Retry-After`.
    pub fn too_many(reason: &str, wait: Duration) -> Self {
        ApiError::TooManyTries(format!("{reason}: try again in {}", in_words(wait)), wait)
    }
}

impl ApiError {
    /// Logs the cause of an internal error: the answer says only "internal
    /// error". Every way an error goes back to a client (an HTTP answer, a
    /// socket's error frame) calls this.
    pub fn log_if_internal(&self) {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::TooManyTries(_, wait) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(whole_seconds(wait)),
            );
        }
        response
    }
}

/// `wait` as a person would say it: "1 second", "45 seconds", "20 minutes".
pub fn in_words(wait: Duration) -> String {
    let seconds = whole_seconds(wait);
    match seconds {
        0..=1 => "1 second".to_owned(),
        2..90 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

/// `wait` in whole seconds, rounded up and at least one: a client told to
/// come back sooner than the time given would only be refused again.
pub fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A token refused: 401, saying why (expired, session ended, not valid).
impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        ApiError::Unauthorized(err.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::BadRequest(err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_temporary() {
            tracing::warn!(error = %err, "the database cannot answer for now");
            return ApiError::Unavailable(
                "the database is unavailable for a moment: try again".into(),
            );
        }
        match err {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::NotMember => {
                ApiError::Forbidden("you are not a member of this chat".into())
            }
            StoreError::NotAdmin => ApiError::Forbidden(NOT_ADMIN.into()),
            StoreError::Invalid(what) => ApiError::BadRequest(what),
            StoreError::Database(cause) => ApiError::Internal(cause.into()),
            // Temporary (`is_temporary`): answered above.
            StoreError::TimedOut => unreachable!("a timed-out query is temporary"),
            StoreError::Migration(cause) => ApiError::Internal(cause.into()),
        }
    }
}

/// A full line for a core: 503, to try again; a failed hash: 500.
impl From<HashError> for ApiError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => ApiError::Unavailable(err.to_string()),
            HashError::Failed(cause) => ApiError::Internal(cause),
        }
    }
}

/// The picture store failing: S3 (or what stands for it) away or slow is
/// for now, as a database away is (503, to try again; the cause is
/// logged). Refused credentials or permissions, or a request the store
/// cannot take, are the deployment's to fix, as the local folder failing is
/// (500, logged as an error): trying again would not help.
impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        use object_store::Error as Store;
        match err {
            BlobError::ObjectStore(
                Store::PermissionDenied { .. }
                | Store::Unauthenticated { .. }
                | Store::NotSupported { .. }
                | Store::NotImplemented { .. }
                | Store::InvalidPath { .. },
            ) => ApiError::Internal(err.into()),
            BlobError::Unanswered | BlobError::ObjectStore(_) => {
                tracing::warn!(error = %err, "the picture store cannot answer for now");
                ApiError::Unavailable(
                    "the picture store is unavailable for a moment: try again".into(),
                )
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

/// axum answers well-formed JSON of the wrong shape with 422; to clients all
/// bad input is 400, whatever stage of parsing caught it.
fn input_status(status: StatusCode) -> StatusCode {
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

/// Rejections from axum's extractors keep the status axum chose (400, 413,
/// 415, 422...) and its explanation, but in our JSON shape.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError::Rejected(input_status(rejection.status()), rejection.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, QueryRejection, PathRejection, MultipartError);
