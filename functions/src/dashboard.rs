//! `GET /dashboard`: a web page to see and steer jobq, served by its own function, with the API
//! it calls under `/dashboard/api/` on the same function.
//!
//! - `/dashboard` is the page, `/dashboard/app.js` and `/dashboard/app.css` its script and style,
//!   all compiled into the binary: nothing is loaded from anywhere else (the page's
//!   Content-Security-Policy allows its own origin only). They hold no data, so they are served
//!   without a token.
//! - `/dashboard/api/...` are the API routes the page uses (`queues`, `jobs`, `jobs/{id}`,
//!   `jobs/{id}/cancel`, `jobs/bulk`, `dlq`, `dlq/{id}/requeue`, `operations/{id}`, `audit`,
//!   `schedules`, `schedules/{name}`),
//!   answered by the same handlers as the API's own routes. They need the dashboard's token in
//!   `Authorization: Bearer`: `JOBQ_DASHBOARD_TOKEN` sees and acts, `JOBQ_DASHBOARD_READONLY_TOKEN`
//!   only sees (an action is a 403). With neither set, every one of them is a 403: the dashboard is
//!   secure by default, even where the API itself is open (locally) or signed with IAM (on AWS,
//!   where a browser cannot sign; the dashboard's routes are the ones API Gateway leaves to the
//!   function to authorize).
//!
//! The audit log names dashboard actions `dashboard`, with the name the person typed into the page
//! as `onBehalfOf`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::api_error::json_response;
use crate::deps::Deps;
use crate::{bulk_jobs, cancel_job, find_jobs, get_job, list_audit, list_dlq, list_queues, requeue_dlq, schedules};

/// The token that sees and acts.
pub const TOKEN_ENV: &str = "JOBQ_DASHBOARD_TOKEN";
/// The token that only sees.
pub const READONLY_TOKEN_ENV: &str = "JOBQ_DASHBOARD_READONLY_TOKEN";

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Only this origin: no inline script or style, no other host, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    let path = req.uri().path().to_owned();
    // What follows `/dashboard` (API Gateway's HTTP API passes the path as the client sent it).
    let rest = path.split_once("/dashboard").map_or("", |(_, rest)| rest);
    match rest {
        "" | "/" | "/index.html" => asset(&req, PAGE, "text/html; charset=utf-8"),
        "/app.js" => asset(&req, SCRIPT, "text/javascript; charset=utf-8"),
        "/app.css" => asset(&req, STYLE, "text/css; charset=utf-8"),
        _ => match rest.strip_prefix("/api/") {
            Some(route) => api(deps, req, route).await,
            None => not_found(),
        },
    }
}

fn asset(req: &Request, text: &'static str, content_type: &'static str) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": {"code": "method_not_allowed", "message": "this route accepts GET only"}}),
        );
    }
    let mut response = Response::new(Body::Text(text.to_owned()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"code": "not_found", "message": "no such dashboard route"}}),
    )
}

/// One of the page's API calls, answered by the API's own handler for that route.
async fn api(deps: &Deps, req: Request, route: &str) -> Response<Body> {
    if !deps.requires_token() {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": {"code": "dashboard_disabled", "message": format!(
                "the dashboard needs a token: set {TOKEN_ENV} (and, for people who only look, {READONLY_TOKEN_ENV}) on the dashboard function"
            )}}),
        );
    }
    let segments: Vec<&str> = route.trim_end_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["queues"] | ["queues", _]) => list_queues::handle(deps, req).await,
        (Method::PUT, ["queues", _]) => list_queues::handle(deps, req).await,
        (Method::GET, ["jobs"]) => find_jobs::handle(deps, req).await,
        (Method::POST, ["jobs", "bulk"]) => bulk_jobs::handle(deps, req).await,
        (Method::GET, ["jobs", _]) => get_job::handle(deps, req).await,
        (Method::POST, ["jobs", _, "cancel"]) => cancel_job::handle(deps, req).await,
        (Method::GET, ["dlq"]) => list_dlq::handle(deps, req).await,
        (Method::POST, ["dlq", _, "requeue"]) => requeue_dlq::handle(deps, req).await,
        (Method::GET, ["operations", _]) => bulk_jobs::handle(deps, req).await,
        (Method::GET, ["audit"]) => list_audit::handle(deps, req).await,
        (Method::GET, ["schedules"]) => schedules::handle(deps, req).await,
        (Method::GET | Method::PUT | Method::DELETE, ["schedules", _]) => schedules::handle(deps, req).await,
        _ => not_found(),
    }
}
