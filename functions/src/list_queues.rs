//! `GET /queues` and `GET /queues/{name}`: the queues' health. Per queue: the jobs in each status,
//! the pending jobs due now and the age of the longest-due one, the DLQ depth, and the outcomes of
//! each of the last 15 minutes. `GET /queues` answers `{"queues": [...], "countBound": n}` for
//! every queue that has a job (or had an outcome in those minutes); `GET /queues/{name}` one
//! queue's object, all zeros for a queue without jobs.
//!
//! Counts stay cheap on big tables: a status holding more than `countBound` jobs (all queues) is
//! estimated from the table's statistics, and listed in the queue's `estimatedCounts` (see
//! [`jobq_shared::health`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use jobq_shared::health::{
    COUNT_BOUND, MinuteOutcomes, QueueHealth, QueueRetention, RateLimit, RetentionChange, SettingsChange,
    THROUGHPUT_MINUTES,
};
use jobq_shared::job::limits::MAX_QUEUE_LEN;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::request::{json_body, no_query, parse_json, shorten};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueList {
    queues: Vec<QueueBody>,
    count_bound: i64,
}

/// One queue as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueBody {
    name: String,
    /// Jobs per status, keyed as a job's `status`.
    counts: BTreeMap<&'static str, i64>,
    /// The statuses whose count is an estimate.
    estimated_counts: Vec<&'static str>,
    ready: Option<i64>,
    oldest_pending_age_seconds: Option<f64>,
    dlq_depth: i64,
    throughput: Throughput,
    /// No job of the queue starts (`PUT /queues/{name}`).
    paused: bool,
    /// At no instant do more than this many of its jobs run, fleet-wide; `null`: no limit.
    concurrency: Option<i32>,
    /// How long its finished jobs are kept, in ms; `null` for the deployment's default.
    retention: RetentionBody,
    /// At most `limit` job starts in any window of `periodMs`, per value of `key`; `null`: none.
    rate_limit: Option<RateLimitBody>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RateLimitBody {
    limit: i64,
    period_ms: i64,
    #[serde(default)]
    key: Option<String>,
}

/// The most starts a rate limit may allow per period, and its longest period (a day).
pub const MAX_RATE_LIMIT: i64 = 1_000_000;
pub const MAX_RATE_PERIOD_MS: i64 = 86_400_000;

impl RateLimitBody {
    fn shown(rate: RateLimit) -> RateLimitBody {
        RateLimitBody {
            limit: rate.limit.into(),
            period_ms: rate.period_ms.into(),
            key: rate.key,
        }
    }

    /// The limit it asks for, each value checked.
    fn checked(self) -> Result<RateLimit, ApiError> {
        let invalid = |field: &str, detail: String| ApiError::InvalidValue {
            field: format!("rateLimit.{field}"),
            detail,
        };
        if !(1..=MAX_RATE_LIMIT).contains(&self.limit) {
            return Err(invalid(
                "limit",
                format!("must be from 1 to {MAX_RATE_LIMIT}; got {}", self.limit),
            ));
        }
        if !(1..=MAX_RATE_PERIOD_MS).contains(&self.period_ms) {
            return Err(invalid(
                "periodMs",
                format!(
                    "must be from 1 to {MAX_RATE_PERIOD_MS} ms (a day); got {}",
                    self.period_ms
                ),
            ));
        }
        if let Some(key) = &self.key
            && (key.is_empty()
                || key.len() > 200
                || key.contains('\0')
                || key.split('.').any(|part| part.trim().is_empty()))
        {
            return Err(invalid(
                "key",
                format!(
                    "must be a payload field's path, its names joined by dots (\"customer.id\"), up to 200 characters; got {:?}",
                    shorten(key)
                ),
            ));
        }
        Ok(RateLimit {
            limit: self.limit as i32,
            period_ms: self.period_ms as i32,
            key: self.key,
        })
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetentionBody {
    #[serde(default, deserialize_with = "present")]
    completed_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    cancelled_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    dead_ms: Option<Option<i64>>,
}

impl RetentionBody {
    fn shown(retention: QueueRetention) -> RetentionBody {
        RetentionBody {
            completed_ms: Some(retention.completed_ms),
            cancelled_ms: Some(retention.cancelled_ms),
            dead_ms: Some(retention.dead_ms),
        }
    }

    /// The change it asks for, each value checked.
    fn change(self) -> Result<RetentionChange, ApiError> {
        let check = |field: &str, value: Option<Option<i64>>| match value {
            Some(Some(ms)) if !(0..=MAX_RETENTION_MS).contains(&ms) => Err(ApiError::InvalidValue {
                field: format!("retention.{field}"),
                detail: format!(
                    "must be from 0 (keep for ever) to {MAX_RETENTION_MS} ms (10 years), or null for the default; got {ms}"
                ),
            }),
            other => Ok(other),
        };
        Ok(RetentionChange {
            completed_ms: check("completedMs", self.completed_ms)?,
            cancelled_ms: check("cancelledMs", self.cancelled_ms)?,
            dead_ms: check("deadMs", self.dead_ms)?,
        })
    }
}

/// The longest retention a queue may set: 10 years, in ms.
pub const MAX_RETENTION_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Throughput {
    minutes: i32,
    completed: i64,
    retried: i64,
    dead: i64,
    cancelled: i64,
    per_minute: Vec<Minute>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Minute {
    minute: DateTime<Utc>,
    completed: i64,
    retried: i64,
    dead: i64,
    cancelled: i64,
}

impl QueueBody {
    pub fn new(health: QueueHealth) -> QueueBody {
        let sum = |field: fn(&MinuteOutcomes) -> i64| health.throughput.iter().map(field).sum();
        QueueBody {
            counts: health.counts.iter().map(|c| (c.status.as_str(), c.count)).collect(),
            estimated_counts: health
                .counts
                .iter()
                .filter(|c| c.estimated)
                .map(|c| c.status.as_str())
                .collect(),
            ready: health.ready,
            oldest_pending_age_seconds: health.oldest_pending_age,
            dlq_depth: health.dlq_depth(),
            paused: health.settings.paused,
            concurrency: health.settings.concurrency,
            retention: RetentionBody::shown(health.settings.retention),
            rate_limit: health.settings.rate_limit.map(RateLimitBody::shown),
            throughput: Throughput {
                minutes: THROUGHPUT_MINUTES,
                completed: sum(|m| m.completed),
                retried: sum(|m| m.retried),
                dead: sum(|m| m.dead),
                cancelled: sum(|m| m.cancelled),
                per_minute: health
                    .throughput
                    .iter()
                    .map(|m| Minute {
                        minute: m.minute,
                        completed: m.completed,
                        retried: m.retried,
                        dead: m.dead,
                        cancelled: m.cancelled,
                    })
                    .collect(),
            },
            name: health.queue,
        }
    }
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(route(deps, &req).await)
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    match (req.method(), path_queue_name(req)?) {
        (&Method::PUT, Some(name)) => put(deps, req, &name).await,
        (&Method::GET, _) => list(deps, req).await,
        (_, None) => Err(ApiError::MethodNotAllowed { allowed: Method::GET }),
        (_, Some(_)) => Err(ApiError::MethodsNotAllowed { allowed: "GET, PUT" }),
    }
}

/// `PUT /queues/{name}`'s body: any subset of the settings; a setting left out stays as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    paused: Option<bool>,
    /// Left out: unchanged; `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    concurrency: Option<Option<i64>>,
    /// Left out: unchanged; `null`: every status back to the default.
    #[serde(default, deserialize_with = "present")]
    retention: Option<Option<RetentionBody>>,
    /// Left out: unchanged; `null`: no limit.
    #[serde(default, deserialize_with = "present", rename = "rateLimit")]
    rate_limit: Option<Option<RateLimitBody>>,
}

/// The most jobs a concurrency limit may allow at once.
pub const MAX_CONCURRENCY: i64 = 1_000_000;

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

async fn put(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    no_query(req)?;
    let request: SettingsRequest = parse_json(json_body(req)?)?;
    let concurrency = match request.concurrency {
        Some(Some(n)) if !(1..=MAX_CONCURRENCY).contains(&n) => {
            return Err(ApiError::InvalidValue {
                field: "concurrency".into(),
                detail: format!("must be a whole number from 1 to {MAX_CONCURRENCY}, or null for no limit; got {n}"),
            });
        }
        other => other.map(|limit| limit.map(|n| n as i32)),
    };
    let retention = match request.retention {
        None => RetentionChange::default(),
        Some(None) => RetentionChange {
            completed_ms: Some(None),
            cancelled_ms: Some(None),
            dead_ms: Some(None),
        },
        Some(Some(body)) => body.change()?,
    };
    let rate_limit = match request.rate_limit {
        None => None,
        Some(None) => Some(None),
        Some(Some(body)) => Some(Some(body.checked()?)),
    };
    let change = SettingsChange {
        paused: request.paused,
        concurrency,
        retention,
        rate_limit,
    };
    deps.jobs.set_queue(name, change, &deps.actor(req)).await?;
    one_queue(deps, name).await
}

async fn one_queue(deps: &Deps, name: &str) -> Result<Response<Body>, ApiError> {
    let health = deps
        .jobs
        .store()
        .queue_health(Some(name), COUNT_BOUND)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| jobq_shared::Error::CorruptRow(format!("no health for queue {name:?}")))?;
    Ok(json_response(StatusCode::OK, &QueueBody::new(health)))
}

async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    no_query(req)?;
    let store = deps.jobs.store();
    match path_queue_name(req)? {
        None => {
            let queues = store.queue_health(None, COUNT_BOUND).await?;
            let body = QueueList {
                queues: queues.into_iter().map(QueueBody::new).collect(),
                count_bound: COUNT_BOUND,
            };
            Ok(json_response(StatusCode::OK, &body))
        }
        Some(name) => one_queue(deps, &name).await,
    }
}

/// The queue a request names, if any: the `name` path parameter (API Gateway, or `cargo lambda
/// watch` with its router), else the path segment after `queues` (a function URL such as
/// `/lambda-url/list-queues/queues/{name}`). Named as a job's queue is: trimmed, 1 to
/// [`MAX_QUEUE_LEN`] characters.
pub fn path_queue_name(req: &Request) -> Result<Option<String>, ApiError> {
    let raw = match req.path_parameters_ref().and_then(|params| params.first("name")) {
        Some(name) => name.to_owned(),
        None => {
            let path = req.uri().path();
            let mut segments = path.split('/').skip_while(|s| *s != "queues").skip(1);
            match segments.next() {
                None | Some("") => return Ok(None),
                Some(name) => match percent_encoding::percent_decode_str(name).decode_utf8() {
                    Ok(decoded) => decoded.into_owned(),
                    Err(_) => return Err(ApiError::InvalidQueueName { value: shorten(name) }),
                },
            }
        }
    };
    let name = raw.trim();
    // Postgres text cannot hold a NUL; no job's queue can have one.
    if name.is_empty() || name.chars().count() > MAX_QUEUE_LEN || name.contains('\0') {
        return Err(ApiError::InvalidQueueName { value: shorten(&raw) });
    }
    Ok(Some(name.to_owned()))
}
