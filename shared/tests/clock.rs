//! Host clocks that disagree with each other and with Postgres change nothing: every due time,
//! eligibility check and promotion is decided on the database's clock. Each process here gets a
//! store whose host clock is skewed by a minute or so (`Store::with_host_skew`), as a host whose
//! NTP is broken would be.

mod common;

use std::time::Duration;

use jobq_shared::handler::Registry;
use jobq_shared::job::Schedule;
use jobq_shared::maintenance::promoter::Promoter;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Jobs, NewJob, Status, Store, Worker};
use serde_json::json;

fn skewed(env: &TestEnv, seconds: i64) -> Store {
    Store::connect(&env.config.database_url, 4, env.config.pg_timeout)
        .expect("pool")
        .with_host_skew(chrono::Duration::seconds(seconds))
}

#[tokio::test]
async fn every_process_reads_the_database_clock_whatever_its_own_says() {
    let env = TestEnv::new().await;
    for skew in [-90, -40, 0, 40, 90] {
        let store = skewed(&env, skew);
        let offset = store
            .sync_clock()
            .await
            .expect("read the clock")
            .expect("a short round trip");
        let residual = offset + chrono::Duration::seconds(skew);
        println!(
            "CLOCK host skew {skew} s: offset measured {offset}, residual {} us",
            residual.num_microseconds().unwrap_or(i64::MAX)
        );
        let read = store.now().await;
        let drift = (read - chrono::Utc::now()).num_milliseconds().abs();
        // This machine's clock is the database's clock: a skewed store must read it, not its own.
        assert!(
            drift < 1_000,
            "store skewed {skew} s read a time {drift} ms off the database's"
        );
    }
}

#[tokio::test]
async fn a_worker_whose_clock_is_40_s_behind_the_maintenance_runs_every_job() {
    let env = TestEnv::new().await;
    // The promoter and reaper run on a host with a correct clock, the worker on one 40 s behind.
    let worker = Worker::new(
        skewed(&env, -40),
        env.queue.clone(),
        Registry::with_builtins(),
        env.config.worker.clone(),
    );
    let running = common::Running::start_with(&env, worker);

    let mut ids = Vec::new();
    for i in 0..6 {
        // Jobs that take longer than a heartbeat, retried once, and delayed a little: every path
        // through the lease, the retry and the schedule.
        let mut new = NewJob::new("TEST", json!(if i % 2 == 0 { "SLEEP_MS=400" } else { "FAIL_TIMES=1" }));
        if i >= 4 {
            new.schedule = Schedule::After(Duration::from_millis(300));
        }
        ids.push(env.create_job(new).await);
    }
    for id in &ids {
        let job = env.wait_for(*id, Status::Completed, Duration::from_secs(20)).await;
        assert!(
            job.history.iter().all(|a| a.error.as_deref() != Some("lease expired")),
            "job {id} lost a lease to a clock that is off: {:?}",
            job.history
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn a_job_created_on_a_host_a_minute_ahead_runs_now_not_a_minute_later() {
    let env = TestEnv::new().await;
    let ahead = Jobs::new(skewed(&env, 60), env.queue.clone(), env.config.worker.default_timeout);
    let created = ahead
        .create(&NewJob::new("TEST", json!({})), ahead.store().now().await)
        .await
        .expect("create")
        .job;
    let lag = (created.run_at - chrono::Utc::now()).num_milliseconds();
    assert!(lag < 1_000, "due {lag} ms ahead of the database's clock");

    let running = common::Running::start(&env, Registry::with_builtins());
    env.wait_for(created.id, Status::Completed, Duration::from_secs(5))
        .await;
    running.stop().await;
}

#[tokio::test]
async fn a_promoter_a_minute_ahead_does_not_promote_a_job_before_it_is_due() {
    let env = TestEnv::new().await;
    let mut delayed = NewJob::new("TEST", json!({}));
    delayed.schedule = Schedule::After(Duration::from_secs(30));
    let id = env.create_job(delayed).await;
    let ahead = skewed(&env, 60);
    let moved = Promoter::new(ahead.clone(), env.queue.clone())
        .run_once(ahead.now().await)
        .await
        .expect("promote");
    assert_eq!(moved, 0, "a job due in 30 s was promoted by a host a minute ahead");
    assert_eq!(env.jobs.get(id).await.expect("get").status, Status::Pending);
}
