//! Takes back jobs whose worker stopped renewing its lease (killed, out of memory, a Lambda past
//! its deadline): the attempt fails as "lease expired", then the job retries at once or is dead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::Status;
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

    /// Takes back every job whose lease has expired by the database's clock. `now` stamps the
    /// records and decides whether a retry goes to a ready list or the schedule in Redis.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Reaped> {
        let mut reaped = Reaped::default();
        loop {
            let expired = self.store.expired_leases(BATCH).await?;
            let count = expired.len();
            for lease in expired {
                // The attempt already waited out its lease: retry at once, while attempts remain.
                let next = if lease.job().attempts < lease.job().max_attempts {
                    Status::Pending
                } else {
                    Status::Failed
                };
                match self.store.expire(&lease, now, LEASE_EXPIRED, next).await {
                    Ok(AfterFailure::Retry { run_at, priority }) => {
                        reaped.retried += 1;
                        tracing::warn!(job_id = %lease.id(), attempt = lease.attempt(), "lease expired; retrying");
                        if let Err(err) = self.queue.enqueue(lease.id(), priority, run_at, run_at.max(now)).await {
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
        super::every("reaper", interval, shutdown, || self.run_once(Utc::now())).await
    }
}
