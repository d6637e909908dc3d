mod common;

use common::{assert_error, count_jobs, json, post_json, setup};
use jobq_functions::api_error::MAX_BODY_BYTES;
use jobq_functions::create_job;
use jobq_shared::{JobId, Status};
use lambda_http::Body;
use serde_json::json;

#[tokio::test]
async fn the_seed_request_creates_a_pending_job_with_201_and_its_location() {
    let (env, deps) = setup().await;

    let response = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST","payload":"hello"}"#)).await;

    let body = json(&response);
    assert_eq!(response.status(), 201, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["type"], "TEST");
    assert_eq!(body["payload"], "hello");
    assert_eq!(body["maxAttempts"], 3);
    let id: JobId = body["jobId"].as_str().expect("jobId").parse().expect("uuid");
    assert_eq!(
        response.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/jobs/{id}").as_str())
    );
    let stored = env.jobs.get(id).await.expect("stored");
    assert_eq!(stored.status, Status::Pending);
    assert!(
        env.queue
            .ready_ids()
            .await
            .expect("ready")
            .iter()
            .any(|r| r.contains(&id.to_string()))
    );
}

#[tokio::test]
async fn chronoqueue_fields_are_accepted() {
    let (_env, deps) = setup().await;
    let request = json!({
        "queueType": "EMAIL", "taskType": "email.send", "payload": {"userId": 123},
        "scheduledAt": "2025-10-24T18:00:00Z", "priority": 100, "maxAttempts": 5,
        "idempotencyKey": "welcome-email-user-123"
    });

    let response = create_job::handle(&deps, post_json("/jobs", &request.to_string())).await;

    let body = json(&response);
    assert_eq!(response.status(), 201, "{body}");
    assert_eq!(body["queue"], "EMAIL");
    assert_eq!(body["type"], "email.send");
    assert_eq!(body["payload"], json!({"userId": 123}));
    assert_eq!(body["priority"], 100);
    assert_eq!(body["maxAttempts"], 5);
    assert_eq!(body["idempotencyKey"], "welcome-email-user-123");
    assert_eq!(body["runAt"], "2025-10-24T18:00:00Z");
}

#[tokio::test]
async fn bad_bodies_are_400s_that_name_the_problem_and_store_nothing() {
    let (env, deps) = setup().await;
    let deep = "[".repeat(10_000);
    let cases: Vec<(&str, &str, &str)> = vec![
        (r#"{"type":"TEST","payload":"hel"#, "invalid_json", "not valid json"),
        (r#"{"type":"TEST","#, "invalid_json", "not valid json"),
        (r#"{"type": TEST}"#, "invalid_json", "not valid json"),
        (r#"{"type":"TEST"} trailing"#, "invalid_json", "not valid json"),
        ("", "invalid_json", "empty"),
        ("   ", "invalid_json", "empty"),
        (&deep, "invalid_json", "not valid json"),
        ("[1, 2]", "wrong_type", "json object"),
        ("null", "wrong_type", "json object"),
        (r#""TEST""#, "wrong_type", "json object"),
        (r#"{"type": 5}"#, "wrong_type", "\"type\""),
        (r#"{"type": "TEST", "priority": "high"}"#, "wrong_type", "\"priority\""),
        (
            r#"{"type": "TEST", "maxAttempts": 2.5}"#,
            "wrong_type",
            "\"maxAttempts\"",
        ),
        (
            r#"{"type": "TEST", "payload": "x", "color": "red"}"#,
            "unknown_field",
            "\"color\"",
        ),
        (r#"{"payload": "hello"}"#, "missing_field", "\"type\""),
        (r#"{"type": null}"#, "missing_field", "\"type\""),
        (r#"{"type": "  "}"#, "invalid_field", "\"type\""),
        (r#"{"type": "TEST", "priority": 101}"#, "invalid_field", "\"priority\""),
        (
            r#"{"type": "TEST", "maxAttempts": 0}"#,
            "invalid_field",
            "\"maxAttempts\"",
        ),
        (r#"{"type": "TEST", "runAt": "tomorrow"}"#, "invalid_field", "\"runAt\""),
        (r#"{"type": "TEST", "delayMs": -1}"#, "invalid_field", "\"delayMs\""),
    ];
    for (body, code, mentions) in cases {
        let response = create_job::handle(&deps, post_json("/jobs", body)).await;
        let shown: String = body.chars().take(40).collect();
        assert_eq!(response.status(), 400, "for {shown:?}: {}", json(&response));
        assert_error(&response, 400, code, mentions);
    }

    let not_utf8 = http::Request::builder()
        .method("POST")
        .uri("/jobs")
        .header("content-type", "application/json")
        .body(Body::from(vec![b'{', 0xff, 0xfe, b'}']))
        .expect("request");
    assert_error(
        &create_job::handle(&deps, not_utf8).await,
        400,
        "invalid_json",
        "not valid json",
    );

    assert_eq!(count_jobs(&env).await, 0);
}

#[tokio::test]
async fn a_body_over_256_kib_is_a_413_and_one_at_the_limit_is_accepted() {
    let (env, deps) = setup().await;
    let frame = r#"{"type":"TEST","payload":""}"#.len();
    let at_limit = format!(
        r#"{{"type":"TEST","payload":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES - frame)
    );
    assert_eq!(at_limit.len(), MAX_BODY_BYTES);
    let over = format!(
        r#"{{"type":"TEST","payload":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES - frame + 1)
    );

    let refused = create_job::handle(&deps, post_json("/jobs", &over)).await;
    assert_error(&refused, 413, "body_too_large", "256 KiB");
    assert_eq!(count_jobs(&env).await, 0);

    let accepted = create_job::handle(&deps, post_json("/jobs", &at_limit)).await;
    assert_eq!(accepted.status(), 201);
    assert_eq!(count_jobs(&env).await, 1);
}

#[tokio::test]
async fn only_json_content_types_are_accepted_and_a_missing_one_counts_as_json() {
    let (env, deps) = setup().await;
    let body = r#"{"type":"TEST","payload":"hello"}"#;
    let with_type = |content_type: Option<&str>| {
        let mut builder = http::Request::builder().method("POST").uri("/jobs");
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        builder.body(Body::from(body)).expect("request")
    };

    for refused in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "json",
    ] {
        let response = create_job::handle(&deps, with_type(Some(refused))).await;
        assert_error(
            &response,
            415,
            "unsupported_media_type",
            "Content-Type: application/json",
        );
    }
    // curl -d without a content type sends a form type: the answer says what to add.
    let response = create_job::handle(&deps, with_type(Some("application/x-www-form-urlencoded"))).await;
    assert_error(
        &response,
        415,
        "unsupported_media_type",
        "-H 'Content-Type: application/json'",
    );
    assert_eq!(count_jobs(&env).await, 0);

    for accepted in [
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some("application/vnd.api+json"),
        None,
    ] {
        let response = create_job::handle(&deps, with_type(accepted)).await;
        assert_eq!(response.status(), 201, "{accepted:?}: {}", json(&response));
    }
    assert_eq!(count_jobs(&env).await, 4);
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_same_job_with_200_and_a_different_request_is_a_409() {
    let (env, deps) = setup().await;
    let keyed = |body: &str, key: &str| {
        let mut request = post_json("/jobs", body);
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().expect("header"));
        request
    };

    let first = create_job::handle(&deps, keyed(r#"{"type":"TEST","payload":"a"}"#, "k-1")).await;
    assert_eq!(first.status(), 201);
    let replay = create_job::handle(&deps, keyed(r#"{"type":"TEST","payload":"a"}"#, "k-1")).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(json(&replay)["jobId"], json(&first)["jobId"]);
    assert_eq!(replay.headers().get("location"), first.headers().get("location"));
    // The key in the body is the same key.
    let in_body = create_job::handle(
        &deps,
        post_json("/jobs", r#"{"type":"TEST","payload":"a","idempotencyKey":"k-1"}"#),
    )
    .await;
    assert_eq!(in_body.status(), 200);

    let conflict = create_job::handle(&deps, keyed(r#"{"type":"TEST","payload":"b"}"#, "k-1")).await;
    assert_error(&conflict, 409, "idempotency_conflict", "k-1");
    let disagreeing = create_job::handle(&deps, keyed(r#"{"type":"TEST","idempotencyKey":"k-2"}"#, "k-3")).await;
    assert_error(&disagreeing, 400, "invalid_field", "idempotencyKey");
    assert_eq!(count_jobs(&env).await, 1);
}

#[tokio::test]
async fn a_header_that_is_not_text_is_a_400() {
    let (env, deps) = setup().await;
    let mut request = post_json("/jobs", r#"{"type":"TEST"}"#);
    request.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_bytes(&[0xff, 0x41]).expect("opaque header"),
    );

    let response = create_job::handle(&deps, request).await;

    assert_error(&response, 400, "invalid_header", "idempotency-key");
    assert_eq!(count_jobs(&env).await, 0);
}

#[tokio::test]
async fn another_method_on_the_create_function_is_a_405() {
    let (env, deps) = setup().await;
    let request = http::Request::builder()
        .method("GET")
        .uri("/jobs")
        .body(Body::Empty)
        .expect("request");

    let response = create_job::handle(&deps, request).await;

    assert_error(&response, 405, "method_not_allowed", "POST");
    assert_eq!(
        response.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    assert_eq!(count_jobs(&env).await, 0);
}

#[tokio::test]
async fn an_exact_replay_is_a_replay_whatever_form_its_numbers_take() {
    let (_env, deps) = setup().await;
    for (i, number) in ["1e2", "100.0", "0.1", "12345678901234567890"].iter().enumerate() {
        let body =
            format!(r#"{{"type":"TEST","payload":{{"n":{number},"list":[{number}]}},"idempotencyKey":"num-{i}"}}"#);
        let first = create_job::handle(&deps, post_json("/jobs", &body)).await;
        assert_eq!(first.status(), 201, "{number}: {}", json(&first));
        let replay = create_job::handle(&deps, post_json("/jobs", &body)).await;
        assert_eq!(replay.status(), 200, "{number}: {}", json(&replay));
        assert_eq!(json(&replay)["jobId"], json(&first)["jobId"]);
    }
}

#[tokio::test]
async fn a_run_at_outside_what_is_stored_or_past_the_delay_horizon_is_a_400_and_stores_nothing() {
    let (env, deps) = setup().await;
    for run_at in [
        "-5000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "+200000-01-01T00:00:00Z",
    ] {
        let body = format!(r#"{{"type":"TEST","runAt":"{run_at}"}}"#);
        let response = create_job::handle(&deps, post_json("/jobs", &body)).await;
        let text = json(&response);
        assert_eq!(response.status(), 400, "{run_at}: {text}");
        assert_eq!(text["error"]["code"], "invalid_field", "{run_at}: {text}");
    }
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let response = create_job::handle(
        &deps,
        post_json("/jobs", &format!(r#"{{"type":"TEST","runAt":"{far}"}}"#)),
    )
    .await;
    assert_eq!(response.status(), 400, "{}", json(&response));
    assert_eq!(count_jobs(&env).await, 0);
    let near = (chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339();
    let response = create_job::handle(
        &deps,
        post_json("/jobs", &format!(r#"{{"type":"TEST","runAt":"{near}"}}"#)),
    )
    .await;
    assert_eq!(response.status(), 201, "{}", json(&response));
}

#[tokio::test]
async fn an_error_quotes_no_more_than_an_excerpt_of_the_input() {
    let (_env, deps) = setup().await;
    let huge = "x".repeat(200_000);
    let body = format!(r#"{{"type":"TEST","priority":"{huge}"}}"#);
    let response = create_job::handle(&deps, post_json("/jobs", &body)).await;
    let text = json(&response);
    assert_eq!(response.status(), 400, "{}", &text.to_string()[..200]);
    let message = text["error"]["message"].as_str().expect("message");
    assert!(message.chars().count() < 400, "{} characters", message.chars().count());
}

#[tokio::test]
async fn a_valid_traceparent_is_stored_with_the_job_and_an_invalid_one_is_ignored() {
    let (_env, deps) = setup().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let with = |value: &str| {
        let mut req = post_json("/jobs", r#"{"type": "TEST", "payload": "traced"}"#);
        req.headers_mut()
            .insert("traceparent", http::HeaderValue::from_str(value).expect("header"));
        req
    };
    let response = create_job::handle(&deps, with(traceparent)).await;
    let body = json(&response);
    assert_eq!(response.status(), 201, "{body}");
    assert_eq!(body["traceparent"], traceparent);

    // An invalid one (here, version ff) is no reason to refuse the job: it is created untraced.
    let response = create_job::handle(&deps, with("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")).await;
    let body = json(&response);
    assert_eq!(response.status(), 201, "{body}");
    assert_eq!(body["traceparent"], serde_json::Value::Null);

    let plain = json(&create_job::handle(&deps, post_json("/jobs", r#"{"type": "TEST"}"#)).await);
    assert_eq!(plain["traceparent"], serde_json::Value::Null);
}
