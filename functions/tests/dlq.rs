mod common;

use chrono::{Duration, Utc};
use common::{assert_error, dead_job, get_dlq, json, setup, with_id};
use jobq_functions::{list_dlq, requeue_dlq};
use jobq_shared::{NewJob, Status};
use lambda_http::Body;
use serde_json::{Value, json};

#[tokio::test]
async fn dead_jobs_are_listed_newest_first_a_page_at_a_time() {
    let (env, deps) = setup().await;
    let start = Utc::now() - Duration::minutes(10);
    let mut dead = Vec::new();
    for i in 0..5 {
        dead.push(dead_job(&env, json!(i), start + Duration::seconds(i)).await.to_string());
    }
    dead.reverse();
    env.create_job(NewJob::new("TEST", json!("alive"))).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("limit", "2")];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor.as_str()));
        }
        let response = list_dlq::handle(&deps, get_dlq(&params)).await;
        let body = json(&response);
        assert_eq!(response.status(), 200, "{body}");
        pages += 1;
        for item in body["items"].as_array().expect("items") {
            assert_eq!(item["status"], "FAILED");
            seen.push(item["jobId"].as_str().expect("id").to_owned());
        }
        match &body["nextCursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("nextCursor: {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, dead);

    let all = json(&list_dlq::handle(&deps, get_dlq(&[])).await);
    assert_eq!(all["items"].as_array().expect("items").len(), 5);
    assert_eq!(all["nextCursor"], Value::Null);
    // An empty cursor is the first page.
    let first = json(&list_dlq::handle(&deps, get_dlq(&[("cursor", ""), ("limit", "100")])).await);
    assert_eq!(first["items"], all["items"]);
}

#[tokio::test]
async fn an_empty_dlq_is_an_empty_page() {
    let (_env, deps) = setup().await;

    let response = list_dlq::handle(&deps, get_dlq(&[])).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(&response), json!({"items": [], "nextCursor": null}));
}

#[tokio::test]
async fn the_limit_is_read_from_the_uri_when_the_event_has_no_parameters() {
    let (env, deps) = setup().await;
    for i in 0..3 {
        dead_job(&env, json!(i), Utc::now()).await;
    }
    let request = http::Request::builder()
        .method("GET")
        .uri("/lambda-url/list-dlq?limit=2")
        .body(Body::Empty)
        .expect("request");

    let body = json(&list_dlq::handle(&deps, request).await);

    assert_eq!(body["items"].as_array().expect("items").len(), 2);
    assert!(body["nextCursor"].is_string());
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_400() {
    let (_env, deps) = setup().await;

    for limit in ["0", "101", "-1", "ten", "1.5", ""] {
        let response = list_dlq::handle(&deps, get_dlq(&[("limit", limit)])).await;
        assert_error(&response, 400, "invalid_limit", "limit");
    }
    for cursor in [
        "abc",
        "123",
        "1.not-a-uuid",
        "99999999999999999999.0192f5a41c3b7cde8f000123456789ab",
    ] {
        let response = list_dlq::handle(&deps, get_dlq(&[("cursor", cursor)])).await;
        assert_error(&response, 400, "invalid_cursor", "cursor");
    }
    let response = list_dlq::handle(&deps, get_dlq(&[("limit", "100")])).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn requeue_puts_a_dead_job_back_to_pending_with_a_fresh_budget_and_its_history() {
    let (env, deps) = setup().await;
    let id = dead_job(&env, json!("FAIL_ALWAYS"), Utc::now()).await;

    // The seed's curl: a POST with no body and no content type.
    let response = requeue_dlq::handle(&deps, with_id("POST", &format!("/dlq/{id}/requeue"), &id.to_string())).await;

    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["jobId"], id.to_string());
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["attempts"], 0);
    let stored = env.jobs.get(id).await.expect("job");
    assert_eq!(stored.status, Status::Pending);
    assert_eq!(stored.history.len(), 1, "the dead attempt stays in the history");
    assert!(
        env.queue
            .ready_ids()
            .await
            .expect("ready")
            .iter()
            .any(|r| r.contains(&id.to_string()))
    );
    let listed = json(&list_dlq::handle(&deps, get_dlq(&[])).await);
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn requeue_reads_the_id_from_a_function_url_path() {
    let (env, deps) = setup().await;
    let id = dead_job(&env, json!(1), Utc::now()).await;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/lambda-url/requeue-dlq/{id}/requeue"))
        .body(Body::Empty)
        .expect("request");

    let response = requeue_dlq::handle(&deps, request).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["status"], "PENDING");
}

#[tokio::test]
async fn requeue_of_a_job_that_is_not_dead_is_a_409_and_changes_nothing() {
    let (env, deps) = setup().await;
    let job = env
        .jobs
        .create(&NewJob::new("TEST", json!("hello")), Utc::now())
        .await
        .expect("create")
        .job;
    let id = job.id.to_string();

    let response = requeue_dlq::handle(&deps, with_id("POST", &format!("/dlq/{id}/requeue"), &id)).await;

    assert_error(&response, 409, "not_dead", "PENDING");
    assert_eq!(env.jobs.get(job.id).await.expect("job").updated_at, job.updated_at);

    let dead = dead_job(&env, json!(1), Utc::now()).await.to_string();
    let first = requeue_dlq::handle(&deps, with_id("POST", "/dlq/x/requeue", &dead)).await;
    assert_eq!(first.status(), 200);
    let again = requeue_dlq::handle(&deps, with_id("POST", "/dlq/x/requeue", &dead)).await;
    assert_error(&again, 409, "not_dead", "only a dead");
}

#[tokio::test]
async fn requeue_of_an_unknown_or_invalid_id_is_a_404_or_a_400() {
    let (_env, deps) = setup().await;
    let unknown = "0192f5a4-1c3b-7cde-8f00-0123456789ab";

    let missing = requeue_dlq::handle(&deps, with_id("POST", "/dlq/x/requeue", unknown)).await;
    assert_error(&missing, 404, "not_found", unknown);
    let invalid = requeue_dlq::handle(&deps, with_id("POST", "/dlq/x/requeue", "nope")).await;
    assert_error(&invalid, 400, "invalid_uuid", "nope");
    let wrong_method = requeue_dlq::handle(&deps, with_id("GET", "/dlq/x/requeue", unknown)).await;
    assert_error(&wrong_method, 405, "method_not_allowed", "POST");
}
