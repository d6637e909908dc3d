//! `POST /jobs/bulk`, `GET /operations/{id}` and `GET /audit` through their handlers: a dry run
//! counts and changes nothing, a real run acts and is audited with who asked, and bad input is a
//! 400 that names the field and changes nothing.

mod common;

use chrono::Utc;
use common::{assert_error, dead_job, get_uri, json, setup, with_id};
use jobq_functions::{bulk_jobs, cancel_job, list_audit, requeue_dlq};
use jobq_shared::{NewJob, Status};
use lambda_http::{Body, Request};
use serde_json::{Value, json};

fn bulk(body: &Value, actor: Option<&str>) -> Request {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("/jobs/bulk")
        .header("content-type", "application/json");
    if let Some(actor) = actor {
        builder = builder.header("x-jobq-actor", actor);
    }
    builder.body(Body::from(body.to_string())).expect("request")
}

fn operation(id: &str) -> Request {
    with_id("GET", &format!("/operations/{id}"), id)
}

#[tokio::test]
async fn a_dry_run_counts_then_a_requeue_acts_and_both_kinds_of_action_are_audited() {
    let (env, deps) = setup().await;
    let now = Utc::now();
    let mut dead = Vec::new();
    for i in 0..5 {
        dead.push(dead_job(&env, json!({"customer": i % 2}), now).await);
    }
    env.create_job(NewJob::new("TEST", json!({"customer": 1}))).await;

    let dry = bulk_jobs::handle(
        &deps,
        bulk(
            &json!({"filter": {"payload": {"customer": 1}}, "action": "requeue", "dryRun": true}),
            None,
        ),
    )
    .await;
    let body = json(&dry);
    assert_eq!(dry.status(), 200, "{body}");
    assert_eq!(body["count"], 2);
    assert_eq!(body["statuses"], json!(["FAILED"]));
    assert_eq!(
        env.count_jobs(Some(Status::Failed)).await,
        5,
        "a dry run changes nothing"
    );
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert!(audit.is_empty(), "a dry run is not an action");

    let started = bulk_jobs::handle(
        &deps,
        bulk(
            &json!({"filter": {"payload": {"customer": 1}}, "action": "requeue"}),
            Some("alice"),
        ),
    )
    .await;
    let body = json(&started);
    assert_eq!(started.status(), 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        started.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/operations/{id}").as_str())
    );
    assert_eq!(body["total"], 2);
    assert_eq!(body["state"], "DONE", "two jobs take the request's own second: {body}");
    assert_eq!(body["processed"], 2);
    assert_eq!(env.count_jobs(Some(Status::Failed)).await, 3);

    let got = bulk_jobs::handle(&deps, operation(&id)).await;
    assert_eq!(got.status(), 200);
    assert_eq!(json(&got)["processed"], 2);
    assert_eq!(json(&got)["filter"], json!({"payload": {"customer": 1}}));

    // A single requeue and a single cancel go to the log too.
    let single = requeue_dlq::handle(
        &deps,
        with_id("POST", &format!("/dlq/{}/requeue", dead[0]), &dead[0].to_string()),
    )
    .await;
    assert_eq!(single.status(), 200);
    let cancel = cancel_job::handle(
        &deps,
        with_id("POST", &format!("/jobs/{}/cancel", dead[0]), &dead[0].to_string()),
    )
    .await;
    assert_eq!(cancel.status(), 200);

    let page = list_audit::handle(&deps, get_uri("/audit?limit=2")).await;
    let body = json(&page);
    assert_eq!(page.status(), 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "job.cancel");
    assert_eq!(items[0]["jobId"], dead[0].to_string());
    assert_eq!(items[0]["actor"], "anonymous");
    assert_eq!(items[1]["action"], "job.requeue");
    let cursor = body["nextCursor"].as_str().expect("a next page").to_owned();
    let rest = json(&list_audit::handle(&deps, get_uri(&format!("/audit?cursor={cursor}"))).await);
    let items = rest["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["action"], "bulk.requeue");
    assert_eq!(items[0]["operationId"], id.as_str());
    assert_eq!(items[0]["onBehalfOf"], "alice");
    assert_eq!(items[0]["count"], 2);
    assert_eq!(items[0]["filter"], json!({"payload": {"customer": 1}}));
    assert_eq!(rest["nextCursor"], Value::Null);
}

#[tokio::test]
async fn bad_requests_are_a_400_naming_the_field_and_change_nothing() {
    let (env, deps) = setup().await;
    dead_job(&env, json!(1), Utc::now()).await;
    for (body, code, mentions) in [
        (json!({"action": "requeue"}), "missing_field", "filter"),
        (json!({"filter": {}}), "missing_field", "action"),
        (json!({"filter": {}, "action": "retry"}), "invalid_field", "action"),
        (
            json!({"filter": {}, "action": "requeue", "dryRun": "yes"}),
            "wrong_type",
            "dryRun",
        ),
        (
            json!({"filter": {}, "action": "requeue", "extra": 1}),
            "unknown_field",
            "extra",
        ),
        (json!({"filter": [], "action": "requeue"}), "invalid_field", "filter"),
        (
            json!({"filter": {"state": "FAILED"}, "action": "requeue"}),
            "invalid_field",
            "state",
        ),
        (
            json!({"filter": {"status": "PENDING"}, "action": "requeue"}),
            "invalid_field",
            "filter.status",
        ),
        (
            json!({"filter": {"status": "FAILED"}, "action": "cancel"}),
            "invalid_field",
            "filter.status",
        ),
        (
            json!({"filter": {"payload": [1]}, "action": "delete"}),
            "invalid_field",
            "filter.payload",
        ),
        (
            json!({"filter": {"createdAfter": "soon"}, "action": "delete"}),
            "invalid_field",
            "filter.createdAfter",
        ),
    ] {
        let response = bulk_jobs::handle(&deps, bulk(&body, None)).await;
        assert_error(&response, 400, code, mentions);
    }
    assert_eq!(env.count_jobs(Some(Status::Failed)).await, 1);
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert!(audit.is_empty());

    let missing = bulk_jobs::handle(&deps, operation("0192f5a4-1c3b-7cde-8f00-0123456789ab")).await;
    assert_error(&missing, 404, "not_found", "0192f5a4");
    assert_error(
        &bulk_jobs::handle(&deps, operation("nope")).await,
        400,
        "invalid_uuid",
        "nope",
    );
    for uri in [
        "/audit?limit=0",
        "/audit?limit=abc",
        "/audit?cursor=-1",
        "/audit?cursor=1x",
        "/audit?since=1",
    ] {
        let response = list_audit::handle(&deps, get_uri(uri)).await;
        assert_eq!(response.status(), 400, "{uri}: {}", json(&response));
    }
}
