//! `POST /jobs/batch`: creates up to 1,000 jobs in one call, `{"jobs": [<as for POST /jobs>, ...]}`.
//! Every job is validated first; one invalid job is a 400 naming it (`jobs[3]: ...`) and nothing is
//! stored. Otherwise all are stored in one statement and the answer is 200 with one result per job,
//! in order: `{"status": 201, "job": {...}}` (created), `{"status": 200, "job": {...}}` (idempotent
//! replay), or `{"status": 409, "error": {...}}` (its idempotency key was used for another request).

use http::{Method, StatusCode};
use jobq_shared::NewJob;
use jobq_shared::job::{CreateRequest, InvalidJob, Parent};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, from_value, json_body, parse_json, trace_parent};

/// The most jobs one call may create.
pub const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    jobs: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Results {
    results: Vec<serde_json::Value>,
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(create(deps, &req).await)
}

async fn create(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    expect_method(req, Method::POST)?;
    let new = parse(req)?;
    let created = deps.jobs.create_many(&new, deps.jobs.store().now().await).await?;
    deps.log_enqueued(created.iter().filter_map(|c| c.as_ref().ok())).await;
    let results = created
        .into_iter()
        .map(|result| match result {
            Ok(created) => {
                let status = if created.replayed { 200 } else { 201 };
                serde_json::json!({"status": status, "job": JobBody::new(&created.job)})
            }
            Err(err) => {
                let err = ApiError::Domain(err);
                let (status, code) = err.status_and_code();
                serde_json::json!({
                    "status": status.as_u16(),
                    "error": {"code": code, "message": err.message(status)},
                })
            }
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Results { results }))
}

/// A job of the batch may depend on earlier items of the batch (by index), not on later ones.
fn earlier_parents_only(new: NewJob, index: usize) -> Result<NewJob, ApiError> {
    let later = new
        .depends_on
        .iter()
        .any(|parent| matches!(parent, Parent::Earlier(i) if *i >= index));
    if later {
        return Err(ApiError::Domain(
            InvalidJob {
                field: "dependsOn",
                problem: format!("an index must name an earlier job of the batch (this is jobs[{index}])"),
                missing: false,
            }
            .into(),
        ));
    }
    Ok(new)
}

/// The jobs a request asks for, in order, each validated as for `POST /jobs`. The untrusted input
/// of this route; `fuzz/` runs it over generated bodies.
pub fn parse(req: &Request) -> Result<Vec<NewJob>, ApiError> {
    let batch: Batch = parse_json(json_body(req)?)?;
    if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH {
        return Err(ApiError::BatchSize {
            count: batch.jobs.len(),
            max: MAX_BATCH,
        });
    }
    batch
        .jobs
        .iter()
        .enumerate()
        .map(|(index, item)| {
            from_value::<CreateRequest>(item)
                .and_then(|parsed| NewJob::parse(parsed, None).map_err(|e| ApiError::Domain(e.into())))
                .and_then(|new| earlier_parents_only(new, index))
                .map(|new| new.traceparent(trace_parent(req)))
                .map_err(|source| ApiError::InBatch {
                    index,
                    source: Box::new(source),
                })
        })
        .collect()
}
