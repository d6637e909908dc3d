//! `POST /dlq/{id}/requeue`: puts a dead job back to PENDING with a fresh attempt budget (its
//! earlier attempts stay in its history). 200 with the job; 409 when the job is not dead. The body,
//! if any, is ignored: the seed's curl sends none. A requeue is written to the audit log
//! (`job.requeue`).

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, path_job_id};

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(requeue(deps, &req).await)
}

async fn requeue(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    expect_method(req, Method::POST)?;
    let id = path_job_id(req)?;
    let job = deps.jobs.requeue(id, deps.jobs.store().now().await).await?;
    deps.jobs.audit(&deps.actor(req), "job.requeue", id).await;
    Ok(json_response(StatusCode::OK, &JobBody::new(&job)))
}
