//! `GET /jobs?status=&queue=&type=&payload=&error=&createdAfter=&createdBefore=&limit=&cursor=`
//! (also `GET /api/jobs`, ChronoQueue's "Get All Jobs"): the jobs that match every filter given,
//! newest first, a page at a time: `{"items": [job, ...], "nextCursor": "..." | null}`, each job as
//! `GET /jobs/{id}` shows it. Pass `nextCursor` back as `cursor` (with the same filters) for the
//! next page; `null` means this was the last. An empty parameter is a filter not given.
//!
//! - `status`: one of PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED.
//! - `queue`, `type`: exactly (after trimming, as a create stores them).
//! - `payload`: a JSON object the payload contains (jsonb `@>`), e.g. `{"userId":123}`.
//! - `error`: text the last error contains, in any case (3 to 200 characters).
//! - `createdAfter` (at or after), `createdBefore` (before): RFC 3339 date-times.

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use jobq_shared::Status;
use jobq_shared::search::{JobCursor, JobFilter, MAX_PAYLOAD_FILTER_BYTES};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, limit_param, query_param, unknown_query_param};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

const PARAMETERS: [&str; 9] = [
    "status",
    "queue",
    "type",
    "payload",
    "error",
    "createdAfter",
    "createdBefore",
    "limit",
    "cursor",
];
const PARAMETER_LIST: &str = "status, queue, type, payload, error, createdAfter, createdBefore, limit, cursor";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FoundPage<'a> {
    items: Vec<JobBody<'a>>,
    next_cursor: Option<String>,
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(find(deps, &req).await)
}

async fn find(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    expect_method(req, Method::GET)?;
    if let Some(name) = unknown_query_param(req, &PARAMETERS) {
        return Err(ApiError::UnknownParameter {
            name,
            known: PARAMETER_LIST,
        });
    }
    let filter = filter(req)?;
    let limit = limit_param(req, DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = match given(req, "cursor") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<JobCursor>()?),
    };
    let found = deps.jobs.find(&filter, cursor, limit).await?;
    let body = FoundPage {
        items: found.items.iter().map(JobBody::new).collect(),
        next_cursor: found.next.map(|cursor| cursor.to_string()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// A parameter that is present and not blank.
fn given(req: &Request, name: &str) -> Option<String> {
    query_param(req, name).filter(|value| !value.trim().is_empty())
}

fn filter(req: &Request) -> Result<JobFilter, ApiError> {
    let mut filter = JobFilter::default();
    if let Some(raw) = given(req, "status") {
        let status = raw
            .trim()
            .to_ascii_uppercase()
            .parse::<Status>()
            .map_err(|_| ApiError::InvalidParameter {
                name: "status",
                detail: "must be one of PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED".to_owned(),
            })?;
        filter = filter.status(status);
    }
    if let Some(raw) = given(req, "queue") {
        filter = filter.queue(&raw).map_err(jobq_shared::Error::from)?;
    }
    if let Some(raw) = given(req, "type") {
        filter = filter.job_type(&raw).map_err(jobq_shared::Error::from)?;
    }
    if let Some(raw) = given(req, "payload") {
        if raw.len() > MAX_PAYLOAD_FILTER_BYTES {
            return Err(ApiError::InvalidParameter {
                name: "payload",
                detail: format!("is longer than {MAX_PAYLOAD_FILTER_BYTES} bytes"),
            });
        }
        let value: serde_json::Value = serde_json::from_str(&raw).map_err(|err| ApiError::InvalidParameter {
            name: "payload",
            detail: format!("is not valid JSON ({err}); give a JSON object, such as {{\"userId\":123}}"),
        })?;
        filter = filter.payload(value).map_err(jobq_shared::Error::from)?;
    }
    if let Some(raw) = given(req, "error") {
        filter = filter.error(&raw).map_err(jobq_shared::Error::from)?;
    }
    if let Some(raw) = given(req, "createdAfter") {
        filter = filter.created_after(date("createdAfter", &raw)?);
    }
    if let Some(raw) = given(req, "createdBefore") {
        filter = filter.created_before(date("createdBefore", &raw)?);
    }
    Ok(filter)
}

/// An RFC 3339 date-time. A `+` of an offset that reached us as a space (an unencoded `+` in a
/// query string is one) is read as the `+` it was.
fn date(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let raw = raw.trim();
    DateTime::parse_from_rfc3339(raw)
        .or_else(|err| match raw.rsplit_once(' ') {
            Some((time, offset)) if offset.len() == 5 && time.contains('T') => {
                DateTime::parse_from_rfc3339(&format!("{time}+{offset}"))
            }
            _ => Err(err),
        })
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| ApiError::InvalidParameter {
            name,
            detail: "must be an RFC 3339 date-time, such as 2025-10-24T18:00:00Z".to_owned(),
        })
}
