mod common;

use common::{assert_error, count_jobs, json, post_json, setup};
use jobq_functions::create_jobs;
use jobq_shared::{JobId, Status};
use serde_json::{Value, json};

fn batch(jobs: Value) -> String {
    json!({ "jobs": jobs }).to_string()
}

#[tokio::test]
async fn a_batch_creates_every_job_and_answers_one_result_each_in_order() {
    let (env, deps) = setup().await;
    let body = batch(json!([
        {"type": "TEST", "payload": "hello"},
        {"type": "TEST", "payload": "FAIL_TIMES=2", "priority": 90},
        {"type": "email.send", "payload": {"to": "a@b.c"}, "delaySeconds": 60}
    ]));

    let response = create_jobs::handle(&deps, post_json("/jobs/batch", &body)).await;

    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == 201 && r["job"]["status"] == "PENDING")
    );
    assert_eq!(results[1]["job"]["priority"], 90);
    assert_eq!(results[2]["job"]["type"], "email.send");
    for result in results {
        let id: JobId = result["job"]["jobId"].as_str().expect("id").parse().expect("uuid");
        assert_eq!(env.jobs.get(id).await.expect("stored").status, Status::Pending);
    }
    let depths = env.queue.depths().await.expect("depths");
    assert_eq!((depths.ready, depths.scheduled), (2, 1));
}

#[tokio::test]
async fn idempotency_keys_are_honoured_per_job() {
    let (env, deps) = setup().await;
    let first = create_jobs::handle(
        &deps,
        post_json(
            "/jobs/batch",
            &batch(json!([{"type": "TEST", "payload": 1, "idempotencyKey": "k1"}])),
        ),
    )
    .await;
    let existing = json(&first)["results"][0]["job"]["jobId"].clone();

    let response = create_jobs::handle(
        &deps,
        post_json(
            "/jobs/batch",
            &batch(json!([
                {"type": "TEST", "payload": 1, "idempotencyKey": "k1"},
                {"type": "TEST", "payload": 2, "idempotencyKey": "k1"},
                {"type": "TEST", "payload": 3, "idempotencyKey": "k2"}
            ])),
        ),
    )
    .await;

    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    let results = &body["results"];
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[0]["job"]["jobId"], existing);
    assert_eq!(results[1]["status"], 409);
    assert_eq!(results[1]["error"]["code"], "idempotency_conflict");
    assert_eq!(results[2]["status"], 201);
    assert_eq!(count_jobs(&env).await, 2);
}

#[tokio::test]
async fn one_invalid_job_rejects_the_whole_batch_naming_it_and_stores_nothing() {
    let (env, deps) = setup().await;
    let cases = [
        (
            batch(json!([{"type": "TEST"}, {"type": "TEST", "priority": 500}])),
            "invalid_field",
            "jobs[1]",
        ),
        (
            batch(json!([{"type": "TEST"}, {"payload": 1}])),
            "missing_field",
            "jobs[1]",
        ),
        (batch(json!([{"type": 7}])), "wrong_type", "jobs[0]"),
        (
            batch(json!([{"type": "TEST", "colour": "red"}])),
            "unknown_field",
            "jobs[0]",
        ),
        (batch(json!(["TEST"])), "wrong_type", "jobs[0]"),
        (batch(json!([])), "invalid_batch", "1 to 1000"),
        (json!({"jobs": [], "extra": 1}).to_string(), "unknown_field", "extra"),
        (json!({"items": []}).to_string(), "unknown_field", "items"),
        ("[]".to_owned(), "wrong_type", "object"),
        ("{\"jobs\": [".to_owned(), "invalid_json", "JSON"),
    ];
    for (body, code, mentions) in cases {
        let response = create_jobs::handle(&deps, post_json("/jobs/batch", &body)).await;
        assert_error(&response, 400, code, mentions);
    }
    let too_many = batch(Value::Array(vec![json!({"type": "T"}); 1001]));
    assert_error(
        &create_jobs::handle(&deps, post_json("/jobs/batch", &too_many)).await,
        400,
        "invalid_batch",
        "1001",
    );
    assert_eq!(count_jobs(&env).await, 0);
}

#[tokio::test]
async fn a_full_batch_of_1000_jobs_is_accepted() {
    let (env, deps) = setup().await;
    let body = batch(Value::Array(vec![json!({"type": "TEST", "payload": "x"}); 1000]));

    let response = create_jobs::handle(&deps, post_json("/jobs/batch", &body)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["results"].as_array().map(Vec::len), Some(1000));
    assert_eq!(count_jobs(&env).await, 1000);
    assert_eq!(env.queue.depths().await.expect("depths").ready, 1000);
}
