//! `GET /dlq?limit=&cursor=`: dead jobs, newest first, a page at a time:
//! `{"items": [job, ...], "nextCursor": "..." | null}`. Pass `nextCursor` back as `cursor` for the
//! next page; `null` means this was the last.

use http::{Method, StatusCode};
use jobq_shared::store::DeadCursor;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, limit_param, query_param};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DlqPage<'a> {
    items: Vec<JobBody<'a>>,
    next_cursor: Option<String>,
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(list(deps, &req).await)
}

async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    expect_method(req, Method::GET)?;
    let query = parse(req)?;
    let page = deps.jobs.list_dead(query.cursor, query.limit).await?;
    let body = DlqPage {
        items: page.items.iter().map(JobBody::new).collect(),
        next_cursor: page.next.map(|cursor| cursor.to_string()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Which page a request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageQuery {
    /// From 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// `None` for the first page.
    pub cursor: Option<DeadCursor>,
}

/// The page a request asks for: its `limit` and `cursor` query parameters, validated. The untrusted
/// input of this route; `fuzz/` runs it over generated queries.
pub fn parse(req: &Request) -> Result<PageQuery, ApiError> {
    let limit = limit_param(req, DEFAULT_LIMIT, MAX_LIMIT)?;
    // An empty cursor is the first page, as when a client always sends the parameter.
    let cursor = match query_param(req, "cursor").filter(|c| !c.trim().is_empty()) {
        None => None,
        Some(raw) => Some(raw.trim().parse::<DeadCursor>()?),
    };
    Ok(PageQuery { limit, cursor })
}
