//! The operations behind the HTTP API: create, get, find, list the DLQ, requeue, cancel. Each keeps
//! Postgres as the record (written first) and Redis as the fast path (written after, repaired if
//! that write fails).

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::bulk::{Actor, BulkAction, Operation, Operations};
use crate::error::{Error, Result};
use crate::health::{QueueSettings, SettingsChange};
use crate::job::{Job, JobId, NewJob, Status};
use crate::queue::Queue;
use crate::search::{Found, JobCursor, JobFilter};
use crate::store::{Created, DeadCursor, Page, Ready, Store};

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancellation {
    /// The job had not started: it is CANCELLED and will not run.
    Cancelled(Job),
    /// The job is running: the cancel is recorded on it, for its worker to stop it.
    Requested(Job),
}

/// How often a cancel tries again when the job moved between PENDING and IN_PROGRESS under it.
const CANCEL_TRIES: usize = 3;

#[derive(Clone, Debug)]
pub struct Jobs {
    store: Store,
    queue: Queue,
    default_timeout: Duration,
}

impl Jobs {
    pub fn new(store: Store, queue: Queue, default_timeout: Duration) -> Self {
        Jobs {
            store,
            queue,
            default_timeout,
        }
    }

    /// Opens a Postgres connection and a Redis connection now, so that the first request does not
    /// pay for them. A server that does not answer is logged, not fatal: requests then get 503s
    /// (Postgres) or fall back (Redis) until it is back.
    pub async fn warm(&self) {
        if let Err(err) = self.store.warm().await {
            tracing::warn!(error = %err, "postgres not reachable at start");
        }
        if let Err(err) = self.queue.ping().await {
            tracing::warn!(error = %err, "redis not reachable at start");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Stores the job, then pushes its id to Redis. The job is accepted once it is committed: a
    /// failed push is logged and left to the repairer, never reported as a failed create.
    pub async fn create(&self, new: &NewJob, now: DateTime<Utc>) -> Result<Created> {
        let created = self.store.create(new, self.default_timeout_ms(), now).await?;
        if !created.replayed {
            count_enqueued([&created]);
        }
        // A replay pushes too: the first request may have committed without reaching Redis (its
        // answer lost, say). Redis holds each id once, so pushing again is harmless. A job blocked
        // on its dependencies is pushed when its last parent completes.
        if created.job.status == Status::Pending {
            let job = &created.job;
            if let Err(err) = self
                .queue
                .enqueue(job.id, &job.queue, job.priority, job.run_at, now)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %err, "job stored but not pushed to redis; the repairer will push it");
            }
        }
        Ok(created)
    }

    /// Stores many jobs in one statement, then pushes the new ones to Redis in one round trip.
    /// Each result is one job's, in the order given (see [`Store::create_many`]).
    pub async fn create_many(&self, new: &[NewJob], now: DateTime<Utc>) -> Result<Vec<Result<Created>>> {
        let results = self.store.create_many(new, self.default_timeout_ms(), now).await?;
        count_enqueued(results.iter().filter_map(|r| r.as_ref().ok()).filter(|c| !c.replayed));
        let fresh: Vec<Ready> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|c| c.job.status == Status::Pending)
            .map(|c| Ready::of(&c.job))
            .collect();
        if let Err(err) = self.queue.enqueue_many(&fresh, now).await {
            tracing::warn!(jobs = fresh.len(), error = %err, "jobs stored but not pushed to redis; the repairer will push them");
        }
        Ok(results)
    }

    fn default_timeout_ms(&self) -> i32 {
        self.default_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    pub async fn get(&self, id: JobId) -> Result<Job> {
        self.store.get(id).await
    }

    pub async fn list_dead(&self, after: Option<DeadCursor>, limit: usize) -> Result<Page<Job>> {
        self.store.list_dead(after, limit).await
    }

    /// Puts a dead job back with a fresh attempt budget and makes it runnable at once.
    pub async fn requeue(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        let job = self.store.requeue(id, now).await?;
        if let Err(err) = self.queue.requeue(job.id, &job.queue, job.priority, now).await {
            tracing::warn!(job_id = %job.id, error = %err, "job requeued but not pushed to redis; the repairer will push it");
        }
        Ok(job)
    }

    /// Jobs matching `filter`, newest first, a page at a time.
    pub async fn find(&self, filter: &JobFilter, after: Option<JobCursor>, limit: usize) -> Result<Found> {
        self.store.find(filter, after, limit).await
    }

    /// Cancels a job: one that has not started is CANCELLED at once and its id taken out of Redis;
    /// on a running one the request is recorded for its worker. A finished job is refused
    /// (`InvalidTransition`), an unknown one is `NotFound`.
    pub async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Cancellation> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.store.cancel(id, now).await {
                Ok(job) => {
                    // A failure here leaves an id that no claim will take (the job is not PENDING):
                    // a worker that pops it drops it.
                    if let Err(err) = self.queue.withdraw(job.id, &job.queue, job.priority).await {
                        tracing::warn!(job_id = %job.id, error = %err, "job cancelled but its id not taken out of redis; workers will skip it");
                    }
                    return Ok(Cancellation::Cancelled(job));
                }
                Err(Error::InvalidTransition {
                    status: Status::InProgress,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
            match self.store.request_cancel(id, now).await {
                Ok(job) => return Ok(Cancellation::Requested(job)),
                // Back to PENDING (a retry, a release) since the first statement: cancel it now.
                Err(
                    err @ Error::InvalidTransition {
                        status: Status::Pending,
                        ..
                    },
                ) if tries >= CANCEL_TRIES => return Err(err),
                Err(Error::InvalidTransition {
                    status: Status::Pending,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
        }
    }
}

impl Jobs {
    /// The exact number of jobs `action` would act on now for `filter` (a bulk dry run). A status
    /// filter the action cannot apply to is refused (`InvalidFilter`).
    pub async fn bulk_count(&self, filter: &JobFilter, action: BulkAction) -> Result<i64> {
        let statuses = action.statuses(filter)?;
        self.store.count_matching(filter, &statuses).await
    }

    /// Starts a bulk operation: counts its matches, records it with its audit entry, then works on
    /// it for up to `budget` (a small operation is done before this returns). Returns it as it
    /// then stands; the promoter and the worker function finish the rest.
    pub async fn start_bulk(
        &self,
        filter: &JobFilter,
        action: BulkAction,
        actor: &Actor,
        budget: Duration,
    ) -> Result<Operation> {
        let statuses = action.statuses(filter)?;
        let total = self.store.count_matching(filter, &statuses).await?;
        let now = self.store.now().await;
        let operation = self
            .store
            .create_operation(action, filter, &statuses, total, actor, now)
            .await?;
        let operations = Operations::new(self.store.clone(), self.queue.clone());
        match operations.drive(operation.id, budget).await {
            Ok(Some(current)) => Ok(current),
            Ok(None) => Ok(operation),
            Err(err) => {
                // It is recorded: the processors go on with it.
                tracing::warn!(operation = %operation.id, error = %err, "first batches of a bulk operation failed; the promoter goes on with it");
                Ok(operation)
            }
        }
    }

    /// Changes a queue's settings, fleet-wide from the commit (every claim reads them). Ids
    /// dropped while the queue held them back go to Redis again: on a resume or a removed limit,
    /// every pending job of the queue; on a resume of a limited queue or a limit set, its next
    /// jobs, as many as it has free slots. Written to the audit log as `queue.pause`,
    /// `queue.resume` (the count: jobs pushed), `queue.concurrency` (the filter holds the new
    /// limit, `null` for none) or `queue.retention` (the filter holds the queue's retention as it
    /// now is, `null` for the default) or `queue.rate_limit` (the filter holds the new limit).
    pub async fn set_queue(&self, queue: &str, change: SettingsChange, actor: &Actor) -> Result<QueueSettings> {
        let now = self.store.now().await;
        let (settings, was_paused) = self.store.put_queue_settings(queue, &change, now).await?;
        let resumed = was_paused && !settings.paused;
        let mut pushed = 0;
        let limits_changed = change.concurrency.is_some() || change.rate_limit.is_some();
        if !settings.paused && (resumed || limits_changed) {
            pushed = if settings.concurrency.is_none() && settings.rate_limit.is_none() {
                self.push_queue(queue, now).await
            } else {
                self.push_limited(queue, now).await
            };
        }
        let mut audit = Vec::new();
        if let Some(paused) = change.paused {
            let action = if paused { "queue.pause" } else { "queue.resume" };
            audit.push((
                action,
                serde_json::json!({ "queue": queue }),
                if paused { 0 } else { pushed },
            ));
        }
        if let Some(limit) = change.concurrency {
            audit.push((
                "queue.concurrency",
                serde_json::json!({ "queue": queue, "concurrency": limit }),
                pushed,
            ));
        }
        if let Some(rate) = &change.rate_limit {
            let filter = match rate {
                Some(rate) => serde_json::json!({
                    "queue": queue,
                    "rateLimit": {"limit": rate.limit, "periodMs": rate.period_ms, "key": rate.key},
                }),
                None => serde_json::json!({ "queue": queue, "rateLimit": null }),
            };
            audit.push(("queue.rate_limit", filter, pushed));
        }
        if !change.retention.is_empty() {
            let ms = |value: Option<i64>| value.map_or(serde_json::Value::Null, serde_json::Value::from);
            let now_set = settings.retention;
            audit.push((
                "queue.retention",
                serde_json::json!({
                    "queue": queue,
                    "retention": {
                        "completedMs": ms(now_set.completed_ms),
                        "cancelledMs": ms(now_set.cancelled_ms),
                        "deadMs": ms(now_set.dead_ms),
                    },
                }),
                0,
            ));
        }
        for (action, filter, count) in audit {
            if let Err(err) = self.store.audit(actor, action, None, Some(&filter), count, now).await {
                tracing::error!(queue, action, actor = %actor.principal, error = %err, "queue changed but not written to the audit log");
            }
        }
        Ok(settings)
    }

    /// Pushes a limited queue's next pending jobs, as many as it has free slots; how many.
    async fn push_limited(&self, queue: &str, now: DateTime<Utc>) -> i64 {
        let queues = [queue.to_owned()];
        let ready = match self.store.limited_ready(now, Some(&queues)).await {
            Ok(ready) => ready,
            Err(err) => {
                tracing::warn!(queue, error = %err, "queue changed, but its next jobs not pushed to redis; the promoter will");
                return 0;
            }
        };
        if let Err(err) = self.queue.enqueue_many(&ready, now).await {
            tracing::warn!(queue, error = %err, "queue changed, but its next jobs not pushed to redis; the promoter will");
            return 0;
        }
        ready.len() as i64
    }

    /// Pushes every pending job of `queue` to Redis (ids it holds already keep their place); how
    /// many were pushed. A failure is logged: the repairer pushes overdue jobs of a queue that
    /// is not paused.
    async fn push_queue(&self, queue: &str, now: DateTime<Utc>) -> i64 {
        const PAGE: usize = 1000;
        let mut after = None;
        let mut pushed = 0;
        loop {
            let page = match self.store.queue_pending_page(queue, after, PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(queue, error = %err, "queue resumed, but its jobs not all pushed to redis; the repairer will");
                    return pushed;
                }
            };
            if let Err(err) = self.queue.enqueue_many(&page, now).await {
                tracing::warn!(queue, error = %err, "queue resumed, but its jobs not all pushed to redis; the repairer will");
                return pushed;
            }
            pushed += page.len() as i64;
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id),
                _ => return pushed,
            }
        }
    }

    /// Records a single action (`job.cancel`, `job.requeue`) in the audit log. It runs after the
    /// action: a failure to record is logged, and the action stands.
    /// Records a change to something other than a job (`schedule.put`, `schedule.delete`), with
    /// what it changed as its filter. It runs after the change: a failure to record is logged, and
    /// the change stands.
    pub async fn audit_change(&self, actor: &Actor, action: &str, filter: &serde_json::Value) {
        let now = self.store.now().await;
        if let Err(err) = self.store.audit(actor, action, None, Some(filter), 1, now).await {
            tracing::error!(action, actor = %actor.principal, error = %err, "changed but not written to the audit log");
        }
    }

    pub async fn audit(&self, actor: &Actor, action: &str, job_id: JobId) {
        let now = self.store.now().await;
        if let Err(err) = self.store.audit(actor, action, Some(job_id), None, 1, now).await {
            tracing::error!(%job_id, action, actor = %actor.principal, error = %err, "action done but not written to the audit log");
        }
    }
}

/// Counts newly created jobs in the metrics, per queue.
fn count_enqueued<'a>(created: impl IntoIterator<Item = &'a Created>) {
    let mut per_queue: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for c in created {
        *per_queue.entry(c.job.queue.as_str()).or_default() += 1;
    }
    for (queue, n) in per_queue {
        crate::metrics::count_enqueued(queue, n);
    }
}
