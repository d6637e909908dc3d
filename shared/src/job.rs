//! The job record and the request that creates one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUID, shown and parsed in its hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A new, time-ordered id (UUIDv7), so that ids sort roughly by creation.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// Where a job is in its life. Each variant says who moves a job out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting: ready now, scheduled for later, or waiting for a retry. Left by a worker's claim
    /// (to `InProgress`) or by a cancel (to `Cancelled`).
    Pending,
    /// Created with `dependsOn`: waits until every parent has completed, then becomes `Pending`
    /// (released by the completion of its last parent). Left also by a cancel.
    Blocked,
    /// Held by one worker under a lease. Left by that worker (complete, fail, release) or, once the
    /// lease has expired, by the reaper (to `Pending` for a retry, or `Failed`).
    InProgress,
    /// Finished successfully. Final.
    Completed,
    /// Dead: out of attempts or failed permanently; listed in the DLQ. Left only by a requeue.
    Failed,
    /// Withdrawn before it ran. Final.
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Blocked,
        Status::InProgress,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Blocked => "BLOCKED",
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
    /// The worker stopped renewing its lease (crash, kill, timeout of the host) and the reaper took it back.
    LeaseExpired,
    /// The worker gave the job back unfinished while shutting down; this attempt does not count.
    Released,
    /// Its cancellation was requested while it ran; its worker stopped it.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "RUNNING",
            Outcome::Succeeded => "SUCCEEDED",
            Outcome::Failed => "FAILED",
            Outcome::LeaseExpired => "LEASE_EXPIRED",
            Outcome::Released => "RELEASED",
            Outcome::Cancelled => "CANCELLED",
        }
    }
}

impl FromStr for Outcome {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Outcome::Running,
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::LeaseExpired,
            Outcome::Released,
            Outcome::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One attempt in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: i32,
    pub lease_token: i64,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// A job as Postgres records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(rename = "jobId")]
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub status: Status,
    pub attempts: i32,
    pub max_attempts: i32,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub timeout_ms: i32,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When a cancel was asked for while the job was running (its worker stops it); kept if the
    /// job finished anyway.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` the job was created in, if its request carried a valid one.
    pub traceparent: Option<String>,
    /// The schedule that fired the job, and the tick it was fired for.
    pub schedule: Option<ScheduledBy>,
    /// Filled by `Store::get` and `Store::find`; empty in the DLQ listing.
    pub history: Vec<Attempt>,
    /// For a `BLOCKED` job read by `Store::get`: the parents that have not completed, with their
    /// status (`None`: the parent no longer exists). Left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<Vec<WaitingOn>>,
    /// For a `PENDING` job read by `Store::get`: why it does not start although it is due (its
    /// queue is paused). Left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

/// A parent a blocked job waits on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingOn {
    pub job_id: JobId,
    /// `null` when the parent no longer exists (deleted): the job stays blocked.
    pub status: Option<Status>,
}

/// The schedule tick a job was fired for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBy {
    pub name: String,
    pub tick: DateTime<Utc>,
}

/// Bounds on what a create request may ask for.
pub mod limits {
    pub const MAX_TYPE_LEN: usize = 200;
    pub const MAX_QUEUE_LEN: usize = 200;
    pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
    pub const MIN_PRIORITY: i64 = 0;
    pub const MAX_PRIORITY: i64 = 100;
    pub const DEFAULT_PRIORITY: i16 = 50;
    pub const MAX_ATTEMPTS: i64 = 100;
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;
    pub const MAX_TIMEOUT_MS: i64 = 15 * 60 * 1000;
    /// The longest a job may be scheduled ahead.
    pub const MAX_DELAY_MS: i64 = 366 * 24 * 3600 * 1000;
    /// The earliest `runAt` accepted (a date before it is a mistake, and Postgres cannot store
    /// every date that JSON can write).
    pub const MIN_RUN_AT: &str = "2000-01-01T00:00:00Z";
    pub const DEFAULT_QUEUE: &str = "default";
    /// The most parents one job may name in `dependsOn`.
    pub const MAX_DEPENDS_ON: usize = 100;
}

/// A job another depends on: a stored job, or (in a batch) an earlier item of the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Parent {
    Job(JobId),
    /// The index of an earlier item of the batch.
    Earlier(usize),
}

/// When a new job should first run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Schedule {
    Now,
    At(DateTime<Utc>),
    After(#[serde(with = "duration_ms")] Duration),
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// A validated request to create a job. Build it with [`NewJob::parse`] or [`NewJob::new`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewJob {
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub priority: i16,
    pub max_attempts: i32,
    pub schedule: Schedule,
    /// `None` means the configured default.
    pub timeout_ms: Option<i32>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// The trace the job is created in (the request's `traceparent` header). Not part of the
    /// request an idempotency key guards: a retry in another trace is the same request.
    #[serde(skip)]
    pub traceparent: Option<crate::trace::TraceParent>,
    /// The jobs that must complete before this one runs; empty for none (and then left out of the
    /// fingerprint, which stays what it was before dependencies existed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Parent>,
}

/// What is wrong with a create request; each says which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidJob {
    pub field: &'static str,
    pub problem: String,
    /// The field is absent (rather than present with a bad value).
    pub missing: bool,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidJob {
    InvalidJob {
        field,
        problem: problem.into(),
        missing: false,
    }
}

fn missing(field: &'static str) -> InvalidJob {
    InvalidJob {
        missing: true,
        ..invalid(field, "is required")
    }
}

/// The create request as it arrives, before validation (the HTTP body, camelCase).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(rename = "type", alias = "taskType")]
    pub job_type: Option<String>,
    #[serde(alias = "queueType")]
    pub queue: Option<String>,
    pub payload: Option<serde_json::Value>,
    pub priority: Option<i64>,
    #[serde(alias = "scheduledAt")]
    pub run_at: Option<DateTime<Utc>>,
    pub delay_ms: Option<i64>,
    pub delay_seconds: Option<i64>,
    pub max_attempts: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub idempotency_key: Option<String>,
    /// Job ids, or in a batch indexes of earlier items (`0` is the first).
    pub depends_on: Option<Vec<serde_json::Value>>,
}

impl NewJob {
    /// A job of `job_type` with `payload` and every other field at its default.
    pub fn new(job_type: impl Into<String>, payload: serde_json::Value) -> Self {
        NewJob {
            job_type: job_type.into(),
            queue: limits::DEFAULT_QUEUE.to_owned(),
            payload,
            priority: limits::DEFAULT_PRIORITY,
            max_attempts: limits::DEFAULT_MAX_ATTEMPTS,
            schedule: Schedule::Now,
            timeout_ms: None,
            idempotency_key: None,
            traceparent: None,
            depends_on: Vec::new(),
        }
    }

    /// The job waits until `parent` has completed.
    pub fn depends_on(mut self, parent: impl Into<Parent>) -> Self {
        let parent = parent.into();
        if !self.depends_on.contains(&parent) {
            self.depends_on.push(parent);
        }
        self
    }

    pub fn traceparent(mut self, traceparent: Option<crate::trace::TraceParent>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }
    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.schedule = Schedule::At(at);
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.schedule = Schedule::After(delay);
        self
    }
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(timeout.as_millis().min(i32::MAX as u128) as i32);
        self
    }
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Validates a create request. `header_key` is an `Idempotency-Key` header, which must agree
    /// with a key in the body when both are given.
    pub fn parse(req: CreateRequest, header_key: Option<&str>) -> Result<NewJob, InvalidJob> {
        let job_type = req.job_type.ok_or_else(|| missing("type"))?;
        // Postgres can store no NUL character in text or jsonb: refuse it here, as bad input.
        for (field, text) in [
            ("type", Some(job_type.as_str())),
            ("queue", req.queue.as_deref()),
            ("idempotencyKey", req.idempotency_key.as_deref()),
            ("idempotencyKey", header_key),
        ] {
            if text.is_some_and(|t| t.contains('\0')) {
                return Err(invalid(field, "must not contain the NUL character (\\u0000)"));
            }
        }
        if req.payload.as_ref().is_some_and(contains_nul) {
            return Err(invalid(
                "payload",
                "must not contain the NUL character (\\u0000) in a string or key",
            ));
        }
        let job_type = job_type.trim().to_owned();
        if job_type.is_empty() {
            return Err(invalid("type", "must not be empty"));
        }
        if job_type.chars().count() > limits::MAX_TYPE_LEN {
            return Err(invalid(
                "type",
                format!("is longer than {} characters", limits::MAX_TYPE_LEN),
            ));
        }
        let queue = req.queue.unwrap_or_else(|| limits::DEFAULT_QUEUE.to_owned());
        let queue = queue.trim().to_owned();
        if queue.is_empty() || queue.chars().count() > limits::MAX_QUEUE_LEN {
            return Err(invalid(
                "queue",
                format!("must be 1 to {} characters", limits::MAX_QUEUE_LEN),
            ));
        }
        let payload = req.payload.unwrap_or(serde_json::Value::Null);
        let priority = match req.priority {
            None => limits::DEFAULT_PRIORITY,
            Some(p) if (limits::MIN_PRIORITY..=limits::MAX_PRIORITY).contains(&p) => p as i16,
            Some(_) => {
                return Err(invalid(
                    "priority",
                    format!("must be between {} and {}", limits::MIN_PRIORITY, limits::MAX_PRIORITY),
                ));
            }
        };
        let max_attempts = match req.max_attempts {
            None => limits::DEFAULT_MAX_ATTEMPTS,
            Some(n) if (1..=limits::MAX_ATTEMPTS).contains(&n) => n as i32,
            Some(_) => {
                return Err(invalid(
                    "maxAttempts",
                    format!("must be between 1 and {}", limits::MAX_ATTEMPTS),
                ));
            }
        };
        let timeout_ms = match req.timeout_ms {
            None => None,
            Some(ms) if (1..=limits::MAX_TIMEOUT_MS).contains(&ms) => Some(ms as i32),
            Some(_) => {
                return Err(invalid(
                    "timeoutMs",
                    format!("must be between 1 and {}", limits::MAX_TIMEOUT_MS),
                ));
            }
        };
        let delay_ms = match (req.delay_ms, req.delay_seconds) {
            (Some(_), Some(_)) => return Err(invalid("delayMs", "give delayMs or delaySeconds, not both")),
            (Some(ms), None) => Some(("delayMs", ms)),
            (None, Some(s)) => Some(("delaySeconds", s.saturating_mul(1000))),
            (None, None) => None,
        };
        let schedule = match (req.run_at, delay_ms) {
            (Some(_), Some((field, _))) => return Err(invalid(field, "give runAt or a delay, not both")),
            (Some(at), None) => {
                // The same horizon as a delay, and only dates Postgres stores.
                let earliest = DateTime::parse_from_rfc3339(limits::MIN_RUN_AT)
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let latest = Utc::now() + chrono::Duration::milliseconds(limits::MAX_DELAY_MS);
                if at < earliest || at > latest {
                    return Err(invalid(
                        "runAt",
                        format!("must be between {} and 366 days from now", limits::MIN_RUN_AT),
                    ));
                }
                Schedule::At(at)
            }
            (None, Some((field, ms))) => {
                if !(0..=limits::MAX_DELAY_MS).contains(&ms) {
                    return Err(invalid(field, "must be between 0 and 366 days"));
                }
                Schedule::After(Duration::from_millis(ms as u64))
            }
            (None, None) => Schedule::Now,
        };
        let idempotency_key = match (req.idempotency_key, header_key) {
            (Some(body), Some(header)) if body != header => {
                return Err(invalid("idempotencyKey", "differs from the Idempotency-Key header"));
            }
            (Some(key), _) => Some(key),
            (None, Some(header)) => Some(header.to_owned()),
            (None, None) => None,
        };
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > limits::MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(invalid(
                "idempotencyKey",
                format!("must be 1 to {} bytes", limits::MAX_IDEMPOTENCY_KEY_LEN),
            ));
        }
        Ok(NewJob {
            job_type,
            queue,
            payload,
            priority,
            max_attempts,
            schedule,
            timeout_ms,
            idempotency_key,
            traceparent: None,
            depends_on: parse_depends_on(req.depends_on)?,
        })
    }

    /// When the job first becomes runnable, given the time of its creation.
    pub fn first_run_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match &self.schedule {
            Schedule::Now => now,
            Schedule::At(at) => *at,
            Schedule::After(delay) => now + chrono::Duration::from_std(*delay).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// The request as a JSON value, compared on an idempotent replay.
    pub fn fingerprint(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl From<JobId> for Parent {
    fn from(id: JobId) -> Self {
        Parent::Job(id)
    }
}

/// `dependsOn`: at most [`limits::MAX_DEPENDS_ON`] job ids or batch indexes, repeats dropped.
fn parse_depends_on(items: Option<Vec<serde_json::Value>>) -> Result<Vec<Parent>, InvalidJob> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    if items.len() > limits::MAX_DEPENDS_ON {
        return Err(invalid(
            "dependsOn",
            format!("names more than {} jobs", limits::MAX_DEPENDS_ON),
        ));
    }
    let mut parents = Vec::with_capacity(items.len());
    for item in &items {
        let parent = match item {
            serde_json::Value::String(text) => text.parse::<Uuid>().ok().map(|id| Parent::Job(JobId(id))),
            serde_json::Value::Number(n) => n.as_u64().and_then(|i| usize::try_from(i).ok()).map(Parent::Earlier),
            _ => None,
        };
        let Some(parent) = parent else {
            return Err(invalid(
                "dependsOn",
                "each item must be a job id, or in a batch the index of an earlier job (0 is the first)",
            ));
        };
        if !parents.contains(&parent) {
            parents.push(parent);
        }
    }
    Ok(parents)
}

/// True when `a` and `b` are the same JSON value: numbers compare by value, whatever their form
/// (`100`, `100.0` and `1e2` are one number; Postgres's jsonb may give back any of them).
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(i), Some(j), _, _) => i == j,
            (_, _, Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// True when any string or object key in `value` holds a NUL character.
fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: serde_json::Value) -> CreateRequest {
        serde_json::from_value(value).expect("request shape")
    }

    #[test]
    fn the_seed_request_parses_with_defaults() {
        let job = NewJob::parse(request(json!({"type": "TEST", "payload": "hello"})), None).expect("valid");
        assert_eq!(job.job_type, "TEST");
        assert_eq!(job.payload, json!("hello"));
        assert_eq!(job.max_attempts, 3);
        assert_eq!(job.queue, "default");
        assert_eq!(job.schedule, Schedule::Now);
    }

    #[test]
    fn chronoqueue_fields_are_accepted() {
        let job = NewJob::parse(
            request(json!({
                "queueType": "EMAIL", "taskType": "email.send", "payload": {"userId": 123},
                "scheduledAt": "2025-10-24T18:00:00Z", "priority": 100, "maxAttempts": 5,
                "idempotencyKey": "welcome-email-user-123"
            })),
            None,
        )
        .expect("valid");
        assert_eq!(job.queue, "EMAIL");
        assert_eq!(job.job_type, "email.send");
        assert_eq!(job.priority, 100);
        assert_eq!(job.max_attempts, 5);
        assert_eq!(job.idempotency_key.as_deref(), Some("welcome-email-user-123"));
        assert!(matches!(job.schedule, Schedule::At(_)));
    }

    #[test]
    fn out_of_range_fields_name_themselves() {
        let cases = [
            (json!({"payload": 1}), "type"),
            (json!({"type": "  "}), "type"),
            (json!({"type": "T", "priority": 101}), "priority"),
            (json!({"type": "T", "priority": -1}), "priority"),
            (json!({"type": "T", "maxAttempts": 0}), "maxAttempts"),
            (json!({"type": "T", "maxAttempts": 1_000_000_000_000i64}), "maxAttempts"),
            (json!({"type": "T", "delayMs": -5}), "delayMs"),
            (json!({"type": "T", "delayMs": 5, "delaySeconds": 1}), "delayMs"),
            (
                json!({"type": "T", "runAt": "2030-01-01T00:00:00Z", "delaySeconds": 1}),
                "delaySeconds",
            ),
            (json!({"type": "T", "timeoutMs": 0}), "timeoutMs"),
            (json!({"type": "T", "idempotencyKey": ""}), "idempotencyKey"),
            (json!({"type": "A\u{0000}"}), "type"),
            (json!({"type": "T", "queue": "q\u{0000}"}), "queue"),
            (json!({"type": "T", "idempotencyKey": "\u{0000}"}), "idempotencyKey"),
            (json!({"type": "T", "payload": "\u{0000}"}), "payload"),
            (json!({"type": "T", "payload": [{"a\u{0000}": 1}]}), "payload"),
        ];
        for (body, field) in cases {
            let err = NewJob::parse(request(body.clone()), None).expect_err("invalid");
            assert_eq!(err.field, field, "for {body}");
            assert_eq!(err.missing, body.get("type").is_none(), "for {body}");
        }
    }

    #[test]
    fn header_and_body_keys_must_agree() {
        let err = NewJob::parse(request(json!({"type": "T", "idempotencyKey": "a"})), Some("b")).expect_err("conflict");
        assert_eq!(err.field, "idempotencyKey");
        let job = NewJob::parse(request(json!({"type": "T"})), Some("b")).expect("valid");
        assert_eq!(job.idempotency_key.as_deref(), Some("b"));
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().expect("known"), status);
        }
        assert!("DONE".parse::<Status>().is_err());
    }
}
