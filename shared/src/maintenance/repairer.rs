//! Keeps Redis in step with Postgres. If our keys are gone (Redis restarted empty, keys deleted),
//! it rebuilds them from the PENDING and FAILED jobs, and marks them built only once that has
//! finished; and it pushes again any PENDING job that is long overdue, in case its push was lost (a
//! create that committed while Redis was down). Pushing is idempotent (see [`crate::queue`]): an
//! id Redis already holds is left as it is, so repair restores only what Redis cannot account
//! for, and a backlog that waits is never multiplied.
//!
//! It also releases the children of completed parents whose release did not follow their
//! completion (the worker stopped between the two statements: see V12__dependencies.sql).
//!
//! Its pass also forgets the outcome counts of `GET /queues` older than an hour, and takes the
//! queues with no id ready out of the names the workers of every queue wait on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::queue::Queue;
use crate::store::Store;

const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repaired {
    /// True when the keys were missing and were rebuilt in this pass.
    pub rebuilt: bool,
    /// Pending ids checked (by the rebuild, and as overdue).
    pub checked: usize,
    /// Of those, ids that were missing from Redis and were pushed.
    pub pushed: usize,
    /// Dead ids put back on the DLQ list by the rebuild.
    pub dead: usize,
    /// Blocked children released because a completion had not released them.
    pub released: usize,
    /// Rows of outcome counts older than an hour, deleted (housekeeping for `GET /queues`).
    pub throughput_pruned: i64,
    /// Queues with no id in Redis, taken out of the names the promoter and the workers of every
    /// queue look at.
    pub idle_queues: usize,
}

#[derive(Debug, Clone)]
pub struct Repairer {
    store: Store,
    queue: Queue,
    repair_after: Duration,
}

impl Repairer {
    pub fn new(store: Store, queue: Queue, repair_after: Duration) -> Self {
        Repairer {
            store,
            queue,
            repair_after,
        }
    }

    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Repaired> {
        let mut repaired = Repaired::default();
        if !self.queue.built().await? {
            // Several repairers may rebuild at once: pushing is idempotent, so that is harmless.
            tracing::warn!("redis keys missing; rebuilding them from postgres");
            repaired.rebuilt = true;
            self.queue.forget_legacy().await?;
            let mut after = None;
            loop {
                let page = self.store.pending_page(after, PAGE).await?;
                repaired.pushed += self.queue.repush_many(&page, now).await?;
                repaired.checked += page.len();
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.id),
                    _ => break,
                }
            }
            let dead = self.store.dead_ids().await?;
            self.queue.replace_dead(&dead).await?;
            repaired.dead = dead.len();
            self.queue.mark_built(now).await?;
            tracing::info!(pushed = repaired.pushed, dead = repaired.dead, "redis rebuilt");
        }
        let overdue_before = now - chrono::Duration::from_std(self.repair_after).unwrap_or(chrono::Duration::MAX);
        loop {
            let overdue = self.store.mark_repushed(now, overdue_before, PAGE).await?;
            let missing = self.queue.repush_many(&overdue, now).await?;
            if missing > 0 {
                tracing::warn!(
                    missing,
                    checked = overdue.len(),
                    "overdue jobs missing from redis; pushed them again"
                );
            }
            repaired.pushed += missing;
            repaired.checked += overdue.len();
            if overdue.len() < PAGE {
                break;
            }
        }
        loop {
            let released = self.store.release_stranded(overdue_before, PAGE as i64, now).await?;
            if released.is_empty() {
                break;
            }
            tracing::warn!(
                released = released.len(),
                "children left blocked after their last parent completed; released them"
            );
            self.queue.enqueue_many(&released, now).await?;
            repaired.released += released.len();
        }
        repaired.throughput_pruned = self.store.prune_throughput().await?;
        repaired.idle_queues = self.queue.forget_idle_queues().await?;
        Ok(repaired)
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("repairer", interval, shutdown, || async {
            self.run_once(self.store.now().await).await
        })
        .await
    }
}
