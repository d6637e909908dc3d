//! Running one claimed job: its handler under its timeout, the lease renewed beside it, the
//! handler stopped when the lease can no longer be trusted; then its outcome handed to be recorded.

use crate::trace::TraceParent;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::complete::Completer;
use super::{Finished, Slot, Unfinished, Verdict, Worker, fence_margin};
use crate::error::{Error, Result};
use crate::handler::{HandlerError, JobContext};
use crate::metrics::{Metrics, metrics};
use crate::store::Lease;

impl Worker {
    /// Runs one claimed job to its recorded outcome.
    pub(super) async fn execute(
        &self,
        lease: Lease,
        claim_sent: Instant,
        hard_stop: CancellationToken,
        slot: Slot,
        completer: Completer,
    ) -> Finished {
        let job = lease.job();
        let queue = job.queue.clone();
        // The creator's trace, continued: this attempt is a span of its own within it.
        let stored = job.traceparent.as_deref().and_then(TraceParent::parse);
        let trace = stored.as_ref().map(TraceParent::child);
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            job_type = %job.job_type,
            queue = %job.queue,
            attempt = lease.attempt(),
            trace_id = trace.as_ref().map(TraceParent::trace_id),
            span_id = trace.as_ref().map(TraceParent::parent_id),
            parent_span_id = stored.as_ref().map(TraceParent::parent_id),
        );
        let finished = self
            .execute_inner(lease, claim_sent, hard_stop, slot, completer, trace)
            .instrument(span)
            .await;
        let m = metrics();
        m.finished
            .get_or_create(&Metrics::outcome(&queue, finished.label()))
            .inc();
        if finished == Finished::LeaseLost {
            m.fencing_rejections.inc();
        }
        // A limited queue's held-back jobs wait for a freed slot to be pushed again.
        self.refill(&queue).await;
        finished
    }

    async fn execute_inner(
        &self,
        lease: Lease,
        claim_sent: Instant,
        hard_stop: CancellationToken,
        slot: Slot,
        completer: Completer,
        trace: Option<TraceParent>,
    ) -> Finished {
        let Slot { running, held: _held } = slot;
        let inner = &self.inner;
        let started = Instant::now();
        let queue = Metrics::queue(&lease.job().queue);
        let verdict = match inner.registry.get(&lease.job().job_type) {
            None => Verdict::NoHandler,
            Some(handler) => {
                let job = lease.job();
                let waited = (inner.store.now().await - job.run_at).to_std().unwrap_or_default();
                metrics().wait.get_or_create(&queue).observe(waited.as_secs_f64());
                metrics().started.get_or_create(&queue).inc();
                let cancel = CancellationToken::new();
                let own = Duration::from_millis(job.timeout_ms.max(1) as u64);
                let ctx = JobContext {
                    id: job.id,
                    job_type: job.job_type.clone(),
                    payload: job.payload.clone(),
                    attempt: lease.attempt(),
                    max_attempts: job.max_attempts,
                    timeout: own,
                    cancel: cancel.clone(),
                    traceparent: trace.map(|t| t.to_string()),
                };
                let timeout = inner.config.max_job_timeout.map_or(own, |most| own.min(most));
                if timeout < own {
                    tracing::info!(
                        timeout_ms = timeout.as_millis() as u64,
                        "job timeout cut to what this worker can give"
                    );
                }
                let task = tokio::spawn(async move { handler.handle(ctx).await });
                let timeout = Timeout {
                    after: timeout,
                    cut_short: timeout < own,
                };
                let verdict = self
                    .supervise(&lease, claim_sent, task, cancel, timeout, &hard_stop)
                    .await;
                metrics()
                    .duration
                    .get_or_create(&queue)
                    .observe(started.elapsed().as_secs_f64());
                verdict
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // The handler is done: its slot may take the next job while the outcome is recorded.
        drop(running);
        match verdict {
            Verdict::LeaseLost => {
                tracing::warn!(elapsed_ms, "lease lost to another worker; outcome discarded");
                Finished::LeaseLost
            }
            Verdict::Fenced => {
                tracing::error!(
                    elapsed_ms,
                    "could not renew the lease in time (Postgres unreachable?); stopped the job before its lease could expire"
                );
                Finished::Fenced
            }
            Verdict::Release(why) => self.release(&lease, why, elapsed_ms).await,
            Verdict::NoHandler => self.defer_without_handler(&lease).await,
            Verdict::Cancelled => {
                let now = inner.store.now().await;
                match self
                    .record(|| inner.store.cancel_running(&lease, now, CANCELLED_ON_REQUEST))
                    .await
                {
                    Ok(()) => {
                        tracing::info!(elapsed_ms, "job cancelled on request");
                        Finished::Cancelled
                    }
                    Err(err) => self.unrecorded(err),
                }
            }
            Verdict::Ran(Ok(())) => {
                let recorded = match completer.complete(&lease).await {
                    Some(true) => Ok(()),
                    Some(false) => Err(Error::LeaseLost {
                        job_id: lease.id(),
                        token: lease.token(),
                    }),
                    // The grouped write failed: go on alone, retrying while Postgres is away.
                    None => {
                        let now = inner.store.now().await;
                        match self.record(|| inner.store.complete(&lease, now)).await {
                            Ok(released) => {
                                super::complete::push_released(&inner.queue, &released, now).await;
                                Ok(())
                            }
                            Err(err) => Err(err),
                        }
                    }
                };
                match recorded {
                    Ok(()) => {
                        tracing::debug!(elapsed_ms, "job completed");
                        Finished::Completed
                    }
                    Err(err) => self.unrecorded(err),
                }
            }
            Verdict::Ran(Err(failure)) => self.fail(&lease, failure, elapsed_ms).await,
        }
    }

    /// Waits for the handler while renewing the lease; stops it on timeout (its own, or, when
    /// `cut_short`, the shorter most this worker can give it: then the job is released, not
    /// failed), lost lease, hard stop,
    /// or when the lease could not be renewed in time: once `lease - fence_margin(lease)` has
    /// passed since the last renewal (or the claim) was sent, this worker stops the handler
    /// itself, so that it has ended before anyone else can claim the job, even when this worker
    /// cannot reach Postgres to hear that it lost the lease. Heartbeats run beside the handler and
    /// never delay that decision, however long one takes.
    async fn supervise(
        &self,
        lease: &Lease,
        claim_sent: Instant,
        mut task: tokio::task::JoinHandle<Result<(), HandlerError>>,
        cancel: CancellationToken,
        timeout: Timeout,
        hard_stop: &CancellationToken,
    ) -> Verdict {
        let Timeout {
            after: timeout,
            cut_short,
        } = timeout;
        let inner = &self.inner;
        let lease_for = inner.config.lease;
        let hold_for = lease_for.saturating_sub(fence_margin(lease_for));
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let beat_every = inner.config.heartbeat;
        let mut beat = tokio::time::interval_at(Instant::now() + beat_every, beat_every);
        let mut renewed_from = claim_sent;
        let mut renewing: Option<tokio::task::JoinHandle<(Instant, Result<bool>)>> = None;
        let verdict = loop {
            let may_beat = renewing.is_none();
            let renewal = async {
                match renewing.as_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = &mut task => break Verdict::Ran(match joined {
                    Ok(result) => result,
                    Err(err) if err.is_panic() => Err(HandlerError::retryable(format!("handler panicked: {}", panic_message(err.into_panic())))),
                    Err(_) => Err(HandlerError::retryable("handler was cancelled")),
                }),
                _ = &mut deadline => break if cut_short {
                    Verdict::Release(Unfinished::CutShort(timeout))
                } else {
                    metrics().timed_out.get_or_create(&Metrics::queue(&lease.job().queue)).inc();
                    Verdict::Ran(Err(HandlerError::retryable(format!("timed out after {} ms", timeout.as_millis()))))
                },
                _ = hard_stop.cancelled() => break Verdict::Release(Unfinished::Shutdown),
                _ = tokio::time::sleep_until(renewed_from + hold_for) => break Verdict::Fenced,
                _ = beat.tick(), if may_beat => {
                    let store = inner.store.clone();
                    let held = lease.clone();
                    renewing = Some(tokio::spawn(async move {
                        let sent = Instant::now();
                        let now = store.now().await;
                        (sent, store.heartbeat(&held, now, lease_for).await)
                    }));
                }
                renewed = renewal => {
                    renewing = None;
                    match renewed {
                        Ok((sent, Ok(cancel_requested))) => {
                            renewed_from = sent;
                            if cancel_requested {
                                break Verdict::Cancelled;
                            }
                        }
                        Ok((_, Err(Error::LeaseLost { .. }))) => break Verdict::LeaseLost,
                        Ok((_, Err(err))) => tracing::warn!(error = %err, "heartbeat failed; will try again"),
                        Err(err) => tracing::warn!(error = %err, "heartbeat task failed; will try again"),
                    }
                }
            }
        };
        if let Some(renewal) = renewing {
            renewal.abort();
        }
        if !task.is_finished() {
            // Tell the handler, stop its work at its next await, and wait until it has stopped, so
            // that no two attempts overlap.
            cancel.cancel();
            task.abort();
            let _ = task.await;
        }
        verdict
    }
}

/// The error text of an attempt stopped because its job's cancellation was requested.
pub const CANCELLED_ON_REQUEST: &str =
    "cancelled on request (POST /jobs/{id}/cancel) while it ran; stopped at its next heartbeat";

/// When a running job is stopped.
#[derive(Debug, Clone, Copy)]
struct Timeout {
    after: Duration,
    /// `after` is shorter than the job's own timeout: the most this worker can give it.
    cut_short: bool,
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
