mod common;

use std::time::{Duration, Instant};

use common::{assert_error, get_dlq, post_json, with_id};
use jobq_functions::{Deps, create_job, get_job, list_dlq, requeue_dlq};
use jobq_shared::Config;
use lambda_http::{Body, Response};

const UNKNOWN: &str = "0192f5a4-1c3b-7cde-8f00-0123456789ab";

/// Dependencies whose Postgres is a port nobody listens on.
fn deps_without_a_database() -> Deps {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    deps_with_database_port(port)
}

fn deps_with_database_port(port: u16) -> Deps {
    let mut config = Config::from_lookup(|_| None).expect("defaults");
    config.database_url = format!("postgres://postgres@127.0.0.1:{port}/jobq");
    config.redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    config.namespace = format!("jobq-test-{}", uuid_like());
    config.pg_timeout = Duration::from_millis(500);
    Deps::from_config(config).expect("clients are made lazily")
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}

#[track_caller]
fn assert_unavailable(response: &Response<Body>, route: &str) {
    assert_error(response, 503, "unavailable", "temporarily unavailable");
    assert_eq!(
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "{route}"
    );
    let text = String::from_utf8_lossy(response.body().as_ref()).to_lowercase();
    for internal in ["postgres", "connect", "refused", "pool", "127.0.0.1"] {
        assert!(!text.contains(internal), "{route} leaks {internal:?}: {text}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_with_retry_after_on_every_route() {
    let deps = deps_without_a_database();
    let started = Instant::now();

    let create = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST","payload":"hello"}"#)).await;
    assert_unavailable(&create, "create");
    let get = get_job::handle(&deps, with_id("GET", "/jobs/x", UNKNOWN)).await;
    assert_unavailable(&get, "get");
    let list = list_dlq::handle(&deps, get_dlq(&[])).await;
    assert_unavailable(&list, "list");
    let requeue = requeue_dlq::handle(&deps, with_id("POST", "/dlq/x/requeue", UNKNOWN)).await;
    assert_unavailable(&requeue, "requeue");

    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_database_that_never_answers_is_a_503_within_the_timeout() {
    // Accepts connections (the kernel completes the handshake) but never speaks Postgres.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let deps = deps_with_database_port(silent.local_addr().expect("addr").port());
    let started = Instant::now();

    let create = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST","payload":"hello"}"#)).await;

    assert_unavailable(&create, "create");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn bad_input_is_still_a_400_while_the_database_is_down() {
    let deps = deps_without_a_database();

    let response = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST","#)).await;
    assert_error(&response, 400, "invalid_json", "not valid json");
    let response = get_job::handle(&deps, with_id("GET", "/jobs/x", "nope")).await;
    assert_error(&response, 400, "invalid_uuid", "nope");
    let response = list_dlq::handle(&deps, get_dlq(&[("cursor", "bad")])).await;
    assert_error(&response, 400, "invalid_cursor", "cursor");
}
