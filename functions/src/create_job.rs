//! `POST /jobs` (also ChronoQueue's `POST /api/jobs`): creates a job. 201 with the job, or 200 with the existing job when an idempotency
//! key replays the same request; `Location: /jobs/{id}` either way.

use http::header::{HeaderValue, LOCATION};
use http::{Method, StatusCode};
use jobq_shared::NewJob;
use jobq_shared::job::{CreateRequest, InvalidJob, Parent};
use lambda_http::{Body, Request, Response};

use crate::api_error::{ApiError, json_response, respond};
use crate::deps::Deps;
use crate::job_body::JobBody;
use crate::request::{expect_method, header, json_body, parse_json, trace_parent};

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    respond(create(deps, &req).await)
}

async fn create(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    deps.authorize_action(req)?;
    expect_method(req, Method::POST)?;
    let new = parse(req)?;
    let created = deps.jobs.create(&new, deps.jobs.store().now().await).await?;
    deps.log_enqueued([&created]).await;
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = json_response(status, &JobBody::new(&created.job));
    if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{}", created.job.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// The job a request asks for: its JSON body and its `Idempotency-Key` header, validated. The
/// untrusted input of this route; `fuzz/` runs it over generated bodies.
pub fn parse(req: &Request) -> Result<NewJob, ApiError> {
    let body: CreateRequest = parse_json(json_body(req)?)?;
    let new = NewJob::parse(body, header(req, "idempotency-key")?).map_err(jobq_shared::Error::from)?;
    if new.depends_on.iter().any(|parent| matches!(parent, Parent::Earlier(_))) {
        return Err(jobq_shared::Error::from(InvalidJob {
            field: "dependsOn",
            problem: "names jobs by id here; an index names an earlier job only in POST /jobs/batch".into(),
            missing: false,
        })
        .into());
    }
    Ok(new.traceparent(trace_parent(req)))
}
