mod common;

use common::{assert_error, count_jobs, get_dlq, json, post_json, setup, with_id};
use jobq_functions::{create_job, get_job, list_dlq, requeue_dlq};
use lambda_http::{Body, Request, Response};

const TOKEN: &str = "s3cret-token";
const UNKNOWN: &str = "0192f5a4-1c3b-7cde-8f00-0123456789ab";

fn authorized(mut request: Request, value: Option<&str>) -> Request {
    if let Some(value) = value {
        request
            .headers_mut()
            .insert("authorization", value.parse().expect("header"));
    }
    request
}

#[tokio::test]
async fn with_a_token_set_every_route_requires_the_bearer_header() {
    let (env, deps) = setup().await;
    let deps = deps.with_api_token(TOKEN);
    let good = format!("Bearer {TOKEN}");
    let refused = [
        None,
        Some("Bearer wrong"),
        Some("Bearer"),
        Some(TOKEN),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("Bearer s3cret-toke"),
    ];

    for header in refused
        .iter()
        .copied()
        .chain([Some(good.as_str()), Some("bearer  s3cret-token ")])
    {
        let create = create_job::handle(&deps, authorized(post_json("/jobs", r#"{"type":"TEST"}"#), header)).await;
        let get = get_job::handle(&deps, authorized(with_id("GET", "/jobs/x", UNKNOWN), header)).await;
        let list = list_dlq::handle(&deps, authorized(get_dlq(&[]), header)).await;
        let requeue = requeue_dlq::handle(&deps, authorized(with_id("POST", "/dlq/x/requeue", UNKNOWN), header)).await;
        let responses: [(&str, Response<Body>); 4] =
            [("create", create), ("get", get), ("list", list), ("requeue", requeue)];
        for (route, response) in responses {
            if refused.contains(&header) {
                assert_error(&response, 401, "unauthorized", "Bearer");
                assert_eq!(
                    response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
                    Some("Bearer"),
                    "{route}"
                );
            } else {
                assert_ne!(response.status(), 401, "{route} with {header:?}: {}", json(&response));
            }
        }
    }
    // Only the two authorized creates stored a job.
    assert_eq!(count_jobs(&env).await, 2);
}

#[tokio::test]
async fn without_a_token_set_no_header_is_needed() {
    let (_env, deps) = setup().await;

    let response = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST"}"#)).await;

    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_readonly_token_reads_and_counts_but_every_action_is_a_403_that_changes_nothing() {
    use jobq_functions::{bulk_jobs, cancel_job, create_jobs, list_audit};

    let (env, deps) = setup().await;
    let deps = deps.with_api_token(TOKEN).with_readonly_token("look-only");
    let dead = common::dead_job(&env, serde_json::json!(1), chrono::Utc::now()).await;
    let pending = env
        .create_job(jobq_shared::NewJob::new("TEST", serde_json::json!(2)))
        .await;
    let readonly = Some("Bearer look-only");

    let reads = [
        get_job::handle(
            &deps,
            authorized(with_id("GET", "/jobs/x", &dead.to_string()), readonly),
        )
        .await,
        list_dlq::handle(&deps, authorized(get_dlq(&[]), readonly)).await,
        list_audit::handle(&deps, authorized(common::get_uri("/audit"), readonly)).await,
        bulk_jobs::handle(
            &deps,
            authorized(
                post_json("/jobs/bulk", r#"{"filter": {}, "action": "requeue", "dryRun": true}"#),
                readonly,
            ),
        )
        .await,
    ];
    for response in &reads {
        assert_eq!(response.status(), 200, "{}", json(response));
    }
    assert_eq!(json(&reads[3])["count"], 1);

    let actions = [
        create_job::handle(&deps, authorized(post_json("/jobs", r#"{"type":"TEST"}"#), readonly)).await,
        create_jobs::handle(
            &deps,
            authorized(post_json("/jobs/batch", r#"{"jobs":[{"type":"TEST"}]}"#), readonly),
        )
        .await,
        cancel_job::handle(
            &deps,
            authorized(with_id("POST", "/jobs/x/cancel", &pending.to_string()), readonly),
        )
        .await,
        requeue_dlq::handle(
            &deps,
            authorized(with_id("POST", "/dlq/x/requeue", &dead.to_string()), readonly),
        )
        .await,
        bulk_jobs::handle(
            &deps,
            authorized(
                post_json("/jobs/bulk", r#"{"filter": {}, "action": "requeue"}"#),
                readonly,
            ),
        )
        .await,
        jobq_functions::list_queues::handle(
            &deps,
            authorized(
                http::Request::builder()
                    .method("PUT")
                    .uri("/queues/default")
                    .header("content-type", "application/json")
                    .body(lambda_http::Body::from(r#"{"paused": true}"#))
                    .expect("request"),
                readonly,
            ),
        )
        .await,
    ];
    for response in &actions {
        assert_error(response, 403, "forbidden", "read");
    }
    assert_eq!(count_jobs(&env).await, 2, "nothing created");
    assert_eq!(
        env.jobs.get(dead).await.expect("dead").status,
        jobq_shared::Status::Failed
    );
    assert_eq!(
        env.jobs.get(pending).await.expect("pending").status,
        jobq_shared::Status::Pending
    );
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert!(audit.is_empty(), "{audit:?}");

    // The API token still acts, and the audit log names it.
    let requeued = requeue_dlq::handle(
        &deps,
        authorized(
            with_id("POST", "/dlq/x/requeue", &dead.to_string()),
            Some(&format!("Bearer {TOKEN}")),
        ),
    )
    .await;
    assert_eq!(requeued.status(), 200);
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert_eq!(audit[0].actor, "api-token");
}
