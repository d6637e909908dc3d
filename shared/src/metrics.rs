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

/// A sample's labels, in the order the text gives them.
type Labels = Vec<(String, String)>;

/// One sample line of the OpenMetrics text: the metric's name, its labels in order, its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// Parses a sample line (`name{a="x",b="y"} 1.5` or `name 2`); `None` for comments and anything
/// else. Label values unescape `\\`, `\"` and `\n`.
fn parse_sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `jobq_jobs_finished_total` → `JobsFinished`, `jobq_job_duration_seconds` →
/// `JobDurationSeconds`, `queue` → `Queue`.
fn emf_name(name: &str) -> String {
    let name = name.strip_prefix("jobq_").unwrap_or(name);
    let name = name.strip_suffix("_total").unwrap_or(name);
    name.split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// What [`activity_emf`] last reported, by series (a sample line's name and labels).
static REPORTED: std::sync::Mutex<Option<std::collections::HashMap<String, f64>>> = std::sync::Mutex::new(None);

/// The most values an EMF metric may hold.
const EMF_MAX_VALUES: usize = 100;

/// What this process did since the last call, as EMF documents: the same metrics `/metrics`
/// serves, but the queues' state (which [`emf_documents`] covers). One document per label set,
/// with `Deployment` and the labels as dimensions (`Queue`, `Outcome`): counters as the count
/// since the last call (left out when 0), the Redis fallback gauge as its value, and the duration
/// and wait histograms as arrays of at most 100 values, each bucket's upper bound repeated in
/// proportion to its count (at least once), so that their percentiles keep the buckets'
/// resolution (their sample counts do not: `JobsStarted` and `JobsFinished` count).
/// The Lambda functions print them at the end of each run; the promoter with the queues' state.
pub fn activity_emf(deployment: &str, at: DateTime<Utc>) -> Vec<Value> {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &metrics().registry).is_err() {
        return Vec::new();
    }
    let mut reported = REPORTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let reported = reported.get_or_insert_with(Default::default);
    // Documents by label set; in each, metrics by name with their value.
    let mut groups: std::collections::BTreeMap<Labels, std::collections::BTreeMap<String, Value>> = Default::default();
    // Histogram buckets by (name, labels): (upper bound, count since the last call) per bucket.
    let mut buckets: std::collections::BTreeMap<(String, Labels), Vec<(f64, f64)>> = Default::default();
    for sample in text.lines().filter_map(parse_sample) {
        if sample.name.starts_with("jobq_queue_") || sample.name.starts_with("jobq_dlq_") {
            continue;
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        let before = reported.insert(key, sample.value).unwrap_or(0.0);
        let since = (sample.value - before).max(0.0);
        if let Some(histogram) = sample.name.strip_suffix("_bucket") {
            let le = sample.labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone());
            let labels: Vec<_> = sample.labels.into_iter().filter(|(k, _)| k != "le").collect();
            let bound = match le.as_deref() {
                Some("+Inf") | None => f64::INFINITY,
                Some(le) => le.parse().unwrap_or(f64::INFINITY),
            };
            buckets
                .entry((histogram.to_owned(), labels))
                .or_default()
                .push((bound, since));
        } else if sample.name.ends_with("_sum") || sample.name.ends_with("_count") {
            continue;
        } else if sample.name.ends_with("_total") {
            if since > 0.0 {
                groups
                    .entry(sample.labels)
                    .or_default()
                    .insert(emf_name(&sample.name), json!(since));
            }
        } else {
            groups
                .entry(sample.labels)
                .or_default()
                .insert(emf_name(&sample.name), json!(sample.value));
        }
    }
    for ((name, labels), mut counts) in buckets {
        // Cumulative counts, as the text has them, into each bucket's own.
        counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut own = Vec::with_capacity(counts.len());
        let mut below = 0.0;
        let mut last_bound = 0.0;
        for (bound, cumulative) in counts {
            let value = if bound.is_finite() { bound } else { last_bound };
            own.push((value, (cumulative - below).max(0.0)));
            below = cumulative.max(below);
            if bound.is_finite() {
                last_bound = bound;
            }
        }
        let total: f64 = own.iter().map(|(_, n)| n).sum();
        if total <= 0.0 {
            continue;
        }
        let scale = (EMF_MAX_VALUES as f64 / total).min(1.0);
        let mut values = Vec::new();
        for (value, n) in own.into_iter().filter(|(_, n)| *n > 0.0) {
            let times = ((n * scale).round() as usize).max(1);
            values.extend(std::iter::repeat_n(value, times));
        }
        values.truncate(EMF_MAX_VALUES);
        groups.entry(labels).or_default().insert(emf_name(&name), json!(values));
    }
    groups
        .into_iter()
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|(labels, metrics)| {
            let mut dimensions = vec![json!("Deployment")];
            let mut doc = json!({"Deployment": deployment});
            for (key, value) in &labels {
                let dimension = emf_name(key);
                dimensions.push(json!(dimension));
                doc[dimension] = json!(value);
            }
            let mut named = Vec::new();
            for (name, value) in metrics {
                let unit = if name.ends_with("Seconds") { "Seconds" } else { "Count" };
                named.push(json!({"Name": name, "Unit": unit}));
                doc[name] = value;
            }
            doc["_aws"] = json!({
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [dimensions],
                    "Metrics": named,
                }],
            });
            doc
        })
        .collect()
}

/// Prints [`activity_emf`] on stdout, one JSON line per document.
pub fn log_activity_emf(deployment: &str, at: DateTime<Utc>) {
    for document in activity_emf(deployment, at) {
        println!("{document}");
    }
}

/// Logs the queues' state as EMF lines every `interval` until `shutdown` (see [`log_emf`]), and
/// what this process did since the last time ([`activity_emf`]).
pub async fn log_emf_every(
    store: Store,
    deployment: String,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    crate::maintenance::every("emf", interval, shutdown, || async {
        log_emf(&store, &deployment).await?;
        log_activity_emf(&deployment, Utc::now());
        Ok(())
    })
    .await
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
    fn sample_lines_parse_with_their_labels() {
        assert_eq!(
            parse_sample(r#"jobq_jobs_finished_total{queue="a\"b,c",outcome="completed"} 3"#),
            Some(Sample {
                name: "jobq_jobs_finished_total".into(),
                labels: vec![
                    ("queue".into(), "a\"b,c".into()),
                    ("outcome".into(), "completed".into())
                ],
                value: 3.0,
            })
        );
        let bucket = parse_sample(r#"jobq_job_wait_seconds_bucket{le="+Inf",queue="q"} 7"#).expect("a sample");
        assert_eq!(bucket.labels[0], ("le".into(), "+Inf".into()));
        assert_eq!(parse_sample("jobq_redis_fallback_active 1").map(|s| s.value), Some(1.0));
        assert_eq!(parse_sample("# TYPE jobq_jobs_started counter"), None);
        assert_eq!(parse_sample("# EOF"), None);
        assert_eq!(parse_sample(r#"broken{queue="x} 1"#), None);
        assert_eq!(emf_name("jobq_jobs_timed_out_total"), "JobsTimedOut");
        assert_eq!(emf_name("jobq_job_duration_seconds"), "JobDurationSeconds");
    }

    #[test]
    fn activity_emf_reports_what_ran_since_the_last_call_per_queue_and_outcome() {
        let queue = format!("emf-{}", uuid::Uuid::new_v4().simple());
        let m = metrics();
        m.started.get_or_create(&Metrics::queue(&queue)).inc_by(4);
        m.finished
            .get_or_create(&Metrics::outcome(&queue, "completed"))
            .inc_by(3);
        m.finished.get_or_create(&Metrics::outcome(&queue, "dead")).inc();
        m.timed_out.get_or_create(&Metrics::queue(&queue)).inc();
        for seconds in [0.002, 0.002, 0.003, 0.5] {
            m.duration.get_or_create(&Metrics::queue(&queue)).observe(seconds);
        }
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).expect("time");
        let docs = activity_emf("prod", at);
        let of = |docs: &[Value], outcome: Option<&str>| -> Option<Value> {
            docs.iter()
                .find(|d| d["Queue"] == queue.as_str() && d.get("Outcome").and_then(Value::as_str) == outcome)
                .cloned()
        };
        let per_queue = of(&docs, None).expect("the queue's document");
        assert_eq!(per_queue["JobsStarted"], 4.0);
        assert_eq!(per_queue["JobsTimedOut"], 1.0);
        // Three runs in the 4 ms bucket, one in the 1.024 s one.
        let durations: Vec<f64> = per_queue["JobDurationSeconds"]
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(durations, vec![0.004, 0.004, 0.004, 1.024]);
        assert_eq!(of(&docs, Some("completed")).expect("completed")["JobsFinished"], 3.0);
        assert_eq!(of(&docs, Some("dead")).expect("dead")["JobsFinished"], 1.0);
        for doc in docs.iter().filter(|d| d["Queue"] == queue.as_str()) {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], EMF_NAMESPACE);
            for name in directive["Dimensions"][0].as_array().expect("dimensions") {
                assert!(doc[name.as_str().expect("name")].is_string(), "{doc}");
            }
            for metric in directive["Metrics"].as_array().expect("metrics") {
                let value = &doc[metric["Name"].as_str().expect("name")];
                assert!(value.is_number() || value.is_array(), "{doc}");
            }
        }
        // Nothing more ran: nothing more to report for the queue.
        let again = activity_emf("prod", at);
        assert!(again.iter().all(|d| d["Queue"] != queue.as_str()), "{again:?}");
        // A histogram past 100 runs keeps 100 values, in proportion.
        for _ in 0..300 {
            m.wait.get_or_create(&Metrics::queue(&queue)).observe(0.0005);
        }
        for _ in 0..100 {
            m.wait.get_or_create(&Metrics::queue(&queue)).observe(3.0);
        }
        let waits = of(&activity_emf("prod", at), None).expect("the queue's document")["JobWaitSeconds"].clone();
        let waits: Vec<f64> = waits
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(waits.len(), 100);
        assert_eq!(waits.iter().filter(|w| **w == 0.001).count(), 75);
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
