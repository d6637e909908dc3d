mod common;

use chrono::Utc;
use common::{assert_error, dead_job, json, setup, with_id};
use jobq_functions::get_job;
use jobq_shared::NewJob;
use lambda_http::Body;
use serde_json::json;

#[tokio::test]
async fn a_job_is_returned_whole_with_its_attempt_history() {
    let (env, deps) = setup().await;
    let id = dead_job(&env, json!("FAIL_ALWAYS"), Utc::now()).await;

    let response = get_job::handle(&deps, with_id("GET", &format!("/jobs/{id}"), &id.to_string())).await;

    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["jobId"], id.to_string());
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["lastError"], "boom");
    let history = body["history"].as_array().expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["attempt"], 1);
    assert_eq!(history[0]["outcome"], "FAILED");
    assert_eq!(history[0]["error"], "boom");
    assert_eq!(history[0]["workerId"], "test-worker");
}

#[tokio::test]
async fn without_path_parameters_the_id_is_the_last_path_segment() {
    let (env, deps) = setup().await;
    let id = env.create_job(NewJob::new("TEST", json!("hello"))).await;
    // What a function URL (`cargo lambda watch` without its router) delivers.
    let request = http::Request::builder()
        .method("GET")
        .uri(format!("/lambda-url/get-job/{id}"))
        .body(Body::Empty)
        .expect("request");

    let response = get_job::handle(&deps, request).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["jobId"], id.to_string());
    assert_eq!(json(&response)["status"], "PENDING");
}

#[tokio::test]
async fn an_invalid_uuid_is_a_400_and_an_unknown_id_a_404() {
    let (_env, deps) = setup().await;

    for bad in [
        "not-a-uuid",
        "",
        "123",
        "00000000-0000-0000-0000-00000000000g",
        &"9".repeat(5000),
    ] {
        let response = get_job::handle(&deps, with_id("GET", "/jobs/x", bad)).await;
        assert_error(&response, 400, "invalid_uuid", "not a valid job id");
        assert!(response.body().len() < 400, "the bad id is echoed only in part");
    }

    let unknown = "0192f5a4-1c3b-7cde-8f00-0123456789ab";
    let response = get_job::handle(&deps, with_id("GET", &format!("/jobs/{unknown}"), unknown)).await;
    assert_error(&response, 404, "not_found", unknown);
}
