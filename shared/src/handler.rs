//! Job handlers: the code that does a job's work, one per job type, and the built-in types: `TEST`
//! here, `http` in [`crate::http_job`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::http_job::{HttpHandler, HttpJobConfig};
use crate::job::JobId;

/// What a handler sees of the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: JobId,
    pub job_type: String,
    pub payload: serde_json::Value,
    /// 1 for the first attempt (counted from the last requeue).
    pub attempt: i32,
    pub max_attempts: i32,
    /// The job's own timeout: the engine stops the attempt then, or sooner when this worker
    /// cannot give it that long.
    pub timeout: Duration,
    /// Cancelled when the engine stops this attempt (timeout, lost or unrenewable lease, shutdown),
    /// just before it aborts the handler at its next `.await`. Code that runs long without
    /// awaiting should check `cancel.is_cancelled()` and stop.
    pub cancel: tokio_util::sync::CancellationToken,
    /// The W3C `traceparent` to pass on to what the handler calls: the job's trace (from its
    /// create request) with this attempt's span id; `None` when the job was created without one.
    pub traceparent: Option<String>,
}

/// How a handler failed. The engine, not the handler, decides between retry and the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try (a timeout, a 503, a rate limit): retried with backoff while attempts remain.
    #[error("{0}")]
    Retryable(String),
    /// Never going to work (bad payload, unknown account): straight to the DLQ.
    #[error("{0}")]
    Permanent(String),
    /// Worth another try, no sooner than `after` (an HTTP `Retry-After`): the handler's delay
    /// replaces the backoff policy's, up to [`MAX_RETRY_AFTER`]. Attempts are counted as for
    /// [`HandlerError::Retryable`].
    #[error("{message}")]
    RetryAfter { message: String, after: Duration },
}

/// The longest delay a handler may ask for with [`HandlerError::RetryAfter`]; a longer one is cut
/// to it, so that a server's `Retry-After: 86400` cannot park a job for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable(message.into())
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent(message.into())
    }
    /// Retryable, with the next attempt due `after` from now (at most [`MAX_RETRY_AFTER`]).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        HandlerError::RetryAfter {
            message: message.into(),
            after,
        }
    }

    /// Whether the engine may run the job again (while attempts remain).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, HandlerError::Permanent(_))
    }

    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retryable(m) | HandlerError::Permanent(m) => m,
            HandlerError::RetryAfter { message, .. } => message,
        }
    }

    /// The delay the handler asked for, cut to [`MAX_RETRY_AFTER`]; `None` leaves it to the
    /// backoff policy.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            HandlerError::RetryAfter { after, .. } => Some((*after).min(MAX_RETRY_AFTER)),
            _ => None,
        }
    }
}

/// Runs jobs of one type. A handler may be cancelled at any `.await` (timeout, lost lease,
/// shutdown), and may run more than once for one job (delivery is at-least-once).
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError>;
}

/// Handlers by job type.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in handlers, `TEST` and `http`, the latter with its defaults: no signature,
    /// private addresses refused. A process that reads its configuration uses [`Registry::builtins`].
    pub fn with_builtins() -> Self {
        Self::builtins(&HttpJobConfig::default())
    }

    /// The built-in handlers: `TEST`, and `http` configured by `http`.
    pub fn builtins(http: &HttpJobConfig) -> Self {
        Self::new()
            .register("TEST", TestHandler)
            .register(crate::http_job::JOB_TYPE, HttpHandler::new(http.clone()))
    }

    pub fn register(mut self, job_type: impl Into<String>, handler: impl JobHandler) -> Self {
        self.handlers.insert(job_type.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, job_type: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers.get(job_type).cloned()
    }
}

/// The seed's test job. Payload `"FAIL_TIMES=N"` fails the first N attempts then succeeds;
/// `"FAIL_ALWAYS"` fails every attempt; `"SLEEP_MS=N"` takes N ms then succeeds; anything else succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHandler;

#[async_trait]
impl JobHandler for TestHandler {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let Some(command) = job.payload.as_str() else {
            return Ok(());
        };
        if command == "FAIL_ALWAYS" {
            return Err(HandlerError::retryable("FAIL_ALWAYS: this job always fails"));
        }
        if let Some(n) = command.strip_prefix("FAIL_TIMES=") {
            let n: i32 = n
                .trim()
                .parse()
                .map_err(|_| HandlerError::permanent(format!("FAIL_TIMES needs a whole number, got {n:?}")))?;
            if job.attempt <= n {
                return Err(HandlerError::retryable(format!(
                    "FAIL_TIMES={n}: failing attempt {}",
                    job.attempt
                )));
            }
            return Ok(());
        }
        if let Some(ms) = command.strip_prefix("SLEEP_MS=") {
            let ms: u64 = ms
                .trim()
                .parse()
                .map_err(|_| HandlerError::permanent(format!("SLEEP_MS needs a whole number, got {ms:?}")))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(payload: serde_json::Value, attempt: i32) -> JobContext {
        JobContext {
            id: JobId::new(),
            job_type: "TEST".into(),
            payload,
            attempt,
            max_attempts: 3,
            timeout: Duration::from_secs(300),
            cancel: Default::default(),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn fail_times_fails_the_first_n_attempts_only() {
        let outcomes: Vec<bool> =
            futures::future::join_all((1..=4).map(|attempt| TestHandler.handle(ctx(json!("FAIL_TIMES=2"), attempt))))
                .await
                .into_iter()
                .map(|r| r.is_ok())
                .collect();
        assert_eq!(outcomes, vec![false, false, true, true]);
    }

    #[tokio::test]
    async fn fail_always_is_retryable_and_never_succeeds() {
        for attempt in 1..=5 {
            let err = TestHandler
                .handle(ctx(json!("FAIL_ALWAYS"), attempt))
                .await
                .expect_err("fails");
            assert!(matches!(err, HandlerError::Retryable(_)));
        }
    }

    #[test]
    fn a_handler_named_delay_is_retryable_and_capped() {
        let err = HandlerError::retry_after("503", Duration::from_secs(5));
        assert!(err.is_retryable());
        assert_eq!(err.message(), "503");
        assert_eq!(err.retry_delay(), Some(Duration::from_secs(5)));
        let long = HandlerError::retry_after("503", Duration::from_secs(86_400));
        assert_eq!(long.retry_delay(), Some(MAX_RETRY_AFTER));
        assert_eq!(HandlerError::retryable("x").retry_delay(), None);
        assert!(!HandlerError::permanent("x").is_retryable());
    }

    #[test]
    fn the_builtins_include_http() {
        let registry = Registry::with_builtins();
        assert!(registry.get("TEST").is_some());
        assert!(registry.get("http").is_some());
    }

    #[tokio::test]
    async fn other_payloads_succeed_and_bad_numbers_are_permanent() {
        assert!(TestHandler.handle(ctx(json!("hello"), 1)).await.is_ok());
        assert!(TestHandler.handle(ctx(json!({"a": 1}), 1)).await.is_ok());
        let err = TestHandler
            .handle(ctx(json!("FAIL_TIMES=x"), 1))
            .await
            .expect_err("bad");
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
