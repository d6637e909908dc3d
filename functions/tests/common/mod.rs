//! Helpers shared by the handler tests: a fresh environment, requests as API Gateway delivers them,
//! and reading responses.
#![allow(dead_code)]

use std::collections::HashMap;

use chrono::Utc;
use jobq_functions::Deps;
use jobq_shared::job::Outcome;
use jobq_shared::store::AfterFailure;
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;

/// A fresh database and Redis namespace, and function dependencies over them.
pub async fn setup() -> (TestEnv, Deps) {
    let env = TestEnv::new().await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    (env, deps)
}

/// A POST with a JSON body.
pub fn post_json(path: &str, body: &str) -> Request {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

/// A request as API Gateway delivers it for a route with `{id}`.
pub fn with_id(method: &str, path: &str, id: &str) -> Request {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(Body::Empty)
        .expect("request")
        .with_path_parameters(HashMap::from([("id".to_owned(), id.to_owned())]))
}

/// A GET with only its URI (path and raw query string), as a function URL delivers it.
pub fn get_uri(uri: &str) -> Request {
    http::Request::builder()
        .method("GET")
        .uri(uri)
        .body(Body::Empty)
        .expect("request")
}

pub fn get_dlq(params: &[(&str, &str)]) -> Request {
    let map: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    http::Request::builder()
        .method("GET")
        .uri("/dlq")
        .body(Body::Empty)
        .expect("request")
        .with_query_string_parameters(map)
}

pub fn json(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref())
        .unwrap_or_else(|err| panic!("response body is not JSON ({err}): {:?}", response.body()))
}

/// Asserts an error response: its status, its code, and that its message mentions `mentions`.
#[track_caller]
pub fn assert_error(response: &Response<Body>, status: u16, code: &str, mentions: &str) {
    let body = json(response);
    assert_eq!(response.status().as_u16(), status, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    let message = body["error"]["message"].as_str().expect("message is a string");
    assert!(
        message.to_lowercase().contains(&mentions.to_lowercase()),
        "message {message:?} should mention {mentions:?}"
    );
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

pub async fn count_jobs(env: &TestEnv) -> i64 {
    env.count_jobs(None).await
}

/// Creates a job and fails its first attempt for good, so that it is dead (in the DLQ).
pub async fn dead_job(env: &TestEnv, payload: Value, at: chrono::DateTime<Utc>) -> JobId {
    let id = env.create_job_at(NewJob::new("TEST", payload), at).await;
    let lease = env
        .claim_job(id, "test-worker", at, std::time::Duration::from_secs(30))
        .await;
    let after = env
        .store
        .fail(&lease, at, "boom", false, at, Outcome::Failed)
        .await
        .expect("fail");
    assert!(matches!(after, AfterFailure::Dead));
    id
}
