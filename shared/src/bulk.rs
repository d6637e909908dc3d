//! Acting on every job that matches a filter (`POST /jobs/bulk`), and the audit log of who acted.
//!
//! A bulk operation is a row in `operations` (migrations/V10__operations.sql). It works through the
//! statuses its action applies to, one at a time, newest job first, [`BATCH`] jobs a statement:
//! each batch acts on its jobs and moves the operation's cursor in the same statement, so a
//! processor that dies between two batches loses and repeats nothing, and two processors on the
//! same operation never act on the same batch (the second finds the row locked or moved on).
//!
//! Whoever has time runs the batches: the request that creates the operation (for about a second),
//! the promoter (every second), and the worker function (while it has time before its deadline).
//! The operation acts only on jobs created before it was asked for, and only on those still in a
//! status its action applies to when their batch comes: the others are counted as skipped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Result;
use crate::job::{JobId, Status};
use crate::queue::Queue;
use crate::search::{InvalidFilter, JobFilter};
use crate::store::Store;

/// Jobs per batch: one statement of a few tens of milliseconds, holding its rows no longer.
pub const BATCH: i64 = 1000;

/// What a bulk operation does to each job it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkAction {
    /// Dead (`FAILED`) jobs back to `PENDING` with a fresh attempt budget, as `POST /dlq/{id}/requeue`.
    Requeue,
    /// Pending jobs `CANCELLED`, running ones asked to stop, as `POST /jobs/{id}/cancel`.
    Cancel,
    /// Finished jobs (`COMPLETED`, `FAILED`, `CANCELLED`) deleted with their history.
    Delete,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Requeue => "requeue",
            BulkAction::Cancel => "cancel",
            BulkAction::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<BulkAction> {
        match text {
            "requeue" => Some(BulkAction::Requeue),
            "cancel" => Some(BulkAction::Cancel),
            "delete" => Some(BulkAction::Delete),
            _ => None,
        }
    }

    /// Every status the action applies to, in the order an operation works through them.
    pub fn applies_to(self) -> &'static [Status] {
        match self {
            BulkAction::Requeue => &[Status::Failed],
            BulkAction::Cancel => &[Status::Pending, Status::Blocked, Status::InProgress],
            BulkAction::Delete => &[Status::Completed, Status::Cancelled, Status::Failed],
        }
    }

    /// The statuses an operation with `filter` works through: the action's, narrowed to the
    /// filter's status when it has one. A status filter the action cannot apply to is refused
    /// rather than answered with nothing to do.
    pub fn statuses(self, filter: &JobFilter) -> std::result::Result<Vec<Status>, InvalidFilter> {
        let applies = self.applies_to();
        match filter.status_filter() {
            None => Ok(applies.to_vec()),
            Some(status) if applies.contains(&status) => Ok(vec![status]),
            Some(status) => Err(InvalidFilter {
                parameter: "status",
                problem: format!(
                    "{} applies to {} jobs, not to {}",
                    self.as_str(),
                    applies.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" and "),
                    status.as_str()
                ),
            }),
        }
    }
}

/// Whether an operation still has jobs to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    Running,
    Done,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "RUNNING",
            OperationState::Done => "DONE",
        }
    }
}

/// A bulk operation and its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: Uuid,
    pub action: BulkAction,
    /// The filter as `GET /jobs` names it (see [`JobFilter::to_json`]).
    pub filter: serde_json::Value,
    pub statuses: Vec<Status>,
    /// The index in `statuses` of the one being worked through.
    pub phase: usize,
    pub cursor: Option<(DateTime<Utc>, JobId)>,
    /// Jobs created at or after this instant are left alone.
    pub created_before: DateTime<Utc>,
    /// Matches counted when the operation was created.
    pub total: i64,
    /// Jobs acted on so far.
    pub processed: i64,
    /// Jobs that matched but had left the action's statuses when their batch came.
    pub skipped: i64,
    pub state: OperationState,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the last batch failed, until one succeeds.
    pub last_error: Option<String>,
}

impl Operation {
    /// The search of the current phase: the stored filter, in the phase's status, bounded by the
    /// operation's creation.
    pub(crate) fn phase_filter(&self) -> Result<Option<(JobFilter, Status)>> {
        let Some(&status) = self.statuses.get(self.phase) else {
            return Ok(None);
        };
        let mut filter = JobFilter::from_json(&self.filter)?.status(status);
        let before = match filter.created_before {
            Some(at) if at < self.created_before => at,
            _ => self.created_before,
        };
        filter = filter.created_before(before);
        Ok(Some((filter, status)))
    }
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// False when another processor held (or had just moved) the operation: nothing was done.
    pub owned: bool,
    /// The jobs acted on, with their places in Redis.
    pub acted: Vec<crate::queue::Place>,
}

/// Who asked for an action: the caller the API authenticated, and whom the caller says it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An IAM ARN, `api-token`, or `anonymous` when the API has no authentication.
    pub principal: String,
    /// The `X-Jobq-Actor` header: a name the caller gives (a person behind a CLI or a page), not
    /// verified.
    pub on_behalf_of: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    /// `job.cancel`, `job.requeue`, `bulk.requeue`, `bulk.cancel`, `bulk.delete`, `queue.*` (with
    /// the queue and what was set as its filter) or `schedule.put` and `schedule.delete` (with the
    /// schedule).
    pub action: String,
    pub job_id: Option<JobId>,
    pub operation_id: Option<Uuid>,
    pub filter: Option<serde_json::Value>,
    /// Jobs the action matched when it was asked for.
    pub count: i64,
}

/// Runs bulk operations' batches, with what each action also does in Redis.
#[derive(Debug, Clone)]
pub struct Operations {
    store: Store,
    queue: Queue,
}

impl Operations {
    pub fn new(store: Store, queue: Queue) -> Self {
        Operations { store, queue }
    }

    /// One batch of `operation`, then its effect in Redis: requeued ids onto their ready lists,
    /// cancelled ones out of them, deleted dead ones out of the DLQ index. Redis is the fast path
    /// only: a failure there is logged, and the repairer puts it right from Postgres.
    pub async fn run_batch(&self, operation: &Operation) -> Result<BatchOutcome> {
        let now = self.store.now().await;
        let Some((filter, status)) = operation.phase_filter()? else {
            return Ok(BatchOutcome {
                owned: false,
                acted: Vec::new(),
            });
        };
        let outcome = self
            .store
            .operation_batch(operation, &filter, status, BATCH, now)
            .await?;
        if outcome.acted.is_empty() {
            return Ok(outcome);
        }
        let ids: Vec<JobId> = outcome.acted.iter().map(|place| place.id).collect();
        let redis = match (operation.action, status) {
            (BulkAction::Requeue, _) => self.queue.requeue_many(&outcome.acted, now).await,
            (BulkAction::Cancel, Status::Pending) => self.queue.withdraw_many(&outcome.acted).await,
            (BulkAction::Delete, Status::Failed) => self.queue.forget_dead(&ids).await,
            _ => Ok(()),
        };
        if let Err(err) = redis {
            tracing::warn!(operation = %operation.id, action = operation.action.as_str(), count = ids.len(), error = %err,
                "bulk batch done in postgres but not in redis; the repairer puts redis right");
        }
        Ok(outcome)
    }

    /// Runs `id`'s batches until it is done, `budget` has passed, or another processor holds it.
    /// Returns the operation as it stands.
    pub async fn drive(&self, id: Uuid, budget: Duration) -> Result<Option<Operation>> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let Some(operation) = self.store.operation(id).await? else {
                return Ok(None);
            };
            if operation.state == OperationState::Done || tokio::time::Instant::now() >= deadline {
                return Ok(Some(operation));
            }
            if !self.run_batch(&operation).await?.owned {
                return self.store.operation(id).await;
            }
        }
    }

    /// Works on every running operation, oldest first, until each is done or `budget` has passed.
    /// Returns how many jobs were acted on.
    pub async fn run_once(&self, budget: Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut acted = 0;
        for operation in self.store.running_operations(16).await? {
            let mut operation = operation;
            while tokio::time::Instant::now() < deadline {
                let outcome = match self.run_batch(&operation).await {
                    Ok(outcome) => outcome,
                    Err(err) => {
                        // One operation that fails does not hold up the others; it is tried again
                        // at the next pass, and says why it is stuck meanwhile.
                        tracing::warn!(operation = %operation.id, error = %err, "bulk batch failed; trying again next pass");
                        if let Err(err) = self.store.operation_failed(operation.id, &err.to_string()).await {
                            tracing::warn!(operation = %operation.id, error = %err, "could not record the failure");
                        }
                        break;
                    }
                };
                acted += outcome.acted.len();
                if !outcome.owned {
                    break;
                }
                match self.store.operation(operation.id).await? {
                    Some(next) if next.state == OperationState::Running => operation = next,
                    Some(done) => {
                        tracing::info!(operation = %done.id, action = done.action.as_str(), processed = done.processed,
                            skipped = done.skipped, "bulk operation done");
                        break;
                    }
                    None => break,
                }
            }
        }
        Ok(acted)
    }

    /// Every `interval`, works on the running operations for up to `pass` at a time, until
    /// `shutdown` (which waits for the pass under way).
    pub async fn run(self, interval: Duration, pass: Duration, shutdown: CancellationToken) {
        crate::maintenance::every("operations", interval, shutdown, || self.run_once(pass)).await
    }
}
