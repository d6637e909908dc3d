//! `dependsOn` through the HTTP API: on `POST /jobs` (ids) and `POST /jobs/batch` (ids, or indexes
//! of earlier items), refused when bad with a 400 that changes nothing, and shown by
//! `GET /jobs/{id}` as `waitingOn` while the job is blocked.

mod common;

use common::{assert_error, count_jobs, json, post_json, setup, with_id};
use jobq_functions::{create_job, create_jobs, get_job};
use jobq_shared::{JobId, NewJob};
use serde_json::json;

#[tokio::test]
async fn a_job_created_with_depends_on_is_blocked_and_shows_what_it_waits_on() {
    let (env, deps) = setup().await;
    let parent = env.create_job(NewJob::new("TEST", json!("parent"))).await;

    let body = json!({"type": "TEST", "payload": "child", "dependsOn": [parent.to_string()]}).to_string();
    let response = create_job::handle(&deps, post_json("/jobs", &body)).await;
    let created = json(&response);
    assert_eq!(response.status(), 201, "{created}");
    assert_eq!(created["status"], "BLOCKED");
    let child = created["jobId"].as_str().expect("id").to_owned();

    let response = get_job::handle(&deps, with_id("GET", &format!("/jobs/{child}"), &child)).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(body["status"], "BLOCKED");
    assert_eq!(
        body["waitingOn"],
        json!([{"jobId": parent.to_string(), "status": "PENDING"}])
    );
    // A job that waits on nothing says nothing of it.
    let response = get_job::handle(&deps, with_id("GET", &format!("/jobs/{parent}"), &parent.to_string())).await;
    assert!(json(&response).get("waitingOn").is_none());
}

#[tokio::test]
async fn a_batch_refers_to_earlier_items_by_index() {
    let (_env, deps) = setup().await;
    let body = json!({"jobs": [
        {"type": "TEST", "payload": "extract"},
        {"type": "TEST", "payload": "transform", "dependsOn": [0]},
        {"type": "TEST", "payload": "load", "dependsOn": [1, 0]},
    ]})
    .to_string();
    let response = create_jobs::handle(&deps, post_json("/jobs/batch", &body)).await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["job"]["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, vec!["PENDING", "BLOCKED", "BLOCKED"]);
    let first = body["results"][0]["job"]["jobId"].as_str().expect("id").to_owned();
    let second = body["results"][1]["job"]["jobId"].as_str().expect("id").to_owned();
    let last = body["results"][2]["job"]["jobId"].as_str().expect("id").to_owned();
    let response = get_job::handle(&deps, with_id("GET", "/jobs/x", &last)).await;
    let mut waiting: Vec<String> = json(&response)["waitingOn"]
        .as_array()
        .expect("waitingOn")
        .iter()
        .map(|w| w["jobId"].as_str().expect("id").to_owned())
        .collect();
    waiting.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(waiting, expected);
}

#[tokio::test]
async fn bad_dependencies_are_a_400_and_store_nothing() {
    let (env, deps) = setup().await;
    let ghost = JobId::new();
    let single = [
        (json!([ghost.to_string()]), "unknown_dependency", ghost.to_string()),
        (json!([0]), "invalid_field", "dependsOn".to_owned()),
        (json!(["not-a-uuid"]), "invalid_field", "dependsOn".to_owned()),
        (json!([true]), "invalid_field", "dependsOn".to_owned()),
        (json!([-1]), "invalid_field", "dependsOn".to_owned()),
        (
            json!((0..101).map(|_| JobId::new().to_string()).collect::<Vec<_>>()),
            "invalid_field",
            "100".to_owned(),
        ),
    ];
    for (depends_on, code, mentions) in single {
        let body = json!({"type": "TEST", "dependsOn": depends_on}).to_string();
        let response = create_job::handle(&deps, post_json("/jobs", &body)).await;
        assert_error(&response, 400, code, &mentions);
    }
    let response = create_job::handle(&deps, post_json("/jobs", r#"{"type": "TEST", "dependsOn": "x"}"#)).await;
    assert_eq!(response.status(), 400, "{}", json(&response));

    for (jobs, code, mentions) in [
        (json!([{"type": "TEST", "dependsOn": [0]}]), "invalid_field", "jobs[0]"),
        (
            json!([{"type": "TEST"}, {"type": "TEST", "dependsOn": [2]}, {"type": "TEST"}]),
            "invalid_field",
            "jobs[1]",
        ),
        (
            json!([{"type": "TEST"}, {"type": "TEST", "dependsOn": [0, ghost.to_string()]}]),
            "unknown_dependency",
            &ghost.to_string(),
        ),
    ] {
        let body = json!({ "jobs": jobs }).to_string();
        let response = create_jobs::handle(&deps, post_json("/jobs/batch", &body)).await;
        assert_error(&response, 400, code, mentions);
    }
    assert_eq!(count_jobs(&env).await, 0);
}
