//! The Postgres store: every transition, the rejected ones, leases and fencing, races.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobq_shared::job::Outcome;
use jobq_shared::store::{AfterFailure, Claim};
use jobq_shared::testing::TestEnv;
use jobq_shared::{Error, JobId, NewJob, Status};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_900_000_000_000 + ms).expect("valid time")
}

/// Lease expiries are set by the database clock: `lease` from now, give or take this test's pace.
fn assert_lease_from_now(expires: Option<DateTime<Utc>>, lease: Duration) {
    let expires = expires.expect("a lease expiry");
    let from_now = (expires - Utc::now()).to_std().unwrap_or_default();
    assert!(
        from_now <= lease && from_now + Duration::from_secs(3) >= lease,
        "lease expires in {from_now:?}, expected about {lease:?}"
    );
}

#[tokio::test]
async fn create_stores_a_pending_job_with_defaults() {
    let env = TestEnv::new().await;
    let created = env
        .store
        .create(&NewJob::new("TEST", json!({"a": [1, 2]})), 60_000, at(0))
        .await
        .expect("create");
    assert!(!created.replayed);
    let job = env.store.get(created.job.id).await.expect("get");
    assert_eq!(job.status, Status::Pending);
    assert_eq!(job.payload, json!({"a": [1, 2]}));
    assert_eq!((job.attempts, job.max_attempts, job.priority), (0, 3, 50));
    assert_eq!(job.run_at, at(0));
    assert_eq!(job.created_at, at(0));
    assert!(job.history.is_empty());
}

#[tokio::test]
async fn get_of_an_unknown_id_is_not_found() {
    let env = TestEnv::new().await;
    let id = JobId::new();
    assert!(matches!(env.store.get(id).await, Err(Error::NotFound(missing)) if missing == id));
}

#[tokio::test]
async fn the_same_idempotency_key_and_request_returns_the_same_job() {
    let env = TestEnv::new().await;
    let new = NewJob::new("TEST", json!("x")).idempotency_key("order-1");
    let first = env.store.create(&new, 60_000, at(0)).await.expect("first");
    let second = env.store.create(&new, 60_000, at(5)).await.expect("second");
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.job.id, second.job.id);
    assert_eq!(common::count_jobs(&env).await, 1);
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_request_is_a_conflict() {
    let env = TestEnv::new().await;
    let first = env
        .store
        .create(
            &NewJob::new("TEST", json!("x")).idempotency_key("order-1"),
            60_000,
            at(0),
        )
        .await
        .expect("first");
    let err = env
        .store
        .create(
            &NewJob::new("TEST", json!("y")).idempotency_key("order-1"),
            60_000,
            at(0),
        )
        .await
        .expect_err("conflict");
    assert!(matches!(err, Error::IdempotencyConflict { existing, .. } if existing == first.job.id));
    assert_eq!(common::count_jobs(&env).await, 1);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_job() {
    let env = TestEnv::new().await;
    let new = NewJob::new("TEST", json!("x")).idempotency_key("race");
    let results = futures::future::join_all((0..8).map(|_| env.store.create(&new, 60_000, at(0)))).await;
    let ids: std::collections::HashSet<JobId> = results.into_iter().map(|r| r.expect("create").job.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(common::count_jobs(&env).await, 1);
}

#[tokio::test]
async fn claim_takes_a_due_job_and_opens_an_attempt() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(id, "w1", at(10), LEASE).await;
    assert_eq!(lease.attempt(), 1);
    assert_eq!(lease.token(), 1);
    let job = env.store.get(id).await.expect("get");
    assert_eq!(job.status, Status::InProgress);
    assert_eq!(job.started_at, Some(at(10)));
    assert_lease_from_now(job.lease_expires_at, LEASE);
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, Outcome::Running);
    assert_eq!(job.history[0].worker_id, "w1");
}

#[tokio::test]
async fn a_job_is_not_claimed_before_its_run_at() {
    let env = TestEnv::new().await;
    let id = env
        .insert_job_at(NewJob::new("TEST", json!(1)).run_at(at(1000)), at(0))
        .await;
    let early = env.store.claim(id, "w1", at(999), LEASE).await.expect("claim");
    assert_eq!(
        early,
        Claim::NotDue {
            run_at: at(1000),
            priority: 50
        }
    );
    assert!(
        env.store
            .claim_next("w1", at(999), LEASE, 10, None)
            .await
            .expect("claim_next")
            .is_empty()
    );
    env.claim_job(id, "w1", at(1000), LEASE).await;
}

#[tokio::test]
async fn two_workers_racing_for_one_job_get_exactly_one_claim() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let workers: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
    let results = futures::future::join_all(workers.iter().map(|w| env.store.claim(id, w, at(1), LEASE))).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Claim::Claimed(_)))).count();
    let losses = results.iter().filter(|r| matches!(r, Ok(Claim::Unavailable))).count();
    assert_eq!((wins, losses), (1, 15));
    assert_eq!(env.store.get(id).await.expect("get").history.len(), 1);
}

#[tokio::test]
async fn claim_next_from_postgres_takes_each_job_once_across_workers() {
    let env = TestEnv::new().await;
    for i in 0..40 {
        env.insert_job_at(NewJob::new("TEST", json!(i)), at(0)).await;
    }
    let batches = futures::future::join_all((0..8).map(|i| {
        let store = env.store.clone();
        async move {
            store
                .claim_next(&format!("w{i}"), at(1), LEASE, 10, None)
                .await
                .expect("claim_next")
        }
    }))
    .await;
    let mut ids: Vec<JobId> = batches.iter().flatten().map(|l| l.id()).collect();
    assert_eq!(ids.len(), 40);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no job claimed twice");
}

#[tokio::test]
async fn claim_next_prefers_higher_priority_then_older_run_at() {
    let env = TestEnv::new().await;
    let low = env.insert_job_at(NewJob::new("T", json!(0)).priority(0), at(0)).await;
    let high_late = env
        .insert_job_at(NewJob::new("T", json!(0)).priority(90).run_at(at(5)), at(0))
        .await;
    let high_early = env.insert_job_at(NewJob::new("T", json!(0)).priority(90), at(1)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(env.store.claim_next("w", at(10), LEASE, 1, None).await.expect("claim")[0].id());
    }
    assert_eq!(seen, vec![high_early, high_late, low]);
}

#[tokio::test]
async fn complete_records_success_and_closes_the_attempt() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(id, "w1", at(1), LEASE).await;
    env.store.complete(&lease, at(2)).await.expect("complete");
    let job = env.store.get(id).await.expect("get");
    assert_eq!(job.status, Status::Completed);
    assert_eq!(job.completed_at, Some(at(2)));
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(job.history[0].outcome, Outcome::Succeeded);
    assert_eq!(job.history[0].finished_at, Some(at(2)));
    // A second completion with the same lease changes nothing.
    assert!(matches!(
        env.store.complete(&lease, at(3)).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(env.store.get(id).await.expect("get").completed_at, Some(at(2)));
}

#[tokio::test]
async fn a_retryable_failure_with_attempts_left_waits_for_its_retry() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(id, "w1", at(1), LEASE).await;
    let after = env
        .store
        .fail(&lease, at(2), "flaky", true, at(500), Outcome::Failed)
        .await
        .expect("fail");
    assert_eq!(
        after,
        AfterFailure::Retry {
            run_at: at(500),
            priority: 50
        }
    );
    let job = env.store.get(id).await.expect("get");
    assert_eq!(job.status, Status::Pending);
    assert_eq!(job.run_at, at(500));
    assert_eq!(job.last_error.as_deref(), Some("flaky"));
    assert_eq!(job.history[0].outcome, Outcome::Failed);
    assert_eq!(job.history[0].error.as_deref(), Some("flaky"));
}

#[tokio::test]
async fn a_permanent_failure_is_dead_at_once() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(id, "w1", at(1), LEASE).await;
    let after = env
        .store
        .fail(&lease, at(2), "bad payload", false, at(500), Outcome::Failed)
        .await
        .expect("fail");
    assert_eq!(after, AfterFailure::Dead);
    let job = env.store.get(id).await.expect("get");
    assert_eq!(
        (job.status, job.attempts, job.completed_at),
        (Status::Failed, 1, Some(at(2)))
    );
}

#[tokio::test]
async fn the_last_attempt_failing_is_dead_even_when_retryable() {
    let env = TestEnv::new().await;
    let id = env
        .insert_job_at(NewJob::new("TEST", json!(1)).max_attempts(2), at(0))
        .await;
    let first = env.claim_job(id, "w1", at(1), LEASE).await;
    env.store
        .fail(&first, at(2), "e1", true, at(3), Outcome::Failed)
        .await
        .expect("fail");
    let second = env.claim_job(id, "w1", at(3), LEASE).await;
    assert_eq!(second.attempt(), 2);
    let after = env
        .store
        .fail(&second, at(4), "e2", true, at(5), Outcome::Failed)
        .await
        .expect("fail");
    assert_eq!(after, AfterFailure::Dead);
    let job = env.store.get(id).await.expect("get");
    assert_eq!(job.status, Status::Failed);
    assert_eq!(
        job.history
            .iter()
            .map(|a| a.error.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["e1", "e2"]
    );
}

#[tokio::test]
async fn heartbeat_extends_a_held_lease() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(id, "w1", at(0), LEASE).await;
    let short = Duration::from_secs(5);
    env.store.heartbeat(&lease, at(20_000), short).await.expect("heartbeat");
    assert_lease_from_now(env.store.get(id).await.expect("get").lease_expires_at, short);
    env.store.heartbeat(&lease, at(20_000), LEASE).await.expect("heartbeat");
    assert_lease_from_now(env.store.get(id).await.expect("get").lease_expires_at, LEASE);
}

#[tokio::test]
async fn a_stale_lease_cannot_complete_fail_heartbeat_or_release_a_reclaimed_job() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let stale = env.claim_job(id, "w1", at(0), Duration::from_millis(200)).await;
    // w1 starts (renews its lease once), then its lease expires; the reaper fails its attempt; w2
    // claims the retry.
    env.store
        .heartbeat(&stale, at(0), Duration::from_millis(200))
        .await
        .expect("heartbeat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reaped = jobq_shared::maintenance::reaper::Reaper::new(env.store.clone(), env.queue.clone())
        .with_retry(env.config.worker.retry)
        .run_once(at(31_000))
        .await
        .expect("reap");
    assert_eq!(reaped.retried, 1);
    // Due again after the backoff (at most 100 ms here), counted from the reaper's time.
    let fresh = env.claim_job(id, "w2", at(31_200), LEASE).await;
    assert!(fresh.token() > stale.token());
    let before = env.store.get(id).await.expect("get");

    for result in [
        env.store.complete(&stale, at(31_002)).await.map(|_| ()),
        env.store.heartbeat(&stale, at(31_002), LEASE).await.map(|_| ()),
        env.store
            .fail(&stale, at(31_002), "late", true, at(31_002), Outcome::Failed)
            .await
            .map(|_| ()),
        env.store.release(&stale, at(31_002), "shutdown").await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseLost { job_id, token }) if job_id == id && token == stale.token()),
            "{result:?}"
        );
    }
    assert_eq!(
        env.store.get(id).await.expect("get"),
        before,
        "the stale holder changed nothing"
    );
    env.store
        .complete(&fresh, at(31_003))
        .await
        .expect("the current holder completes");
}

#[tokio::test]
async fn release_returns_the_job_without_spending_an_attempt() {
    let env = TestEnv::new().await;
    let id = env
        .insert_job_at(NewJob::new("TEST", json!(1)).priority(70), at(0))
        .await;
    let lease = env.claim_job(id, "w1", at(1), LEASE).await;
    assert_eq!(
        env.store.release(&lease, at(2), "shutdown").await.expect("release"),
        AfterFailure::Retry {
            run_at: at(2),
            priority: 70
        }
    );
    let job = env.store.get(id).await.expect("get");
    assert_eq!((job.status, job.attempts, job.run_at), (Status::Pending, 0, at(2)));
    assert_eq!(job.history[0].outcome, Outcome::Released);
}

#[tokio::test]
async fn requeue_gives_a_dead_job_a_fresh_budget_and_keeps_its_history() {
    let env = TestEnv::new().await;
    let id = env
        .insert_job_at(NewJob::new("TEST", json!(1)).max_attempts(1), at(0))
        .await;
    let lease = env.claim_job(id, "w1", at(1), LEASE).await;
    env.store
        .fail(&lease, at(2), "boom", true, at(3), Outcome::Failed)
        .await
        .expect("fail");
    let job = env.store.requeue(id, at(10)).await.expect("requeue");
    assert_eq!(
        (job.status, job.attempts, job.run_at, job.completed_at),
        (Status::Pending, 0, at(10), None)
    );
    let again = env.claim_job(id, "w1", at(11), LEASE).await;
    assert_eq!(again.attempt(), 1);
    assert_eq!(env.store.get(id).await.expect("get").history.len(), 2);
}

#[tokio::test]
async fn rejected_transitions_name_the_status_and_change_nothing() {
    let env = TestEnv::new().await;
    let pending = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    assert!(matches!(
        env.store.requeue(pending, at(1)).await,
        Err(Error::InvalidTransition {
            status: Status::Pending,
            ..
        })
    ));
    let running = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let lease = env.claim_job(running, "w1", at(1), LEASE).await;
    assert!(matches!(
        env.store.cancel(running, at(2)).await,
        Err(Error::InvalidTransition {
            status: Status::InProgress,
            ..
        })
    ));
    env.store.complete(&lease, at(3)).await.expect("complete");
    assert!(matches!(
        env.store.requeue(running, at(4)).await,
        Err(Error::InvalidTransition {
            status: Status::Completed,
            ..
        })
    ));
    assert_eq!(
        env.store.claim(running, "w2", at(5), LEASE).await.expect("claim"),
        Claim::Unavailable
    );
    assert!(matches!(
        env.store.requeue(JobId::new(), at(1)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(env.store.get(running).await.expect("get").status, Status::Completed);
}

#[tokio::test]
async fn cancel_withdraws_a_pending_job_which_is_then_never_claimed() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let job = env.store.cancel(id, at(1)).await.expect("cancel");
    assert_eq!((job.status, job.completed_at), (Status::Cancelled, Some(at(1))));
    assert_eq!(
        env.store.claim(id, "w", at(2), LEASE).await.expect("claim"),
        Claim::Unavailable
    );
}

#[tokio::test]
async fn the_dlq_lists_dead_jobs_newest_first_across_pages() {
    let env = TestEnv::new().await;
    let mut dead = Vec::new();
    for i in 0..5 {
        let id = env
            .insert_job_at(NewJob::new("TEST", json!(i)).max_attempts(1), at(0))
            .await;
        let lease = env.claim_job(id, "w", at(1), LEASE).await;
        env.store
            .fail(&lease, at(10 + i), &format!("error {i}"), false, at(0), Outcome::Failed)
            .await
            .expect("fail");
        dead.push(id);
    }
    env.insert_job_at(NewJob::new("TEST", json!("alive")), at(0)).await;
    let first = env.store.list_dead(None, 2).await.expect("page 1");
    let second = env.store.list_dead(first.next, 2).await.expect("page 2");
    let third = env.store.list_dead(second.next, 2).await.expect("page 3");
    assert!(third.next.is_none());
    let listed: Vec<JobId> = [first.items, second.items, third.items]
        .concat()
        .iter()
        .map(|j| j.id)
        .collect();
    dead.reverse();
    assert_eq!(listed, dead);
    let cursor = first.next.expect("cursor").to_string();
    assert_eq!(
        cursor.parse::<jobq_shared::store::DeadCursor>().expect("parse"),
        first.next.expect("cursor")
    );
    assert!("garbage".parse::<jobq_shared::store::DeadCursor>().is_err());
}

#[tokio::test]
async fn the_schema_rejects_inconsistent_rows() {
    let env = TestEnv::new().await;
    let id = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let client = env.store.pool().get().await.expect("conn");
    for statement in [
        "UPDATE jobs SET status = 'COMPLETED' WHERE id = $1",
        "UPDATE jobs SET status = 'IN_PROGRESS' WHERE id = $1",
        "UPDATE jobs SET attempts = 4 WHERE id = $1",
        "UPDATE jobs SET priority = 101 WHERE id = $1",
    ] {
        assert!(
            client.execute(statement, &[&id.0]).await.is_err(),
            "{statement} was accepted"
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let env = TestEnv::new().await;
    let runs = futures::future::join_all((0..4).map(|_| env.store.migrate())).await;
    assert!(runs.iter().all(|r| r.is_ok()), "{runs:?}");
    let client = env.store.pool().get().await.expect("conn");
    let applied: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .expect("history")
        .get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("migrations dir")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(applied, files as i64, "each migration applied once");
}

#[tokio::test]
async fn create_many_stores_a_batch_and_honours_each_idempotency_key() {
    let env = TestEnv::new().await;
    let existing = env
        .store
        .create(&NewJob::new("TEST", json!("a")).idempotency_key("k-a"), 60_000, at(0))
        .await
        .expect("first")
        .job
        .id;
    let batch = vec![
        NewJob::new("TEST", json!(1)),
        NewJob::new("TEST", json!("a")).idempotency_key("k-a"),
        NewJob::new("TEST", json!("different")).idempotency_key("k-a"),
        NewJob::new("TEST", json!("b")).idempotency_key("k-b"),
        NewJob::new("TEST", json!("b")).idempotency_key("k-b"),
        NewJob::new("TEST", json!(2)).priority(90),
    ];
    let results = env.store.create_many(&batch, 60_000, at(1)).await.expect("batch");

    assert_eq!(results.len(), 6);
    let created = |i: usize| results[i].as_ref().expect("created");
    assert!(!created(0).replayed);
    assert!(created(1).replayed && created(1).job.id == existing);
    assert!(matches!(&results[2], Err(Error::IdempotencyConflict { existing: e, .. }) if *e == existing));
    assert!(!created(3).replayed);
    assert!(
        created(4).replayed && created(4).job.id == created(3).job.id,
        "one key twice in a batch is one job"
    );
    assert_eq!(created(5).job.priority, 90);
    assert_eq!(common::count_jobs(&env).await, 4);
}

#[tokio::test]
async fn complete_many_records_held_leases_and_refuses_stale_ones() {
    let env = TestEnv::new().await;
    let a = env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)).await;
    let b = env.insert_job_at(NewJob::new("TEST", json!(2)), at(0)).await;
    let leases = env
        .store
        .claim_many(&[a, b, JobId::new()], "w", at(1), LEASE)
        .await
        .expect("claim");
    assert_eq!(leases.len(), 2);
    let held: Vec<(JobId, i64)> = leases.iter().map(|l| (l.id(), l.token())).collect();
    let stale = (a, held.iter().find(|(id, _)| *id == a).expect("a").1 - 1);

    let done = env
        .store
        .complete_many(&[held[0], held[1], stale], at(2))
        .await
        .expect("complete");

    assert_eq!(done.done.len(), 2);
    for id in [a, b] {
        let job = env.store.get(id).await.expect("get");
        assert_eq!((job.status, job.history.len()), (Status::Completed, 1));
    }
}

/// A migration that adds a column while a process runs (a rolling deploy) leaves that process's
/// prepared statements with the old result columns; Postgres then refuses them ("cached plan must
/// not change result type"). The store prepares such a statement again, and the call succeeds.
#[tokio::test]
async fn a_column_added_while_statements_are_prepared_does_not_break_them() {
    let env = TestEnv::with(|config| config.pg_pool_size = 1).await;
    let id = env.create_job(NewJob::new("TEST", json!({"n": 1}))).await;
    // Prepared (and cached) on the pool's one connection.
    assert_eq!(env.jobs.get(id).await.expect("get").status, Status::Pending);

    // Another process's migration, on a connection of its own.
    let other = jobq_shared::Store::connect(&env.config.database_url, 1, Duration::from_secs(5)).expect("pool");
    other
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute("ALTER TABLE jobs ADD COLUMN added_by_a_later_release text")
        .await
        .expect("add a column");

    let job = env.jobs.get(id).await.expect("get after the column was added");
    assert_eq!(job.payload, json!({"n": 1}));
    let now = env.store.now().await;
    let lease = env.claim_job(id, "w", now, LEASE).await;
    env.store.complete(&lease, now).await.expect("complete");
    assert_eq!(env.jobs.get(id).await.expect("get").status, Status::Completed);
}

#[tokio::test]
async fn a_row_this_code_cannot_read_is_a_bug_not_an_outage() {
    let env = TestEnv::new().await;
    let client = env.store.pool().get().await.expect("connection");
    let row = client.query_one("SELECT 1::int4 AS n", &[]).await.expect("query");
    let wrong_type = row.try_get::<_, String>("n").expect_err("an int is not text");
    let no_column = row.try_get::<_, i32>("missing").expect_err("no such column");
    for err in [wrong_type, no_column] {
        let err = jobq_shared::Error::Postgres(err);
        assert!(!err.is_database_unavailable(), "{err:?} is not an outage");
    }
    // A broken connection still is.
    let closed = tokio_postgres::connect(
        "host=127.0.0.1 port=9 user=postgres connect_timeout=1",
        tokio_postgres::NoTls,
    )
    .await
    .map(|_| ())
    .expect_err("nothing listens on port 9");
    assert!(jobq_shared::Error::Postgres(closed).is_database_unavailable());
}

/// The ended attempt of `id`, checked to be its only one, with the fields every outcome must write.
async fn only_attempt(env: &TestEnv, id: JobId) -> jobq_shared::job::Attempt {
    let history = env.store.get(id).await.expect("get").history;
    assert_eq!(history.len(), 1, "one attempt row for one claim: {history:?}");
    let attempt = history.into_iter().next().expect("one attempt");
    assert_eq!((attempt.attempt, attempt.lease_token), (1, 1));
    assert_eq!((attempt.worker_id.as_str(), attempt.started_at), ("w1", at(1)));
    assert_eq!(attempt.finished_at, Some(at(2)));
    attempt
}

#[tokio::test]
async fn every_outcome_writes_the_attempt_it_ends_once_with_its_claim() {
    let env = TestEnv::new().await;
    let new = || NewJob::new("TEST", json!(1)).max_attempts(2);
    let ids: Vec<JobId> = futures::future::join_all((0..5).map(|_| env.insert_job_at(new(), at(0)))).await;
    let lease = |n: usize| env.claim_job(ids[n], "w1", at(1), LEASE);

    let completed = lease(0).await;
    env.store.complete(&completed, at(2)).await.expect("complete");
    assert_eq!(only_attempt(&env, ids[0]).await.outcome, Outcome::Succeeded);

    let retried = lease(1).await;
    env.store
        .fail(&retried, at(2), "boom", true, at(3), Outcome::Failed)
        .await
        .expect("retry");
    let attempt = only_attempt(&env, ids[1]).await;
    assert_eq!(
        (attempt.outcome, attempt.error.as_deref()),
        (Outcome::Failed, Some("boom"))
    );

    let buried = lease(2).await;
    env.store
        .fail(&buried, at(2), "bad input", false, at(3), Outcome::Failed)
        .await
        .expect("bury");
    let attempt = only_attempt(&env, ids[2]).await;
    assert_eq!(
        (attempt.outcome, attempt.error.as_deref()),
        (Outcome::Failed, Some("bad input"))
    );

    // A release refunds the job's attempt; its row keeps the number it was claimed as.
    let released = lease(3).await;
    env.store.release(&released, at(2), "shutdown").await.expect("release");
    assert_eq!(env.store.get(ids[3]).await.expect("get").attempts, 0);
    assert_eq!(only_attempt(&env, ids[3]).await.outcome, Outcome::Released);

    let cancelled = lease(4).await;
    env.store.request_cancel(ids[4], at(2)).await.expect("request cancel");
    env.store
        .cancel_running(&cancelled, at(2), "cancelled")
        .await
        .expect("cancel running");
    assert_eq!(only_attempt(&env, ids[4]).await.outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn an_attempt_a_previous_release_opened_is_finished_in_place() {
    // A claim of the release before V18 inserted a RUNNING row and left `attempt_token` behind:
    // NULL, or the token of an earlier attempt this release claimed.
    let env = TestEnv::new().await;
    let ids: Vec<JobId> =
        futures::future::join_all((0..3).map(|_| env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)))).await;
    let leases: Vec<_> = futures::future::join_all(ids.iter().map(|id| env.claim_job(*id, "w1", at(1), LEASE))).await;
    let client = env.store.pool().get().await.expect("connection");
    for (id, left_behind) in [(ids[0], None), (ids[1], Some(0_i64))] {
        client
            .execute(
                "UPDATE jobs SET attempt_token = $2, attempt_started_at = NULL WHERE id = $1",
                &[&id.0, &left_behind],
            )
            .await
            .expect("as the previous release claims");
        client
            .execute(
                "INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, outcome)
                 VALUES ($1, 1, 1, 'w1', $2, 'RUNNING')",
                &[&id.0, &at(1)],
            )
            .await
            .expect("the previous release's running row");
    }
    for id in &ids[..2] {
        let running = env.store.get(*id).await.expect("get").history;
        assert_eq!((running.len(), running[0].outcome), (1, Outcome::Running));
    }
    // One batch of both kinds: the old rows are finished, the new success stays in its job's row.
    let held: Vec<(JobId, i64)> = leases.iter().map(|lease| (lease.id(), lease.token())).collect();
    let done = env.store.complete_many(&held, at(2)).await.expect("complete_many");
    assert_eq!(done.done.len(), 3);
    for id in &ids {
        assert_eq!(only_attempt(&env, *id).await.outcome, Outcome::Succeeded);
    }
}

#[tokio::test]
async fn a_success_stays_in_the_jobs_row_and_the_history_shows_it_once() {
    let env = TestEnv::new().await;
    let ids: Vec<JobId> =
        futures::future::join_all((0..3).map(|_| env.insert_job_at(NewJob::new("TEST", json!(1)), at(0)))).await;
    let stored = |id: JobId| {
        let env = &env;
        async move {
            let client = env.store.pool().get().await.expect("connection");
            let row = client
                .query_one("SELECT count(*) FROM job_attempts WHERE job_id = $1", &[&id.0])
                .await
                .expect("count");
            row.get::<_, i64>(0)
        }
    };

    // A success writes no row of its own: the history reads it from the job's row.
    let lease = env.claim_job(ids[0], "w1", at(1), LEASE).await;
    env.store.complete(&lease, at(2)).await.expect("complete");
    assert_eq!(stored(ids[0]).await, 0);
    assert_eq!(only_attempt(&env, ids[0]).await.outcome, Outcome::Succeeded);

    // A success the previous release recorded is in both places, and shown once.
    let lease = env.claim_job(ids[1], "w1", at(1), LEASE).await;
    env.store.complete(&lease, at(2)).await.expect("complete");
    env.store
        .pool()
        .get()
        .await
        .expect("connection")
        .execute(
            "INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome)
             VALUES ($1, 1, 1, 'w1', $2, $3, 'SUCCEEDED')",
            &[&ids[1].0, &at(1), &at(2)],
        )
        .await
        .expect("as the previous release completes");
    assert_eq!(only_attempt(&env, ids[1]).await.outcome, Outcome::Succeeded);

    // A failure is written when it ends; the success after it stays in the row.
    let lease = env.claim_job(ids[2], "w1", at(1), LEASE).await;
    env.store
        .fail(&lease, at(2), "boom", true, at(2), Outcome::Failed)
        .await
        .expect("retry");
    let lease = env.claim_job(ids[2], "w2", at(3), LEASE).await;
    env.store.complete(&lease, at(4)).await.expect("complete");
    assert_eq!(stored(ids[2]).await, 1);
    let history = env.store.get(ids[2]).await.expect("get").history;
    let seen: Vec<_> = history
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.lease_token,
                a.worker_id.as_str(),
                a.started_at,
                a.finished_at,
                a.outcome,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, 1, "w1", at(1), Some(at(2)), Outcome::Failed),
            (2, 2, "w2", at(3), Some(at(4)), Outcome::Succeeded),
        ]
    );
}

/// Rows a plan's nodes produced or looked at and threw away, over all their loops.
fn rows_handled(node: &serde_json::Value) -> f64 {
    let count = |key: &str| node.get(key).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let own = (count("Actual Rows") + count("Rows Removed by Filter") + count("Rows Removed by Join Filter"))
        * count("Actual Loops").max(1.0);
    let children = node.get("Plans").and_then(serde_json::Value::as_array);
    own + children.into_iter().flatten().map(rows_handled).sum::<f64>()
}

#[tokio::test]
async fn a_claim_of_many_ids_in_a_deep_analyzed_backlog_looks_each_id_up_once() {
    // With statistics on a backlog of this size, a claim written as a join of the ids with the
    // jobs was planned as a nested loop comparing every pending job with every id: 100 million
    // comparisons and 12.7 s for one claim of 1,000 ids.
    const PENDING: i64 = 100_000;
    const IDS: i64 = 1_000;
    let env = TestEnv::new().await;
    let mut client = env.store.pool().get().await.expect("connection");
    // One transaction, rolled back at the end. The backlog and the slow plan outlast jobq's
    // statement timeout on a busy machine; let them finish, so that the assertion shows the plan.
    let tx = client.transaction().await.expect("a transaction");
    tx.batch_execute("SET LOCAL statement_timeout = '120s'")
        .await
        .expect("a longer timeout");
    tx.execute(
        "INSERT INTO jobs (id, job_type, queue, payload, status, max_attempts, priority, run_at, timeout_ms,
                           created_at, updated_at)
         SELECT gen_random_uuid(), 'TEST', 'default', jsonb_build_object('n', n), 'PENDING', 3, 0,
                now() - interval '1 second', 30000, now(), now()
         FROM generate_series(1, $1::int8) AS n",
        &[&PENDING],
    )
    .await
    .expect("a backlog");
    tx.batch_execute("ANALYZE jobs")
        .await
        .expect("statistics, as autovacuum takes them");
    let ids: Vec<_> = tx
        .query("SELECT id FROM jobs ORDER BY random() LIMIT $1", &[&IDS])
        .await
        .expect("ids to claim")
        .iter()
        .map(|row| row.get::<_, uuid::Uuid>(0))
        .collect();
    let claim = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        include_str!("../src/sql/claim_many.sql")
    );
    let lease_ms = i64::try_from(LEASE.as_millis()).expect("lease in ms");
    let explained: serde_json::Value = tx
        .query_one(&claim, &[&ids, &"w1", &Utc::now(), &lease_ms, &None::<DateTime<Utc>>])
        .await
        .expect("the claim, explained")
        .get(0);
    tx.rollback().await.expect("rollback");
    let plan = &explained[0]["Plan"];
    assert_eq!(
        plan["Actual Rows"].as_f64(),
        Some(IDS as f64),
        "every id claimed: {plan}"
    );
    // One pass over the table, or a lookup per id, and a few rows per id besides.
    let handled = rows_handled(plan);
    assert!(
        handled <= (2 * PENDING + 10 * IDS) as f64,
        "the claim handled {handled} rows for {IDS} ids among {PENDING} pending jobs: {plan}"
    );
}
