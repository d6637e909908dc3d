//! Takes back jobs whose worker stopped renewing its lease (killed, out of memory, a Lambda past
//! its deadline): the attempt fails as "lease expired", then the job retries at once or is dead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::Status;
use crate::queue::Queue;
use crate::retry::RetryPolicy;
use crate::store::{AfterFailure, Store};

const BATCH: usize = 100;

pub const LEASE_EXPIRED: &str = "lease expired: the worker stopped renewing it (crashed, killed or hung)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    pub retried: usize,
    pub dead: usize,
}

#[derive(Debug, Clone)]
pub struct Reaper {
    store: Store,
    queue: Queue,
    retry: RetryPolicy,
}

impl Reaper {
    pub fn new(store: Store, queue: Queue) -> Self {
        Reaper {
            store,
            queue,
            retry: RetryPolicy::default(),
        }
    }

    /// The backoff before a job whose lease expired runs again (default: [`RetryPolicy::default`]).
    /// A worker that crashed may have crashed because of this very job: retrying it at once would
    /// take down the next one too.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Takes back every job whose lease has expired by the database's clock. `now` stamps the
    /// records and decides whether a retry goes to a ready list or the schedule in Redis.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Reaped> {
        let mut reaped = Reaped::default();
        loop {
            let expired = self.store.expired_leases(BATCH).await?;
            let count = expired.len();
            for lease in expired {
                // Retry after the backoff of a failed attempt, while attempts remain.
                let next = if lease.has_attempts_left() {
                    Status::Pending
                } else {
                    Status::Failed
                };
                let retry_in = self.retry.delay(lease.attempt(), RetryPolicy::sample());
                match self.store.expire(&lease, now, LEASE_EXPIRED, next, retry_in).await {
                    Ok(AfterFailure::Retry { run_at, priority }) => {
                        reaped.retried += 1;
                        tracing::warn!(job_id = %lease.id(), attempt = lease.attempt(), retry_in_ms = retry_in.as_millis() as u64, "lease expired; retrying");
                        // Due by the database's clock, which set run_at: schedule it for run_at
                        // as seen from here, at least the backoff ahead.
                        let due = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
                        if let Err(err) = self.queue.enqueue(lease.id(), priority, run_at.max(due), now).await {
                            tracing::warn!(job_id = %lease.id(), error = %err, "could not push reaped job; the repairer will");
                        }
                    }
                    Ok(AfterFailure::Dead) => {
                        reaped.dead += 1;
                        tracing::error!(job_id = %lease.id(), attempt = lease.attempt(), "lease expired on the last attempt; job is dead");
                        if let Err(err) = self.queue.add_dead(lease.id()).await {
                            tracing::warn!(job_id = %lease.id(), error = %err, "could not index dead job in redis");
                        }
                    }
                    // Its holder renewed it or finished, or another reaper took it, since the read.
                    Err(Error::LeaseLost { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            if count < BATCH {
                return Ok(reaped);
            }
        }
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("reaper", interval, shutdown, || async {
            self.run_once(self.store.now().await).await
        })
        .await
    }
}
