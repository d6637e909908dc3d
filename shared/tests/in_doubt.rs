//! Statements whose answer never comes back in time: they are bounded on the server, and what they
//! may have done is read back before anything acts on it. A claim that was held up in the network
//! must not leave jobs charged for attempts that never ran; a connection given up on is not reused.

mod common;

use std::time::Duration;

use jobq_shared::fault::{Fault, Proxy};
use jobq_shared::handler::Registry;
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::{NewJob, Status, Store, Worker};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test]
async fn postgres_ends_a_statement_the_client_has_given_up_on() {
    let env = TestEnv::new().await;
    let store = Store::connect(&env.config.database_url, 1, Duration::from_secs(1)).expect("pool");
    let client = store.pool().get().await.expect("connection");
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "500ms", "the server bound is half the client timeout");
    let started = Instant::now();
    let err = client
        .query_one("SELECT pg_sleep(5)", &[])
        .await
        .expect_err("the server cancels it");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_claim_held_up_past_the_client_timeout_claims_nothing_and_no_job_is_charged_for_it() {
    // Every byte to and from Postgres takes 1.5 s: the claim reaches the server after its client
    // has given up on it, past the time it may start.
    claims_under(Fault::Delay(Duration::from_millis(1_500))).await;
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_read_back_and_its_jobs_run_here_uncharged() {
    // The claim reaches the server at once and commits; its answer takes 1.5 s, too late.
    claims_under(Fault::DelayReplies(Duration::from_millis(1_500))).await;
}

/// Five jobs, one worker whose connection to Postgres suffers `fault` for 2.5 s while it claims
/// them: each job must complete on its first attempt, never lost to an expired lease.
async fn claims_under(fault: Fault) {
    let env = TestEnv::with(|c| {
        c.worker.lease = Duration::from_secs(6);
        c.worker.heartbeat = Duration::from_millis(500);
        c.worker.concurrency = 8;
    })
    .await;
    // The worker reaches Postgres through a proxy, with a 1 s client timeout; everything else
    // connects directly.
    let (proxy, proxied_url) = Proxy::for_url(&env.config.database_url).await.expect("proxy");
    let store = Store::connect(&proxied_url, 4, Duration::from_secs(1)).expect("pool");
    store.sync_clock().await.expect("read the database clock");
    // Its one connection has the claim prepared already, so the claim itself is what is held up.
    let warm = store
        .claim_many(&[], "warm-up", store.now().await, Duration::from_secs(1))
        .await
        .expect("claim nothing");
    assert!(warm.is_empty());

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(env.create_job(NewJob::new("TEST", json!("hello"))).await);
    }
    proxy.set(fault);
    let worker = Worker::new(
        store,
        env.queue.clone(),
        Registry::with_builtins(),
        env.config.worker.clone(),
    );
    let running = common::Running::start_with(&env, worker);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    proxy.set(Fault::None);

    for id in &ids {
        let job = env.wait_for(*id, Status::Completed, Duration::from_secs(20)).await;
        assert_eq!(
            job.attempts, 1,
            "job {id} was charged for an attempt that never ran: {:?}",
            job.history
        );
        assert!(
            job.history.iter().all(|a| a.outcome != Outcome::LeaseExpired),
            "job {id} was claimed and left: {:?}",
            job.history
        );
    }
    running.stop().await;
}
