//! Keeps Redis in step with Postgres. If our keys are gone (Redis restarted empty, keys deleted),
//! it rebuilds them from the PENDING and FAILED jobs; and it pushes again any PENDING job that is
//! long overdue, in case its push was lost (a create that committed while Redis was down).
//! Duplicate ids are harmless: a claim succeeds only once per pending run.

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
    /// Pending ids pushed (by the rebuild, and as overdue).
    pub pushed: usize,
    /// Dead ids put back on the DLQ list by the rebuild.
    pub dead: usize,
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
        if !self.queue.epoch_exists().await? && self.queue.claim_epoch(now).await? {
            tracing::warn!("redis keys missing; rebuilding them from postgres");
            repaired.rebuilt = true;
            let mut after = None;
            loop {
                let page = self.store.pending_page(after, PAGE).await?;
                self.queue.enqueue_many(&page, now).await?;
                repaired.pushed += page.len();
                match page.last() {
                    Some((id, _, _)) if page.len() == PAGE => after = Some(*id),
                    _ => break,
                }
            }
            let dead = self.store.dead_ids().await?;
            self.queue.replace_dead(&dead).await?;
            repaired.dead = dead.len();
            tracing::info!(pushed = repaired.pushed, dead = repaired.dead, "redis rebuilt");
        }
        let overdue_before = now - chrono::Duration::from_std(self.repair_after).unwrap_or(chrono::Duration::MAX);
        loop {
            let overdue = self.store.mark_repushed(now, overdue_before, PAGE).await?;
            self.queue.enqueue_many(&overdue, now).await?;
            repaired.pushed += overdue.len();
            if overdue.len() < PAGE {
                break;
            }
        }
        Ok(repaired)
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("repairer", interval, shutdown, || self.run_once(Utc::now())).await
    }
}
