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

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::error::Result;
use crate::job::Status;
use crate::store::{QueueState, Store};

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
    /// Ids popped from a queue with a concurrency or rate limit that its limit held back, by
    /// queue: they were dropped, and are pushed again when a slot or a window frees.
    pub held_back: Family<QueueLabel, Counter>,
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
            held_back: Family::default(),
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
            "jobs_held_back",
            "Jobs taken from Redis that their queue's concurrency or rate limit held back (left pending, pushed again when the limit allows)",
            metrics.held_back.clone(),
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

/// Counts `n` jobs enqueued into `queue` by this process.
pub fn count_enqueued(queue: &str, n: u64) {
    metrics().enqueued.get_or_create(&Metrics::queue(queue)).inc_by(n);
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

/// The CloudWatch namespace of [`emf_documents`].
pub const EMF_NAMESPACE: &str = "jobq";

/// The queues' state as CloudWatch Embedded Metric Format documents, one JSON line each: one per
/// queue (dimensions `Deployment` and `Queue`) and one for all queues (`Deployment` only, always
/// there, so that an alarm has data when every queue is empty). `deployment` is `JOBQ_NAMESPACE`.
/// CloudWatch Logs turns each line into metrics `PendingJobs`, `RunningJobs`, `DeadJobs` and
/// `OldestPendingAgeSeconds` (the largest, in the all-queues document).
pub fn emf_documents(state: &QueueState, deployment: &str, at: DateTime<Utc>) -> Vec<Value> {
    #[derive(Default)]
    struct Totals {
        pending: i64,
        running: i64,
        dead: i64,
        oldest: f64,
    }
    let mut per_queue: std::collections::BTreeMap<&str, Totals> = std::collections::BTreeMap::new();
    let mut all = Totals::default();
    for row in &state.depth {
        for totals in [per_queue.entry(row.queue.as_str()).or_default(), &mut all] {
            match row.status {
                Status::Pending => totals.pending += row.count,
                Status::InProgress => totals.running += row.count,
                Status::Failed => totals.dead += row.count,
                _ => {}
            }
            totals.oldest = totals.oldest.max(row.oldest_pending_age.unwrap_or(0.0));
        }
    }
    let document = |dimensions: Value, totals: &Totals, queue: Option<&str>| {
        let mut doc = json!({
            "_aws": {
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [dimensions],
                    "Metrics": [
                        {"Name": "PendingJobs", "Unit": "Count"},
                        {"Name": "RunningJobs", "Unit": "Count"},
                        {"Name": "DeadJobs", "Unit": "Count"},
                        {"Name": "OldestPendingAgeSeconds", "Unit": "Seconds"},
                    ],
                }],
            },
            "Deployment": deployment,
            "PendingJobs": totals.pending,
            "RunningJobs": totals.running,
            "DeadJobs": totals.dead,
            "OldestPendingAgeSeconds": totals.oldest,
        });
        if let Some(queue) = queue {
            doc["Queue"] = json!(queue);
        }
        doc
    };
    let mut documents: Vec<Value> = per_queue
        .iter()
        .map(|(queue, totals)| document(json!(["Deployment", "Queue"]), totals, Some(queue)))
        .collect();
    documents.push(document(json!(["Deployment"]), &all, None));
    documents
}

/// What one worker run did ([`crate::worker::Summary`]) as one EMF document (dimension
/// `Deployment`): each of its counts as a metric named `Jobs` and the count's name
/// (`JobsCompleted`, `JobsDeadLettered`, ...). The worker function logs it after every run.
pub fn summary_emf(summary: &crate::worker::Summary, deployment: &str, at: DateTime<Utc>) -> Value {
    let counts = serde_json::to_value(summary).unwrap_or_default();
    let mut metrics = Vec::new();
    let mut doc = json!({"Deployment": deployment});
    for (name, count) in counts.as_object().into_iter().flatten() {
        let mut chars = name.chars();
        let metric = match chars.next() {
            Some(first) => format!("Jobs{}{}", first.to_ascii_uppercase(), chars.as_str()),
            None => continue,
        };
        metrics.push(json!({"Name": metric, "Unit": "Count"}));
        doc[metric] = count.clone();
    }
    doc["_aws"] = json!({
        "Timestamp": at.timestamp_millis(),
        "CloudWatchMetrics": [{
            "Namespace": EMF_NAMESPACE,
            "Dimensions": [["Deployment"]],
            "Metrics": metrics,
        }],
    });
    doc
}

/// Jobs a request created (idempotent replays left out), as one EMF document per queue
/// (dimensions `Deployment` and `Queue`, metric `JobsEnqueued`). The create functions print them:
/// jobs are created in the API's processes, so the promoter's `/metrics` never sees them.
pub fn enqueued_emf<'a>(
    created: impl IntoIterator<Item = &'a crate::store::Created>,
    deployment: &str,
    at: DateTime<Utc>,
) -> Vec<Value> {
    let mut per_queue: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for c in created.into_iter().filter(|c| !c.replayed) {
        *per_queue.entry(c.job.queue.as_str()).or_default() += 1;
    }
    per_queue
        .into_iter()
        .map(|(queue, count)| {
            json!({
                "_aws": {
                    "Timestamp": at.timestamp_millis(),
                    "CloudWatchMetrics": [{
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [["Deployment", "Queue"]],
                        "Metrics": [{"Name": "JobsEnqueued", "Unit": "Count"}],
                    }],
                },
                "Deployment": deployment,
                "Queue": queue,
                "JobsEnqueued": count,
            })
        })
        .collect()
}

/// Logs the queues' state as EMF lines every `interval` until `shutdown` (see [`log_emf`]).
pub async fn log_emf_every(
    store: Store,
    deployment: String,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    crate::maintenance::every("emf", interval, shutdown, || log_emf(&store, &deployment)).await
}

/// Reads the queues' state and prints it as EMF lines on stdout, where CloudWatch Logs reads them.
pub async fn log_emf(store: &Store, deployment: &str) -> Result<()> {
    let state = store.queue_state().await?;
    let at = store.now().await;
    for document in emf_documents(&state, deployment, at) {
        println!("{document}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueueDepth;

    fn depth(queue: &str, status: Status, count: i64, oldest: Option<f64>) -> QueueDepth {
        QueueDepth {
            queue: queue.to_owned(),
            status,
            count,
            oldest_pending_age: oldest,
        }
    }

    #[test]
    fn emf_has_one_document_per_queue_and_one_for_all_of_them() {
        let state = QueueState {
            depth: vec![
                depth("mail", Status::Pending, 5, Some(12.5)),
                depth("mail", Status::Failed, 2, None),
                depth("pdf", Status::Pending, 1, Some(40.0)),
                depth("pdf", Status::InProgress, 3, None),
            ],
            dead: 2,
        };
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("time");
        let docs = emf_documents(&state, "prod", at);
        assert_eq!(docs.len(), 3);
        let (mail, pdf, all) = (&docs[0], &docs[1], &docs[2]);
        assert_eq!(mail["Queue"], "mail");
        assert_eq!(
            (mail["PendingJobs"].as_i64(), mail["DeadJobs"].as_i64()),
            (Some(5), Some(2))
        );
        assert_eq!(mail["OldestPendingAgeSeconds"], 12.5);
        assert_eq!(pdf["RunningJobs"], 3);
        assert!(all.get("Queue").is_none());
        assert_eq!(
            (
                all["PendingJobs"].as_i64(),
                all["RunningJobs"].as_i64(),
                all["DeadJobs"].as_i64()
            ),
            (Some(6), Some(3), Some(2))
        );
        assert_eq!(all["OldestPendingAgeSeconds"], 40.0, "the largest age");
        for doc in &docs {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_123i64);
            assert_eq!(directive["Namespace"], EMF_NAMESPACE);
            assert_eq!(doc["Deployment"], "prod");
            // Every dimension and every metric named in the directive is a member of the document.
            for name in directive["Dimensions"][0].as_array().expect("dimensions") {
                assert!(doc.get(name.as_str().expect("name")).is_some(), "{doc}");
            }
            for metric in directive["Metrics"].as_array().expect("metrics") {
                assert!(doc[metric["Name"].as_str().expect("name")].is_number(), "{doc}");
            }
        }
    }

    #[test]
    fn a_worker_run_is_one_emf_document_with_every_count() {
        let summary = crate::worker::Summary {
            claimed: 7,
            completed: 5,
            dead_lettered: 1,
            retried: 1,
            ..Default::default()
        };
        let doc = summary_emf(&summary, "prod", Utc::now());
        assert_eq!(doc["Deployment"], "prod");
        assert_eq!(
            (
                doc["JobsClaimed"].as_i64(),
                doc["JobsCompleted"].as_i64(),
                doc["JobsDeadLettered"].as_i64()
            ),
            (Some(7), Some(5), Some(1))
        );
        assert_eq!(doc["JobsCancelled"], 0);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Deployment"]]));
        let named = directive["Metrics"].as_array().expect("metrics");
        let fields = serde_json::to_value(summary).expect("summary");
        assert_eq!(
            named.len(),
            fields.as_object().expect("object").len(),
            "one metric per count"
        );
        for metric in named {
            assert!(doc[metric["Name"].as_str().expect("name")].is_number(), "{doc}");
        }
    }

    #[test]
    fn enqueued_emf_counts_new_jobs_per_queue_and_leaves_replays_out() {
        use crate::job::{Job, JobId};
        use crate::store::Created;
        let now = Utc::now();
        let job = |queue: &str| Job {
            id: JobId::new(),
            job_type: "TEST".into(),
            queue: queue.to_owned(),
            payload: json!(1),
            status: Status::Pending,
            attempts: 0,
            max_attempts: 3,
            priority: 50,
            run_at: now,
            timeout_ms: 1000,
            idempotency_key: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
            cancel_requested_at: None,
            traceparent: None,
            schedule: None,
            history: Vec::new(),
            waiting_on: None,
            held_back: None,
        };
        let created = [
            Created {
                job: job("mail"),
                replayed: false,
            },
            Created {
                job: job("mail"),
                replayed: false,
            },
            Created {
                job: job("mail"),
                replayed: true,
            },
            Created {
                job: job("video"),
                replayed: false,
            },
        ];
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("time");
        let docs = enqueued_emf(&created, "prod", at);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0]["Queue"].as_str(), docs[0]["JobsEnqueued"].as_u64()),
            (Some("mail"), Some(2))
        );
        assert_eq!(
            (docs[1]["Queue"].as_str(), docs[1]["JobsEnqueued"].as_u64()),
            (Some("video"), Some(1))
        );
        let directive = &docs[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Deployment", "Queue"]]));
        assert_eq!(directive["Metrics"][0]["Name"], "JobsEnqueued");
        assert!(enqueued_emf(&created[2..3], "prod", at).is_empty());
    }

    #[test]
    fn emf_reports_all_queues_even_when_there_are_none() {
        let docs = emf_documents(&QueueState::default(), "prod", Utc::now());
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["DeadJobs"], 0);
        assert_eq!(docs[0]["OldestPendingAgeSeconds"], 0.0);
    }
}
