mod common;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use common::{assert_error, count_jobs, dead_job, get_uri, json, post_json, setup, with_id};
use jobq_functions::{create_job, find_jobs, get_job};
use jobq_shared::NewJob;
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Value, json};

/// `GET /jobs` with query parameters as API Gateway hands them over (decoded, in the event).
fn get_jobs(params: &[(&str, &str)]) -> Request {
    let map: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    http::Request::builder()
        .method("GET")
        .uri("/jobs")
        .body(Body::Empty)
        .expect("request")
        .with_query_string_parameters(map)
}

fn item_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["jobId"].as_str().expect("jobId").to_owned())
        .collect()
}

#[tokio::test]
async fn filters_find_their_jobs_newest_first_in_the_shape_get_job_shows() {
    let (env, deps) = setup().await;
    let start = Utc::now() - Duration::minutes(5);
    let email = env
        .create_job_at(
            NewJob::new("email.send", json!({"userId": 123, "email": "a@b.c"})).queue("EMAIL"),
            start,
        )
        .await;
    let other = env
        .create_job_at(
            NewJob::new("thumbnail", json!({"userId": 7})),
            start + Duration::seconds(1),
        )
        .await;
    let dead = dead_job(&env, json!("FAIL_ALWAYS"), start + Duration::seconds(2)).await;

    let all = json(&find_jobs::handle(&deps, get_jobs(&[])).await);
    assert_eq!(
        item_ids(&all),
        vec![dead.to_string(), other.to_string(), email.to_string()]
    );
    assert_eq!(all["nextCursor"], Value::Null);
    // Each item is the job as GET /jobs/{id} shows it: history included, id under both names.
    let got = json(&get_job::handle(&deps, with_id("GET", "/jobs/x", &dead.to_string())).await);
    assert_eq!(all["items"][0], got);
    assert_eq!(got["id"], got["jobId"]);
    assert_eq!(got["history"].as_array().map(Vec::len), Some(1));

    for (params, expected) in [
        (vec![("status", "FAILED")], vec![dead.to_string()]),
        (vec![("status", "pending")], vec![other.to_string(), email.to_string()]),
        (vec![("queue", "EMAIL")], vec![email.to_string()]),
        (vec![("type", "thumbnail")], vec![other.to_string()]),
        (vec![("payload", r#"{"userId":123}"#)], vec![email.to_string()]),
        (vec![("error", "BOO")], vec![dead.to_string()]),
        (
            vec![
                ("createdAfter", &*(start + Duration::seconds(1)).to_rfc3339()),
                ("createdBefore", &*(start + Duration::seconds(2)).to_rfc3339()),
            ],
            vec![other.to_string()],
        ),
        // Empty parameters are no filter, as from a form that always sends them.
        (vec![("status", ""), ("queue", " "), ("cursor", "")], item_ids(&all)),
        (vec![("queue", "EMAIL"), ("status", "FAILED")], vec![]),
    ] {
        let response = find_jobs::handle(&deps, get_jobs(&params)).await;
        let body = json(&response);
        assert_eq!(response.status(), 200, "{params:?}: {body}");
        assert_eq!(item_ids(&body), expected, "{params:?}");
    }
}

#[tokio::test]
async fn pages_follow_next_cursor_to_the_end() {
    let (env, deps) = setup().await;
    let start = Utc::now() - Duration::minutes(5);
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            env.create_job_at(NewJob::new("T", json!(i)), start + Duration::seconds(i))
                .await
                .to_string(),
        );
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("limit", "2")];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor.as_str()));
        }
        let body = json(&find_jobs::handle(&deps, get_jobs(&params)).await);
        pages += 1;
        seen.extend(item_ids(&body));
        match &body["nextCursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("nextCursor: {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn a_query_string_in_the_uri_is_decoded_as_api_gateway_decodes_it() {
    let (env, deps) = setup().await;
    let id = env
        .create_job(NewJob::new("T", json!({"userId": 123, "name": "a b"})))
        .await;
    env.create_job(NewJob::new("T", json!({"userId": 9}))).await;

    let response = find_jobs::handle(
        &deps,
        get_uri("/lambda-url/find-jobs?payload=%7B%22userId%22%3A123%2C%22name%22%3A%22a+b%22%7D"),
    )
    .await;
    let body = json(&response);
    assert_eq!(response.status(), 200, "{body}");
    assert_eq!(item_ids(&body), vec![id.to_string()]);

    // An offset's `+` sent unencoded arrives as a space, and is read as the `+` it was.
    let response = find_jobs::handle(&deps, get_uri("/jobs?createdAfter=2000-01-01T00:00:00+02:00")).await;
    assert_eq!(response.status(), 200, "{}", json(&response));
    assert_eq!(json(&response)["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bad_filters_are_400s_that_say_what_is_wrong() {
    let (env, deps) = setup().await;
    let before = count_jobs(&env).await;
    let long_payload = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
    let long_queue = "q".repeat(201);
    // (query parameters, error code, what the message mentions)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![("status", "DONE")], "invalid_parameter", "status"),
        (vec![("status", "PENDING,FAILED")], "invalid_parameter", "status"),
        (vec![("payload", "not json")], "invalid_parameter", "payload"),
        (vec![("payload", "[1,2]")], "invalid_parameter", "JSON object"),
        (vec![("payload", "123")], "invalid_parameter", "JSON object"),
        (vec![("payload", r#""text""#)], "invalid_parameter", "JSON object"),
        (vec![("payload", r#"{"a":"\u0000"}"#)], "invalid_parameter", "NUL"),
        (vec![("payload", r#"{"a":1e400}"#)], "invalid_parameter", "payload"),
        (vec![("payload", &long_payload)], "invalid_parameter", "4096"),
        (vec![("queue", &long_queue)], "invalid_parameter", "queue"),
        (vec![("type", "a\u{0}")], "invalid_parameter", "NUL"),
        (vec![("error", "ab")], "invalid_parameter", "error"),
        (vec![("error", "a\u{0}bc")], "invalid_parameter", "NUL"),
        (vec![("createdAfter", "yesterday")], "invalid_parameter", "createdAfter"),
        (
            vec![("createdBefore", "2025-13-01T00:00:00Z")],
            "invalid_parameter",
            "createdBefore",
        ),
        (vec![("createdAfter", "2025-01-01")], "invalid_parameter", "RFC 3339"),
        (vec![("limit", "0")], "invalid_limit", "limit"),
        (vec![("limit", "101")], "invalid_limit", "limit"),
        (vec![("limit", "ten")], "invalid_limit", "limit"),
        (vec![("cursor", "abc")], "invalid_cursor", "cursor"),
        (
            vec![("cursor", "99999999999999999999.0192f5a41c3b7cde8f000123456789ab")],
            "invalid_cursor",
            "cursor",
        ),
        (
            vec![("cursor", "-5.0192f5a41c3b7cde8f000123456789ab")],
            "invalid_cursor",
            "cursor",
        ),
    ];
    for (params, code, mentions) in cases {
        let response = find_jobs::handle(&deps, get_jobs(&params)).await;
        assert_error(&response, 400, code, mentions);
    }
    // A parameter the route does not know, such as a typo: named in the answer.
    let response = find_jobs::handle(&deps, get_uri("/jobs?staus=FAILED")).await;
    assert_error(&response, 400, "unknown_parameter", "staus");
    let response = find_jobs::handle(&deps, post_json("/jobs?status=FAILED", "{}")).await;
    assert_error(&response, 405, "method_not_allowed", "GET");
    assert_eq!(count_jobs(&env).await, before);
}

/// ChronoQueue's README: `POST /api/jobs` with its body, `GET /api/jobs/{jobId}`, `GET /api/jobs`.
#[tokio::test]
async fn chronoqueues_calls_work_as_its_readme_writes_them() {
    let (_env, deps) = setup().await;
    let body = r#"{
      "queueType": "EMAIL",
      "taskType": "email.send",
      "payload": {"userId": 123, "email": "user@example.com", "message": "Welcome to our platform!"},
      "scheduledAt": "2025-10-24T18:00:00Z",
      "priority": 100,
      "maxAttempts": 5,
      "idempotencyKey": "welcome-email-user-123"
    }"#;

    let response = create_job::handle(&deps, post_json("/api/jobs", body)).await;
    let created = json(&response);
    assert_eq!(response.status(), 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["jobId"], id.as_str());
    assert_eq!(created["queue"], "EMAIL");
    assert_eq!(created["type"], "email.send");
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["priority"], 100);
    assert_eq!(created["maxAttempts"], 5);
    assert_eq!(created["runAt"], "2025-10-24T18:00:00Z");
    let replay = create_job::handle(&deps, post_json("/api/jobs", body)).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(json(&replay)["id"], id.as_str());

    let got = get_job::handle(&deps, with_id("GET", &format!("/api/jobs/{id}"), &id)).await;
    assert_eq!(got.status(), 200);
    assert_eq!(json(&got)["id"], id.as_str());

    let all = find_jobs::handle(&deps, get_uri("/api/jobs")).await;
    let all = json(&all);
    assert_eq!(item_ids(&all), vec![id.clone()]);
    assert_eq!(all["items"][0]["id"], id.as_str());
}
