//! Deletes finished jobs once their retention has passed (see [`Retention`]): completed and
//! cancelled ones after 7 days, dead ones after 30 by default, each with its attempts and its
//! listing row, and a dead one's id from the DLQ index in Redis. A queue may keep its jobs for
//! another time, per status (`PUT /queues/{name}` `retention`): the default then applies to the
//! other queues, and the queue's own to its jobs ([`Scope`]).
//!
//! It works in batches of [`BATCH`], each one short statement (about 25 ms, attempts included)
//! that skips rows another transaction holds, so that it never makes a worker or a requeue wait.
//! The promoter's pass goes on until a batch comes back short, about 40,000 jobs a second; the
//! worker function's stops after 2 batches of each status, and its next run goes on from there.
//!
//! A pruned job's idempotency key is free again: a create that replays it afterwards makes a new job.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Retention;
use crate::error::Result;
use crate::health::QueueRetention;
use crate::job::{JobId, Status};
use crate::queue::Queue;
use crate::store::Store;

/// Jobs deleted per statement.
pub const BATCH: i64 = 1000;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub completed: usize,
    pub cancelled: usize,
    pub dead: usize,
}

#[derive(Debug, Clone)]
pub struct Pruner {
    store: Store,
    queue: Queue,
    retention: Retention,
    max_batches: usize,
}

impl Pruner {
    pub fn new(store: Store, queue: Queue, retention: Retention) -> Self {
        Pruner {
            store,
            queue,
            retention,
            max_batches: usize::MAX,
        }
    }

    /// At most `max_batches` batches of each status per pass (at least 1); without it a pass goes
    /// on until nothing is left to delete.
    pub fn with_max_batches(mut self, max_batches: usize) -> Self {
        self.max_batches = max_batches.max(1);
        self
    }

    /// One pass over the three final statuses: the default retention over the queues without
    /// their own, then each queue's own over its jobs.
    pub async fn run_once(&self) -> Result<Pruned> {
        let settings = self.store.queue_settings(None).await?;
        let mut pruned = Pruned::default();
        for status in [Status::Completed, Status::Cancelled, Status::Failed] {
            let own: Vec<(&String, i64)> = settings
                .iter()
                .filter_map(|(queue, s)| own_for(&s.retention, status).map(|ms| (queue, ms)))
                .collect();
            let mut deleted = Vec::new();
            if let Some(keep) = default_for(&self.retention, status) {
                let others: Vec<String> = own.iter().map(|(queue, _)| (*queue).clone()).collect();
                deleted.extend(self.prune(status, Scope::Default, keep, &others).await?);
            }
            // 0 keeps for ever.
            for (queue, ms) in own.into_iter().filter(|(_, ms)| *ms > 0) {
                let keep = Duration::from_millis(ms as u64);
                deleted.extend(
                    self.prune(status, Scope::Queue, keep, std::slice::from_ref(queue))
                        .await?,
                );
            }
            match status {
                Status::Completed => pruned.completed = deleted.len(),
                Status::Cancelled => pruned.cancelled = deleted.len(),
                _ => {
                    pruned.dead = deleted.len();
                    if !deleted.is_empty() {
                        // Postgres has forgotten them already: a failure here leaves ids that the
                        // DLQ list never shows (it reads Postgres) and the next rebuild drops.
                        if let Err(err) = self.queue.forget_dead(&deleted).await {
                            tracing::warn!(error = %err, count = deleted.len(), "pruned dead jobs are still in the redis DLQ index");
                        }
                    }
                }
            }
        }
        if pruned != Pruned::default() {
            tracing::info!(?pruned, "pruned finished jobs past their retention");
        }
        Ok(pruned)
    }

    /// Deletes `status` jobs of `scope` finished more than `keep` ago, batch by batch, up to the
    /// pass's bound.
    async fn prune(&self, status: Status, scope: Scope, keep: Duration, queues: &[String]) -> Result<Vec<JobId>> {
        let statement = prune_statement(status, scope);
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let mut deleted = Vec::new();
        for _ in 0..self.max_batches {
            let batch: Vec<JobId> = self
                .store
                .prune(&statement, keep_ms, BATCH, queues)
                .await?
                .into_iter()
                .map(JobId)
                .collect();
            let done = (batch.len() as i64) < BATCH;
            deleted.extend(batch);
            if done {
                break;
            }
        }
        Ok(deleted)
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("pruner", interval, shutdown, || self.run_once()).await
    }
}

/// The deployment's retention for `status`.
fn default_for(retention: &Retention, status: Status) -> Option<Duration> {
    match status {
        Status::Completed => retention.completed,
        Status::Cancelled => retention.cancelled,
        Status::Failed => retention.dead,
        Status::Pending | Status::Blocked | Status::InProgress => None,
    }
}

/// A queue's own retention for `status`, in ms.
fn own_for(retention: &QueueRetention, status: Status) -> Option<i64> {
    match status {
        Status::Completed => retention.completed_ms,
        Status::Cancelled => retention.cancelled_ms,
        Status::Failed => retention.dead_ms,
        Status::Pending | Status::Blocked | Status::InProgress => None,
    }
}

/// Whose jobs a prune statement deletes, by the queues it is given (`$3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Those of every queue but the given ones (the queues with their own retention for the
    /// status). A list rather than a join with `queue_settings`: an anti-join made the planner
    /// read the whole listing and sort it, where a filter keeps the index's order.
    Default,
    /// Those of the given queue.
    Queue,
}

/// prune.sql for one final status and scope (the status a literal, so that Postgres uses that
/// status's index).
pub fn prune_statement(status: Status, scope: Scope) -> String {
    const CUTOFF: &str = "now() - make_interval(secs => $1::int8 / 1000.0)";
    let queue = if status == Status::Completed {
        "l.queue"
    } else {
        "jobs.queue"
    };
    let only = match scope {
        Scope::Default => format!("NOT ({queue} = ANY($3::text[]))"),
        // One queue, as a scalar: so that its index on (queue, created_at) gives the order.
        Scope::Queue => format!("{queue} = ($3::text[])[1]"),
    };
    let finder = match status {
        Status::Completed => format!(
            "SELECT j.id FROM job_listing l JOIN jobs j ON j.id = l.id
    WHERE l.created_at < {CUTOFF} AND j.status = 'COMPLETED' AND j.completed_at < {CUTOFF} AND {only}
    ORDER BY l.created_at LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
        ),
        Status::Cancelled => format!(
            "SELECT id FROM jobs
    WHERE status = 'CANCELLED' AND created_at < {CUTOFF} AND completed_at < {CUTOFF} AND {only}
    ORDER BY status, created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        Status::Failed => format!(
            "SELECT id FROM jobs
    WHERE status = 'FAILED' AND completed_at < {CUTOFF} AND {only}
    ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        // Only finished jobs are ever pruned.
        Status::Pending | Status::Blocked | Status::InProgress => "SELECT NULL::uuid AS id WHERE false".to_owned(),
    };
    include_str!("../sql/prune.sql").replace("{finder}", &finder)
}

impl Store {
    /// Runs one batch of [`prune_statement`] over `queues` (see [`Scope`]); the ids deleted.
    pub async fn prune(&self, statement: &str, keep_ms: i64, batch: i64, queues: &[String]) -> Result<Vec<Uuid>> {
        let rows = self.query(statement, &[&keep_ms, &batch, &queues]).await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }
}
