//! Recording outcomes: completions grouped into one write, failures (retry or dead), releases
//! and deferrals, each guarded by the lease's fencing token.

use std::collections::HashSet;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

use super::{Finished, MAX_COMPLETE, MAX_FREE_RELEASES, Unfinished, Worker};
use crate::error::{Error, Result};
use crate::handler::HandlerError;
use crate::job::{JobId, Outcome};
use crate::queue::Queue;
use crate::store::{AfterFailure, Lease, Store};

impl Worker {
    pub(super) async fn fail(&self, lease: &Lease, failure: HandlerError, elapsed_ms: u64) -> Finished {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let retryable = failure.is_retryable();
        let stored = stored_error(failure.message());
        let message = stored.as_str();
        // A delay the handler named (an HTTP `Retry-After`) replaces the policy's backoff.
        let delay = failure.retry_delay().unwrap_or_else(|| {
            inner
                .config
                .retry
                .delay(lease.attempt(), crate::retry::RetryPolicy::sample())
        });
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let after = self
            .record(|| {
                inner
                    .store
                    .fail(lease, now, message, retryable, retry_at, Outcome::Failed)
            })
            .await;
        match after {
            Ok(AfterFailure::Retry { run_at, priority }) => {
                tracing::warn!(
                    elapsed_ms,
                    error = message,
                    retry_in_ms = delay.as_millis() as u64,
                    "job failed; will retry"
                );
                if let Err(err) = inner
                    .queue
                    .enqueue(lease.id(), &lease.job().queue, priority, run_at, now)
                    .await
                {
                    tracing::warn!(error = %err, "could not schedule the retry in redis; the repairer will");
                }
                Finished::Retried
            }
            Ok(AfterFailure::Dead) => {
                tracing::error!(
                    elapsed_ms,
                    error = message,
                    retryable,
                    "job failed for good; moved to the DLQ"
                );
                if let Err(err) = inner.queue.add_dead(lease.id()).await {
                    tracing::warn!(error = %err, "could not index the dead job in redis");
                }
                Finished::DeadLettered
            }
            Ok(AfterFailure::Cancelled) => cancelled_instead(elapsed_ms, message),
            Err(err) => self.unrecorded(err),
        }
    }

    /// A job whose type this worker cannot run is not its failure: it goes back uncharged, after a
    /// backoff that grows with every claim of it (its lease token), for a worker that has a
    /// handler (a rolling deploy that adds a type, a worker serving other types).
    pub(super) async fn defer_without_handler(&self, lease: &Lease) -> Finished {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let claims = i32::try_from(lease.token()).unwrap_or(i32::MAX).max(1);
        let delay = inner.config.retry.delay(claims, crate::retry::RetryPolicy::sample());
        let run_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let why = stored_error(&format!(
            "no handler registered for job type {:?} on worker {}; left for a worker that has one",
            lease.job().job_type,
            inner.config.worker_id
        ));
        match self.record(|| inner.store.defer(lease, now, run_at, &why)).await {
            Ok(AfterFailure::Retry { run_at, priority }) => {
                tracing::warn!(
                    retry_in_ms = delay.as_millis() as u64,
                    "no handler for this job type here; deferred, not charged"
                );
                if let Err(err) = inner
                    .queue
                    .enqueue(lease.id(), &lease.job().queue, priority, run_at, now)
                    .await
                {
                    tracing::warn!(error = %err, "could not schedule the deferred job; the repairer will");
                }
                Finished::Deferred
            }
            // A job given back is never dead.
            Ok(AfterFailure::Cancelled | AfterFailure::Dead) => cancelled_instead(0, &why),
            Err(err) => self.unrecorded(err),
        }
    }

    pub(super) async fn release(&self, lease: &Lease, unfinished: Unfinished, elapsed_ms: u64) -> Finished {
        let inner = &self.inner;
        if lease.releases() >= MAX_FREE_RELEASES {
            // Given back unfinished too often (a job that outlasts every invocation, say): this time
            // the attempt counts, so the job is retried with backoff or, past its budget, dead.
            let why = format!(
                "stopped unfinished: given back {} times before (a worker shutting down, the end of an invocation, a lease that ran out never renewed); this attempt counts",
                lease.releases()
            );
            return self.fail(lease, HandlerError::retryable(why), elapsed_ms).await;
        }
        let now = inner.store.now().await;
        let why = unfinished.why();
        match self.record(|| inner.store.release(lease, now, &why)).await {
            Ok(AfterFailure::Retry { priority, .. }) => {
                tracing::info!(elapsed_ms, reason = why, "job released unfinished");
                if let Err(err) = inner.queue.push_front(lease.id(), &lease.job().queue, priority).await {
                    tracing::warn!(error = %err, "could not push the released job; the repairer will");
                }
                Finished::Released
            }
            Ok(AfterFailure::Cancelled | AfterFailure::Dead) => cancelled_instead(elapsed_ms, &why),
            Err(err) => self.unrecorded(err),
        }
    }

    pub(super) fn unrecorded(&self, err: Error) -> Finished {
        if let Error::LeaseLost { .. } = err {
            tracing::warn!("lease lost before the outcome was recorded; outcome discarded");
            return Finished::LeaseLost;
        }
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "could not record the outcome; the reaper will retry the job");
        Finished::Unrecorded
    }

    /// Retries a write while Postgres is unreachable, for at most about one lease: after that the
    /// reaper owns the job anyway.
    pub(super) async fn record<T, F, Fut>(&self, mut write: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let give_up_at = Instant::now() + self.inner.config.lease;
        let mut pause = Duration::from_millis(100);
        loop {
            match write().await {
                Err(err) if err.is_database_unavailable() && Instant::now() + pause < give_up_at => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}

/// Records completions in groups: whatever finished while the previous write was in flight goes
/// into the next one, so that under load one commit serves many jobs, and an idle queue waits for
/// nothing.
/// A job that would have run again (retried, released, deferred) but whose cancellation was
/// requested while it ran: it ended `CANCELLED` instead.
fn cancelled_instead(elapsed_ms: u64, why: &str) -> Finished {
    tracing::info!(
        elapsed_ms,
        error = why,
        "job stopped before it could be cancelled at a heartbeat; cancelled as requested, not run again"
    );
    Finished::Cancelled
}

#[derive(Clone)]
pub(super) struct Completer {
    tx: mpsc::UnboundedSender<(JobId, i64, oneshot::Sender<Option<bool>>)>,
}

impl Completer {
    pub(super) fn start(store: Store, queue: Queue) -> (Completer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(JobId, i64, oneshot::Sender<Option<bool>>)>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_COMPLETE).await > 0 {
                let held: Vec<(JobId, i64)> = batch.iter().map(|(id, token, _)| (*id, *token)).collect();
                let flush_started = Instant::now();
                let now = store.now().await;
                match store.complete_many(&held, now).await {
                    Ok(completions) => {
                        tracing::trace!(
                            jobs = held.len(),
                            elapsed_us = flush_started.elapsed().as_micros() as u64,
                            "completions recorded"
                        );
                        push_released(&queue, &completions.released, now).await;
                        let done: HashSet<JobId> = completions.done.into_iter().collect();
                        for (id, _, reply) in batch.drain(..) {
                            let _ = reply.send(Some(done.contains(&id)));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(jobs = batch.len(), error = %err, "grouped completion failed; completing one by one");
                        for (_, _, reply) in batch.drain(..) {
                            let _ = reply.send(None);
                        }
                    }
                }
            }
        });
        (Completer { tx }, task)
    }

    /// `Some(true)` once recorded, `Some(false)` if the lease was lost, `None` if the write failed.
    pub(super) async fn complete(&self, lease: &Lease) -> Option<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((lease.id(), lease.token(), reply)).ok()?;
        answer.await.ok().flatten()
    }
}

/// Pushes the jobs a completion released (children whose last parent it was) to Redis. A failure
/// is left to the repairer, which pushes overdue pending jobs.
pub(super) async fn push_released(queue: &Queue, released: &[crate::store::Ready], now: chrono::DateTime<chrono::Utc>) {
    if released.is_empty() {
        return;
    }
    if let Err(err) = queue.enqueue_many(released, now).await {
        tracing::warn!(jobs = released.len(), error = %err, "children released but not pushed to redis; the repairer will push them");
    }
}

/// The longest error text kept per attempt; a longer one is cut, and says by how much.
pub const MAX_ERROR_BYTES: usize = 4096;

/// A handler's error text as it can be stored: NUL characters (which Postgres text cannot hold)
/// replaced, and cut to [`MAX_ERROR_BYTES`] on a character boundary.
pub fn stored_error(message: &str) -> String {
    let clean = message.replace('\0', "\u{FFFD}");
    if clean.len() <= MAX_ERROR_BYTES {
        return clean;
    }
    let mut end = MAX_ERROR_BYTES - 64;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes cut]", &clean[..end], clean.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_errors_hold_no_nul_and_stay_bounded() {
        assert_eq!(stored_error("plain"), "plain");
        assert_eq!(stored_error("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(10_000);
        let stored = stored_error(&long);
        assert!(stored.len() <= MAX_ERROR_BYTES, "{}", stored.len());
        assert!(stored.ends_with("more bytes cut]"), "{stored}");
    }
}
