//! The one table from errors to HTTP responses. Every error body is
//! `{"error": {"code": "<snake_case>", "message": "<what is wrong>"}}`; a 5xx never says more than
//! "internal error" (or that the service is unavailable), and its cause is logged here, once.

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use jobq_shared::Error;
use jobq_shared::state::Event;
use lambda_http::{Body, Response};
use serde::Serialize;

/// The largest request body accepted: 256 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Everything a request can fail with: bad input found while parsing it, or what `shared` returned.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    #[error("this token can read but not act; use the API token to create, cancel, requeue or act in bulk")]
    Forbidden,
    #[error("this route accepts {allowed} only")]
    MethodNotAllowed { allowed: Method },
    /// For a route that several methods share: `allowed` lists them (`GET, PUT, DELETE`).
    #[error("this route accepts {allowed} only")]
    MethodsNotAllowed { allowed: &'static str },
    #[error("the request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes (256 KiB)")]
    BodyTooLarge { size: usize },
    #[error("content type {content_type:?} is not supported; send the header Content-Type: application/json{hint}")]
    UnsupportedMediaType { content_type: String, hint: &'static str },
    #[error("the request body is empty; send a JSON object")]
    EmptyBody,
    #[error("the request body is not valid JSON: {detail}")]
    InvalidJson { detail: String },
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("field {field:?} has the wrong type: {detail}")]
    WrongType { field: String, detail: String },
    #[error("field {field:?} is not valid: {detail}")]
    InvalidValue { field: String, detail: String },
    #[error("field {field:?} is required")]
    MissingField { field: String },
    #[error("unknown field {field:?}")]
    UnknownField { field: String },
    #[error("header {name} is not valid text")]
    InvalidHeader { name: &'static str },
    #[error("{value:?} is not a valid job id (a UUID)")]
    InvalidUuid { value: String },
    #[error("{value:?} is not a valid operation id (a UUID)")]
    InvalidOperationId { value: String },
    #[error("schedule {name:?} not found")]
    ScheduleNotFound { name: String },
    #[error("operation {id} not found")]
    OperationNotFound { id: uuid::Uuid },
    #[error("{value:?} is not a valid queue name: 1 to {max} characters", max = jobq_shared::job::limits::MAX_QUEUE_LEN)]
    InvalidQueueName { value: String },
    #[error("query parameter {name:?} is not valid: {detail}")]
    InvalidParameter { name: &'static str, detail: String },
    #[error("unknown query parameter {name:?}; this route takes {known}")]
    UnknownParameter { name: String, known: &'static str },
    #[error("limit must be a whole number from 1 to {max}, got {value:?}")]
    InvalidLimit { value: String, max: usize },
    #[error("jobs: send from 1 to {max} jobs in one call, got {count}")]
    BatchSize { count: usize, max: usize },
    /// One job of a batch is wrong; nothing of the batch was stored.
    #[error("jobs[{index}]: {source}")]
    InBatch { index: usize, source: Box<ApiError> },
    #[error(transparent)]
    Domain(#[from] Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    /// For a create whose outcome is unknown: the ids the jobs were stored under, if they were.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    job_ids: &'a [jobq_shared::JobId],
}

impl ApiError {
    /// The status and the machine-readable code of this error: the table itself.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::MethodNotAllowed { .. } | ApiError::MethodsNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::EmptyBody | ApiError::InvalidJson { .. } => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::NotAnObject | ApiError::WrongType { .. } => (StatusCode::BAD_REQUEST, "wrong_type"),
            ApiError::UnknownField { .. } => (StatusCode::BAD_REQUEST, "unknown_field"),
            ApiError::MissingField { .. } => (StatusCode::BAD_REQUEST, "missing_field"),
            ApiError::InvalidValue { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header"),
            ApiError::InvalidUuid { .. } => (StatusCode::BAD_REQUEST, "invalid_uuid"),
            ApiError::InvalidQueueName { .. } => (StatusCode::BAD_REQUEST, "invalid_queue_name"),
            ApiError::InvalidOperationId { .. } => (StatusCode::BAD_REQUEST, "invalid_uuid"),
            ApiError::OperationNotFound { .. } | ApiError::ScheduleNotFound { .. } => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::UnknownParameter { .. } => (StatusCode::BAD_REQUEST, "unknown_parameter"),
            ApiError::InvalidLimit { .. } => (StatusCode::BAD_REQUEST, "invalid_limit"),
            ApiError::BatchSize { .. } => (StatusCode::BAD_REQUEST, "invalid_batch"),
            ApiError::InBatch { source, .. } => source.status_and_code(),
            ApiError::Domain(err) => match err {
                Error::Invalid(invalid) if invalid.missing => (StatusCode::BAD_REQUEST, "missing_field"),
                Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
                Error::InvalidFilter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
                Error::InvalidSchedule(invalid) if invalid.field == "name" => {
                    (StatusCode::BAD_REQUEST, "invalid_schedule_name")
                }
                Error::InvalidSchedule(invalid) if invalid.missing => (StatusCode::BAD_REQUEST, "missing_field"),
                Error::InvalidSchedule(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
                Error::InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
                Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                Error::UnknownParents(_) => (StatusCode::BAD_REQUEST, "unknown_dependency"),
                Error::IdempotencyConflict { .. } => (StatusCode::CONFLICT, "idempotency_conflict"),
                Error::InvalidTransition { source, .. } if source.event == Event::Requeue => {
                    (StatusCode::CONFLICT, "not_dead")
                }
                Error::InvalidTransition { source, .. } if source.event == Event::Cancel => {
                    (StatusCode::CONFLICT, "not_cancellable")
                }
                Error::InvalidTransition { .. } => (StatusCode::CONFLICT, "invalid_transition"),
                Error::InDoubt { jobs, .. } if !jobs.is_empty() => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
                err if err.is_database_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }

    /// The sentence shown to the caller. For a 5xx it reveals nothing of the cause.
    pub fn message(&self, status: StatusCode) -> String {
        if let ApiError::Domain(Error::InDoubt { jobs, .. }) = self
            && !jobs.is_empty()
        {
            let what = match jobs.as_slice() {
                [one] => format!("the job may have been stored as {one}: GET /jobs/{one} tells"),
                _ => "the jobs may have been stored under the ids in jobIds: GET /jobs/{id} tells".to_owned(),
            };
            return format!(
                "the database did not confirm in time; {what}. A retry with the same Idempotency-Key is safe; without one it may store the job twice"
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return "the service is temporarily unavailable; try again shortly".to_owned();
        }
        if status.is_server_error() {
            return "internal error".to_owned();
        }
        match self {
            ApiError::Domain(Error::Invalid(invalid)) => format!("field {:?} {}", invalid.field, invalid.problem),
            ApiError::Domain(Error::InvalidSchedule(invalid)) if invalid.field == "name" => invalid.problem.clone(),
            ApiError::Domain(Error::InvalidSchedule(invalid)) => {
                format!("field {:?} {}", invalid.field, invalid.problem)
            }
            ApiError::InBatch { index, source } => format!("jobs[{index}]: {}", source.message(status)),
            ApiError::Domain(Error::InvalidFilter(invalid)) => {
                format!("query parameter {:?} {}", invalid.parameter, invalid.problem)
            }
            ApiError::Domain(Error::InvalidCursor) => {
                "cursor is not valid; pass the nextCursor of a previous page unchanged".to_owned()
            }
            ApiError::Domain(Error::InvalidTransition { job_id, status, source }) if source.event == Event::Requeue => {
                format!("job {job_id} is {status}; only a dead (FAILED) job can be requeued")
            }
            ApiError::Domain(Error::InvalidTransition { job_id, status, source }) if source.event == Event::Cancel => {
                format!("job {job_id} is {status}; only a PENDING, BLOCKED or IN_PROGRESS job can be cancelled")
            }
            other => other.to_string(),
        }
    }

    /// The response for this error; logs the cause of a 5xx.
    pub fn into_response(self) -> Response<Body> {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            let chain = error_chain(&self);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(status = status.as_u16(), error = %chain, "database unavailable");
            } else {
                tracing::error!(status = status.as_u16(), error = %chain, "request failed");
            }
        }
        // A message may quote the input (a wrong-typed value, say): never more than an excerpt.
        let message = excerpt(&self.message(status), MAX_MESSAGE_CHARS);
        let mut response = json_response(
            status,
            &ErrorBody {
                error: ErrorDetail {
                    code,
                    message: &message,
                    job_ids: match &self {
                        ApiError::Domain(Error::InDoubt { jobs, .. }) => jobs,
                        _ => &[],
                    },
                },
            },
        );
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::MethodNotAllowed { allowed } => {
                if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
                    headers.insert(ALLOW, value);
                }
            }
            ApiError::MethodsNotAllowed { allowed } => {
                headers.insert(ALLOW, HeaderValue::from_static(allowed));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// `err: its source: its source's source ...`, for the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        chain.push_str(": ");
        chain.push_str(&next.to_string());
        source = next.source();
    }
    chain
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        Err(err) => {
            tracing::error!(error = %err, "response did not serialize");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":{"code":"internal","message":"internal error"}}"#.to_owned(),
            )
        }
    };
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response for a handler's outcome.
pub fn respond(outcome: Result<Response<Body>, ApiError>) -> Response<Body> {
    outcome.unwrap_or_else(ApiError::into_response)
}

/// The longest error message a response carries, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `text` cut to `max` characters, saying how much was left out.
fn excerpt(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", total - max)
}

#[cfg(test)]
mod excerpt_tests {
    use super::excerpt;

    #[test]
    fn long_messages_are_cut_to_an_excerpt() {
        assert_eq!(excerpt("short", 10), "short");
        let cut = excerpt(&"x".repeat(100_000), 300);
        assert!(cut.starts_with(&"x".repeat(300)));
        assert!(cut.ends_with("… (99700 more characters)"), "{cut}");
    }
}
