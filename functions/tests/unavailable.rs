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
    config.redis_cluster = std::env::var("REDIS_CLUSTER").is_ok_and(|cluster| cluster == "true");
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

/// A create whose statement reached Postgres but whose answer did not come back in time: the 503
/// says the job may exist and under which id; a replay with the same key finds it and pushes it to
/// Redis, where the lost answer had left it out.
#[tokio::test]
async fn a_create_left_in_doubt_names_its_job_and_a_keyed_replay_recovers_it() {
    use jobq_shared::fault::{Fault, Proxy};
    use jobq_shared::testing::TestEnv;

    let env = TestEnv::new().await;
    let (proxy, proxied_url) = Proxy::for_url(&env.config.database_url).await.expect("proxy");
    let mut config = env.config.clone();
    config.database_url = proxied_url;
    config.pg_timeout = Duration::from_secs(1);
    let deps = Deps::from_config(config).expect("deps");
    // Connect, read the clock and prepare the insert while the network is fine.
    let warm = create_job::handle(&deps, post_json("/jobs", r#"{"type":"TEST","payload":"warm"}"#)).await;
    assert_eq!(warm.status(), 201, "{:?}", warm.body());

    // Answers now take 1.5 s each way: the insert lands, its answer comes too late.
    proxy.set(Fault::Delay(Duration::from_millis(1_500)));
    let body = r#"{"type":"TEST","payload":"once","idempotencyKey":"in-doubt-1"}"#;
    let response = create_job::handle(&deps, post_json("/jobs", body)).await;
    assert_error(&response, 503, "outcome_unknown", "may have been stored as");
    let reply = common::json(&response);
    let id = reply["error"]["jobIds"][0].as_str().expect("the job's id").to_owned();
    assert!(
        reply["error"]["message"].as_str().unwrap_or_default().contains(&id),
        "{reply}"
    );
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    // The insert committed although its answer was lost; Redis never heard of it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set(Fault::None);
    let job_id = jobq_shared::JobId(id.parse().expect("uuid"));
    assert_eq!(
        env.jobs.get(job_id).await.expect("stored").status,
        jobq_shared::Status::Pending
    );
    let ready = env.queue.ready_ids().await.expect("redis");
    assert!(!ready.contains(&id), "pushed although the create failed");

    // The client retries with its key: the same job, and now it is in Redis to be run.
    let replay = create_job::handle(&deps, post_json("/jobs", body)).await;
    assert_eq!(replay.status(), 200, "{:?}", replay.body());
    assert_eq!(common::json(&replay)["jobId"], id.as_str());
    let ready = env.queue.ready_ids().await.expect("redis");
    assert!(ready.contains(&id), "a replay must push a job Redis lacks: {ready:?}");
    assert_eq!(env.count_jobs(None).await, 2, "the warm-up job and this one, once");
}
