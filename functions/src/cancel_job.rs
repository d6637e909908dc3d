//! `POST /jobs/{id}/cancel`: cancels a job. A job that has not started (`PENDING`: ready, scheduled
//! or waiting for a retry) is `CANCELLED` at once and never runs: 200 with the job. A running one
//! (`IN_PROGRESS`) gets a cancel request (`cancelRequestedAt`): 202 with the job; its worker stops it
//! at the attempt's next heartbeat and records it `CANCELLED`. A finished job (`COMPLETED`, `FAILED`, `CANCELLED`) is a 409; an unknown id a 404. Any body
//! is ignored.

use http::{Method, StatusCode};
use jobq_shared::jobs::Cancellation;
use lambda_http::{Body, Request, Response};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, path_job_id};

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(cancel(deps, &req).await)
}

async fn cancel(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    expect_method(req, Method::POST)?;
    let id = path_job_id(req)?;
    let cancelled = deps.jobs.cancel(id, deps.jobs.store().now().await).await?;
    deps.jobs.audit(&deps.actor(req), "job.cancel", id).await;
    Ok(match cancelled {
        Cancellation::Cancelled(job) => json_response(StatusCode::OK, &JobBody::new(&job)),
        Cancellation::Requested(job) => json_response(StatusCode::ACCEPTED, &JobBody::new(&job)),
    })
}
