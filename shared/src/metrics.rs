//! What this process did, as Prometheus metrics: counters and histograms kept in memory as work
//! happens (lock-free atomics), and the queues' state read from Postgres when scraped.
//!
//! One set per process ([`metrics`]); the promoter serves it as OpenMetrics text on `/metrics`
//! ([`render`]). Labels are few and bounded: the queue (as named by the jobs, so as many values as
//! queues) and an outcome from a fixed list.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Result;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub queue: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub queue: String,
    pub status: &'static str,
}

type HistogramFamily = Family<QueueLabel, Histogram, fn() -> Histogram>;

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    /// Jobs created (replays of an idempotency key not counted), by queue.
    pub enqueued: Family<QueueLabel, Counter>,
    /// Handlers started, by queue.
    pub started: Family<QueueLabel, Counter>,
    /// Runs ended, by queue and outcome (see [`crate::worker`]'s `Finished`).
    pub finished: Family<OutcomeLabels, Counter>,
    /// Runs stopped by their timeout (also counted in `finished` as retried or dead).
    pub timed_out: Family<QueueLabel, Counter>,
    /// Seconds a handler ran.
    pub duration: HistogramFamily,
    /// Seconds from a job being due to its claim.
    pub wait: HistogramFamily,
    /// Leases the reaper found expired, by what came of them.
    pub reaped: Family<OutcomeLabels, Counter>,
    /// Writes refused because the lease had passed to another worker (fencing).
    pub fencing_rejections: Counter,
    /// 1 while this process's worker claims from Postgres because Redis failed.
    pub redis_fallback: Gauge,
    // Read from Postgres at each scrape.
    depth: Family<StatusLabels, Gauge>,
    oldest_pending_age: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    dead: Gauge,
}

/// Bucket bounds in seconds, from 1 ms to about 17 minutes (the longest a job may run).
fn seconds_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 4.0, 11,
    ))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jobq");
        let metrics = Metrics {
            registry: Registry::default(),
            enqueued: Family::default(),
            started: Family::default(),
            finished: Family::default(),
            timed_out: Family::default(),
            duration: Family::new_with_constructor(seconds_histogram),
            wait: Family::new_with_constructor(seconds_histogram),
            reaped: Family::default(),
            fencing_rejections: Counter::default(),
            redis_fallback: Gauge::default(),
            depth: Family::default(),
            oldest_pending_age: Family::default(),
            dead: Gauge::default(),
        };
        registry.register("jobs_enqueued", "Jobs created", metrics.enqueued.clone());
        registry.register("jobs_started", "Job handlers started", metrics.started.clone());
        registry.register(
            "jobs_finished",
            "Job runs ended, by outcome: completed, retried, dead, cancelled, released, deferred, lease_lost, fenced, unrecorded",
            metrics.finished.clone(),
        );
        registry.register(
            "jobs_timed_out",
            "Job runs stopped by their timeout",
            metrics.timed_out.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "How long job handlers ran",
            prometheus_client::registry::Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register_with_unit(
            "job_wait",
            "How long jobs waited from due to claimed",
            prometheus_client::registry::Unit::Seconds,
            metrics.wait.clone(),
        );
        registry.register(
            "leases_reaped",
            "Expired leases taken back by the reaper, by outcome: retried, dead, released",
            metrics.reaped.clone(),
        );
        registry.register(
            "fencing_rejections",
            "Outcomes refused because the lease had passed to another worker",
            metrics.fencing_rejections.clone(),
        );
        registry.register(
            "redis_fallback_active",
            "1 while the worker claims from Postgres because Redis failed",
            metrics.redis_fallback.clone(),
        );
        registry.register(
            "queue_jobs",
            "Jobs pending, running or dead, by queue and status (read from Postgres at scrape)",
            metrics.depth.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_pending_age",
            "Age of the longest-due pending job, by queue (read from Postgres at scrape)",
            prometheus_client::registry::Unit::Seconds,
            metrics.oldest_pending_age.clone(),
        );
        registry.register(
            "dlq_jobs",
            "Jobs in the dead-letter queue (read from Postgres at scrape)",
            metrics.dead.clone(),
        );
        Metrics { registry, ..metrics }
    }

    pub fn queue(queue: &str) -> QueueLabel {
        QueueLabel {
            queue: queue.to_owned(),
        }
    }

    pub fn outcome(queue: &str, outcome: &'static str) -> OutcomeLabels {
        OutcomeLabels {
            queue: queue.to_owned(),
            outcome,
        }
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric as OpenMetrics text, with the queues' state read from `store` first.
pub async fn render(store: &Store) -> Result<String> {
    let m = metrics();
    let state = store.queue_state().await?;
    // A queue that emptied since the last scrape shows 0, not its last count.
    m.depth.clear();
    m.oldest_pending_age.clear();
    for row in &state.depth {
        m.depth
            .get_or_create(&StatusLabels {
                queue: row.queue.clone(),
                status: row.status.as_str(),
            })
            .set(row.count);
        if let Some(age) = row.oldest_pending_age {
            m.oldest_pending_age.get_or_create(&Metrics::queue(&row.queue)).set(age);
        }
    }
    m.dead.set(state.dead);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(|err| crate::error::Error::CorruptRow(format!("metrics encoding: {err}")))?;
    Ok(text)
}

/// The media type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
