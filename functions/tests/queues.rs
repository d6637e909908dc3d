//! `GET /queues` and `GET /queues/{name}`: the queues' health as the API shows it, and the input
//! it refuses.

mod common;

use std::collections::HashMap;

use common::{assert_error, get_uri, json, setup};
use jobq_functions::list_queues;
use jobq_shared::NewJob;
use lambda_http::{Body, Request, RequestExt};
use serde_json::json;

fn get_named(name: &str) -> Request {
    // The path parameter is what counts; API Gateway decoded it from the path.
    get_uri("/queues/name").with_path_parameters(HashMap::from([("name".to_owned(), name.to_owned())]))
}

#[tokio::test]
async fn every_queue_with_its_counts_and_outcomes() {
    let (env, deps) = setup().await;
    env.create_jobs(&[
        NewJob::new("TEST", json!({})).queue("emails"),
        NewJob::new("TEST", json!({})).queue("emails"),
        NewJob::new("TEST", json!({})).queue("reports"),
    ])
    .await;

    let response = list_queues::handle(&deps, get_uri("/queues")).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["countBound"], 50_000);
    let names: Vec<&str> = body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["emails", "reports"]);
    let emails = &body["queues"][0];
    assert_eq!(
        emails["counts"],
        json!({"PENDING": 2, "BLOCKED": 0, "IN_PROGRESS": 0, "COMPLETED": 0, "FAILED": 0, "CANCELLED": 0})
    );
    assert_eq!(emails["estimatedCounts"], json!([]));
    assert_eq!(emails["ready"], 2);
    assert_eq!(emails["dlqDepth"], 0);
    assert!(
        emails["oldestPendingAgeSeconds"].as_f64().is_some_and(|age| age >= 0.0),
        "{emails}"
    );
    assert_eq!(emails["throughput"]["minutes"], 15);
    assert_eq!(emails["throughput"]["completed"], 0);
    let minutes = emails["throughput"]["perMinute"].as_array().expect("perMinute");
    assert_eq!(minutes.len(), 15);
    assert!(
        minutes[14]["minute"].is_string() && minutes[14]["completed"] == 0,
        "{minutes:?}"
    );

    // One queue by name: the same object; a queue without jobs, all zeros.
    let one = list_queues::handle(&deps, get_named("reports")).await;
    let one = json(&one);
    assert_eq!(one["name"], "reports");
    assert_eq!(one["counts"]["PENDING"], 1);
    let none = json(&list_queues::handle(&deps, get_named("nobody")).await);
    assert_eq!(none["counts"]["PENDING"], 0);
    assert_eq!(none["oldestPendingAgeSeconds"], json!(null));

    // A function URL carries the name in its path.
    let by_url = json(&list_queues::handle(&deps, get_uri("/lambda-url/list-queues/queues/emails")).await);
    assert_eq!(by_url["name"], "emails");
    assert_eq!(by_url["counts"]["PENDING"], 2);
}

#[tokio::test]
async fn bad_requests_get_a_4xx() {
    let (_env, deps) = setup().await;
    let long = "q".repeat(201);
    assert_error(
        &list_queues::handle(&deps, get_named(&long)).await,
        400,
        "invalid_queue_name",
        "1 to 200 characters",
    );
    assert_error(
        &list_queues::handle(&deps, get_named("  ")).await,
        400,
        "invalid_queue_name",
        "not a valid queue name",
    );
    assert_error(
        &list_queues::handle(&deps, get_uri("/queues/%FF")).await,
        400,
        "invalid_queue_name",
        "%FF",
    );
    // Postgres text cannot hold a NUL: a 400, not a 500 from the database.
    for name in ["a\0b", "\0"] {
        assert_error(
            &list_queues::handle(&deps, get_named(name)).await,
            400,
            "invalid_queue_name",
            "",
        );
        assert_error(
            &list_queues::handle(&deps, put_named(name, r#"{"paused": true}"#)).await,
            400,
            "invalid_queue_name",
            "",
        );
    }
    assert_error(
        &list_queues::handle(&deps, get_uri("/queues?limit=5")).await,
        400,
        "unknown_parameter",
        "limit",
    );
    let post = http::Request::builder()
        .method("POST")
        .uri("/queues")
        .body(Body::Empty)
        .expect("request");
    assert_error(
        &list_queues::handle(&deps, post).await,
        405,
        "method_not_allowed",
        "GET",
    );
}

fn put_named(name: &str, body: &str) -> Request {
    http::Request::builder()
        .method("PUT")
        .uri("/queues/name")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
        .with_path_parameters(HashMap::from([("name".to_owned(), name.to_owned())]))
}

#[tokio::test]
async fn put_pauses_and_resumes_a_queue_and_the_queue_and_its_jobs_say_so() {
    let (env, deps) = setup().await;
    let id = env.create_job(NewJob::new("TEST", json!(1)).queue("mail")).await;

    let response = list_queues::handle(&deps, put_named("mail", r#"{"paused": true}"#)).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["paused"].as_bool()),
        (Some("mail"), Some(true))
    );
    assert_eq!(body["counts"]["PENDING"], 1);
    let listed = json(&list_queues::handle(&deps, get_uri("/queues")).await);
    assert_eq!(listed["queues"][0]["paused"], true, "{listed}");
    let job = jobq_functions::get_job::handle(&deps, common::with_id("GET", "/jobs/x", &id.to_string())).await;
    assert_eq!(json(&job)["heldBack"], "its queue \"mail\" is paused");

    // An empty change leaves it paused; a queue without jobs can be paused, and is listed.
    let same = json(&list_queues::handle(&deps, put_named("mail", "{}")).await);
    assert_eq!(same["paused"], true);
    list_queues::handle(&deps, put_named("empty", r#"{"paused": true}"#)).await;
    let listed = json(&list_queues::handle(&deps, get_uri("/queues")).await);
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["empty", "mail"]);

    let resumed = json(&list_queues::handle(&deps, put_named("mail", r#"{"paused": false}"#)).await);
    assert_eq!(resumed["paused"], false);
    let job = jobq_functions::get_job::handle(&deps, common::with_id("GET", "/jobs/x", &id.to_string())).await;
    assert!(json(&job).get("heldBack").is_none());
}

#[tokio::test]
async fn bad_settings_are_a_400_and_change_nothing() {
    let (_env, deps) = setup().await;
    for (body, code, mentions) in [
        (r#"{"paused": "yes"}"#, "wrong_type", "paused"),
        (r#"{"concurrency": 0}"#, "invalid_field", "concurrency"),
        (r#"{"concurrency": -1}"#, "invalid_field", "concurrency"),
        (r#"{"concurrency": 1000001}"#, "invalid_field", "concurrency"),
        (r#"{"concurrency": 2.5}"#, "wrong_type", "concurrency"),
        (r#"{"concurrency": "3"}"#, "wrong_type", "concurrency"),
        (
            r#"{"retention": {"completedMs": -1}}"#,
            "invalid_field",
            "retention.completedMs",
        ),
        (
            r#"{"retention": {"deadMs": 315360000001}}"#,
            "invalid_field",
            "retention.deadMs",
        ),
        (r#"{"retention": {"completedMs": "7d"}}"#, "wrong_type", "retention"),
        (
            r#"{"retention": {"completed": 1}}"#,
            "unknown_field",
            "retention.completed",
        ),
        (r#"{"retention": 7}"#, "wrong_type", "retention"),
        (r#"{"rateLimit": {"limit": 1}}"#, "missing_field", "periodMs"),
        (
            r#"{"rateLimit": {"limit": 0, "periodMs": 1000}}"#,
            "invalid_field",
            "rateLimit.limit",
        ),
        (
            r#"{"rateLimit": {"limit": 1, "periodMs": 86400001}}"#,
            "invalid_field",
            "rateLimit.periodMs",
        ),
        (
            r#"{"rateLimit": {"limit": 1, "periodMs": 1000, "key": "a..b"}}"#,
            "invalid_field",
            "rateLimit.key",
        ),
        (
            r#"{"rateLimit": {"limit": 1, "periodMs": 1000, "key": ""}}"#,
            "invalid_field",
            "rateLimit.key",
        ),
        (
            r#"{"rateLimit": {"limit": 1, "periodMs": 1000, "burst": 2}}"#,
            "unknown_field",
            "rateLimit.burst",
        ),
        (r#"{"rateLimit": 5}"#, "wrong_type", "rateLimit"),
        (r#"{"routing": true}"#, "unknown_field", "routing"),
        (r#"[true]"#, "wrong_type", ""),
        ("not json", "invalid_json", ""),
    ] {
        let response = list_queues::handle(&deps, put_named("mail", body)).await;
        assert_error(&response, 400, code, mentions);
    }
    let queue = json(&list_queues::handle(&deps, get_named("mail")).await);
    assert_eq!((&queue["paused"], &queue["concurrency"]), (&json!(false), &json!(null)));
    let response = list_queues::handle(
        &deps,
        http::Request::builder()
            .method("DELETE")
            .uri("/queues/mail")
            .body(Body::Empty)
            .expect("request"),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", "GET, PUT");
}

#[tokio::test]
async fn put_sets_and_removes_a_concurrency_limit_and_a_held_job_says_why() {
    let (env, deps) = setup().await;
    let response = list_queues::handle(&deps, put_named("mail", r#"{"concurrency": 1}"#)).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!((&body["concurrency"], &body["paused"]), (&json!(1), &json!(false)));
    let ids = env
        .create_jobs(&[
            NewJob::new("TEST", json!(1)).queue("mail"),
            NewJob::new("TEST", json!(2)).queue("mail"),
        ])
        .await;
    let now = env.store.now().await;
    let taken = env
        .store
        .claim_limited(&ids, "w", now, std::time::Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    let waiting = ids.iter().find(|id| **id != taken[0].id()).expect("the other job");
    let job = jobq_functions::get_job::handle(&deps, common::with_id("GET", "/jobs/x", &waiting.to_string())).await;
    assert_eq!(
        json(&job)["heldBack"],
        "its queue \"mail\" is at its concurrency limit (1 of 1 running)"
    );

    // Leaving it out keeps it; null removes it.
    let same = json(&list_queues::handle(&deps, put_named("mail", r#"{"paused": false}"#)).await);
    assert_eq!(same["concurrency"], 1);
    let removed = json(&list_queues::handle(&deps, put_named("mail", r#"{"concurrency": null}"#)).await);
    assert_eq!(removed["concurrency"], json!(null));
    let job = jobq_functions::get_job::handle(&deps, common::with_id("GET", "/jobs/x", &waiting.to_string())).await;
    assert!(json(&job).get("heldBack").is_none());
}

#[tokio::test]
async fn put_sets_a_queues_retention_per_status_and_null_goes_back_to_the_default() {
    let (env, deps) = setup().await;
    let put = |body: &'static str| list_queues::handle(&deps, put_named("mail", body));
    let body = json(&put(r#"{"retention": {"completedMs": 3600000, "deadMs": 0}}"#).await);
    assert_eq!(
        body["retention"],
        json!({"completedMs": 3600000, "cancelledMs": null, "deadMs": 0}),
        "{body}"
    );
    // A status left out keeps its setting; null puts one back to the default.
    let body = json(&put(r#"{"retention": {"completedMs": null, "cancelledMs": 60000}}"#).await);
    assert_eq!(
        body["retention"],
        json!({"completedMs": null, "cancelledMs": 60000, "deadMs": 0})
    );
    let stored = env.store.queue_settings(Some("mail")).await.expect("settings");
    assert_eq!(stored["mail"].retention.cancelled_ms, Some(60_000));
    let body = json(&put(r#"{"retention": null}"#).await);
    assert_eq!(
        body["retention"],
        json!({"completedMs": null, "cancelledMs": null, "deadMs": null})
    );
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert_eq!(
        audit.iter().filter(|entry| entry.action == "queue.retention").count(),
        3
    );
}

#[tokio::test]
async fn put_sets_and_removes_a_rate_limit() {
    let (env, deps) = setup().await;
    let body = r#"{"rateLimit": {"limit": 5, "periodMs": 1000, "key": "customer.id"}}"#;
    let response = list_queues::handle(&deps, put_named("calls", body)).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(
        body["rateLimit"],
        json!({"limit": 5, "periodMs": 1000, "key": "customer.id"})
    );
    let stored = env.store.queue_settings(Some("calls")).await.expect("settings");
    assert_eq!(stored["calls"].rate_limit.as_ref().map(|r| r.limit), Some(5));
    let kept = json(&list_queues::handle(&deps, put_named("calls", r#"{"concurrency": 2}"#)).await);
    assert_eq!(
        (&kept["rateLimit"]["limit"], &kept["concurrency"]),
        (&json!(5), &json!(2))
    );
    let removed = json(&list_queues::handle(&deps, put_named("calls", r#"{"rateLimit": null}"#)).await);
    assert_eq!(removed["rateLimit"], json!(null));
    let listed = json(&list_queues::handle(&deps, get_uri("/queues")).await);
    assert_eq!(listed["queues"][0]["rateLimit"], json!(null), "{listed}");
}
