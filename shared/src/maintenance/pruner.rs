//! Deletes finished jobs once their retention has passed (see [`Retention`]): completed and
//! cancelled ones after 7 days, dead ones after 30 by default, each with its attempts and its
//! listing row, and a dead one's id from the DLQ index in Redis.
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

    /// One pass over the three final statuses.
    pub async fn run_once(&self) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(keep) = self.retention.completed {
            pruned.completed = self.prune(Status::Completed, keep).await?.len();
        }
        if let Some(keep) = self.retention.cancelled {
            pruned.cancelled = self.prune(Status::Cancelled, keep).await?.len();
        }
        if let Some(keep) = self.retention.dead {
            let dead = self.prune(Status::Failed, keep).await?;
            pruned.dead = dead.len();
            if !dead.is_empty() {
                // Postgres has forgotten them already: a failure here leaves ids that the DLQ list
                // never shows (it reads Postgres) and the next rebuild drops.
                if let Err(err) = self.queue.forget_dead(&dead).await {
                    tracing::warn!(error = %err, count = dead.len(), "pruned dead jobs are still in the redis DLQ index");
                }
            }
        }
        if pruned != Pruned::default() {
            tracing::info!(?pruned, "pruned finished jobs past their retention");
        }
        Ok(pruned)
    }

    /// Deletes `status` jobs finished more than `keep` ago, batch by batch, up to the pass's bound.
    async fn prune(&self, status: Status, keep: Duration) -> Result<Vec<JobId>> {
        let statement = prune_statement(status);
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let mut deleted = Vec::new();
        for _ in 0..self.max_batches {
            let batch: Vec<JobId> = self
                .store
                .prune(&statement, keep_ms, BATCH)
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

/// prune.sql for one final status (a literal, so that Postgres uses that status's index).
pub fn prune_statement(status: Status) -> String {
    const CUTOFF: &str = "now() - make_interval(secs => $1::int8 / 1000.0)";
    let finder = match status {
        Status::Completed => format!(
            "SELECT j.id FROM job_listing l JOIN jobs j ON j.id = l.id
    WHERE l.created_at < {CUTOFF} AND j.status = 'COMPLETED' AND j.completed_at < {CUTOFF}
    ORDER BY l.created_at LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
        ),
        Status::Cancelled => format!(
            "SELECT id FROM jobs
    WHERE status = 'CANCELLED' AND created_at < {CUTOFF} AND completed_at < {CUTOFF}
    ORDER BY status, created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        Status::Failed => format!(
            "SELECT id FROM jobs
    WHERE status = 'FAILED' AND completed_at < {CUTOFF}
    ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        // Only finished jobs are ever pruned.
        Status::Pending | Status::Blocked | Status::InProgress => "SELECT NULL::uuid AS id WHERE false".to_owned(),
    };
    include_str!("../sql/prune.sql").replace("{finder}", &finder)
}

impl Store {
    /// Runs one batch of [`prune_statement`]; the ids deleted.
    pub async fn prune(&self, statement: &str, keep_ms: i64, batch: i64) -> Result<Vec<Uuid>> {
        self.query(statement, &[&keep_ms, &batch])
            .await?
            .iter()
            .map(|row| Ok(row.try_get("id")?))
            .collect()
    }
}
