//! Moves due jobs (scheduled, or waiting for a retry) from the schedule ZSET to the ready lists,
//! and pushes the next jobs of each queue with a concurrency limit, as many as it has free slots
//! (their ids, held back by the limit, were dropped; a worker that frees a slot pushes them at once,
//! and this pass catches what that missed: a worker that died, a limit raised or set).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::queue::Queue;
use crate::store::Store;

/// Ids moved per script call; a larger backlog takes several calls in one pass.
const BATCH: usize = 1000;

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
        let mut total = 0;
        loop {
            let moved = self.queue.promote_due(now, BATCH).await?;
            total += moved;
            if moved < BATCH {
                break;
            }
        }
        let ready = self.store.limited_ready(now, None).await?;
        if !ready.is_empty() {
            total += self.queue.enqueue_many(&ready, now).await?;
        }
        Ok(total)
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("promoter", interval, shutdown, || async {
            self.run_once(self.store.now().await).await
        })
        .await
    }
}
