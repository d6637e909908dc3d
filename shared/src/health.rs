//! The queues' health (`GET /queues`): per queue, the jobs in each status, the pending jobs due now
//! and the age of the longest-due one, the DLQ depth, and the outcomes of the last minutes.
//!
//! Counting stays cheap on big tables:
//! - a status is counted exactly, per queue, while it holds at most `bound` jobs in all queues
//!   (each status through its own partial index); past that, each queue's count is the planner's
//!   estimate (from the table's statistics, through `EXPLAIN`) and is marked estimated;
//! - `COMPLETED`, most jobs and on no index, is what the other statuses leave of each queue's jobs
//!   in the listing (counted in the same snapshot), while all of those are exact; otherwise it is
//!   estimated too;
//! - the outcomes per minute are not counted from the jobs at all: each outcome statement adds to
//!   a row of `queue_throughput` (see `V8__throughput.sql`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::job::{JobId, Status};
use crate::store::{Store, status_from_row};

/// Past this many jobs in one status (all queues), that status's counts are estimated.
pub const COUNT_BOUND: i64 = 50_000;

/// How many minutes of outcomes [`QueueHealth::throughput`] holds, the current one included.
pub const THROUGHPUT_MINUTES: i32 = 15;

/// One queue's health.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueHealth {
    pub queue: String,
    /// Jobs per status, in [`Status::ALL`] order.
    pub counts: Vec<StatusCount>,
    /// Pending jobs that are due now (the rest wait for their time or a retry); `None` when the
    /// pending jobs were too many to count.
    pub ready: Option<i64>,
    /// Seconds since the longest-due pending job became due, by the database's clock.
    pub oldest_pending_age: Option<f64>,
    /// Outcomes per minute, oldest first; the last is the current minute so far.
    pub throughput: Vec<MinuteOutcomes>,
    /// The queue's settings (the defaults when none were set).
    pub settings: QueueSettings,
}

/// A queue's settings, changed at run time (`PUT /queues/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueSettings {
    /// No job of the queue starts; running ones finish.
    pub paused: bool,
    /// At no instant do more than this many of its jobs run, fleet-wide; `None`: no limit.
    pub concurrency: Option<i32>,
    /// How long its finished jobs are kept, where it differs from the deployment's default.
    pub retention: QueueRetention,
    /// No more than so many of its jobs start in any window of a period, fleet-wide.
    pub rate_limit: Option<RateLimit>,
    /// When they were last changed; `None` for a queue never set.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A queue's rate limit: at most `limit` job starts in any window of `period_ms`, per value of the
/// payload field at `key` (a dot-separated path) when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: i32,
    pub period_ms: i32,
    pub key: Option<String>,
}

impl RateLimit {
    fn from_row(row: &tokio_postgres::Row) -> Result<Option<RateLimit>> {
        let limit: Option<i32> = row.try_get("rate_limit")?;
        let period_ms: Option<i32> = row.try_get("rate_period_ms")?;
        Ok(match (limit, period_ms) {
            (Some(limit), Some(period_ms)) => Some(RateLimit {
                limit,
                period_ms,
                key: row.try_get("rate_key")?,
            }),
            _ => None,
        })
    }
}

/// A queue's own retention per final status, in milliseconds from when a job finished: `None`
/// for the deployment's default (`JOBQ_RETAIN_*_MS`), `Some(0)` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRetention {
    pub completed_ms: Option<i64>,
    pub cancelled_ms: Option<i64>,
    pub dead_ms: Option<i64>,
}

impl QueueRetention {
    fn from_row(row: &tokio_postgres::Row) -> Result<QueueRetention> {
        Ok(QueueRetention {
            completed_ms: row.try_get("retain_completed_ms")?,
            cancelled_ms: row.try_get("retain_cancelled_ms")?,
            dead_ms: row.try_get("retain_dead_ms")?,
        })
    }
}

/// A change to a queue's settings: a `None` leaves that setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub paused: Option<bool>,
    /// `Some(None)` removes the limit.
    pub concurrency: Option<Option<i32>>,
    /// Per final status: `Some(None)` goes back to the default.
    pub retention: RetentionChange,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<RateLimit>>,
}

/// A change to a queue's retention: a `None` leaves that status's as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionChange {
    pub completed_ms: Option<Option<i64>>,
    pub cancelled_ms: Option<Option<i64>>,
    pub dead_ms: Option<Option<i64>>,
}

impl RetentionChange {
    pub fn is_empty(&self) -> bool {
        *self == RetentionChange::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    pub status: Status,
    pub count: i64,
    /// Read from the planner's statistics, not counted.
    pub estimated: bool,
}

/// The outcomes recorded in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteOutcomes {
    pub minute: DateTime<Utc>,
    pub completed: i64,
    /// Failed attempts followed by a retry (lease expiries included).
    pub retried: i64,
    pub dead: i64,
    pub cancelled: i64,
}

impl QueueHealth {
    pub fn count(&self, status: Status) -> StatusCount {
        self.counts
            .iter()
            .copied()
            .find(|c| c.status == status)
            .unwrap_or(StatusCount {
                status,
                count: 0,
                estimated: false,
            })
    }

    /// Jobs in the dead-letter queue.
    pub fn dlq_depth(&self) -> i64 {
        self.count(Status::Failed).count
    }
}

/// The statuses with an index of their own, counted exactly up to the bound.
const INDEXED: [Status; 5] = [
    Status::Pending,
    Status::Blocked,
    Status::InProgress,
    Status::Failed,
    Status::Cancelled,
];

/// What one queue's row of queue_counts.sql said.
#[derive(Debug, Default)]
struct Counted {
    by_status: BTreeMap<&'static str, i64>,
    listed: Option<i64>,
    ready: Option<i64>,
    oldest_pending_age: Option<f64>,
}

impl Store {
    /// Every queue's health (or only `only`'s), counting exactly up to `bound` jobs per status
    /// ([`COUNT_BOUND`] in the API). A queue is any that has a job, or had an outcome in the last
    /// minutes; `only` names one whether or not it has any.
    pub async fn queue_health(&self, only: Option<&str>, bound: i64) -> Result<Vec<QueueHealth>> {
        let mut names: BTreeSet<String> = match only {
            Some(queue) => BTreeSet::from([queue.to_owned()]),
            None => self
                .query(include_str!("sql/queue_names.sql"), &[])
                .await?
                .iter()
                .map(|row| row.try_get("queue"))
                .collect::<std::result::Result<_, _>>()?,
        };

        let totals = self
            .query_opt(include_str!("sql/status_totals.sql"), &[&(bound + 1)])
            .await?
            .ok_or_else(|| Error::CorruptRow("status_totals returned no row".into()))?;
        let within = |column: &str| -> Result<bool> { Ok(totals.try_get::<_, i64>(column)? <= bound) };
        let mut exact = Vec::new();
        for (status, column) in INDEXED
            .iter()
            .zip(["pending", "blocked", "in_progress", "failed", "cancelled"])
        {
            if within(column)? {
                exact.push(*status);
            }
        }
        let listed_exact = within("listed")?;

        let mut counted: BTreeMap<String, Counted> = BTreeMap::new();
        for row in self.query_planned(&counts_statement(&exact, listed_exact), &[]).await? {
            let queue: String = row.try_get("queue")?;
            if only.is_some_and(|only| only != queue) {
                continue;
            }
            let entry = counted.entry(queue).or_default();
            let count: i64 = row.try_get("count")?;
            if row.try_get::<_, &str>("status")? == "LISTED" {
                entry.listed = Some(count);
                continue;
            }
            let status = status_from_row(&row)?;
            entry.by_status.insert(status.as_str(), count);
            if status == Status::Pending {
                entry.ready = Some(row.try_get("ready")?);
                entry.oldest_pending_age = row.try_get("oldest_pending_age")?;
            }
        }

        if !exact.contains(&Status::Pending) {
            // Too many pending jobs to count, but the age of each queue's longest-due one is what
            // an operator watches: one pass over the due ones, through the pending index. A query
            // per queue would walk that whole index for every queue that has no due job.
            let oldest = match only {
                Some(queue) => self.query(include_str!("sql/oldest_pending.sql"), &[&queue]).await?,
                None => self.query(include_str!("sql/oldest_pending_all.sql"), &[]).await?,
            };
            for row in oldest {
                let queue: Option<String> = row.try_get("queue")?;
                let age: Option<f64> = row.try_get("oldest_pending_age")?;
                if let (Some(queue), Some(age)) = (queue.or_else(|| only.map(str::to_owned)), age) {
                    counted.entry(queue).or_default().oldest_pending_age = Some(age);
                }
            }
        }
        names.extend(counted.keys().cloned());
        let mut settings = self.queue_settings(only).await?;
        if only.is_none() {
            // A queue that was set (paused, say) is listed even without a job.
            names.extend(settings.keys().cloned());
        }
        let names: Vec<String> = names.into_iter().collect();
        let mut throughput = self.throughput(&names).await?;
        let mut all: BTreeSet<String> = names.into_iter().collect();
        if only.is_none() {
            // A queue whose jobs are all gone but that had outcomes in the last minutes.
            all.extend(throughput.keys().cloned());
        }
        let mut queues = self
            .assemble(all, counted, &mut throughput, &exact, listed_exact)
            .await?;
        for queue in &mut queues {
            queue.settings = settings.remove(&queue.queue).unwrap_or_default();
        }
        Ok(queues)
    }

    /// The settings set for every queue (or only `only`), by queue.
    pub async fn queue_settings(&self, only: Option<&str>) -> Result<BTreeMap<String, QueueSettings>> {
        self.query(include_str!("sql/queue_settings_list.sql"), &[&only])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("queue")?,
                    QueueSettings {
                        paused: row.try_get("paused")?,
                        concurrency: row.try_get("concurrency")?,
                        retention: QueueRetention::from_row(row)?,
                        rate_limit: RateLimit::from_row(row)?,
                        updated_at: row.try_get("updated_at")?,
                    },
                ))
            })
            .collect()
    }

    /// Changes a queue's settings at `now`. Returns them as they now are, and whether the queue was
    /// paused before.
    pub async fn put_queue_settings(
        &self,
        queue: &str,
        change: &SettingsChange,
        now: DateTime<Utc>,
    ) -> Result<(QueueSettings, bool)> {
        let rate = change.rate_limit.as_ref().and_then(Option::as_ref);
        let row = self
            .query_opt(
                include_str!("sql/queue_settings_put.sql"),
                &[
                    &queue,
                    &change.paused,
                    &now,
                    &change.concurrency.is_some(),
                    &change.concurrency.flatten(),
                    &change.retention.completed_ms.is_some(),
                    &change.retention.completed_ms.flatten(),
                    &change.retention.cancelled_ms.is_some(),
                    &change.retention.cancelled_ms.flatten(),
                    &change.retention.dead_ms.is_some(),
                    &change.retention.dead_ms.flatten(),
                    &change.rate_limit.is_some(),
                    &rate.map(|r| r.limit),
                    &rate.map(|r| r.period_ms),
                    &rate.and_then(|r| r.key.as_deref()),
                ],
            )
            .await?
            .ok_or_else(|| Error::CorruptRow("queue_settings_put returned no row".into()))?;
        Ok((
            QueueSettings {
                paused: row.try_get("paused")?,
                concurrency: row.try_get("concurrency")?,
                retention: QueueRetention::from_row(&row)?,
                rate_limit: RateLimit::from_row(&row)?,
                updated_at: row.try_get("updated_at")?,
            },
            row.try_get("was_paused")?,
        ))
    }

    /// One page of a queue's pending jobs in id order, to push to Redis.
    pub async fn queue_pending_page(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<crate::store::Ready>> {
        self.query(
            include_str!("sql/queue_pending_page.sql"),
            &[&queue, &after.map(|id| id.0), &(limit as i64)],
        )
        .await?
        .iter()
        .map(crate::store::ready_from_row)
        .collect()
    }

    async fn assemble(
        &self,
        names: BTreeSet<String>,
        mut counted: BTreeMap<String, Counted>,
        throughput: &mut BTreeMap<String, Vec<MinuteOutcomes>>,
        exact: &[Status],
        listed_exact: bool,
    ) -> Result<Vec<QueueHealth>> {
        let queues: Vec<_> = names
            .into_iter()
            .map(|queue| {
                let found = counted.remove(&queue).unwrap_or_default();
                let minutes = throughput.remove(&queue).unwrap_or_default();
                self.one_queue(queue, found, minutes, exact, listed_exact)
            })
            .collect();
        // Estimates take a round trip each: a few queues at a time.
        futures::stream::iter(queues).buffered(8).try_collect().await
    }

    async fn one_queue(
        &self,
        queue: String,
        found: Counted,
        throughput: Vec<MinuteOutcomes>,
        exact: &[Status],
        listed_exact: bool,
    ) -> Result<QueueHealth> {
        let mut counts = Vec::with_capacity(Status::ALL.len());
        for status in INDEXED {
            counts.push(if exact.contains(&status) {
                StatusCount {
                    status,
                    count: found.by_status.get(status.as_str()).copied().unwrap_or(0),
                    estimated: false,
                }
            } else {
                self.estimate(&queue, status).await?
            });
        }
        let completed = if listed_exact && exact.len() == INDEXED.len() {
            let others: i64 = counts.iter().map(|c| c.count).sum();
            StatusCount {
                status: Status::Completed,
                count: found.listed.unwrap_or(0) - others,
                estimated: false,
            }
        } else {
            self.estimate(&queue, Status::Completed).await?
        };
        // In the order of Status::ALL.
        counts.insert(3, completed);
        let ready = exact.contains(&Status::Pending).then(|| found.ready.unwrap_or(0));
        let oldest_pending_age = found.oldest_pending_age;
        Ok(QueueHealth {
            queue,
            counts,
            ready,
            oldest_pending_age,
            throughput,
            settings: QueueSettings::default(),
        })
    }

    /// The planner's estimate of one queue's jobs in one status, from the table's statistics.
    async fn estimate(&self, queue: &str, status: Status) -> Result<StatusCount> {
        let statement = format!(
            "EXPLAIN (FORMAT JSON) SELECT FROM jobs WHERE queue = $1 AND status = '{}'",
            status.as_str()
        );
        let rows = self.query_planned(&statement, &[&queue]).await?;
        let plan: serde_json::Value = rows
            .first()
            .ok_or_else(|| Error::CorruptRow("EXPLAIN returned no row".into()))?
            .try_get(0)?;
        let count = plan
            .pointer("/0/Plan/Plan Rows")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| Error::CorruptRow(format!("EXPLAIN gave no row estimate: {plan}")))?;
        Ok(StatusCount {
            status,
            count: count.round() as i64,
            estimated: true,
        })
    }

    /// The outcomes of the last [`THROUGHPUT_MINUTES`] minutes, per queue (`queues` and any other
    /// with outcomes), every minute present.
    async fn throughput(&self, queues: &[String]) -> Result<BTreeMap<String, Vec<MinuteOutcomes>>> {
        let mut by_queue: BTreeMap<String, Vec<MinuteOutcomes>> = BTreeMap::new();
        for row in self
            .query(include_str!("sql/throughput.sql"), &[&THROUGHPUT_MINUTES, &queues])
            .await?
        {
            by_queue
                .entry(row.try_get("queue")?)
                .or_default()
                .push(minute_from_row(&row)?);
        }
        Ok(by_queue)
    }

    /// Forgets outcomes counted more than an hour ago; the number of rows deleted.
    pub async fn prune_throughput(&self) -> Result<i64> {
        let row = self.query_opt(include_str!("sql/prune_throughput.sql"), &[]).await?;
        Ok(row.map(|r| r.try_get("deleted")).transpose()?.unwrap_or(0))
    }
}

fn minute_from_row(row: &Row) -> Result<MinuteOutcomes> {
    Ok(MinuteOutcomes {
        minute: row.try_get("minute")?,
        completed: row.try_get("completed")?,
        retried: row.try_get("retried")?,
        dead: row.try_get("dead")?,
        cancelled: row.try_get("cancelled")?,
    })
}

/// queue_counts.sql for these statuses (literals from [`Status::as_str`], never input), and the
/// listing when `listed`: the statement [`Store::queue_health`] counts with, for its plan.
pub fn counts_statement(exact: &[Status], listed: bool) -> String {
    let counted: String = exact
        .iter()
        .map(|status| {
            format!(
                "SELECT queue, status, count(*) AS count,
       count(*) FILTER (WHERE run_at <= now()) AS ready,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_pending_age
FROM jobs WHERE status = '{}' GROUP BY queue, status
UNION ALL
",
                status.as_str()
            )
        })
        .collect();
    include_str!("sql/queue_counts.sql")
        .replace("{counted}", &counted)
        .replace("{listed}", if listed { "true" } else { "false" })
}
