//! Moves due jobs (scheduled, or waiting for a retry) from the schedule ZSET to the ready lists.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::queue::Queue;

/// Ids moved per script call; a larger backlog takes several calls in one pass.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct Promoter {
    queue: Queue,
}

impl Promoter {
    pub fn new(queue: Queue) -> Self {
        Promoter { queue }
    }

    /// Moves every id due at `now`; returns how many moved.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut total = 0;
        loop {
            let moved = self.queue.promote_due(now, BATCH).await?;
            total += moved;
            if moved < BATCH {
                return Ok(total);
            }
        }
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("promoter", interval, shutdown, || self.run_once(Utc::now())).await
    }
}
