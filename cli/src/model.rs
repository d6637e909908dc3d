//! The API's answers, as far as the tables read them.
//!
//! Every field has a default: an answer from an older or newer server that lacks a field still
//! draws a table (with a blank) instead of failing. `--json` prints the answer itself, so nothing
//! here limits what scripts see.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A page of `GET /jobs`, `GET /dlq` or `GET /audit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default)]
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Job {
    pub job_id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub run_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub cancel_requested_at: Option<String>,
    pub last_error: Option<String>,
    pub payload: Value,
    pub history: Vec<Attempt>,
}

/// One attempt of a job's `history`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: i64,
    pub worker_id: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// `GET /queues`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QueueList {
    pub queues: Vec<Queue>,
    pub count_bound: Option<i64>,
}

/// One queue's health (`GET /queues/{name}`, or an item of `GET /queues`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Queue {
    pub name: String,
    /// Jobs per status, keyed as a job's `status`.
    pub counts: BTreeMap<String, i64>,
    /// The statuses whose count is the planner's estimate.
    pub estimated_counts: Vec<String>,
    pub ready: Option<i64>,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dlq_depth: i64,
    pub throughput: Throughput,
    /// No job of the queue starts.
    #[serde(default)]
    pub paused: bool,
    /// The most jobs of the queue running at once, fleet-wide.
    #[serde(default)]
    pub concurrency: Option<i64>,
    /// At most so many job starts in any window of a period; `None`: no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// How long its finished jobs are kept; `None` from a server that does not say.
    pub retention: Option<Retention>,
}

/// A queue's rate limit.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RateLimit {
    pub limit: i64,
    pub period_ms: i64,
    /// The payload field whose every value has its own window.
    pub key: Option<String>,
}

/// A queue's retention per final status, in ms: `None` for the deployment's default, 0 for ever.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Retention {
    pub completed_ms: Option<i64>,
    pub cancelled_ms: Option<i64>,
    pub dead_ms: Option<i64>,
}

/// A queue's outcomes over the last `minutes` minutes.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Throughput {
    pub minutes: i64,
    pub completed: i64,
    pub retried: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub per_minute: Vec<MinuteOutcomes>,
}

/// The outcomes recorded in one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Outcomes {
    pub completed: i64,
    pub retried: i64,
    pub dead: i64,
    pub cancelled: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MinuteOutcomes {
    pub minute: String,
    #[serde(flatten)]
    pub outcomes: Outcomes,
}

/// `POST /jobs/bulk` with `dryRun`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DryRun {
    pub count: i64,
}

/// A bulk operation (`POST /jobs/bulk`, `GET /operations/{id}`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Operation {
    pub id: String,
    pub state: String,
    pub total: i64,
    pub processed: i64,
    pub skipped: i64,
}

impl Operation {
    pub fn is_done(&self) -> bool {
        self.state == "DONE"
    }
}

/// One entry of `GET /audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuditEntry {
    pub at: Option<String>,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub job_id: Option<String>,
    pub operation_id: Option<String>,
    pub filter: Option<Value>,
    pub count: i64,
}

/// A schedule, as `GET /schedules/{name}` answers it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: Value,
    pub paused: bool,
    pub missed_fires: String,
    pub overlap: String,
    pub next_tick: Option<String>,
    pub last_tick: Option<String>,
    pub last_fired_at: Option<String>,
    pub lag_ms: Option<i64>,
    pub last_job_id: Option<String>,
    pub fired: i64,
    pub skipped: i64,
    pub last_error: Option<String>,
}
