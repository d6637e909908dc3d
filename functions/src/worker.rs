//! The worker function: runs jobs until the queue is idle, a job count is reached, or the
//! invocation's deadline comes near, and returns what it did (the engine's `Summary`, camelCase).
//!
//! It accepts an EventBridge "Scheduled Event" (the usual trigger, e.g. every minute) or
//! `{"maxJobs": n, "untilIdle": bool}` (both optional). By default a run returns as soon as the
//! queue has nothing ready and nothing running: a scheduled invocation that finds no work costs
//! one poll, not its whole timeout, and the next schedule picks up what arrives later.
//! `"untilIdle": false` keeps it taking work until the deadline (or `maxJobs`).
//!
//! `JOBQ_WORKER_IDLE_WAIT_MS` (or `"idleWaitMs"` in the request) keeps a run waiting for work that
//! long after the queue went quiet: with the one-minute schedule and 60000, one run is always
//! waiting, so a new job starts within milliseconds even with no promoter container, for about
//! one function-second per second (see the README).
//!
//! It stops taking work a safety margin before the deadline (a tenth of the time left, 1 to 10 s)
//! and gives running jobs half that margin to finish; the rest are released unfinished (their
//! attempt does not count, up to [`jobq_shared::worker::MAX_FREE_RELEASES`] times) so that the next
//! run takes them. A job's timeout is cut to what one run can give, so a job longer than an
//! invocation is stopped before the deadline and released the same way: past that bound its
//! attempt is charged, so it is not released forever.
//!
//! So that a deployment without the promoter container loses nothing, each run first applies the
//! schema migrations (once per instance) and makes one repair pass (Redis rebuilt if it lost its
//! keys, overdue jobs pushed again) and fires the schedules' due ticks, and while it runs it
//! promotes due retries, reaps expired leases and fires ticks as they come due.

use std::time::{Duration, SystemTime};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use jobq_shared::Worker;
use jobq_shared::bulk::Operations;
use jobq_shared::maintenance::promoter::Promoter;
use jobq_shared::maintenance::pruner::Pruner;
use jobq_shared::maintenance::reaper::Reaper;
use jobq_shared::maintenance::repairer::Repairer;
use jobq_shared::maintenance::scheduler::{self, Scheduler};
use jobq_shared::worker::{Limits, Summary};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deps::Deps;

const MIN_MARGIN: Duration = Duration::from_secs(1);
const MAX_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("unsupported event: {0}")]
    BadEvent(String),
    #[error("worker engine")]
    Engine(#[from] jobq_shared::Error),
}

impl From<WorkerError> for Diagnostic {
    fn from(err: WorkerError) -> Diagnostic {
        let error_type = match err {
            WorkerError::BadEvent(_) => "BadEvent",
            WorkerError::Engine(_) => "WorkerEngine",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// A manual invocation's request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DrainRequest {
    max_jobs: Option<usize>,
    until_idle: Option<bool>,
    idle_wait_ms: Option<u64>,
}

/// What an invocation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub max_jobs: Option<usize>,
    pub until_idle: bool,
    /// How long to keep waiting for work once the queue is empty (`None`: the configured wait).
    pub idle_wait: Option<Duration>,
}

/// Reads a scheduled event or a `{"maxJobs": n}` request.
pub fn parse_event(event: serde_json::Value) -> Result<Request, WorkerError> {
    if event.get("detail-type").is_some() {
        let scheduled: EventBridgeEvent = serde_json::from_value(event)
            .map_err(|err| WorkerError::BadEvent(format!("not an EventBridge event: {err}")))?;
        tracing::info!(source = %scheduled.source, detail_type = %scheduled.detail_type, event_id = ?scheduled.id, "scheduled run");
        return Ok(Request {
            max_jobs: None,
            until_idle: true,
            idle_wait: None,
        });
    }
    let event = if event.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        event
    };
    let drain: DrainRequest = serde_json::from_value(event).map_err(|err| {
        WorkerError::BadEvent(format!(
            "expected an EventBridge scheduled event or {{\"maxJobs\": n, \"untilIdle\": bool, \"idleWaitMs\": ms}}: {err}"
        ))
    })?;
    if drain.max_jobs == Some(0) {
        return Err(WorkerError::BadEvent("maxJobs must be at least 1".to_owned()));
    }
    Ok(Request {
        max_jobs: drain.max_jobs,
        until_idle: drain.until_idle.unwrap_or(true),
        idle_wait: drain.idle_wait_ms.map(Duration::from_millis),
    })
}

/// How an invocation spends the time it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Take new jobs for this long.
    pub take_for: Duration,
    /// Then give running jobs this long to finish before releasing them.
    pub grace: Duration,
}

/// Splits `remaining` (until the deadline) into time to take work and a safety margin, half of
/// which running jobs may use to finish; the other half is for releasing leases and returning.
pub fn plan(remaining: Duration, configured_grace: Duration) -> Plan {
    let margin = (remaining / 10).clamp(MIN_MARGIN, MAX_MARGIN).min(remaining / 2);
    Plan {
        take_for: remaining - margin,
        grace: configured_grace.min(margin / 2),
    }
}

/// The time left in this invocation. Lambda gives the deadline in milliseconds since the epoch;
/// `cargo lambda watch` gives a bare duration instead (600000), which is read as milliseconds from
/// now, capped at Lambda's longest timeout.
pub fn time_left(context: &Context, now: SystemTime) -> Duration {
    // 2001-09-09: no real deadline is earlier.
    const EARLIEST_EPOCH_MS: u64 = 1_000_000_000_000;
    const LONGEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    if context.deadline < EARLIEST_EPOCH_MS {
        return Duration::from_millis(context.deadline).min(LONGEST_TIMEOUT);
    }
    context.deadline().duration_since(now).unwrap_or(Duration::ZERO)
}

pub async fn handle(deps: &Deps, event: LambdaEvent<serde_json::Value>) -> Result<Summary, WorkerError> {
    let started = Instant::now();
    let request = parse_event(event.payload)?;
    let remaining = time_left(&event.context, SystemTime::now());
    let plan = plan(remaining, deps.config.worker.shutdown_grace);
    tracing::info!(
        deadline_ms = event.context.deadline,
        remaining_ms = remaining.as_millis() as u64,
        take_for_ms = plan.take_for.as_millis() as u64,
        max_jobs = request.max_jobs,
        until_idle = request.until_idle,
        "worker run starting"
    );
    let mut config = deps.config.worker.clone();
    config.shutdown_grace = plan.grace;
    // A job gets at most the time this run takes work for: one that needs longer is stopped then
    // and released (uncharged, a bounded number of times, then charged), never left running into
    // the deadline.
    config.max_job_timeout = Some(plan.take_for);

    if let Err(err) = deps.migrate_once().await {
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "could not apply migrations; trying again next run");
    }
    let store = deps.jobs.store().clone();
    let queue = deps.jobs.queue().clone();
    let repairer = Repairer::new(store.clone(), queue.clone(), deps.config.maintenance.repair_after);
    match repairer.run_once(store.now().await).await {
        Ok(repaired) if repaired.pushed > 0 || repaired.rebuilt => tracing::warn!(?repaired, "repaired redis"),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "repair pass failed; the next run tries again"),
    }
    // A short pass, two batches of each status at most, so that it takes little of the run; a
    // large backlog of old jobs takes several runs (or the promoter's passes).
    let pruner = Pruner::new(store.clone(), queue.clone(), deps.config.maintenance.retention).with_max_batches(2);
    if let Err(err) = pruner.run_once().await {
        tracing::warn!(error = %err, "prune pass failed; the next run tries again");
    }
    if !deps.config.maintenance.emf_interval.is_zero()
        && let Err(err) = jobq_shared::metrics::log_emf(&store, &deps.config.namespace).await
    {
        tracing::warn!(error = %err, "could not read the queues' state for the metrics");
    }
    let maintenance = CancellationToken::new();
    let promoter = tokio::spawn(
        Promoter::new(store.clone(), queue.clone()).run(deps.config.maintenance.promote_interval, maintenance.clone()),
    );
    let reaper = tokio::spawn(
        Reaper::new(store.clone(), queue.clone())
            .with_retry(deps.config.worker.retry)
            .run(deps.config.maintenance.reap_interval, maintenance.clone()),
    );
    // Bulk operations go on here too, so that a deployment without the promoter finishes them:
    // short passes, so that the end of the run does not wait long for one.
    let operations = tokio::spawn(Operations::new(store.clone(), queue.clone()).run(
        Duration::from_secs(1),
        Duration::from_secs(2),
        maintenance.clone(),
    ));

    // Schedules fire here too, so that a deployment without the promoter fires them: once now,
    // and then while the run lasts. A tick between two runs fires late (at the next run), or is
    // missed if that is more than a minute late (see `missedFires`).
    let schedules = Scheduler::new(store.clone(), queue.clone(), deps.config.worker.default_timeout);
    if let Err(err) = schedules.run_once(store.now().await).await {
        tracing::warn!(error = %err, "schedule pass failed; the next pass tries again");
    }
    let scheduler = tokio::spawn(schedules.run(scheduler::INTERVAL, maintenance.clone()));

    let worker = Worker::new(store, queue, deps.registry.clone(), config);
    let limits = Limits {
        // From the start of the invocation: migrations, repair and pruning took some of it.
        stop_taking_at: Some(started + plan.take_for),
        max_jobs: request.max_jobs,
        until_idle: request.until_idle,
        idle_wait: request.idle_wait.unwrap_or(deps.config.worker_idle_wait),
    };
    let outcome = worker.run_with(CancellationToken::new(), limits).await;

    maintenance.cancel();
    let _ = tokio::join!(promoter, reaper, operations, scheduler);
    let summary = outcome?;
    tracing::info!(
        claimed = summary.claimed,
        completed = summary.completed,
        retried = summary.retried,
        dead_lettered = summary.dead_lettered,
        released = summary.released,
        "worker run done"
    );
    if !deps.config.maintenance.emf_interval.is_zero() {
        let at = deps.jobs.store().now().await;
        println!(
            "{}",
            jobq_shared::metrics::summary_emf(&summary, &deps.config.namespace, at)
        );
        // The same metrics as the promoter's `/metrics`, per queue and outcome.
        jobq_shared::metrics::log_activity_emf(&deps.config.namespace, at);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_keeps_a_tenth_between_one_and_ten_seconds() {
        let grace = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(
            plan(s(60), grace),
            Plan {
                take_for: s(54),
                grace: s(3)
            }
        );
        assert_eq!(
            plan(s(900), grace),
            Plan {
                take_for: s(890),
                grace: s(5)
            }
        );
        assert_eq!(
            plan(s(5), grace),
            Plan {
                take_for: s(4),
                grace: Duration::from_millis(500)
            }
        );
        assert_eq!(plan(s(1), grace).take_for, Duration::from_millis(500));
        assert_eq!(
            plan(Duration::ZERO, grace),
            Plan {
                take_for: Duration::ZERO,
                grace: Duration::ZERO
            }
        );
        assert_eq!(
            plan(s(60), Duration::from_millis(100)).grace,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn the_deadline_is_an_epoch_time_or_a_bare_duration() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut context = Context::default();
        context.deadline = 1_800_000_000_000 + 30_000;
        assert_eq!(time_left(&context, now), Duration::from_secs(30));
        context.deadline = 1_800_000_000_000 - 1;
        assert_eq!(time_left(&context, now), Duration::ZERO);
        context.deadline = 600_000;
        assert_eq!(time_left(&context, now), Duration::from_secs(600));
        context.deadline = 999_999_999_999;
        assert_eq!(time_left(&context, now), Duration::from_secs(900));
        context.deadline = 0;
        assert_eq!(time_left(&context, now), Duration::ZERO);
    }

    #[test]
    fn events_are_read_as_schedules_or_drain_requests() {
        let scheduled = json!({
            "version": "0", "id": "e", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [], "detail": {}
        });
        assert_eq!(
            parse_event(scheduled).expect("schedule"),
            Request {
                max_jobs: None,
                until_idle: true,
                idle_wait: None
            }
        );
        assert_eq!(
            parse_event(json!({"maxJobs": 5})).expect("drain"),
            Request {
                max_jobs: Some(5),
                until_idle: true,
                idle_wait: None
            }
        );
        assert_eq!(
            parse_event(json!({"untilIdle": false})).expect("drain"),
            Request {
                max_jobs: None,
                until_idle: false,
                idle_wait: None
            }
        );
        assert_eq!(
            parse_event(json!({"idleWaitMs": 60000})).expect("drain"),
            Request {
                max_jobs: None,
                until_idle: true,
                idle_wait: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            parse_event(json!(null)).expect("empty"),
            Request {
                max_jobs: None,
                until_idle: true,
                idle_wait: None
            }
        );
        for bad in [
            json!({"maxJobs": "5"}),
            json!({"maxJobs": 0}),
            json!({"jobs": 1}),
            json!([1]),
            json!({"detail-type": 1}),
        ] {
            assert!(
                matches!(parse_event(bad.clone()), Err(WorkerError::BadEvent(_))),
                "{bad}"
            );
        }
    }
}
