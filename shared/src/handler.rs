//! Job handlers: the code that does a job's work, one per job type, and the built-in `TEST` type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

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
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable(message.into())
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent(message.into())
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

    /// The built-in handlers: `TEST`.
    pub fn with_builtins() -> Self {
        Self::new().register("TEST", TestHandler)
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
