mod common;

use std::time::Duration;

use chrono::Utc;
use common::{assert_error, dead_job, json, setup, with_id};
use jobq_functions::{cancel_job, get_job};
use jobq_shared::store::Claim;
use jobq_shared::{JobId, NewJob, Status};
use lambda_http::Body;
use serde_json::json;

fn cancel_request(id: &str) -> lambda_http::Request {
    with_id("POST", &format!("/jobs/{id}/cancel"), id)
}

async fn in_redis(env: &jobq_shared::testing::TestEnv, id: JobId) -> bool {
    let id = id.to_string();
    let ready = env.queue.ready_ids().await.expect("ready");
    let scheduled = env.queue.scheduled().await.expect("scheduled");
    ready.iter().any(|r| r == &id) || scheduled.iter().any(|(member, _)| member.contains(&format!(":{id}:")))
}

#[tokio::test]
async fn a_pending_job_is_cancelled_at_once_and_taken_out_of_redis() {
    let (env, deps) = setup().await;
    let ready = env.create_job(NewJob::new("TEST", json!("hello"))).await;
    let scheduled = env
        .create_job(NewJob::new("TEST", json!("later")).delay(Duration::from_secs(3600)))
        .await;
    assert!(in_redis(&env, ready).await && in_redis(&env, scheduled).await);

    for job in [ready, scheduled] {
        let id = job.to_string();
        // The body, if any, is ignored.
        let response = cancel_job::handle(&deps, cancel_request(&id)).await;
        let body = json(&response);
        assert_eq!(response.status(), 200, "{body}");
        assert_eq!(body["status"], "CANCELLED");
        assert_eq!(body["id"], id.as_str());
        assert!(body["completedAt"].is_string());
        assert!(!in_redis(&env, job).await, "{id} is still in redis");
        let got = json(&get_job::handle(&deps, with_id("GET", "/jobs/x", &id)).await);
        assert_eq!(got["status"], "CANCELLED");
    }
    // A cancelled job is never claimed.
    assert_eq!(
        env.store
            .claim(ready, "w", Utc::now(), Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Unavailable
    );
}

#[tokio::test]
async fn a_running_job_gets_a_cancel_request_and_a_202() {
    let (env, deps) = setup().await;
    let running = env
        .create_job_at(NewJob::new("TEST", json!("SLEEP_MS=10")), Utc::now())
        .await;
    let lease = env.claim_job(running, "w", Utc::now(), Duration::from_secs(30)).await;
    let id = running.to_string();

    let response = cancel_job::handle(&deps, cancel_request(&id)).await;
    let body = json(&response);
    assert_eq!(response.status(), 202, "{body}");
    assert_eq!(body["status"], "IN_PROGRESS");
    let requested_at = body["cancelRequestedAt"]
        .as_str()
        .expect("cancelRequestedAt")
        .to_owned();

    // Asking again changes nothing but is answered the same way.
    let again = cancel_job::handle(&deps, cancel_request(&id)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(json(&again)["cancelRequestedAt"], requested_at.as_str());

    // The lease still holds: its worker finishes the attempt.
    env.store.complete(&lease, Utc::now()).await.expect("complete");
    let got = json(&get_job::handle(&deps, with_id("GET", "/jobs/x", &id)).await);
    assert_eq!(got["status"], "COMPLETED");
    assert_eq!(got["cancelRequestedAt"], requested_at.as_str());
}

#[tokio::test]
async fn a_finished_job_is_a_409_and_changes_nothing() {
    let (env, deps) = setup().await;
    let dead = dead_job(&env, json!("FAIL_ALWAYS"), Utc::now()).await;
    let cancelled = env.create_job(NewJob::new("TEST", json!(1))).await;
    assert_eq!(
        cancel_job::handle(&deps, cancel_request(&cancelled.to_string()))
            .await
            .status(),
        200
    );
    let completed = env.create_job_at(NewJob::new("TEST", json!(2)), Utc::now()).await;
    let lease = env.claim_job(completed, "w", Utc::now(), Duration::from_secs(30)).await;
    env.store.complete(&lease, Utc::now()).await.expect("complete");

    for (id, status) in [
        (dead, Status::Failed),
        (cancelled, Status::Cancelled),
        (completed, Status::Completed),
    ] {
        let before = env.jobs.get(id).await.expect("job");
        let response = cancel_job::handle(&deps, cancel_request(&id.to_string())).await;
        assert_error(&response, 409, "not_cancellable", status.as_str());
        let after = env.jobs.get(id).await.expect("job");
        assert_eq!(after, before, "a refused cancel changed the job");
    }
}

#[tokio::test]
async fn an_unknown_id_is_a_404_an_invalid_one_a_400_and_a_get_a_405() {
    let (_env, deps) = setup().await;
    let unknown = "0192f5a4-1c3b-7cde-8f00-0123456789ab";

    assert_error(
        &cancel_job::handle(&deps, cancel_request(unknown)).await,
        404,
        "not_found",
        unknown,
    );
    assert_error(
        &cancel_job::handle(&deps, cancel_request("nope")).await,
        400,
        "invalid_uuid",
        "nope",
    );
    assert_error(
        &cancel_job::handle(&deps, with_id("GET", "/jobs/x/cancel", unknown)).await,
        405,
        "method_not_allowed",
        "POST",
    );
}

#[tokio::test]
async fn cancel_reads_the_id_from_a_function_url_path() {
    let (env, deps) = setup().await;
    let id = env.create_job(NewJob::new("TEST", json!(1))).await;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/lambda-url/cancel-job/{id}/cancel"))
        .body(Body::Empty)
        .expect("request");

    let response = cancel_job::handle(&deps, request).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["status"], "CANCELLED");
}
