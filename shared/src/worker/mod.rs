//! The worker engine: takes job ids from Redis (or, while Redis is down, claims straight from
//! Postgres), runs each job's handler under its timeout while renewing the lease, and records the
//! outcome. Runs `concurrency` jobs at once. A slot is free again as soon as its handler returns:
//! the next fetch and claim go on while the outcome is being recorded, so that claiming and
//! recording use the database side by side rather than in turn. At most `2 × concurrency` jobs
//! are held at once (running, or with their outcome not yet recorded): a worker whose writes lag
//! stops taking work until they catch up, rather than holding leases it cannot settle. On shutdown it stops taking work, gives running jobs a
//! grace period, then cancels the rest and releases their leases so that another worker takes them.
//!
//! Two fetch lanes keep the slots full, side by side: while one waits for its claim to commit, the
//! other pops and claims the jobs for the slots freed meanwhile. A fetch spends most of its time on
//! that round trip, so one lane alone left both the worker and the database idle between claims.
//!
//! Split by role, as the loop hands work along: [`fetch`] takes ids and claims them, [`execute`]
//! runs one job under its lease, and [`complete`] records what came of it. This file holds the
//! lanes that keep the slots full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod complete;
mod execute;
mod fetch;
mod limits;

use complete::Completer;

use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::handler::{HandlerError, Registry};
use crate::queue::{BlockingPop, Queue};
use crate::store::Store;

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
/// release is charged as a failed attempt (see `complete.rs`).
pub const MAX_FREE_RELEASES: i32 = 3;

/// What a claimed job takes from the engine's capacity: a running slot, given back when its
/// handler returns, and a hold, given back once its outcome is recorded.
struct Slot {
    running: tokio::sync::OwnedSemaphorePermit,
    held: tokio::sync::OwnedSemaphorePermit,
}

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
    /// Stopped because their cancellation was requested: `CANCELLED`.
    pub cancelled: usize,
    /// Ids taken from Redis that their queue's concurrency or rate limit held back (left pending).
    pub held_back: usize,
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
    Cancelled,
}

impl Finished {
    /// The outcome's name in the metrics.
    fn label(self) -> &'static str {
        match self {
            Finished::Completed => "completed",
            Finished::Retried => "retried",
            Finished::DeadLettered => "dead",
            Finished::Released => "released",
            Finished::LeaseLost => "lease_lost",
            Finished::Unrecorded => "unrecorded",
            Finished::Fenced => "fenced",
            Finished::Deferred => "deferred",
            Finished::Cancelled => "cancelled",
        }
    }
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
            Finished::Cancelled => self.cancelled += 1,
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
    limited: limits::LimitedQueues,
    /// The limited queues whose next jobs are being pushed ([`Worker::refill`]), and whether a job
    /// ended since that push read them.
    refills: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Ids held back by a queue's limit since this worker was made ([`Summary::held_back`]).
    held_back: std::sync::atomic::AtomicUsize,
}

enum Verdict {
    Ran(Result<(), HandlerError>),
    LeaseLost,
    /// The lease could not be renewed in time: stopped before it can expire.
    Fenced,
    /// This worker has no handler for the job's type.
    NoHandler,
    /// Its cancellation was requested (seen at a heartbeat): stopped.
    Cancelled,
    /// Stopped unfinished, not by its own doing: the worker is shutting down, or the job reached
    /// the most time this worker can give it (`WorkerConfig::max_job_timeout`, an invocation's
    /// working time) before its own timeout.
    Release(Unfinished),
}

#[derive(Debug, Clone, Copy)]
enum Unfinished {
    Shutdown,
    CutShort(Duration),
}

impl Unfinished {
    fn why(self) -> String {
        match self {
            Unfinished::Shutdown => "released unfinished at worker shutdown".to_owned(),
            Unfinished::CutShort(after) => format!(
                "released unfinished after {} ms, the most this worker could give it (the end of an invocation), before its own timeout",
                after.as_millis()
            ),
        }
    }
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
                limited: Default::default(),
                refills: Default::default(),
                held_back: Default::default(),
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
        let held_back_before = self.inner.held_back.load(Ordering::Relaxed);
        let (completer, completions) = Completer::start(self.inner.store.clone(), self.inner.queue.clone());
        let run = Run {
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            held: Arc::new(Semaphore::new(2 * config.concurrency.max(1))),
            hard_stop: CancellationToken::new(),
            shutdown,
            limits,
            tasks: Mutex::new(JoinSet::new()),
            summary: Mutex::new(Summary::default()),
            requested: AtomicUsize::new(0),
            idle_since: Mutex::new(None),
        };
        // Each lane has its own connection for blocking pops. Made before any lane starts, so
        // that a failure to make one starts none.
        let poppers = (0..FETCH_LANES)
            .map(|_| self.inner.queue.blocking(config.poll, config.queues.clone()))
            .collect::<Result<Vec<_>>>()?;
        let lanes = poppers
            .into_iter()
            .map(|popper| self.lane(&run, popper, completer.clone()));
        let ended = futures::future::join_all(lanes).await;
        drop(completer);

        let grace = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(grace);
        let mut tasks = run.tasks.into_inner().unwrap_or_else(PoisonError::into_inner);
        let mut summary = run.summary.into_inner().unwrap_or_else(PoisonError::into_inner);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => summary.add(done.unwrap_or(Finished::Unrecorded)),
                    None => break,
                },
                _ = &mut grace => {
                    tracing::warn!(running = tasks.len(), "shutdown grace over; releasing running jobs");
                    run.hard_stop.cancel();
                    break;
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            summary.add(done.unwrap_or(Finished::Unrecorded));
        }
        let _ = completions.await;
        summary.held_back = self
            .inner
            .held_back
            .load(Ordering::Relaxed)
            .saturating_sub(held_back_before);
        // Every job a lane claimed has run by now, whatever ended the lanes.
        ended.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(summary)
    }

    /// One fetch lane: waits for free slots, fetches that many jobs and starts them, until the run
    /// stops taking work. Lanes share the slots, the limits and the jobs started.
    async fn lane(&self, run: &Run, mut popper: BlockingPop, completer: Completer) -> Result<()> {
        let config = &self.inner.config;
        let limits = &run.limits;
        let mut redis_down_until: Option<Instant> = None;
        loop {
            run.reap();
            let out_of_time = limits.stop_taking_at.is_some_and(|at| Instant::now() >= at);
            let room = run.room();
            if run.shutdown.is_cancelled() || out_of_time || room == 0 {
                // With `max_jobs`, another lane's fetch in flight may come back short and leave
                // room; it takes that room itself.
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
                permit = run.slots.clone().acquire_owned() => permit.map_err(|_| Error::CorruptRow("semaphore closed".into()))?,
                _ = run.shutdown.cancelled() => break,
                _ = stop_taking => break,
            };
            // Take as many jobs as there are free slots, in one round trip each to Redis and Postgres.
            // While jobs are running, wait a moment for more slots to free up: slots come back one
            // by one, and fetching for each alone would cost a round trip per job.
            let mut permits = vec![first];
            let room = run.room();
            if room == 0 {
                continue;
            }
            let want = room.min(MAX_FETCH);
            if run.live() > 0 {
                let target = (config.concurrency / 4).clamp(1, want);
                let fill_by = Instant::now() + FILL_WAIT;
                while permits.len() < target {
                    match tokio::time::timeout_at(fill_by, run.slots.clone().acquire_owned()).await {
                        Ok(Ok(permit)) => permits.push(permit),
                        _ => break,
                    }
                }
            }
            while permits.len() < want {
                match run.slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            // Each job taken is also held until its outcome is recorded: wait for room to hold one.
            let first_held = tokio::select! {
                permit = run.held.clone().acquire_owned() => permit.map_err(|_| Error::CorruptRow("semaphore closed".into()))?,
                _ = run.shutdown.cancelled() => break,
            };
            let mut holds = vec![first_held];
            while holds.len() < permits.len() {
                match run.held.clone().try_acquire_owned() {
                    Ok(permit) => holds.push(permit),
                    Err(_) => break,
                }
            }
            permits.truncate(holds.len());
            // Asked for, until the fetch says how many it got: the other lanes leave room for them.
            // Checked and reserved with nothing awaited in between, so lanes never ask for more
            // than `max_jobs` together.
            let room = run.room();
            if room == 0 {
                continue;
            }
            permits.truncate(room);
            holds.truncate(permits.len());
            run.requested.fetch_add(permits.len(), Ordering::SeqCst);
            // A fetch is never cancelled halfway: an id popped from Redis must reach a claim.
            let fetch_started = Instant::now();
            let fetched = self
                .fetch(&mut popper, permits.len(), &mut redis_down_until, limits.stop_taking_at)
                .await;
            run.requested.fetch_sub(permits.len(), Ordering::SeqCst);
            match fetched {
                Ok((leases, claim_sent)) => {
                    tracing::trace!(
                        requested = permits.len(),
                        claimed = leases.len(),
                        elapsed_us = fetch_started.elapsed().as_micros() as u64,
                        "fetched"
                    );
                    // Jobs that ended while the fetch waited are not running any more.
                    run.reap();
                    if leases.is_empty() && limits.until_idle && run.live() == 0 {
                        let since = *lock(&run.idle_since).get_or_insert(fetch_started);
                        if since.elapsed() >= limits.idle_wait {
                            break;
                        }
                    } else {
                        *lock(&run.idle_since) = None;
                    }
                    lock(&run.summary).claimed += leases.len();
                    let mut tasks = lock(&run.tasks);
                    for ((lease, running), held) in leases.into_iter().zip(permits).zip(holds) {
                        let worker = self.clone();
                        let stop = run.hard_stop.clone();
                        let completer = completer.clone();
                        let slot = Slot { running, held };
                        tasks.spawn(async move { worker.execute(lease, claim_sent, stop, slot, completer).await });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "could not take work; pausing");
                    tokio::time::sleep(IDLE_PAUSE).await;
                }
            }
        }
        Ok(())
    }
}

/// How many fetches a worker keeps in flight. A fetch spends most of its time waiting on the
/// claim's round trip to Postgres; with a second one going, the next jobs are claimed meanwhile.
const FETCH_LANES: usize = 2;

/// What the fetch lanes of one [`Worker::run_with`] share.
struct Run {
    slots: Arc<Semaphore>,
    held: Arc<Semaphore>,
    hard_stop: CancellationToken,
    shutdown: CancellationToken,
    limits: Limits,
    /// The jobs started, running or recording their outcome.
    tasks: Mutex<JoinSet<Finished>>,
    summary: Mutex<Summary>,
    /// Jobs asked for by fetches in flight, for `Limits::max_jobs`.
    requested: AtomicUsize,
    /// Since when no fetch found work while no job ran, for `Limits::idle_wait`.
    idle_since: Mutex<Option<Instant>>,
}

impl Run {
    /// Counts the jobs that have ended.
    fn reap(&self) {
        let mut tasks = lock(&self.tasks);
        let mut summary = lock(&self.summary);
        while let Some(done) = tasks.try_join_next() {
            summary.add(done.unwrap_or(Finished::Unrecorded));
        }
    }

    /// How many more jobs the lanes may ask for under `Limits::max_jobs`: those claimed and those
    /// asked for by fetches in flight count against it.
    fn room(&self) -> usize {
        let taken = lock(&self.summary).claimed + self.requested.load(Ordering::SeqCst);
        self.limits.max_jobs.map_or(usize::MAX, |max| max.saturating_sub(taken))
    }

    /// Jobs started and not yet seen to end.
    fn live(&self) -> usize {
        lock(&self.tasks).len()
    }
}

/// Locks `mutex` (never held across an await), past a panic elsewhere: the counts stay usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub use complete::{MAX_ERROR_BYTES, stored_error};
pub use execute::CANCELLED_ON_REQUEST;
