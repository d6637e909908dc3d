//! The promoter, reaper and repairer, each driven by `run_once(now)`, and the worker's fallbacks.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Running, wait_for};
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::reaper::{NEVER_RENEWED, Reaped};
use jobq_shared::maintenance::{promoter::Promoter, reaper::Reaper, repairer::Repairer};
use jobq_shared::queue::Keys;
use jobq_shared::retry::RetryPolicy;
use jobq_shared::store::Claim;
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::MAX_FREE_RELEASES;
use jobq_shared::{JobId, NewJob, Registry, Status};
use serde_json::json;

/// Now, at the microsecond precision Postgres keeps.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("valid time")
}

fn now_plus(base: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    base + chrono::Duration::milliseconds(ms)
}

#[tokio::test]
async fn a_promoter_pass_moves_only_due_ids_to_their_priority_lists() {
    let env = TestEnv::new().await;
    let t0 = now();
    let due_low = env
        .create_job_at(NewJob::new("T", json!(1)).priority(5).run_at(now_plus(t0, 1000)), t0)
        .await;
    let due_high = env
        .create_job_at(NewJob::new("T", json!(2)).priority(95).run_at(now_plus(t0, 2000)), t0)
        .await;
    let later = env
        .create_job_at(NewJob::new("T", json!(3)).run_at(now_plus(t0, 60_000)), t0)
        .await;
    assert!(env.queue.ready_ids().await.expect("ready").is_empty());

    let moved = Promoter::new(env.store.clone(), env.queue.clone())
        .run_once(now_plus(t0, 2000))
        .await
        .expect("promote");

    assert_eq!(moved, 2);
    assert_eq!(
        env.queue.ready_ids().await.expect("ready"),
        vec![due_high.to_string(), due_low.to_string()]
    );
    let scheduled = env.queue.scheduled().await.expect("scheduled");
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].0, Keys::scheduled_member(later, "default", 5));
    assert_eq!(scheduled[0].1, now_plus(t0, 60_000).timestamp_millis());
}

#[tokio::test]
async fn promoters_running_at_once_move_each_id_exactly_once() {
    let env = TestEnv::new().await;
    let t0 = now();
    for i in 0..300 {
        env.create_job_at(NewJob::new("T", json!(i)).run_at(now_plus(t0, 10)), t0)
            .await;
    }
    let promoters: Vec<Promoter> = (0..4)
        .map(|_| Promoter::new(env.store.clone(), env.queue.clone()))
        .collect();
    let moved: usize = futures::future::join_all(promoters.iter().map(|p| p.run_once(now_plus(t0, 10))))
        .await
        .into_iter()
        .map(|r| r.expect("promote"))
        .sum();
    assert_eq!(moved, 300);
    let ready = env.queue.ready_ids().await.expect("ready");
    assert_eq!(ready.len(), 300);
    assert_eq!(ready.iter().collect::<HashSet<_>>().len(), 300);
}

#[tokio::test]
async fn the_reaper_retries_a_job_whose_lease_expired_and_records_the_lost_attempt() {
    let env = TestEnv::new().await;
    let t0 = now();
    let id = env.create_job_at(NewJob::new("TEST", json!(1)), t0).await;
    let lease = env.claim_job(id, "doomed", t0, Duration::from_millis(400)).await;
    // It started: its worker renewed the lease once, then died.
    env.store
        .heartbeat(&lease, now(), Duration::from_millis(400))
        .await
        .expect("heartbeat");
    let reaper = Reaper::new(env.store.clone(), env.queue.clone()).with_retry(env.config.worker.retry);
    assert_eq!(
        reaper.run_once(now()).await.expect("reap").retried,
        0,
        "lease still valid"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let reaped = reaper.run_once(now()).await.expect("reap");

    assert_eq!((reaped.retried, reaped.dead), (1, 0));
    let job = env.jobs.get(id).await.expect("get");
    assert_eq!(job.status, Status::Pending);
    let cap = chrono::Duration::from_std(env.config.worker.retry.cap).expect("cap");
    assert!(
        job.run_at >= now_plus(t0, 400) && job.run_at <= now() + cap,
        "retried after at most the backoff cap ({} vs {t0})",
        job.run_at
    );
    assert_eq!(job.history[0].outcome, jobq_shared::job::Outcome::LeaseExpired);
    let scheduled: Vec<String> = env
        .queue
        .scheduled()
        .await
        .expect("schedule")
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert!(
        env.queue.ready_ids().await.expect("ready").contains(&id.to_string())
            || scheduled.contains(&Keys::scheduled_member(id, "default", 5)),
        "pushed to Redis"
    );
}

/// A claim whose lease runs out before its holder renews it once (its answer lost, its worker
/// killed before the first heartbeat) may never have reached a handler: it is given back
/// uncharged, even on the job's last attempt, and counted. Past `MAX_FREE_RELEASES` such
/// give-backs the next one is charged, so a job that kills its worker at once still ends.
#[tokio::test]
async fn a_lease_that_runs_out_never_renewed_is_given_back_uncharged_a_bounded_number_of_times() {
    let env = TestEnv::new().await;
    let id = env
        .create_job_at(NewJob::new("TEST", json!(1)).max_attempts(1), now())
        .await;
    let reaper = Reaper::new(env.store.clone(), env.queue.clone()).with_retry(RetryPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(1),
        ..env.config.worker.retry
    });
    // Claimed and never renewed, each time: given back free, then charged (and dead) once the
    // free releases are used up.
    for round in 0..=MAX_FREE_RELEASES {
        let last = round == MAX_FREE_RELEASES;
        // Due by then: the backoff is 1 ms.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Claim::Claimed(_) = env
            .store
            .claim(id, "never-started", now(), Duration::from_millis(100))
            .await
            .expect("claim")
        else {
            panic!("round {round}: not claimed")
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reaped = reaper.run_once(now()).await.expect("reap");
        let (expected, status, attempts) = if last {
            (
                Reaped {
                    dead: 1,
                    ..Reaped::default()
                },
                Status::Failed,
                1,
            )
        } else {
            (
                Reaped {
                    released: 1,
                    ..Reaped::default()
                },
                Status::Pending,
                0,
            )
        };
        assert_eq!(reaped, expected, "round {round}");
        let job = env.jobs.get(id).await.expect("get");
        assert_eq!((job.status, job.attempts), (status, attempts), "round {round}");
    }
    let job = env.jobs.get(id).await.expect("get");
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    let mut expected = vec![Outcome::Released; MAX_FREE_RELEASES as usize];
    expected.push(Outcome::LeaseExpired);
    assert_eq!(outcomes, expected);
    assert_eq!(job.history[0].error.as_deref(), Some(NEVER_RENEWED));
    assert_eq!(env.queue.dead_ids().await.expect("dlq"), vec![id.to_string()]);
}

#[tokio::test]
async fn a_heartbeat_that_lands_between_the_reapers_read_and_write_keeps_the_lease() {
    let env = TestEnv::new().await;
    let id = env.create_job_at(NewJob::new("TEST", json!(1)), now()).await;
    let lease = env
        .claim_job(id, "slow-but-alive", now(), Duration::from_millis(200))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The reaper reads the expired lease...
    let expired = env.store.expired_leases(10).await.expect("read");
    assert_eq!(expired.iter().map(|l| l.id()).collect::<Vec<_>>(), vec![id]);
    // ...its holder renews it...
    env.store
        .heartbeat(&lease, now(), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    // ...and the reaper's write, guarded by the expiry when it lands, changes nothing.
    let result = env
        .store
        .expire(&expired[0], now(), "lease expired", Status::Pending, Duration::ZERO)
        .await;
    assert!(
        matches!(result, Err(jobq_shared::Error::LeaseLost { .. })),
        "{result:?}"
    );
    let job = env.jobs.get(id).await.expect("get");
    assert_eq!(job.status, Status::InProgress);
    assert_eq!(job.attempts, 1);
    env.store.complete(&lease, now()).await.expect("the holder completes");
}

#[tokio::test]
async fn the_reaper_dead_letters_a_job_whose_last_attempt_lost_its_lease() {
    let env = TestEnv::new().await;
    let t0 = now();
    let id = env
        .create_job_at(NewJob::new("TEST", json!(1)).max_attempts(1), t0)
        .await;
    let lease = env.claim_job(id, "doomed", t0, Duration::from_millis(200)).await;
    env.store
        .heartbeat(&lease, now(), Duration::from_millis(200))
        .await
        .expect("heartbeat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reaped = Reaper::new(env.store.clone(), env.queue.clone())
        .run_once(now())
        .await
        .expect("reap");
    assert_eq!((reaped.dead, reaped.released), (1, 0));
    assert_eq!(env.jobs.get(id).await.expect("get").status, Status::Failed);
    assert_eq!(env.queue.dead_ids().await.expect("dlq"), vec![id.to_string()]);
}

#[tokio::test]
async fn a_killed_worker_s_job_is_finished_by_another_worker_after_its_lease_expires() {
    let env = TestEnv::with(|c| c.worker.lease = Duration::from_millis(600)).await;
    let id = env.create_job_at(NewJob::new("TEST", json!("x")), Utc::now()).await;
    // A worker that claims, starts (renews the lease once) and then vanishes without a word.
    let lease = env
        .claim_job(id, "killed", Utc::now(), Duration::from_millis(600))
        .await;
    env.store
        .heartbeat(&lease, Utc::now(), Duration::from_millis(600))
        .await
        .expect("heartbeat");
    let running = Running::start(&env, Registry::with_builtins());
    let job = wait_for(&env, id, Status::Completed, Duration::from_secs(10)).await;
    running.stop().await;
    let outcomes: Vec<_> = job.history.iter().map(|a| (a.worker_id.clone(), a.outcome)).collect();
    assert_eq!(
        outcomes[0],
        ("killed".to_owned(), jobq_shared::job::Outcome::LeaseExpired)
    );
    assert_eq!(outcomes[1].1, jobq_shared::job::Outcome::Succeeded);
}

#[tokio::test]
async fn when_redis_loses_every_key_the_repairer_rebuilds_them_from_postgres() {
    let env = TestEnv::new().await;
    let t0 = now();
    let ready = env.create_job_at(NewJob::new("TEST", json!(1)).priority(80), t0).await;
    let scheduled_at = now_plus(t0, 3_600_000);
    let scheduled = env
        .create_job_at(NewJob::new("TEST", json!(2)).run_at(scheduled_at), t0)
        .await;
    let dead = env
        .create_job_at(NewJob::new("TEST", json!(3)).max_attempts(1), t0)
        .await;
    let lease = env.claim_job(dead, "w", t0, Duration::from_secs(30)).await;
    env.store
        .fail(&lease, t0, "x", false, t0, jobq_shared::job::Outcome::Failed)
        .await
        .expect("fail");
    let repairer = Repairer::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30));
    assert!(
        repairer.run_once(t0).await.expect("first pass").rebuilt,
        "a new namespace is built once"
    );
    assert!(!repairer.run_once(t0).await.expect("second pass").rebuilt);

    env.queue.delete_namespace().await.expect("lose everything");
    let repaired = repairer.run_once(now_plus(t0, 1)).await.expect("repair");

    assert!(repaired.rebuilt);
    assert_eq!((repaired.pushed, repaired.dead), (2, 1));
    assert_eq!(env.queue.ready_ids().await.expect("ready"), vec![ready.to_string()]);
    let zset = env.queue.scheduled().await.expect("scheduled");
    assert_eq!(zset.len(), 1);
    assert_eq!(zset[0].0, Keys::scheduled_member(scheduled, "default", 5));
    assert_eq!(
        zset[0].1,
        scheduled_at.timestamp_millis(),
        "a scheduled job keeps its due time"
    );
    assert_eq!(env.queue.dead_ids().await.expect("dlq"), vec![dead.to_string()]);
}

#[tokio::test]
async fn an_overdue_job_whose_push_was_lost_is_pushed_again_once_per_period() {
    let env = TestEnv::new().await;
    let t0 = now();
    let repairer = Repairer::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30));
    repairer.run_once(t0).await.expect("build");
    // Stored but never pushed, as when Redis failed right after the commit.
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), t0).await;
    repairer.run_once(now_plus(t0, 1_000)).await.expect("repair");
    assert!(
        env.queue.ready_ids().await.expect("ready").is_empty(),
        "not overdue yet"
    );

    let first = repairer.run_once(now_plus(t0, 31_000)).await.expect("repair");
    let again = repairer.run_once(now_plus(t0, 32_000)).await.expect("repair");

    assert_eq!((first.pushed, again.pushed), (1, 0));
    assert_eq!(env.queue.ready_ids().await.expect("ready"), vec![id.to_string()]);
}

#[tokio::test]
async fn an_id_is_held_at_most_once_however_often_and_wherever_it_is_pushed() {
    let env = TestEnv::new().await;
    let t0 = now();
    let id = env.create_job_at(NewJob::new("TEST", json!(1)), t0).await;
    // Ready, ready again, scheduled, scheduled again, due and promoted, ready once more.
    for (run_at, now) in [
        (t0, t0),
        (t0, t0),
        (now_plus(t0, 60_000), t0),
        (now_plus(t0, 50_000), t0),
    ] {
        env.queue.enqueue(id, "default", 50, run_at, now).await.expect("push");
    }
    assert!(env.queue.ready_ids().await.expect("ready").is_empty());
    assert_eq!(env.queue.scheduled().await.expect("schedule").len(), 1);
    Promoter::new(env.store.clone(), env.queue.clone())
        .run_once(now_plus(t0, 50_000))
        .await
        .expect("promote");
    env.queue
        .enqueue(id, "default", 50, t0, now_plus(t0, 50_000))
        .await
        .expect("push");
    env.queue.push_front(id, "default", 50).await.expect("push front");
    assert_eq!(env.queue.ready_ids().await.expect("ready"), vec![id.to_string()]);
    assert!(env.queue.scheduled().await.expect("schedule").is_empty());
}

#[tokio::test]
async fn a_backlog_that_waits_through_many_repair_passes_is_held_once_and_repair_restores_only_what_is_missing() {
    const JOBS: usize = 5_000;
    // Generous statement timeouts: this test runs beside the whole suite on a debug build.
    let env = TestEnv::with(|c| c.pg_timeout = Duration::from_secs(60)).await;
    let t0 = now();
    let repairer = Repairer::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30));
    repairer.run_once(t0).await.expect("build");
    let batch: Vec<NewJob> = (0..JOBS).map(|i| NewJob::new("TEST", json!(i))).collect();
    for chunk in batch.chunks(1000) {
        env.create_jobs_at(chunk, t0).await;
    }
    // No worker: the backlog waits through passes that each find every job overdue.
    for pass in 1..=4 {
        let repaired = repairer.run_once(now_plus(t0, pass * 31_000)).await.expect("repair");
        assert_eq!((repaired.checked, repaired.pushed), (JOBS, 0), "pass {pass}");
        assert_eq!(env.queue.depths().await.expect("depths").ready, JOBS, "pass {pass}");
    }
    // Ids Redis lost are the only ones pushed again.
    let lost: Vec<String> = env
        .queue
        .ready_ids()
        .await
        .expect("ready")
        .into_iter()
        .take(7)
        .collect();
    env.queue.forget_ready("default", 50, &lost).await.expect("lose some");
    let repaired = repairer.run_once(now_plus(t0, 5 * 31_000)).await.expect("repair");
    assert_eq!(repaired.pushed, 7);
    let ready = env.queue.ready_ids().await.expect("ready");
    assert_eq!(ready.len(), JOBS);
    assert_eq!(ready.iter().collect::<HashSet<_>>().len(), JOBS);
}

#[tokio::test]
async fn duplicate_ids_in_redis_never_make_a_job_run_twice() {
    let env = TestEnv::new().await;
    let t0 = now();
    let id = env.create_job_at(NewJob::new("TEST", json!(1)), t0).await;
    for _ in 0..5 {
        env.queue
            .enqueue(id, "default", 50, t0, t0)
            .await
            .expect("duplicate push");
    }
    let running = Running::start(&env, Registry::with_builtins());
    wait_for(&env, id, Status::Completed, Duration::from_secs(10)).await;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while !env.queue.ready_ids().await.expect("ready").is_empty() {
        assert!(tokio::time::Instant::now() < give_up, "duplicates were not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = running.stop().await;
    assert_eq!(summary.claimed, 1);
    assert_eq!(env.jobs.get(id).await.expect("get").history.len(), 1);
}

#[tokio::test]
async fn with_redis_unreachable_jobs_are_still_accepted_and_run_from_postgres() {
    // A Redis URL where nothing listens: every Redis call fails fast.
    let env = TestEnv::with(|c| c.redis_url = "redis://127.0.0.1:1".into()).await;
    let mut ids: Vec<JobId> = Vec::new();
    for i in 0..5 {
        // Accepted although Redis is down.
        ids.push(env.create_job(NewJob::new("TEST", json!(i))).await);
    }
    let worker = env.worker(Registry::with_builtins());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown).await })
    };
    for id in &ids {
        wait_for(&env, *id, Status::Completed, Duration::from_secs(15)).await;
    }
    shutdown.cancel();
    let summary = handle.await.expect("join").expect("run");
    assert_eq!(summary.completed, 5);
}
