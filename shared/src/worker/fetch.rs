//! Taking work: ids popped from Redis (or, while it is down, jobs claimed straight from Postgres)
//! and claimed under leases; a claim whose answer was lost is settled before anything acts on it.

use crate::metrics::metrics;
use std::collections::HashSet;

use tokio::time::{Duration, Instant};

use super::{IDLE_PAUSE, REDIS_RETRY_AFTER, Worker, fence_margin};
use crate::error::{Error, Result};
use crate::job::JobId;
use crate::queue::{BlockingPop, Popped};
use crate::store::Lease;

impl Worker {
    /// Takes up to `count` jobs: from Redis while it answers, from Postgres otherwise, waiting for
    /// ids no later than `stop_taking_at`. Returns the leases and when their claim was sent (no
    /// lease can have been granted before that).
    pub(super) async fn fetch(
        &self,
        popper: &mut BlockingPop,
        count: usize,
        redis_down_until: &mut Option<Instant>,
        stop_taking_at: Option<Instant>,
    ) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        if redis_down_until.is_none_or(|until| Instant::now() >= until) {
            let at_most = stop_taking_at.map(|at| at.saturating_duration_since(Instant::now()));
            if let Some(left) = at_most
                && left < Duration::from_millis(10)
            {
                // Too little time to wait for ids: anything popped now would arrive too late.
                tokio::time::sleep(left).await;
                return Ok((Vec::new(), Instant::now()));
            }
            match popper.pop(count, at_most).await {
                Ok(popped) => {
                    if redis_down_until.take().is_some() {
                        metrics().redis_fallback.set(0);
                    }
                    if popped.ids.is_empty() {
                        return Ok((Vec::new(), Instant::now()));
                    }
                    return self.claim_popped(popped).await;
                }
                Err(err) => {
                    if redis_down_until.is_none() {
                        tracing::warn!(error = %err, "redis unavailable; claiming from postgres");
                    }
                    *redis_down_until = Some(Instant::now() + REDIS_RETRY_AFTER);
                    metrics().redis_fallback.set(1);
                }
            }
        }
        let now = inner.store.now().await;
        let sent = Instant::now();
        let served = inner.config.queues.names();
        let served = served.as_deref();
        let mut claimed = inner
            .store
            .claim_next(&inner.config.worker_id, now, inner.config.lease, count, served)
            .await?;
        if claimed.len() < count {
            match inner
                .store
                .claim_next_limited(
                    &inner.config.worker_id,
                    now,
                    inner.config.lease,
                    count - claimed.len(),
                    served,
                )
                .await
            {
                Ok(more) => claimed.extend(more),
                Err(err) if claimed.is_empty() => return Err(err),
                Err(err) => tracing::warn!(error = %err, "could not claim from limited queues"),
            }
        }
        if claimed.is_empty() {
            tokio::time::sleep(IDLE_PAUSE).await;
        }
        Ok((claimed, sent))
    }

    /// Claims the ids just popped. What happens after the claim committed is bookkeeping for the
    /// ids left over, and never costs a lease: the claimed jobs are returned to run whatever it
    /// meets.
    async fn claim_popped(&self, popped: Popped) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let sent = Instant::now();
        let Popped { queue, level, ids } = popped;
        let claimed = inner
            .store
            .claim_many(&ids, &inner.config.worker_id, now, inner.config.lease)
            .await;
        let leases = match claimed {
            Ok(leases) => leases,
            Err(err) if err.is_in_doubt() => {
                tracing::warn!(ids = ids.len(), error = %err, "claim in doubt; reading back what it did");
                return self.settle_claim(ids, &queue, level, sent, err).await;
            }
            Err(err) => {
                // The ids left Redis but the claim failed: put them back, at the head of the queue
                // they came from, rather than wait for the repairer.
                if let Err(push) = inner.queue.push_front_many(&queue, level, &ids).await {
                    tracing::warn!(ids = ids.len(), error = %push, "could not push back unclaimed ids; the repairer will");
                }
                return Err(err);
            }
        };
        let mut leases = leases;
        if leases.len() < ids.len() {
            let claimed: HashSet<JobId> = leases.iter().map(Lease::id).collect();
            let left: Vec<JobId> = ids.into_iter().filter(|id| !claimed.contains(id)).collect();
            // The jobs of limited queues were left out: claim those that fit under their limits.
            // The others held back are dropped; a freed slot pushes the queue's next ones.
            let limited_queues = self.limited_queues().await;
            let limited = if limited_queues.is_empty() {
                // None a second ago: a queue limited since has its jobs pushed by the promoter.
                Ok(Vec::new())
            } else {
                inner
                    .store
                    .claim_limited(&left, &inner.config.worker_id, now, inner.config.lease)
                    .await
            };
            match limited {
                Ok(more) => leases.extend(more),
                Err(err) if err.is_in_doubt() => {
                    tracing::warn!(ids = left.len(), error = %err, "limited claim in doubt; reading back what it did");
                    if let Ok((more, _)) = self.settle_claim(left, &queue, level, sent, err).await {
                        leases.extend(more);
                    }
                    return Ok((leases, sent));
                }
                Err(err) => {
                    tracing::warn!(ids = left.len(), error = %err, "could not claim the ids of limited queues; the next freed slot or the promoter pushes them again");
                }
            }
            let claimed: HashSet<JobId> = leases.iter().map(Lease::id).collect();
            let left: Vec<JobId> = left.into_iter().filter(|id| !claimed.contains(id)).collect();
            if !left.is_empty() && limited_queues.contains(&queue) {
                // Held back by the limit, but for the odd id no longer pending (a duplicate).
                metrics()
                    .held_back
                    .get_or_create(&crate::metrics::Metrics::queue(&queue))
                    .inc_by(left.len() as u64);
                inner
                    .held_back
                    .fetch_add(left.len(), std::sync::atomic::Ordering::Relaxed);
            }
            // The rest are usually duplicates, finished jobs, or held back by a pause or a limit;
            // a job popped early goes back to the schedule.
            if !left.is_empty() {
                match inner.store.not_due(&left, now).await {
                    Ok(early) if !early.is_empty() => {
                        if let Err(err) = inner.queue.enqueue_many(&early, now).await {
                            tracing::warn!(ids = early.len(), error = %err, "could not reschedule early ids; the repairer will");
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(ids = left.len(), error = %err, "could not tell why ids were not claimable; the repairer will push those that must run");
                    }
                }
            }
        }
        Ok((leases, sent))
    }

    /// After a claim whose answer was lost: it may have committed. Once it can no longer change
    /// anything (the client timeout has passed since it was sent: it either started by
    /// [`Store::claim_many`]'s start-by time and ended within `statement_timeout`, or claimed
    /// nothing), read back which of `ids` it took. Those run here, under the leases it took (timed
    /// from when the claim was sent); the rest go back to the head of their queue. Pushing them
    /// back before that could let another worker claim a job this claim was taking, leaving it
    /// charged an attempt that never ran. If Postgres stays out of reach for the whole lease, all
    /// of them go back: whatever the claim took is not claimable, and the reaper takes it back.
    async fn settle_claim(
        &self,
        ids: Vec<JobId>,
        queue: &str,
        level: usize,
        sent: Instant,
        in_doubt: Error,
    ) -> Result<(Vec<Lease>, Instant)> {
        let inner = &self.inner;
        let lease = inner.config.lease;
        let give_up = sent + lease.saturating_sub(fence_margin(lease));
        tokio::time::sleep_until(sent + inner.store.timeout()).await;
        let mut pause = Duration::from_millis(50);
        while Instant::now() < give_up {
            match inner.store.held_by(&ids, &inner.config.worker_id).await {
                Ok(held) => {
                    let taken: HashSet<JobId> = held.iter().map(Lease::id).collect();
                    let back: Vec<JobId> = ids.iter().filter(|id| !taken.contains(id)).copied().collect();
                    tracing::info!(claimed = held.len(), pushed_back = back.len(), "claim in doubt settled");
                    if !back.is_empty()
                        && let Err(push) = inner.queue.push_front_many(queue, level, &back).await
                    {
                        tracing::warn!(ids = back.len(), error = %push, "could not push back unclaimed ids; the repairer will");
                    }
                    return Ok((held, sent));
                }
                Err(err) => {
                    tracing::debug!(error = %err, "claim in doubt: postgres still out of reach");
                    tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        // Postgres is still out of reach. The claim cannot commit any more, so every id may go
        // back: one it did claim is skipped by whoever pops it (it is not pending) and is taken
        // back by the reaper when its lease runs out.
        tracing::warn!(
            ids = ids.len(),
            "claim in doubt not settled within the lease; its ids go back"
        );
        if let Err(push) = inner.queue.push_front_many(queue, level, &ids).await {
            tracing::warn!(ids = ids.len(), error = %push, "could not push back unclaimed ids; the repairer will");
        }
        Err(in_doubt)
    }
}
