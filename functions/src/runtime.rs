//! Serving a handler through the Lambda Runtime API, and keeping it served.
//!
//! `lambda_runtime` ends (or panics, when the answer lacks a request id) as soon as the Runtime
//! API answers a `next` poll with anything but an invocation. AWS's Runtime API never does: it
//! holds the poll open, freezing the sandbox, until an invocation comes. Emulators do:
//! `cargo lambda watch --timeout N` ends every idle poll with an empty `408` after N seconds, and
//! answers its own `500` when it cannot convert a request. A function process that dies there is
//! never started again, so every later request to its route hangs.
//!
//! [`serve_http`] and [`serve_events`] therefore run the runtime under a supervisor that starts it
//! again when it stops. Nothing is lost by that: a poll that did not return an invocation carried
//! none, and handler panics never reach it (the runtime turns those into an error response). A
//! runtime that keeps failing at once (5 times in a row, each within a second of its start) is a
//! broken environment, not an idle one: the process then exits, and
//! Lambda replaces the sandbox.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use lambda_http::{Body, Request, Response};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::encoding;

/// When to give up restarting.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// A runtime that stops sooner than this after it started counts as a quick failure.
    quick: Duration,
    /// This many quick failures in a row end the process.
    max_quick_failures: u32,
}

const POLICY: Policy = Policy {
    quick: Duration::from_secs(1),
    max_quick_failures: 5,
};

/// The error a Lambda runtime loop ends with.
pub type Error = lambda_runtime::Error;

/// Serves an HTTP handler (API Gateway events) until the process is stopped, compressing its
/// answers for clients that accept gzip ([`encoding`]).
pub async fn serve_http<H, F>(handler: H) -> Result<(), Error>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    supervise(
        move || {
            let handler = handler.clone();
            lambda_http::run(lambda_http::service_fn(move |req: Request| {
                let gzip = encoding::accepts_gzip(req.headers());
                let response = handler(req);
                async move { Ok::<_, Infallible>(encoding::negotiate(gzip, response.await)) }
            }))
        },
        POLICY,
    )
    .await
}

/// Serves a handler of plain Lambda events (the worker function) until the process is stopped.
pub async fn serve_events<H, F, E, R, D>(handler: H) -> Result<(), Error>
where
    H: Fn(LambdaEvent<E>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<R, D>> + Send + 'static,
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    D: Into<Diagnostic> + std::fmt::Debug + Send + 'static,
{
    supervise(
        move || {
            let handler = handler.clone();
            lambda_runtime::run(lambda_runtime::service_fn(handler))
        },
        POLICY,
    )
    .await
}

/// Starts the runtime with `start`, and again whenever it stops, until it fails quickly
/// `policy.max_quick_failures` times in a row.
async fn supervise<S, F>(mut start: S, policy: Policy) -> Result<(), Error>
where
    S: FnMut() -> F,
    F: Future<Output = Result<(), Error>>,
{
    let mut quick_failures = 0u32;
    loop {
        let started = Instant::now();
        // The runtime is polled here, in this task: its future is not `Send`.
        let why = match AssertUnwindSafe(start()).catch_unwind().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => Stop::Error(err),
            Err(payload) => Stop::Panic(panic_message(payload)),
        };
        if started.elapsed() < policy.quick {
            quick_failures += 1;
        } else {
            quick_failures = 0;
        }
        if quick_failures >= policy.max_quick_failures {
            tracing::error!(stopped = %why, quick_failures, "the Lambda runtime keeps stopping at once; exiting");
            return Err(why.into_error());
        }
        if why.is_idle_poll_ended() {
            // The emulator ended an idle poll (see the module docs): expected there, so quiet.
            tracing::debug!(stopped = %why, "the Runtime API answered a poll without an invocation; polling again");
        } else {
            tracing::warn!(stopped = %why, "the Lambda runtime stopped; starting it again");
        }
        // Back off only while it keeps failing at once.
        tokio::time::sleep(Duration::from_millis(50) * quick_failures.pow(2)).await;
    }
}

/// Why a runtime loop stopped.
enum Stop {
    Error(Error),
    Panic(String),
}

/// What `lambda_runtime` panics with when a `next` answer carries no invocation.
pub const NO_REQUEST_ID_PANIC: &str = "missing lambda-runtime-aws-request-id header";

impl Stop {
    fn is_idle_poll_ended(&self) -> bool {
        matches!(self, Stop::Panic(msg) if msg == NO_REQUEST_ID_PANIC)
    }

    fn into_error(self) -> Error {
        match self {
            Stop::Error(err) => err,
            Stop::Panic(msg) => format!("the Lambda runtime panicked: {msg}").into(),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Error(err) => write!(f, "error: {err}"),
            Stop::Panic(msg) => write!(f, "panic: {msg}"),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(msg) => *msg,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(msg) => (*msg).to_owned(),
            Err(_) => "(not a string)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const TEST_POLICY: Policy = Policy {
        quick: Duration::from_millis(100),
        max_quick_failures: 3,
    };

    #[tokio::test]
    async fn a_runtime_that_panics_is_started_again() {
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let result = supervise(
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                (async move {
                    tokio::time::sleep(TEST_POLICY.quick * 2).await;
                    if n < 3 {
                        panic!("{}", NO_REQUEST_ID_PANIC);
                    }
                    Ok(())
                })
                .boxed()
            },
            TEST_POLICY,
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_runtime_that_fails_at_once_every_time_ends_the_process() {
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let result = supervise(
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), Error>("connection refused".into()) }
            },
            TEST_POLICY,
        )
        .await;
        let err = result.expect_err("gives up");
        assert_eq!(err.to_string(), "connection refused");
        assert_eq!(starts.load(Ordering::SeqCst), TEST_POLICY.max_quick_failures);
    }

    #[tokio::test]
    async fn quick_failures_are_counted_only_in_a_row() {
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let result = supervise(
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                (async move {
                    match n {
                        // Alternating quick and slow failures never add up to the limit.
                        0..=7 if n.is_multiple_of(2) => Err::<(), Error>("quick".into()),
                        0..=7 => {
                            tokio::time::sleep(TEST_POLICY.quick * 2).await;
                            Err("slow".into())
                        }
                        _ => Ok(()),
                    }
                })
                .boxed()
            },
            TEST_POLICY,
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 9);
    }
}
