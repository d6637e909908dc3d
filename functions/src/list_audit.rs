//! `GET /audit?limit=&cursor=`: the audit log, newest first: who cancelled or requeued a job, and
//! who started which bulk operation, with its filter and how many jobs it matched.
//! `{"items": [...], "nextCursor": "..." | null}`; pass `nextCursor` back as `cursor` for the next
//! page.
//!
//! Each entry: `id`, `at`, `actor` (the authenticated caller: an IAM ARN, `api-token`, or
//! `anonymous` when the API has no auth), `onBehalfOf` (the `X-Jobq-Actor` header the caller sent,
//! not verified), `action` (`job.cancel`, `job.requeue`, `bulk.requeue`, `bulk.cancel`,
//! `bulk.delete`), `jobId` or `operationId` and `filter`, and `count`.

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use jobq_shared::JobId;
use jobq_shared::bulk::AuditEntry;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::request::{expect_method, limit_param, query_param, unknown_query_param};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditPage {
    items: Vec<EntryBody>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryBody {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    on_behalf_of: Option<String>,
    action: String,
    job_id: Option<JobId>,
    operation_id: Option<Uuid>,
    filter: Option<serde_json::Value>,
    count: i64,
}

impl From<AuditEntry> for EntryBody {
    fn from(entry: AuditEntry) -> Self {
        EntryBody {
            id: entry.id,
            at: entry.at,
            actor: entry.actor,
            on_behalf_of: entry.on_behalf_of,
            action: entry.action,
            job_id: entry.job_id,
            operation_id: entry.operation_id,
            filter: entry.filter,
            count: entry.count,
        }
    }
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(list(deps, &req).await)
}

async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    expect_method(req, Method::GET)?;
    if let Some(name) = unknown_query_param(req, &["limit", "cursor"]) {
        return Err(ApiError::UnknownParameter {
            name,
            known: "limit, cursor",
        });
    }
    let limit = limit_param(req, DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = match query_param(req, "cursor").filter(|raw| !raw.trim().is_empty()) {
        None => None,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(id) if id > 0 && raw.trim().bytes().all(|b| b.is_ascii_digit()) => Some(id),
            _ => return Err(jobq_shared::Error::InvalidCursor.into()),
        },
    };
    let (entries, next) = deps.jobs.store().audit_log(cursor, limit).await?;
    let body = AuditPage {
        items: entries.into_iter().map(EntryBody::from).collect(),
        next_cursor: next.map(|id| id.to_string()),
    };
    Ok(json_response(StatusCode::OK, &body))
}
