//! `PUT /schedules/{name}`, `GET /schedules/{name}`, `DELETE /schedules/{name}` and
//! `GET /schedules?limit=&cursor=`: recurring jobs (see [`jobq_shared::schedule`]). One function
//! serves the resource: four small routes over one table, so one cold start and one build
//! instead of four.
//!
//! - `PUT` takes `{"cron", "timezone" (default "UTC"), "job": {a create-job body}, "paused",
//!   "missedFires": "skip"|"coalesce"|"catchUp", "overlap": "allow"|"skip"}` and answers 201 with
//!   the schedule when it is new, 200 when it replaced one. The whole schedule is replaced; its
//!   next tick is kept unless the expression or zone changed or it was paused.
//! - `GET` answers the schedule with its next tick, the last tick fired, when it was fired and how
//!   late (`lagMs`), its last job, and its counts of ticks fired and skipped.
//! - `DELETE` answers 204; the jobs it fired stay.

use chrono::{DateTime, Utc};
use http::header::LOCATION;
use http::{HeaderValue, Method, StatusCode};
use jobq_shared::JobId;
use jobq_shared::schedule::{Schedule, ScheduleRequest, ScheduleSpec, check_name};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::request::{json_body, limit_param, no_query, parse_json, query_param, shorten, unknown_query_param};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A schedule as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleBody {
    name: String,
    cron: String,
    timezone: String,
    job: serde_json::Value,
    paused: bool,
    missed_fires: &'static str,
    overlap: &'static str,
    /// `null` while paused: resuming starts from the first tick after the resume.
    next_tick: Option<DateTime<Utc>>,
    last_tick: Option<DateTime<Utc>>,
    last_fired_at: Option<DateTime<Utc>>,
    lag_ms: Option<i64>,
    last_job_id: Option<JobId>,
    fired: i64,
    skipped: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScheduleBody {
    pub fn new(schedule: Schedule) -> ScheduleBody {
        ScheduleBody {
            lag_ms: schedule.lag().map(|lag| lag.num_milliseconds()),
            next_tick: (!schedule.paused).then_some(schedule.next_fire_at),
            name: schedule.name,
            cron: schedule.cron,
            timezone: schedule.timezone,
            job: schedule.job,
            paused: schedule.paused,
            missed_fires: schedule.missed_fires.as_str(),
            overlap: schedule.overlap.as_str(),
            last_tick: schedule.last_tick,
            last_fired_at: schedule.last_fired_at,
            last_job_id: schedule.last_job_id,
            fired: schedule.fired,
            skipped: schedule.skipped,
            last_error: schedule.last_error,
            created_at: schedule.created_at,
            updated_at: schedule.updated_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleList {
    items: Vec<ScheduleBody>,
    next_cursor: Option<String>,
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(route(deps, &req).await)
}

async fn route(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let name = path_schedule_name(req)?;
    match (req.method().clone(), name) {
        (Method::GET, None) => list(deps, req).await,
        (Method::GET, Some(name)) => get(deps, req, &name).await,
        (Method::PUT, Some(name)) => put(deps, req, &name).await,
        (Method::DELETE, Some(name)) => delete(deps, req, &name).await,
        (_, None) => Err(ApiError::MethodNotAllowed { allowed: Method::GET }),
        (_, Some(_)) => Err(ApiError::MethodsNotAllowed {
            allowed: "GET, PUT, DELETE",
        }),
    }
}

async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    if let Some(name) = unknown_query_param(req, &["limit", "cursor"]) {
        return Err(ApiError::UnknownParameter {
            name,
            known: "limit and cursor",
        });
    }
    let limit = limit_param(req, DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = query_param(req, "cursor").filter(|c| !c.is_empty());
    // A cursor is a schedule's name: one that no name can be (a NUL, which Postgres text cannot
    // hold, say) was not given by a previous page.
    if after
        .as_deref()
        .is_some_and(|c| jobq_shared::schedule::check_name(c).is_err())
    {
        return Err(jobq_shared::Error::InvalidCursor.into());
    }
    let mut schedules = deps.jobs.store().schedules(after.as_deref(), limit + 1).await?;
    let next_cursor = if schedules.len() > limit {
        schedules.truncate(limit);
        schedules.last().map(|s| s.name.clone())
    } else {
        None
    };
    let body = ScheduleList {
        items: schedules.into_iter().map(ScheduleBody::new).collect(),
        next_cursor,
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn get(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    no_query(req)?;
    match deps.jobs.store().schedule(name).await? {
        Some(schedule) => Ok(json_response(StatusCode::OK, &ScheduleBody::new(schedule))),
        None => Err(ApiError::ScheduleNotFound { name: name.to_owned() }),
    }
}

async fn put(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    no_query(req)?;
    let request: ScheduleRequest = parse_json(json_body(req)?)?;
    let spec = ScheduleSpec::parse(name, request).map_err(jobq_shared::Error::InvalidSchedule)?;
    let store = deps.jobs.store();
    let (schedule, created) = store.put_schedule(&spec, store.now().await).await?;
    let job = &spec.job;
    let change = serde_json::json!({
        "schedule": name,
        "created": created,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "paused": spec.paused,
        "missedFires": spec.missed_fires,
        "overlap": spec.overlap,
        "job": {"type": job.get("type"), "queue": job.get("queue")},
    });
    deps.jobs.audit_change(&deps.actor(req), "schedule.put", &change).await;
    if !created {
        return Ok(json_response(StatusCode::OK, &ScheduleBody::new(schedule)));
    }
    let mut response = json_response(StatusCode::CREATED, &ScheduleBody::new(schedule));
    if let Ok(location) = HeaderValue::from_str(&format!("/schedules/{name}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn delete(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    no_query(req)?;
    if deps.jobs.store().delete_schedule(name).await? {
        deps.jobs
            .audit_change(
                &deps.actor(req),
                "schedule.delete",
                &serde_json::json!({ "schedule": name }),
            )
            .await;
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    } else {
        Err(ApiError::ScheduleNotFound { name: name.to_owned() })
    }
}

/// The schedule a request names, if any: the `name` path parameter (API Gateway, or `cargo
/// lambda watch` with its router), else the path segment after `schedules` (a function URL).
pub fn path_schedule_name(req: &Request) -> Result<Option<String>, ApiError> {
    let name = match req.path_parameters_ref().and_then(|params| params.first("name")) {
        Some(name) => name.to_owned(),
        None => {
            let path = req.uri().path();
            let mut segments = path.split('/').skip_while(|s| *s != "schedules").skip(1);
            match segments.next() {
                None | Some("") => return Ok(None),
                Some(name) => percent_encoding::percent_decode_str(name)
                    .decode_utf8_lossy()
                    .into_owned(),
            }
        }
    };
    check_name(&name).map_err(|mut invalid| {
        invalid.problem = invalid
            .problem
            .replace(&format!("{name:?}"), &format!("{:?}", shorten(&name)));
        jobq_shared::Error::InvalidSchedule(invalid)
    })?;
    Ok(Some(name))
}
