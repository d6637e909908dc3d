//! `GET /jobs/{id}` (also ChronoQueue's `GET /api/jobs/{id}`): the job with its attempt history.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, path_job_id};

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(get(deps, &req).await)
}

async fn get(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize(req)?;
    expect_method(req, Method::GET)?;
    let id = path_job_id(req)?;
    let job = deps.jobs.get(id).await?;
    Ok(json_response(StatusCode::OK, &JobBody::new(&job)))
}
