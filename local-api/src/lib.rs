//! jobq's HTTP functions in one process, over plain HTTP, for fuzzing and local tests.
//!
//! Each request goes the way it goes on AWS: routed by method and path template as the HTTP API
//! in `template.yaml` routes it, turned into an API Gateway (HTTP API, payload 2.0) event as API
//! Gateway builds one, deserialized by `lambda_http` exactly as the Lambda runtime does it, and
//! handed to the same `handle` function the Lambda binary serves. So input that `cargo lambda
//! watch` cannot carry (bytes that are not UTF-8, in a body or a header) reaches the handlers here
//! as it would in production. This is an addition to the emulator, not a replacement: `scripts/
//! dev.sh` still serves the functions under `cargo lambda watch`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jobq_functions::{
    Deps, bulk_jobs, cancel_job, create_job, create_jobs, dashboard, encoding, find_jobs, get_job, list_audit,
    list_dlq, list_queues, requeue_dlq, schedules,
};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The HTTP functions, one per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    CreateJob,
    CreateJobs,
    GetJob,
    FindJobs,
    CancelJob,
    ListDlq,
    RequeueDlq,
    ListQueues,
    BulkJobs,
    ListAudit,
    Schedules,
    Dashboard,
}

impl Function {
    /// The binary's name, as in `functions/src/bin/`.
    pub fn binary(self) -> &'static str {
        match self {
            Function::CreateJob => "create-job",
            Function::CreateJobs => "create-jobs",
            Function::GetJob => "get-job",
            Function::FindJobs => "find-jobs",
            Function::CancelJob => "cancel-job",
            Function::ListDlq => "list-dlq",
            Function::RequeueDlq => "requeue-dlq",
            Function::ListQueues => "list-queues",
            Function::BulkJobs => "bulk-jobs",
            Function::ListAudit => "list-audit",
            Function::Schedules => "schedules",
            Function::Dashboard => "dashboard",
        }
    }

    async fn handle(self, deps: &Deps, req: Request) -> Response<Body> {
        match self {
            Function::CreateJob => create_job::handle(deps, req).await,
            Function::CreateJobs => create_jobs::handle(deps, req).await,
            Function::GetJob => get_job::handle(deps, req).await,
            Function::FindJobs => find_jobs::handle(deps, req).await,
            Function::CancelJob => cancel_job::handle(deps, req).await,
            Function::ListDlq => list_dlq::handle(deps, req).await,
            Function::RequeueDlq => requeue_dlq::handle(deps, req).await,
            Function::ListQueues => list_queues::handle(deps, req).await,
            Function::BulkJobs => bulk_jobs::handle(deps, req).await,
            Function::ListAudit => list_audit::handle(deps, req).await,
            Function::Schedules => schedules::handle(deps, req).await,
            Function::Dashboard => dashboard::handle(deps, req).await,
        }
    }
}

/// (method, path template, function): the same table as `template.yaml`'s routes and the
/// `[workspace.metadata.lambda.watch.router]` in `Cargo.toml` (a test holds them equal).
pub const ROUTES: &[(&str, &str, Function)] = &[
    ("POST", "/jobs", Function::CreateJob),
    ("POST", "/jobs/batch", Function::CreateJobs),
    ("GET", "/jobs", Function::FindJobs),
    ("GET", "/jobs/{id}", Function::GetJob),
    ("POST", "/jobs/{id}/cancel", Function::CancelJob),
    // ChronoQueue's calls, on the same functions.
    ("POST", "/api/jobs", Function::CreateJob),
    ("GET", "/api/jobs", Function::FindJobs),
    ("GET", "/api/jobs/{id}", Function::GetJob),
    ("GET", "/dlq", Function::ListDlq),
    ("POST", "/dlq/{id}/requeue", Function::RequeueDlq),
    ("GET", "/queues", Function::ListQueues),
    ("GET", "/queues/{name}", Function::ListQueues),
    ("PUT", "/queues/{name}", Function::ListQueues),
    ("POST", "/jobs/bulk", Function::BulkJobs),
    ("GET", "/operations/{id}", Function::BulkJobs),
    ("GET", "/audit", Function::ListAudit),
    ("GET", "/schedules", Function::Schedules),
    ("PUT", "/schedules/{name}", Function::Schedules),
    ("GET", "/schedules/{name}", Function::Schedules),
    ("DELETE", "/schedules/{name}", Function::Schedules),
    // The dashboard's page and the API it calls, on its own function.
    ("GET", "/dashboard", Function::Dashboard),
    ("GET", "/dashboard/{asset}", Function::Dashboard),
    ("GET", "/dashboard/api/queues", Function::Dashboard),
    ("GET", "/dashboard/api/queues/{name}", Function::Dashboard),
    ("PUT", "/dashboard/api/queues/{name}", Function::Dashboard),
    ("GET", "/dashboard/api/jobs", Function::Dashboard),
    ("GET", "/dashboard/api/jobs/{id}", Function::Dashboard),
    ("POST", "/dashboard/api/jobs/{id}/cancel", Function::Dashboard),
    ("POST", "/dashboard/api/jobs/bulk", Function::Dashboard),
    ("GET", "/dashboard/api/dlq", Function::Dashboard),
    ("POST", "/dashboard/api/dlq/{id}/requeue", Function::Dashboard),
    ("GET", "/dashboard/api/operations/{id}", Function::Dashboard),
    ("GET", "/dashboard/api/audit", Function::Dashboard),
    ("GET", "/dashboard/api/schedules", Function::Dashboard),
    ("GET", "/dashboard/api/schedules/{name}", Function::Dashboard),
    ("PUT", "/dashboard/api/schedules/{name}", Function::Dashboard),
    ("DELETE", "/dashboard/api/schedules/{name}", Function::Dashboard),
];

/// API Gateway's limit on a request body (HTTP APIs take up to 10 MB).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// The route for a method and a raw path, with its path parameters (URL-decoded). Literal
/// segments win over parameters, as in API Gateway (`/jobs/batch` is not `/jobs/{id}`).
pub fn route(method: &str, path: &str) -> Option<(Function, &'static str, BTreeMap<String, String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, Function, &'static str, BTreeMap<String, String>)> = None;
    for &(route_method, template, function) in ROUTES {
        if route_method != method {
            continue;
        }
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let mut literals = 0;
        let matched = parts.iter().zip(&segments).all(|(part, segment)| {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.insert(
                    name.to_owned(),
                    percent_decode_str(segment).decode_utf8_lossy().into_owned(),
                );
                !segment.is_empty()
            } else {
                literals += 1;
                part == segment
            }
        });
        if matched && best.as_ref().is_none_or(|(n, ..)| literals > *n) {
            best = Some((literals, function, template, params));
        }
    }
    best.map(|(_, function, template, params)| (function, template, params))
}

/// The API Gateway HTTP API (payload format 2.0) event for a request: lower-case header names,
/// repeated headers joined with commas, cookies apart, query parameters decoded, and a body that
/// is not UTF-8 sent base64-encoded. Header bytes that are not UTF-8 are read as Latin-1.
pub fn api_gateway_event(
    parts: &http::request::Parts,
    body: &[u8],
    route_key: &str,
    path_parameters: &BTreeMap<String, String>,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = match std::str::from_utf8(value.as_bytes()) {
            Ok(text) => text.to_owned(),
            Err(_) => value.as_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()));
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_str(key).decode_utf8_lossy().into_owned();
        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
        query
            .entry(key)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": parts.method.as_str(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent,
            },
            "requestId": "local",
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "isBase64Encoded": is_base64,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !path_parameters.is_empty() {
        event["pathParameters"] = json!(path_parameters);
    }
    if !body.is_null() {
        event["body"] = body;
    }
    event
}

/// What API Gateway answers when no route matches, when the function fails, or when a body is
/// too large.
fn gateway_error(status: u16, message: &str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(json!({ "message": message }).to_string())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves one request: route, build the event, convert it as the runtime does, call the function
/// (the dashboard's with `dashboard`, its own dependencies and tokens; the others with `deps`).
pub async fn serve_request(deps: &Deps, dashboard: &Deps, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let Some((function, template, params)) = route(req.method().as_str(), req.uri().path()) else {
        return gateway_error(404, "Not Found");
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return gateway_error(413, "Request Entity Too Large"),
    };
    let event = api_gateway_event(&parts, &body, &format!("{} {template}", parts.method), &params);
    // The runtime deserializes the event it is given; one it cannot read fails the invocation,
    // and API Gateway then answers 500.
    let request: Request = match serde_json::from_value::<LambdaRequest>(event) {
        Ok(lambda_request) => lambda_request.into(),
        Err(err) => {
            tracing::error!(function = function.binary(), error = %err, "the event could not be read");
            return gateway_error(500, "Internal Server Error");
        }
    };
    let deps = if function == Function::Dashboard {
        dashboard
    } else {
        deps
    };
    let gzip = encoding::accepts_gzip(request.headers());
    let response = encoding::negotiate(gzip, function.handle(deps, request).await);
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    http::Response::from_parts(parts, Full::new(bytes))
}

/// Accepts connections on `listener` until the task is dropped; the dashboard's routes share the
/// API's dependencies and tokens.
pub async fn serve(listener: TcpListener, deps: &'static Deps) -> anyhow::Result<()> {
    serve_with_dashboard(listener, deps, deps).await
}

/// [`serve`], with the dashboard's function on `dashboard` (see `Deps::for_dashboard`).
pub async fn serve_with_dashboard(
    listener: TcpListener,
    deps: &'static Deps,
    dashboard: &'static Deps,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer): (_, SocketAddr) = listener.accept().await?;
        tokio::spawn(async move {
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(serve_request(deps, dashboard, req).await) });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        let (function, template, params) = route("POST", "/jobs/batch").expect("route");
        assert_eq!((function, template), (Function::CreateJobs, "/jobs/batch"));
        assert!(params.is_empty());
        let (function, _, params) = route("GET", "/jobs/a%20b").expect("route");
        assert_eq!(function, Function::GetJob);
        assert_eq!(params["id"], "a b");
        assert_eq!(route("GET", "/jobs").map(|r| r.0), Some(Function::FindJobs));
        assert_eq!(route("POST", "/api/jobs").map(|r| r.0), Some(Function::CreateJob));
        let (function, _, params) = route("POST", "/jobs/abc/cancel").expect("route");
        assert_eq!((function, params["id"].as_str()), (Function::CancelJob, "abc"));
        assert!(route("GET", "/jobs/abc/cancel").is_none());
        assert!(route("DELETE", "/jobs/1").is_none());
        assert!(route("GET", "/jobs/").is_none());
    }

    /// The routes here are the emulator's (Cargo.toml) and the deployment's (template.yaml).
    #[test]
    fn routes_match_the_emulator_router_and_the_template() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml");
        let template = std::fs::read_to_string(format!("{root}/template.yaml")).expect("template.yaml");
        for &(method, path, function) in ROUTES {
            // One line per path: `"/path" = [{ method = "M", function = "f" }, ...]`.
            let router_line = cargo
                .lines()
                .find(|l| l.starts_with(&format!(r#""{path}" = ["#)))
                .unwrap_or_else(|| panic!("Cargo.toml's router has no line for {path}"));
            let entry = format!(r#"{{ method = "{method}", function = "{}" }}"#, function.binary());
            assert!(
                router_line.contains(&entry),
                "Cargo.toml's router lacks {entry} for {path}"
            );
            let template_lines: Vec<String> = template.lines().map(|l| l.trim().to_lowercase()).collect();
            let (path_line, method_line) = (format!("path: {path}"), format!("method: {}", method.to_lowercase()));
            let at = template_lines
                .windows(2)
                .position(|w| (w[0] == path_line && w[1] == method_line) || (w[0] == method_line && w[1] == path_line));
            assert!(at.is_some(), "template.yaml has no {method} {path} route");
        }
        let router_routes = cargo.matches("function = \"").count();
        assert_eq!(
            router_routes,
            ROUTES.len(),
            "Cargo.toml's router has routes this table lacks"
        );
    }
}
