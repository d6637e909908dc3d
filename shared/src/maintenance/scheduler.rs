//! Fires the schedules' due ticks (see [`crate::schedule`]): each due schedule's plan is inserted
//! as jobs by one compare-and-set statement, then the new jobs are pushed to Redis. Any number of
//! processes may run this at once; a tick is fired by exactly one of them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::schedule::{Cron, Schedule, job_for, plan};
use crate::store::Store;

/// Due schedules read per query.
const BATCH: usize = 100;
/// Queries per pass: a `catchUp` schedule far behind fires [`crate::schedule::CATCH_UP_BATCH`]
/// ticks a statement, so a long backlog takes several passes rather than holding one.
const ROUNDS: usize = 10;

/// How often the promoter and the worker function fire due ticks: a tick fires within about this
/// much of its time.
pub const INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    queue: Queue,
    default_timeout_ms: i32,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// Ticks this pass moved on (fired, skipped or missed).
    pub schedules: usize,
    pub jobs: usize,
    /// Firings another process got to first.
    pub lost: usize,
    pub failed: usize,
}

impl Scheduler {
    pub fn new(store: Store, queue: Queue, default_timeout: Duration) -> Self {
        Scheduler {
            store,
            queue,
            default_timeout_ms: default_timeout.as_millis().min(i32::MAX as u128) as i32,
        }
    }

    /// Fires every tick due at `now` (on the database clock).
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Fired> {
        let mut fired = Fired::default();
        for _ in 0..ROUNDS {
            let due = self.store.due_schedules(now, BATCH).await?;
            let mut behind = false;
            for schedule in &due {
                match self.fire(schedule, now).await {
                    Ok(Some((jobs, next))) => {
                        fired.schedules += 1;
                        fired.jobs += jobs;
                        behind |= next <= now;
                    }
                    Ok(None) => fired.lost += 1,
                    Err(err) => {
                        fired.failed += 1;
                        tracing::warn!(schedule = %schedule.name, error = %err, source = ?std::error::Error::source(&err), "could not fire a schedule's tick");
                        if let Err(record) = self.store.schedule_failed(&schedule.name, &err.to_string()).await {
                            tracing::warn!(schedule = %schedule.name, error = %record, "could not record why");
                        }
                    }
                }
            }
            if due.len() < BATCH && !behind {
                break;
            }
        }
        Ok(fired)
    }

    /// Fires `schedule`'s due ticks; `None` when another process fired them first. Returns the
    /// jobs made and the schedule's next tick.
    async fn fire(&self, schedule: &Schedule, now: DateTime<Utc>) -> Result<Option<(usize, DateTime<Utc>)>> {
        let cron = Cron::parse(&schedule.cron, &schedule.timezone).map_err(Error::InvalidSchedule)?;
        let job = job_for(&schedule.job).map_err(Error::InvalidSchedule)?;
        let plan = plan(&cron, schedule.next_fire_at, now, schedule.missed_fires);
        let firing = self
            .store
            .fire_schedule(schedule, &job, &plan, self.default_timeout_ms, now)
            .await?;
        if !firing.moved {
            return Ok(None);
        }
        if !firing.jobs.is_empty() {
            crate::metrics::count_enqueued(&job.queue, firing.jobs.len() as u64);
            if let Err(err) = self.queue.enqueue_many(&firing.jobs, now).await {
                tracing::warn!(schedule = %schedule.name, jobs = firing.jobs.len(), error = %err, "fired jobs stored but not pushed to redis; the repairer will push them");
            }
        }
        tracing::info!(
            schedule = %schedule.name,
            ticks = ?plan.ticks,
            jobs = firing.jobs.len(),
            missed = plan.missed,
            overlapped = firing.overlapped,
            next = %plan.next,
            "schedule fired"
        );
        Ok(Some((firing.jobs.len(), plan.next)))
    }

    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        super::every("scheduler", interval, shutdown, || async {
            self.run_once(self.store.now().await).await
        })
        .await
    }
}
