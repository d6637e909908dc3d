//! The worker engine: takes job ids from Redis (or, while Redis is down, claims straight from
//! Postgres), runs each job's handler under its timeout while renewing the lease, and records the
//! outcome. Runs `concurrency` jobs at once. On shutdown it stops taking work, gives running jobs a
//! grace period, then cancels the rest and releases their leases so that another worker takes them.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use std::collections::HashSet;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::handler::{HandlerError, JobContext, Registry};
use crate::job::{JobId, Outcome};
use crate::queue::{BlockingPop, Popped, Queue};
use crate::store::{AfterFailure, Claim, Lease, Store};

/// How long the engine stays on Postgres after Redis failed, before trying Redis again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The most jobs taken in one fetch, and completed in one write.
const MAX_FETCH: usize = 1000;
const MAX_COMPLETE: usize = 1000;
/// How long a busy worker waits for more free slots before fetching.
const FILL_WAIT: Duration = Duration::from_millis(2);
/// How long to wait when Postgres had nothing to claim, or failed.
const IDLE_PAUSE: Duration = Duration::from_millis(250);
/// How many times a job may be given back unfinished without its attempt counting; past this, a
/// release is charged as a failed attempt (see [`Worker::release`]).
pub const MAX_FREE_RELEASES: i32 = 3;

/// What one run of the engine did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub claimed: usize,
    pub completed: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    /// Given back unfinished at shutdown.
    pub released: usize,
    /// Taken over by another worker after this one's lease expired; nothing recorded.
    pub lease_lost: usize,
    /// The outcome could not be recorded (Postgres unreachable); the reaper will retry the job.
    pub unrecorded: usize,
    /// Stopped by this worker because it could not renew the lease in time (cut off from
    /// Postgres): nothing recorded; the reaper retries the job once the lease has expired.
    pub fenced: usize,
    /// Given back because this worker has no handler for the job's type: not charged an attempt,
    /// and left, after a backoff, for a worker that has one.
    pub deferred: usize,
}

/// How one job ended, from this worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Completed,
    Retried,
    DeadLettered,
    Released,
    LeaseLost,
    Unrecorded,
    Fenced,
    Deferred,
}

impl Summary {
    fn add(&mut self, finished: Finished) {
        match finished {
            Finished::Completed => self.completed += 1,
            Finished::Retried => self.retried += 1,
            Finished::DeadLettered => self.dead_lettered += 1,
            Finished::Released => self.released += 1,
            Finished::LeaseLost => self.lease_lost += 1,
            Finished::Unrecorded => self.unrecorded += 1,
            Finished::Fenced => self.fenced += 1,
            Finished::Deferred => self.deferred += 1,
        }
    }
}

/// When a run stops taking new work, besides shutdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Take no new job after this instant (a Lambda's deadline minus a margin).
    pub stop_taking_at: Option<Instant>,
    /// Take at most this many jobs.
    pub max_jobs: Option<usize>,
    /// Return once the queue has had nothing ready for `idle_wait` (at once: after one empty poll).
    pub until_idle: bool,
    pub idle_wait: Duration,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: Queue,
    registry: Registry,
    config: WorkerConfig,
}

enum Verdict {
    Ran(Result<(), HandlerError>),
    LeaseLost,
    /// The lease could not be renewed in time: stopped before it can expire.
    Fenced,
    /// This worker has no handler for the job's type.
    NoHandler,
    Release,
}

/// How long before a lease's expiry a worker that has not renewed it stops the job: a fifth of
/// the lease. The expiry is counted from when the claim or the last successful heartbeat was
/// sent, which is never later than when the database set it.
pub fn fence_margin(lease: Duration) -> Duration {
    lease / 5
}

impl Worker {
    pub fn new(store: Store, queue: Queue, registry: Registry, config: WorkerConfig) -> Self {
        Worker {
            inner: Arc::new(Inner {
                store,
                queue,
                registry,
                config,
            }),
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<Summary> {
        self.run_with(shutdown, Limits::default()).await
    }

    /// Runs until `shutdown` or a limit; then drains running jobs (see the module doc).
    pub async fn run_with(&self, shutdown: CancellationToken, limits: Limits) -> Result<Summary> {
        let config = &self.inner.config;
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let hard_stop = CancellationToken::new();
        let mut popper = self.inner.queue.blocking(config.poll)?;
        let mut redis_down_until: Option<Instant> = None;
        // Since when nothing was ready and nothing ran, for `Limits::idle_wait`.
        let mut idle_since: Option<Instant> = None;
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut summary = Summary::default();
        let (completer, completions) = Completer::start(self.inner.store.clone());

        loop {
            while let Some(done) = tasks.try_join_next() {
                summary.add(done.unwrap_or(Finished::Unrecorded));
            }
            let out_of_time = limits.stop_taking_at.is_some_and(|at| Instant::now() >= at);
            let room = limits
                .max_jobs
                .map_or(usize::MAX, |max| max.saturating_sub(summary.claimed));
            if shutdown.is_cancelled() || out_of_time || room == 0 {
                break;
            }
            // With every slot busy, wait for one, but never past the time to stop taking work.
            let stop_taking = async {
                match limits.stop_taking_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.map_err(|_| Error::CorruptRow("semaphore closed".into()))?,
                _ = shutdown.cancelled() => break,
                _ = stop_taking => break,
            };
            // Take as many jobs as there are free slots, in one round trip each to Redis and Postgres.
            // While jobs are running, wait a moment for more slots to free up: slots come back one
            // by one, and fetching for each alone would cost a round trip per job.
            let mut permits = vec![first];
            let want = room.min(MAX_FETCH);
            if !tasks.is_empty() {
                let target = (config.concurrency / 4).clamp(1, want);
                let fill_by = Instant::now() + FILL_WAIT;
                while permits.len() < target {
                    match tokio::time::timeout_at(fill_by, slots.clone().acquire_owned()).await {
                        Ok(Ok(permit)) => permits.push(permit),
                        _ => break,
                    }
                }
            }
            while permits.len() < want {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            // A fetch is never cancelled halfway: an id popped from Redis must reach a claim.
            let fetch_started = Instant::now();
            match self.fetch(&mut popper, permits.len(), &mut redis_down_until).await {
                Ok((leases, claim_sent)) => {
                    tracing::trace!(
                        requested = permits.len(),
                        claimed = leases.len(),
                        elapsed_us = fetch_started.elapsed().as_micros() as u64,
                        "fetched"
                    );
                    if leases.is_empty() && limits.until_idle && tasks.is_empty() {
                        let since = *idle_since.get_or_insert(fetch_started);
                        if since.elapsed() >= limits.idle_wait {
                            break;
                        }
                    } else {
                        idle_since = None;
                    }
                    summary.claimed += leases.len();
                    for (lease, permit) in leases.into_iter().zip(permits) {
                        let worker = self.clone();
                        let stop = hard_stop.clone();
                        let completer = completer.clone();
                        tasks.spawn(async move { worker.execute(lease, claim_sent, stop, permit, completer).await });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "could not take work; pausing");
                    tokio::time::sleep(IDLE_PAUSE).await;
                }
            }
        }
        drop(completer);

        let grace = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => summary.add(done.unwrap_or(Finished::Unrecorded)),
                    None => break,
                },
                _ = &mut grace => {
                    tracing::warn!(running = tasks.len(), "shutdown grace over; releasing running jobs");
                    hard_stop.cancel();
                    break;
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            summary.add(done.unwrap_or(Finished::Unrecorded));
        }
        let _ = completions.await;
        Ok(summary)
    }

    /// Takes up to `count` jobs: from Redis while it answers, from Postgres otherwise. Returns the
    /// leases and when their claim was sent (no lease can have been granted before that).
    async fn fetch(
        &self,
        popper: &mut BlockingPop,
        count: usize,
        redis_down_until: &mut Option<Instant>,
    ) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        if redis_down_until.is_none_or(|until| Instant::now() >= until) {
            match popper.pop(count).await {
                Ok(popped) => {
                    *redis_down_until = None;
                    if popped.ids.is_empty() {
                        return Ok((Vec::new(), Instant::now()));
                    }
                    return self.claim_popped(popped).await;
                }
                Err(err) => {
                    if redis_down_until.is_none() {
                        tracing::warn!(error = %err, "redis unavailable; claiming from postgres");
                    }
                    *redis_down_until = Some(Instant::now() + REDIS_RETRY_AFTER);
                }
            }
        }
        let now = inner.store.now().await;
        let sent = Instant::now();
        let claimed = inner
            .store
            .claim_next(&inner.config.worker_id, now, inner.config.lease, count)
            .await?;
        if claimed.is_empty() {
            tokio::time::sleep(IDLE_PAUSE).await;
        }
        Ok((claimed, sent))
    }

    /// Claims the ids just popped. What happens after the claim committed is bookkeeping for the
    /// ids left over, and never costs a lease: the claimed jobs are returned to run whatever it
    /// meets.
    async fn claim_popped(&self, popped: Popped) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let sent = Instant::now();
        let Popped { level, ids } = popped;
        let claimed = inner
            .store
            .claim_many(&ids, &inner.config.worker_id, now, inner.config.lease)
            .await;
        let leases = match claimed {
            Ok(leases) => leases,
            Err(err) if err.is_in_doubt() => {
                tracing::warn!(ids = ids.len(), error = %err, "claim in doubt; reading back what it did");
                return self.settle_claim(ids, level, sent, err).await;
            }
            Err(err) => {
                // The ids left Redis but the claim failed: put them back, at the head of the queue
                // they came from, rather than wait for the repairer.
                let back: Vec<(JobId, usize)> = ids.iter().map(|id| (*id, level)).collect();
                if let Err(push) = inner.queue.push_front_many(&back).await {
                    tracing::warn!(ids = back.len(), error = %push, "could not push back unclaimed ids; the repairer will");
                }
                return Err(err);
            }
        };
        if leases.len() < ids.len() {
            let claimed: HashSet<JobId> = leases.iter().map(Lease::id).collect();
            for id in ids.into_iter().filter(|id| !claimed.contains(id)) {
                // Usually a duplicate or a finished job; a job popped early goes back to the schedule.
                match inner.store.why_unclaimed(id, now).await {
                    Ok(Claim::NotDue { run_at, priority }) => {
                        if let Err(err) = inner.queue.enqueue(id, priority, run_at, now).await {
                            tracing::warn!(job_id = %id, error = %err, "could not reschedule an early id; the repairer will");
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(job_id = %id, error = %err, "could not tell why an id was not claimable; the repairer will push it if it must run");
                    }
                }
            }
        }
        Ok((leases, sent))
    }

    /// After a claim whose answer was lost: it may have committed. Once it can no longer change
    /// anything (the client timeout has passed since it was sent: it either started by
    /// [`Store::claim_many`]'s start-by time and ended within `statement_timeout`, or claimed
    /// nothing), read back which of `ids` it took. Those run here, under the leases it took (timed
    /// from when the claim was sent); the rest go back to the head of their queue. Pushing them
    /// back before that could let another worker claim a job this claim was taking, leaving it
    /// charged an attempt that never ran. If Postgres stays out of reach for the whole lease, all
    /// of them go back: whatever the claim took is not claimable, and the reaper takes it back.
    async fn settle_claim(
        &self,
        ids: Vec<JobId>,
        level: usize,
        sent: Instant,
        in_doubt: Error,
    ) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        let lease = inner.config.lease;
        let give_up = sent + lease.saturating_sub(fence_margin(lease));
        tokio::time::sleep_until(sent + inner.store.timeout()).await;
        let mut pause = Duration::from_millis(50);
        while Instant::now() < give_up {
            match inner.store.held_by(&ids, &inner.config.worker_id).await {
                Ok(held) => {
                    let taken: HashSet<JobId> = held.iter().map(Lease::id).collect();
                    let back: Vec<(JobId, usize)> = ids
                        .iter()
                        .filter(|id| !taken.contains(id))
                        .map(|id| (*id, level))
                        .collect();
                    tracing::info!(claimed = held.len(), pushed_back = back.len(), "claim in doubt settled");
                    if !back.is_empty()
                        && let Err(push) = inner.queue.push_front_many(&back).await
                    {
                        tracing::warn!(ids = back.len(), error = %push, "could not push back unclaimed ids; the repairer will");
                    }
                    return Ok((held, sent));
                }
                Err(err) => {
                    tracing::debug!(error = %err, "claim in doubt: postgres still out of reach");
                    tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        // Postgres is still out of reach. The claim cannot commit any more, so every id may go
        // back: one it did claim is skipped by whoever pops it (it is not pending) and is taken
        // back by the reaper when its lease runs out.
        tracing::warn!(
            ids = ids.len(),
            "claim in doubt not settled within the lease; its ids go back"
        );
        let back: Vec<(JobId, usize)> = ids.iter().map(|id| (*id, level)).collect();
        if let Err(push) = inner.queue.push_front_many(&back).await {
            tracing::warn!(ids = back.len(), error = %push, "could not push back unclaimed ids; the repairer will");
        }
        Err(in_doubt)
    }

    /// Runs one claimed job to its recorded outcome.
    async fn execute(
        &self,
        lease: Lease,
        claim_sent: Instant,
        hard_stop: CancellationToken,
        _slot: OwnedSemaphorePermit,
        completer: Completer,
    ) -> Finished {
        let job = lease.job();
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, queue = %job.queue, attempt = lease.attempt());
        self.execute_inner(lease, claim_sent, hard_stop, completer)
            .instrument(span)
            .await
    }

    async fn execute_inner(
        &self,
        lease: Lease,
        claim_sent: Instant,
        hard_stop: CancellationToken,
        completer: Completer,
    ) -> Finished {
        let inner = &self.inner;
        let started = Instant::now();
        let verdict = match inner.registry.get(&lease.job().job_type) {
            None => Verdict::NoHandler,
            Some(handler) => {
                let job = lease.job();
                let cancel = CancellationToken::new();
                let ctx = JobContext {
                    id: job.id,
                    job_type: job.job_type.clone(),
                    payload: job.payload.clone(),
                    attempt: lease.attempt(),
                    max_attempts: job.max_attempts,
                    cancel: cancel.clone(),
                };
                let own = Duration::from_millis(job.timeout_ms.max(1) as u64);
                let timeout = inner.config.max_job_timeout.map_or(own, |most| own.min(most));
                if timeout < own {
                    tracing::info!(
                        timeout_ms = timeout.as_millis() as u64,
                        "job timeout cut to what this worker can give"
                    );
                }
                let task = tokio::spawn(async move { handler.handle(ctx).await });
                self.supervise(&lease, claim_sent, task, cancel, timeout, &hard_stop)
                    .await
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
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
            Verdict::Release => self.release(&lease, elapsed_ms).await,
            Verdict::NoHandler => self.defer_without_handler(&lease).await,
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
                        self.record(|| inner.store.complete(&lease, now)).await
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

    /// Waits for the handler while renewing the lease; stops it on timeout, lost lease, hard stop,
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
        timeout: Duration,
        hard_stop: &CancellationToken,
    ) -> Verdict {
        let inner = &self.inner;
        let lease_for = inner.config.lease;
        let hold_for = lease_for.saturating_sub(fence_margin(lease_for));
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let beat_every = inner.config.heartbeat;
        let mut beat = tokio::time::interval_at(Instant::now() + beat_every, beat_every);
        let mut renewed_from = claim_sent;
        let mut renewing: Option<tokio::task::JoinHandle<(Instant, Result<()>)>> = None;
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
                _ = &mut deadline => break Verdict::Ran(Err(HandlerError::retryable(format!("timed out after {} ms", timeout.as_millis())))),
                _ = hard_stop.cancelled() => break Verdict::Release,
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
                        Ok((sent, Ok(()))) => renewed_from = sent,
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

    async fn fail(&self, lease: &Lease, failure: HandlerError, elapsed_ms: u64) -> Finished {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let (message, retryable) = match &failure {
            HandlerError::Retryable(m) => (m.as_str(), true),
            HandlerError::Permanent(m) => (m.as_str(), false),
        };
        let stored = stored_error(message);
        let message = stored.as_str();
        let delay = inner
            .config
            .retry
            .delay(lease.attempt(), crate::retry::RetryPolicy::sample());
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
                if let Err(err) = inner.queue.enqueue(lease.id(), priority, run_at, now).await {
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
            Err(err) => self.unrecorded(err),
        }
    }

    /// A job whose type this worker cannot run is not its failure: it goes back uncharged, after a
    /// backoff that grows with every claim of it (its lease token), for a worker that has a
    /// handler (a rolling deploy that adds a type, a worker serving other types).
    async fn defer_without_handler(&self, lease: &Lease) -> Finished {
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
            Ok((run_at, priority)) => {
                tracing::warn!(
                    retry_in_ms = delay.as_millis() as u64,
                    "no handler for this job type here; deferred, not charged"
                );
                if let Err(err) = inner.queue.enqueue(lease.id(), priority, run_at, now).await {
                    tracing::warn!(error = %err, "could not schedule the deferred job; the repairer will");
                }
                Finished::Deferred
            }
            Err(err) => self.unrecorded(err),
        }
    }

    async fn release(&self, lease: &Lease, elapsed_ms: u64) -> Finished {
        let inner = &self.inner;
        if lease.releases() >= MAX_FREE_RELEASES {
            // Given back unfinished too often (a job that outlasts every invocation, say): this time
            // the attempt counts, so the job is retried with backoff or, past its budget, dead.
            let why = format!(
                "stopped unfinished: released {} times before (worker shutdown or the end of an invocation); this attempt counts",
                lease.releases()
            );
            return self.fail(lease, HandlerError::retryable(why), elapsed_ms).await;
        }
        let now = inner.store.now().await;
        match self.record(|| inner.store.release(lease, now)).await {
            Ok(priority) => {
                tracing::info!("job released at shutdown");
                if let Err(err) = inner.queue.push_front(lease.id(), priority).await {
                    tracing::warn!(error = %err, "could not push the released job; the repairer will");
                }
                Finished::Released
            }
            Err(err) => self.unrecorded(err),
        }
    }

    fn unrecorded(&self, err: Error) -> Finished {
        if let Error::LeaseLost { .. } = err {
            tracing::warn!("lease lost before the outcome was recorded; outcome discarded");
            return Finished::LeaseLost;
        }
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "could not record the outcome; the reaper will retry the job");
        Finished::Unrecorded
    }

    /// Retries a write while Postgres is unreachable, for at most about one lease: after that the
    /// reaper owns the job anyway.
    async fn record<T, F, Fut>(&self, mut write: F) -> Result<T>
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
#[derive(Clone)]
struct Completer {
    tx: mpsc::UnboundedSender<(JobId, i64, oneshot::Sender<Option<bool>>)>,
}

impl Completer {
    fn start(store: Store) -> (Completer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(JobId, i64, oneshot::Sender<Option<bool>>)>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_COMPLETE).await > 0 {
                let held: Vec<(JobId, i64)> = batch.iter().map(|(id, token, _)| (*id, *token)).collect();
                let flush_started = Instant::now();
                match store.complete_many(&held, store.now().await).await {
                    Ok(done) => {
                        tracing::trace!(
                            jobs = held.len(),
                            elapsed_us = flush_started.elapsed().as_micros() as u64,
                            "completions recorded"
                        );
                        let done: HashSet<JobId> = done.into_iter().collect();
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
    async fn complete(&self, lease: &Lease) -> Option<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((lease.id(), lease.token(), reply)).ok()?;
        answer.await.ok().flatten()
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

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
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
