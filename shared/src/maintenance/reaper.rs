//! Takes back jobs whose worker stopped renewing its lease (killed, out of memory, a Lambda past
//! its deadline): the attempt fails as "lease expired", then the job retries after a backoff or is
//! dead. A lease that ran out before its holder renewed it once is given back uncharged instead
//! (a bounded number of times): nothing shows that the job ever reached a handler.

use crate::metrics::{Metrics, metrics};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::Status;
use crate::queue::Queue;
use crate::retry::RetryPolicy;
use crate::store::{AfterFailure, Lease, Store};
use crate::worker::MAX_FREE_RELEASES;

const BATCH: usize = 100;

pub const LEASE_EXPIRED: &str = "lease expired: the worker stopped renewing it (crashed, killed or hung)";

pub const NEVER_RENEWED: &str = "lease expired before its worker renewed it once (the claim's answer was lost, or the \
     worker stopped before its first heartbeat); not charged";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Charged an attempt (`LEASE_EXPIRED`) and retried after a backoff.
    pub retried: usize,
    /// Charged their last attempt: dead.
    pub dead: usize,
    /// Never renewed: given back uncharged, after a backoff.
    pub released: usize,
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
                let count_as = |outcome| {
                    metrics()
                        .reaped
                        .get_or_create(&Metrics::outcome(&lease.job().queue, outcome))
                        .inc()
                };
                if !lease.renewed() && lease.releases() < MAX_FREE_RELEASES {
                    match self.give_back_unrenewed(&lease, now).await? {
                        Some(AfterFailure::Retry { .. }) => {
                            reaped.released += 1;
                            count_as("released");
                        }
                        Some(_) => {
                            count_as("cancelled");
                        }
                        None => {}
                    }
                    continue;
                }
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
                        count_as("retried");
                        tracing::warn!(job_id = %lease.id(), attempt = lease.attempt(), retry_in_ms = retry_in.as_millis() as u64, "lease expired; retrying");
                        // Due by the database's clock, which set run_at: schedule it for run_at
                        // as seen from here, at least the backoff ahead.
                        let due = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
                        if let Err(err) = self
                            .queue
                            .enqueue(lease.id(), &lease.job().queue, priority, run_at.max(due), now)
                            .await
                        {
                            tracing::warn!(job_id = %lease.id(), error = %err, "could not push reaped job; the repairer will");
                        }
                    }
                    Ok(AfterFailure::Dead) => {
                        reaped.dead += 1;
                        count_as("dead");
                        tracing::error!(job_id = %lease.id(), attempt = lease.attempt(), "lease expired on the last attempt; job is dead");
                        if let Err(err) = self.queue.add_dead(lease.id()).await {
                            tracing::warn!(job_id = %lease.id(), error = %err, "could not index dead job in redis");
                        }
                    }
                    Ok(AfterFailure::Cancelled) => {
                        count_as("cancelled");
                        tracing::info!(job_id = %lease.id(), "lease expired on a job whose cancellation was requested; cancelled");
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

    /// A lease that ran out before its holder renewed it once: the claim's answer may never have
    /// reached the worker (lost past the lease), or the worker died between the claim and its
    /// first heartbeat. Charging that attempt could kill a job that never ran (`maxAttempts: 1`),
    /// so it goes back uncharged, counted in its releases: past [`MAX_FREE_RELEASES`] the next
    /// such expiry is charged, so a job that crashes its worker at once cannot go round forever.
    /// It still waits a backoff that grows with every release, in case it is what crashed its
    /// worker. Returns where the job went (`Retry`, or `Cancelled` when its cancellation was
    /// requested), or `None` when it was renewed or taken by another since.
    async fn give_back_unrenewed(&self, lease: &Lease, now: DateTime<Utc>) -> Result<Option<AfterFailure>> {
        let retry_in = self
            .retry
            .delay(lease.attempt() + lease.releases(), RetryPolicy::sample());
        let run_at = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
        match self.store.expire_unrenewed(lease, now, run_at, NEVER_RENEWED).await {
            Ok(AfterFailure::Retry { run_at, priority }) => {
                tracing::warn!(job_id = %lease.id(), attempt = lease.attempt(), releases = lease.releases() + 1, retry_in_ms = retry_in.as_millis() as u64, "lease expired never renewed; given back uncharged");
                if let Err(err) = self
                    .queue
                    .enqueue(lease.id(), &lease.job().queue, priority, run_at, now)
                    .await
                {
                    tracing::warn!(job_id = %lease.id(), error = %err, "could not push the job given back; the repairer will");
                }
                Ok(Some(AfterFailure::Retry { run_at, priority }))
            }
            Ok(other) => {
                tracing::info!(job_id = %lease.id(), "lease expired never renewed on a job whose cancellation was requested; cancelled");
                Ok(Some(other))
            }
            Err(Error::LeaseLost { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("reaper", interval, shutdown, || async {
            self.run_once(self.store.now().await).await
        })
        .await
    }
}
