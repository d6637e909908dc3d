//! `POST /jobs/bulk` and `GET /operations/{id}`: acting on every job that matches a filter.
//!
//! The body is `{"filter": {...}, "action": "requeue" | "cancel" | "delete", "dryRun": bool}`.
//! The filter takes `GET /jobs`'s names (`status`, `queue`, `type`, `payload` as a JSON object,
//! `error`, `createdAfter`, `createdBefore`); `{}` matches every job. Each action applies to some
//! statuses only: `requeue` to dead jobs (`FAILED`), `cancel` to `PENDING` and `IN_PROGRESS` jobs
//! (a running one is asked to stop), `delete` to finished ones (`COMPLETED`, `CANCELLED`,
//! `FAILED`); a `status` filter outside them is a 400.
//!
//! - A dry run answers 200 with the exact number of jobs the action would act on now, and changes
//!   nothing.
//! - Otherwise the answer is 202 with the operation (and `Location: /operations/{id}`), after up
//!   to a second of work on it: a small operation is `DONE` already. The rest is done in batches
//!   of 1,000 by the promoter and the worker function; `GET /operations/{id}` shows how far it is.
//!
//! Both the operation and its audit entry (`bulk.<action>`) are written in one statement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::header::LOCATION;
use http::{HeaderValue, Method, StatusCode};
use jobq_shared::Status;
use jobq_shared::bulk::{BulkAction, Operation};
use jobq_shared::search::JobFilter;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::request::{expect_method, json_body, no_query, parse_json, shorten};

/// How long the request itself works on a new operation before it answers.
pub const FIRST_BUDGET: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BulkRequest {
    filter: serde_json::Value,
    action: String,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DryRun {
    action: &'static str,
    filter: serde_json::Value,
    statuses: Vec<&'static str>,
    dry_run: bool,
    count: i64,
}

/// An operation as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationBody {
    id: Uuid,
    action: &'static str,
    filter: serde_json::Value,
    statuses: Vec<&'static str>,
    state: &'static str,
    total: i64,
    processed: i64,
    skipped: i64,
    actor: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl OperationBody {
    pub fn new(operation: Operation) -> OperationBody {
        OperationBody {
            id: operation.id,
            action: operation.action.as_str(),
            filter: operation.filter,
            statuses: operation.statuses.iter().map(|s| s.as_str()).collect(),
            state: operation.state.as_str(),
            total: operation.total,
            processed: operation.processed,
            skipped: operation.skipped,
            actor: operation.actor,
            created_at: operation.created_at,
            updated_at: operation.updated_at,
            finished_at: operation.finished_at,
            last_error: operation.last_error,
        }
    }
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    let outcome = if req.method() == Method::GET {
        get(deps, &req).await
    } else {
        bulk(deps, &req).await
    };
    respond(outcome)
}

async fn bulk(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    expect_method(req, Method::POST)?;
    no_query(req)?;
    let request: BulkRequest = parse_json(json_body(req)?)?;
    let action = BulkAction::parse(request.action.trim()).ok_or_else(|| ApiError::InvalidValue {
        field: "action".to_owned(),
        detail: format!("must be requeue, cancel or delete, got {:?}", shorten(&request.action)),
    })?;
    let filter = JobFilter::from_json(&request.filter).map_err(|invalid| ApiError::InvalidValue {
        field: if invalid.parameter == "filter" {
            "filter".to_owned()
        } else {
            format!("filter.{}", invalid.parameter)
        },
        detail: invalid.problem,
    })?;
    let statuses = action.statuses(&filter).map_err(|invalid| ApiError::InvalidValue {
        field: "filter.status".to_owned(),
        detail: invalid.problem,
    })?;
    if request.dry_run {
        // A count changes nothing: the read-only token may ask for it.
        let count = deps.jobs.bulk_count(&filter, action).await?;
        let body = DryRun {
            action: action.as_str(),
            filter: filter.to_json(),
            statuses: statuses.iter().map(|s: &Status| s.as_str()).collect(),
            dry_run: true,
            count,
        };
        return Ok(json_response(StatusCode::OK, &body));
    }
    deps.authorize_action(req)?;
    let operation = deps
        .jobs
        .start_bulk(&filter, action, &deps.actor(req), FIRST_BUDGET)
        .await?;
    let location = format!("/operations/{}", operation.id);
    let mut response = json_response(StatusCode::ACCEPTED, &OperationBody::new(operation));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

async fn get(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    no_query(req)?;
    let id = path_operation_id(req)?;
    match deps.jobs.store().operation(id).await? {
        Some(operation) => Ok(json_response(StatusCode::OK, &OperationBody::new(operation))),
        None => Err(ApiError::OperationNotFound { id }),
    }
}

/// The operation id of `/operations/{id}`: the `id` path parameter, else the last path segment
/// (a function URL).
fn path_operation_id(req: &Request) -> Result<Uuid, ApiError> {
    let raw = req
        .path_parameters_ref()
        .and_then(|params| params.first("id"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            req.uri()
                .path()
                .rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or_default()
                .to_owned()
        });
    Uuid::try_parse(raw.trim()).map_err(|_| ApiError::InvalidOperationId { value: shorten(&raw) })
}
