//! Moves due jobs (scheduled, or waiting for a retry) from the schedule ZSET to the ready lists,
//! and pushes the next jobs of each queue with a concurrency or rate limit, as many as fit under its
//! limits (their ids, held back by a limit, were dropped: a worker that frees a slot pushes them at
//! once; this pass catches what that missed, a worker that died or a limit raised, and is what
//! starts them when a rate limit's window opens).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::queue::Queue;
use crate::store::Store;

/// Ids moved per script call; a larger backlog takes several calls in one pass.
const BATCH: usize = 1000;

/// How often the limited queues' next jobs are pushed.
pub const LIMITS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Promoter {
    store: Store,
    queue: Queue,
}

impl Promoter {
    /// A promoter for `queue`'s schedule; "due" is read on `store`'s database clock, the clock that
    /// set every due time and that claims check them against.
    pub fn new(store: Store, queue: Queue) -> Self {
        Promoter { store, queue }
    }

    /// Moves every id due at `now`, then pushes the limited queues' next jobs; returns how many
    /// ids moved or were pushed.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize> {
        Ok(self.promote(now).await? + self.push_limited(now).await?)
    }

    async fn promote(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut total = 0;
        loop {
            let moved = self.queue.promote_due(now, BATCH).await?;
            total += moved;
            if moved < BATCH {
                return Ok(total);
            }
        }
    }

    /// Pushes the next jobs of the queues with a concurrency or rate limit, as many as fit under
    /// their limits now.
    async fn push_limited(&self, now: DateTime<Utc>) -> Result<usize> {
        let ready = self.store.limited_ready(now, None).await?;
        if ready.is_empty() {
            return Ok(0);
        }
        self.queue.enqueue_many(&ready, now).await
    }

    /// Promotes every `interval`, and pushes the limited queues' jobs every [`LIMITS_INTERVAL`]
    /// (or `interval`, if shorter): a rate limit's window opens with time, not with a job's end,
    /// and nothing else pushes its held-back jobs when it does.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let promote = super::every("promoter", interval, shutdown.clone(), || async {
            self.promote(self.store.now().await).await
        });
        let limits = super::every("limits", interval.min(LIMITS_INTERVAL), shutdown, || async {
            self.push_limited(self.store.now().await).await
        });
        tokio::join!(promote, limits);
    }
}
