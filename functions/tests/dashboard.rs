//! The dashboard's function: the page and its assets with a strict Content-Security-Policy, and
//! its API: refused without a configured token, the page's routes answered by the API's handlers,
//! the read-only token refused any action, and actions audited as the dashboard's.

mod common;

use common::{assert_error, dead_job, json, setup};
use jobq_functions::dashboard;
use jobq_shared::Status;
use lambda_http::{Body, Request};
use serde_json::json;

fn request(method: &str, path: &str, token: Option<&str>) -> Request {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("x-jobq-actor", "alice");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Body::Empty).expect("request")
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_this_origin_only() {
    let (_env, deps) = setup().await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = dashboard::handle(&deps, request("GET", path, None)).await;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert!(
            header("content-security-policy").contains("default-src 'none'"),
            "{path}"
        );
        assert!(
            header("content-security-policy").contains("script-src 'self'"),
            "{path}"
        );
        let text = match response.body() {
            Body::Text(text) => text.clone(),
            other => panic!("{path}: {other:?}"),
        };
        // Nothing is fetched from another host.
        assert!(
            !text.contains("http://") && !text.contains("https://") || path.ends_with(".js"),
            "{path}"
        );
    }
    let script = match dashboard::handle(&deps, request("GET", "/dashboard/app.js", None))
        .await
        .body()
    {
        Body::Text(text) => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!script.contains("innerHTML"), "values go onto the page as text only");
    assert!(
        script
            .matches("http")
            .all(|_| script.contains("'http://www.w3.org/2000/svg'")),
        "the only URL in the script is the SVG namespace"
    );
    let missing = dashboard::handle(&deps, request("GET", "/dashboard/nope.js", None)).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn without_a_token_configured_the_dashboard_api_refuses_everything() {
    let (env, deps) = setup().await;
    let dead = dead_job(&env, json!(1), chrono::Utc::now()).await;
    for (method, path) in [
        ("GET", "/dashboard/api/queues".to_owned()),
        ("GET", "/dashboard/api/dlq".to_owned()),
        ("POST", format!("/dashboard/api/dlq/{dead}/requeue")),
    ] {
        let response = dashboard::handle(&deps, request(method, &path, None)).await;
        assert_error(&response, 403, "dashboard_disabled", "JOBQ_DASHBOARD_TOKEN");
    }
    assert_eq!(env.jobs.get(dead).await.expect("job").status, Status::Failed);
}

#[tokio::test]
async fn with_its_tokens_the_dashboard_api_reads_acts_and_audits_as_the_dashboard() {
    let (env, deps) = setup().await;
    let deps = deps
        .with_api_token("full-token")
        .with_readonly_token("look-token")
        .with_token_principal("dashboard");
    let dead = dead_job(&env, json!({"n": 1}), chrono::Utc::now()).await;

    let unauthenticated = dashboard::handle(&deps, request("GET", "/dashboard/api/queues", None)).await;
    assert_error(&unauthenticated, 401, "unauthorized", "Bearer");
    for path in [
        "/dashboard/api/queues".to_owned(),
        "/dashboard/api/queues/default".to_owned(),
        "/dashboard/api/jobs?status=FAILED".to_owned(),
        format!("/dashboard/api/jobs/{dead}"),
        "/dashboard/api/dlq".to_owned(),
        "/dashboard/api/audit".to_owned(),
    ] {
        let response = dashboard::handle(&deps, request("GET", &path, Some("look-token"))).await;
        assert_eq!(response.status(), 200, "{path}: {}", json(&response));
    }
    let found = dashboard::handle(
        &deps,
        request("GET", "/dashboard/api/jobs?status=FAILED", Some("look-token")),
    )
    .await;
    assert_eq!(json(&found)["items"][0]["jobId"], dead.to_string());

    let requeue = format!("/dashboard/api/dlq/{dead}/requeue");
    let refused = dashboard::handle(&deps, request("POST", &requeue, Some("look-token"))).await;
    assert_error(&refused, 403, "forbidden", "read");
    assert_eq!(env.jobs.get(dead).await.expect("job").status, Status::Failed);

    let done = dashboard::handle(&deps, request("POST", &requeue, Some("full-token"))).await;
    assert_eq!(done.status(), 200, "{}", json(&done));
    assert_eq!(env.jobs.get(dead).await.expect("job").status, Status::Pending);
    let (audit, _) = env.store.audit_log(None, 5).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].on_behalf_of.as_deref(),
            audit[0].action.as_str()
        ),
        ("dashboard", Some("alice"), "job.requeue")
    );
    let unknown = dashboard::handle(&deps, request("GET", "/dashboard/api/nothing", Some("full-token"))).await;
    assert_eq!(unknown.status(), 404);
}
