//! Bulk operations: a dry run counts exactly and changes nothing; a real one works through every
//! match in batches, leaves everything else alone, survives a processor that stops between
//! batches, never acts twice on a job when several processors run it at once, and writes the
//! audit log.

use std::time::Duration;

use jobq_shared::bulk::{Actor, BATCH, BulkAction, OperationState, Operations};
use jobq_shared::search::JobFilter;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Error, JobId, NewJob, Status};
use serde_json::json;
use uuid::Uuid;

fn actor() -> Actor {
    Actor {
        principal: "api-token".into(),
        on_behalf_of: Some("ops@example".into()),
    }
}

/// `count` jobs of `queue`, payload `{"n": i % 2}`, created through the API path.
async fn jobs(env: &TestEnv, queue: &str, count: usize) -> Vec<JobId> {
    let mut ids = Vec::with_capacity(count);
    let all: Vec<NewJob> = (0..count)
        .map(|i| NewJob::new("TEST", json!({"n": i % 2, "i": i})).queue(queue))
        .collect();
    for chunk in all.chunks(500) {
        ids.extend(env.create_jobs(chunk).await);
    }
    ids
}

/// Puts `ids` straight into `status` (dead ones with an error and a finish time), as the worker
/// would have left them, without running them.
async fn force(env: &TestEnv, ids: &[JobId], status: Status) {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE jobs SET status = $2, attempts = max_attempts, last_error = 'boom',
                    completed_at = CASE WHEN $2 IN ('FAILED', 'COMPLETED', 'CANCELLED') THEN now() END,
                    lease_token = CASE WHEN $2 = 'IN_PROGRESS' THEN 1 ELSE lease_token END,
                    worker_id = CASE WHEN $2 = 'IN_PROGRESS' THEN 'w' END,
                    lease_expires_at = CASE WHEN $2 = 'IN_PROGRESS' THEN now() + interval '1 hour' END
             WHERE id = ANY($1)",
            &[&ids, &status.as_str()],
        )
        .await
        .expect("force status");
}

async fn statuses(env: &TestEnv, ids: &[JobId]) -> Vec<(String, i32, bool)> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let client = env.store.pool().get().await.expect("connection");
    client
        .query(
            "SELECT status, attempts, cancel_requested_at IS NOT NULL FROM jobs WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("statuses")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

fn filter(value: serde_json::Value) -> JobFilter {
    JobFilter::from_json(&value).expect("valid filter")
}

#[tokio::test]
async fn a_dry_run_counts_exactly_and_a_status_the_action_cannot_touch_is_refused() {
    let env = TestEnv::new().await;
    let a = jobs(&env, "a", 1200).await;
    let b = jobs(&env, "b", 30).await;
    force(&env, &a[..700], Status::Failed).await;
    force(&env, &a[700..800], Status::Completed).await;
    force(&env, &b, Status::Failed).await;

    let count = |value, action| {
        let env = &env;
        async move { env.jobs.bulk_count(&filter(value), action).await.expect("count") }
    };
    assert_eq!(count(json!({"queue": "a"}), BulkAction::Requeue).await, 700);
    assert_eq!(
        count(json!({"queue": "a", "payload": {"n": 1}}), BulkAction::Requeue).await,
        350
    );
    assert_eq!(count(json!({}), BulkAction::Requeue).await, 730);
    assert_eq!(count(json!({"queue": "a"}), BulkAction::Cancel).await, 400);
    assert_eq!(count(json!({"queue": "a"}), BulkAction::Delete).await, 800);
    assert_eq!(count(json!({"error": "boom"}), BulkAction::Delete).await, 830);
    assert_eq!(count(json!({"status": "COMPLETED"}), BulkAction::Delete).await, 100);

    let refused = env
        .jobs
        .bulk_count(&filter(json!({"status": "PENDING"})), BulkAction::Requeue)
        .await
        .expect_err("requeue applies to dead jobs only");
    assert!(
        matches!(refused, Error::InvalidFilter(ref f) if f.parameter == "status"),
        "{refused:?}"
    );
    assert_eq!(
        env.count_jobs(Some(Status::Failed)).await,
        730,
        "a count changes nothing"
    );
}

#[tokio::test]
async fn a_requeue_goes_through_every_match_in_batches_and_nothing_else() {
    let env = TestEnv::new().await;
    let a = jobs(&env, "a", 2 * BATCH as usize + 500).await;
    let b = jobs(&env, "b", 20).await;
    force(&env, &a, Status::Failed).await;
    force(&env, &b, Status::Failed).await;
    for id in a.iter().chain(&b) {
        env.queue.add_dead(*id).await.expect("dlq index");
    }

    // No time for the request itself: the processors do it all.
    let operation = env
        .jobs
        .start_bulk(
            &filter(json!({"queue": "a", "payload": {"n": 1}})),
            BulkAction::Requeue,
            &actor(),
            Duration::ZERO,
        )
        .await
        .expect("start");
    assert_eq!(operation.state, OperationState::Running);
    assert_eq!(operation.total, 1250);
    assert_eq!(operation.processed, 0);

    // A job that dies after the operation was asked for is not part of it.
    let later = jobs(&env, "a", 2).await;
    force(&env, &later, Status::Failed).await;

    let operations = Operations::new(env.store.clone(), env.queue.clone());
    let mut seen = Vec::new();
    loop {
        let current = env.store.operation(operation.id).await.expect("get").expect("exists");
        seen.push(current.processed);
        if current.state == OperationState::Done {
            assert_eq!(current.processed, 1250);
            assert_eq!(current.skipped, 0);
            assert!(current.finished_at.is_some());
            break;
        }
        assert!(seen.len() < 10, "still running after {seen:?}");
        // A fresh processor each batch, as after a crash between two: the row says where to go on.
        let outcome = Operations::new(env.store.clone(), env.queue.clone())
            .run_batch(&current)
            .await
            .expect("batch");
        assert!(outcome.owned);
        assert!(outcome.acted.len() <= BATCH as usize);
    }
    assert_eq!(seen, vec![0, 1000, 1250], "one batch of 1000, then the rest");
    assert_eq!(operations.run_once(Duration::from_secs(1)).await.expect("idle pass"), 0);

    let odd: Vec<JobId> = a
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, id)| *id)
        .collect();
    let even: Vec<JobId> = a
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, id)| *id)
        .collect();
    assert!(
        statuses(&env, &odd)
            .await
            .iter()
            .all(|(s, attempts, _)| s == "PENDING" && *attempts == 0)
    );
    assert!(statuses(&env, &even).await.iter().all(|(s, ..)| s == "FAILED"));
    assert!(statuses(&env, &b).await.iter().all(|(s, ..)| s == "FAILED"));
    assert!(statuses(&env, &later).await.iter().all(|(s, ..)| s == "FAILED"));

    // Redis follows: the requeued ids are ready and out of the DLQ index, the others untouched.
    let ready = env.queue.ready_ids().await.expect("ready");
    let dead = env.queue.dead_ids().await.expect("dead");
    for id in &odd {
        assert!(ready.contains(&id.to_string()), "{id} ready");
        assert!(!dead.contains(&id.to_string()), "{id} out of the DLQ index");
    }
    assert_eq!(dead.len(), 1250 + 20);

    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "bulk.requeue");
    assert_eq!(audit[0].operation_id, Some(operation.id));
    assert_eq!(audit[0].count, 1250);
    assert_eq!(audit[0].actor, "api-token");
    assert_eq!(audit[0].on_behalf_of.as_deref(), Some("ops@example"));
    assert_eq!(audit[0].filter, Some(json!({"queue": "a", "payload": {"n": 1}})));
}

#[tokio::test]
async fn processors_at_once_never_act_twice_and_a_cancel_asks_running_jobs_to_stop() {
    let env = TestEnv::new().await;
    let pending = jobs(&env, "c", 3 * BATCH as usize).await;
    let running = jobs(&env, "c", 40).await;
    force(&env, &running, Status::InProgress).await;
    let done = jobs(&env, "c", 10).await;
    force(&env, &done, Status::Completed).await;

    let operation = env
        .jobs
        .start_bulk(
            &filter(json!({"queue": "c"})),
            BulkAction::Cancel,
            &actor(),
            Duration::ZERO,
        )
        .await
        .expect("start");
    assert_eq!(operation.total, 3040);
    assert_eq!(
        operation.statuses,
        vec![Status::Pending, Status::Blocked, Status::InProgress]
    );

    // Four processors on the same operation at once: a batch acted on twice would show up as
    // skipped jobs (the second finds them cancelled already).
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let operations = Operations::new(env.store.clone(), env.queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut acted = 0;
            for _ in 0..40 {
                acted += operations.run_once(Duration::from_secs(5)).await.expect("pass");
            }
            acted
        }));
    }
    let mut acted = 0;
    for task in tasks {
        acted += task.await.expect("task");
    }
    let finished = env.store.operation(operation.id).await.expect("get").expect("exists");
    assert_eq!(finished.state, OperationState::Done);
    assert_eq!((finished.processed, finished.skipped), (3040, 0));
    assert_eq!(acted, 3040, "each job acted on once, by one processor");

    assert!(statuses(&env, &pending).await.iter().all(|(s, ..)| s == "CANCELLED"));
    assert!(
        statuses(&env, &running)
            .await
            .iter()
            .all(|(s, _, requested)| s == "IN_PROGRESS" && *requested)
    );
    assert!(
        statuses(&env, &done)
            .await
            .iter()
            .all(|(s, _, requested)| s == "COMPLETED" && !requested)
    );
    let ready = env.queue.ready_ids().await.expect("ready");
    assert!(
        pending.iter().all(|id| !ready.contains(&id.to_string())),
        "cancelled ids left Redis"
    );

    // Counted once each in the queue's outcomes.
    let client = env.store.pool().get().await.expect("connection");
    let cancelled: i64 = client
        .query_one(
            "SELECT sum(cancelled)::bigint FROM queue_throughput WHERE queue = 'c'",
            &[],
        )
        .await
        .expect("throughput")
        .get(0);
    assert_eq!(cancelled, 3000);
}

#[tokio::test]
async fn a_delete_takes_finished_jobs_with_their_history_and_leaves_the_rest() {
    let env = TestEnv::new().await;
    let all = jobs(&env, "d", 1500).await;
    force(&env, &all[..600], Status::Completed).await;
    force(&env, &all[600..900], Status::Failed).await;
    force(&env, &all[900..1000], Status::Cancelled).await;
    for id in &all[600..900] {
        env.queue.add_dead(*id).await.expect("dlq index");
    }
    let operation = env
        .jobs
        .start_bulk(
            &filter(json!({"queue": "d"})),
            BulkAction::Delete,
            &actor(),
            Duration::from_secs(30),
        )
        .await
        .expect("start");
    assert_eq!(
        operation.state,
        OperationState::Done,
        "done within the request's budget"
    );
    assert_eq!(
        (operation.total, operation.processed, operation.skipped),
        (1000, 1000, 0)
    );

    let client = env.store.pool().get().await.expect("connection");
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_listing), (SELECT count(*) FROM jobs WHERE status = 'PENDING')",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)),
        (500, 500, 500)
    );
    assert!(env.queue.dead_ids().await.expect("dead").is_empty());
}

#[tokio::test]
async fn single_actions_are_audited_newest_first_a_page_at_a_time() {
    let env = TestEnv::new().await;
    let ids = jobs(&env, "e", 3).await;
    for id in &ids {
        env.jobs.audit(&actor(), "job.cancel", *id).await;
    }
    let (first, next) = env.store.audit_log(None, 2).await.expect("page 1");
    assert_eq!(
        first.iter().map(|e| e.job_id).collect::<Vec<_>>(),
        vec![Some(ids[2]), Some(ids[1])]
    );
    let (second, last) = env.store.audit_log(next, 2).await.expect("page 2");
    assert_eq!(second.iter().map(|e| e.job_id).collect::<Vec<_>>(), vec![Some(ids[0])]);
    assert_eq!(last, None);
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|e| e.action == "job.cancel" && e.count == 1)
    );
}

#[tokio::test]
async fn an_operation_that_keeps_failing_says_why_and_does_not_hold_up_the_others() {
    let env = TestEnv::new().await;
    let dead = jobs(&env, "f", 5).await;
    force(&env, &dead, Status::Failed).await;
    let stuck = env
        .jobs
        .start_bulk(&filter(json!({})), BulkAction::Delete, &actor(), Duration::ZERO)
        .await
        .expect("start");
    // A filter this code cannot read any more (as after a downgrade): every batch of it fails.
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE operations SET filter = '{\"tenant\": 1}' WHERE id = $1",
            &[&stuck.id],
        )
        .await
        .expect("corrupt the filter");
    let other = env
        .jobs
        .start_bulk(&filter(json!({})), BulkAction::Requeue, &actor(), Duration::ZERO)
        .await
        .expect("start");

    let operations = Operations::new(env.store.clone(), env.queue.clone());
    assert_eq!(operations.run_once(Duration::from_secs(5)).await.expect("pass"), 5);
    let stuck = env.store.operation(stuck.id).await.expect("get").expect("exists");
    assert_eq!(stuck.state, OperationState::Running);
    assert!(
        stuck.last_error.as_deref().is_some_and(|e| e.contains("tenant")),
        "{:?}",
        stuck.last_error
    );
    let other = env.store.operation(other.id).await.expect("get").expect("exists");
    assert_eq!(
        (other.state, other.processed, other.last_error),
        (OperationState::Done, 5, None)
    );
}
