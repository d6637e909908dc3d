//! Takes back jobs whose worker stopped renewing its lease (killed, out of memory, a Lambda past
//! its deadline): the attempt fails as "lease expired", then the job retries at once or is dead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::Outcome;
use crate::queue::Queue;
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
}

impl Reaper {
    pub fn new(store: Store, queue: Queue) -> Self {
        Reaper { store, queue }
    }

    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Reaped> {
        let mut reaped = Reaped::default();
        loop {
            let expired = self.store.expired_leases(now, BATCH).await?;
            let count = expired.len();
            for lease in expired {
                // Retry at once: the attempt already waited out its lease.
                match self
                    .store
                    .fail(&lease, now, LEASE_EXPIRED, true, now, Outcome::LeaseExpired)
                    .await
                {
                    Ok(AfterFailure::Retry { run_at, priority }) => {
                        reaped.retried += 1;
                        tracing::warn!(job_id = %lease.id(), attempt = lease.attempt(), "lease expired; retrying");
                        if let Err(err) = self.queue.enqueue(lease.id(), priority, run_at, now).await {
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
                    // Its holder finished (or another reaper took it) between the read and the write.
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
        super::every("reaper", interval, shutdown, || self.run_once(Utc::now())).await
    }
}
