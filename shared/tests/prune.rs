//! Retention: finished jobs are deleted once their retention has passed, with their attempts,
//! their listing rows and (dead ones) their DLQ index entry; nothing else is, and a row another
//! transaction holds is skipped rather than waited for.

use std::time::Duration;

use jobq_shared::bulk::Actor;
use jobq_shared::config::Retention;
use jobq_shared::health::{RetentionChange, SettingsChange};
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::pruner::{BATCH, Pruned, Pruner};
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob, Status};
use serde_json::json;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Moves the jobs' creation and finish (and their attempts) `days` into the past.
async fn age(env: &TestEnv, ids: &[JobId], days: i32) {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let client = env.store.pool().get().await.expect("connection");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .expect("unbounded");
    for statement in [
        "UPDATE jobs SET created_at = created_at - make_interval(days => $2),
                         completed_at = completed_at - make_interval(days => $2)
         WHERE id = ANY($1)",
        "UPDATE job_listing SET created_at = created_at - make_interval(days => $2) WHERE id = ANY($1)",
    ] {
        client.execute(statement, &[&ids, &days]).await.expect("age");
    }
}

async fn exists(env: &TestEnv, id: JobId) -> (bool, bool, i64) {
    let client = env.store.pool().get().await.expect("connection");
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT FROM jobs WHERE id = $1), EXISTS (SELECT FROM job_listing WHERE id = $1),
                    (SELECT count(*) FROM job_attempt_history WHERE job_id = $1)",
            &[&id.0],
        )
        .await
        .expect("exists");
    (row.get(0), row.get(1), row.get(2))
}

async fn finished(env: &TestEnv, status: Status) -> JobId {
    finished_in(env, status, "default").await
}

async fn finished_in(env: &TestEnv, status: Status, queue: &str) -> JobId {
    if status == Status::Blocked {
        let parent = env.create_job(NewJob::new("TEST", json!({}))).await;
        return env.create_job(NewJob::new("TEST", json!({})).depends_on(parent)).await;
    }
    let id = env.create_job(NewJob::new("TEST", json!({})).queue(queue)).await;
    let now = env.store.now().await;
    match status {
        Status::Completed => {
            let lease = env.claim_job(id, "w", now, LEASE).await;
            env.store.complete(&lease, now).await.expect("complete");
        }
        Status::Failed => {
            let lease = env.claim_job(id, "w", now, LEASE).await;
            env.store
                .fail(&lease, now, "boom", false, now, Outcome::Failed)
                .await
                .expect("bury");
            env.queue.add_dead(id).await.expect("dlq index");
        }
        Status::Cancelled => {
            env.jobs.cancel(id, now).await.expect("cancel");
        }
        Status::Pending | Status::Blocked => {}
        Status::InProgress => {
            env.claim_job(id, "w", now, LEASE).await;
        }
    }
    id
}

#[tokio::test]
async fn finished_jobs_past_their_retention_go_with_their_attempts_and_nothing_else_does() {
    let env = TestEnv::new().await;
    let completed_old = finished(&env, Status::Completed).await;
    let completed_new = finished(&env, Status::Completed).await;
    let cancelled_old = finished(&env, Status::Cancelled).await;
    let cancelled_new = finished(&env, Status::Cancelled).await;
    let dead_old = finished(&env, Status::Failed).await;
    let dead_mid = finished(&env, Status::Failed).await;
    let pending_old = finished(&env, Status::Pending).await;
    let running_old = finished(&env, Status::InProgress).await;
    let blocked_old = finished(&env, Status::Blocked).await;
    age(
        &env,
        &[
            completed_old,
            cancelled_old,
            dead_mid,
            pending_old,
            running_old,
            blocked_old,
        ],
        8,
    )
    .await;
    age(&env, &[completed_new, cancelled_new], 1).await;
    age(&env, &[dead_old], 31).await;
    assert_eq!(exists(&env, completed_old).await, (true, true, 1));

    let pruner = Pruner::new(env.store.clone(), env.queue.clone(), Retention::default());
    assert_eq!(
        pruner.run_once().await.expect("prune"),
        Pruned {
            completed: 1,
            cancelled: 1,
            dead: 1
        }
    );
    for gone in [completed_old, cancelled_old, dead_old] {
        assert_eq!(exists(&env, gone).await, (false, false, 0), "{gone}");
    }
    for kept in [
        completed_new,
        cancelled_new,
        dead_mid,
        pending_old,
        running_old,
        blocked_old,
    ] {
        assert!(exists(&env, kept).await.0, "{kept} was deleted");
    }
    let dlq = env.queue.dead_ids().await.expect("dlq index");
    assert!(!dlq.contains(&dead_old.to_string()), "{dlq:?}");
    assert!(dlq.contains(&dead_mid.to_string()), "{dlq:?}");
    // A second pass finds nothing more.
    assert_eq!(pruner.run_once().await.expect("prune"), Pruned::default());

    // A status kept for ever is never pruned; a shorter retention reaches further.
    let forever = Retention {
        completed: None,
        cancelled: Some(Duration::from_secs(3600)),
        dead: Some(5 * DAY),
    };
    let pruner = Pruner::new(env.store.clone(), env.queue.clone(), forever);
    age(&env, &[completed_new], 30).await;
    assert_eq!(
        pruner.run_once().await.expect("prune"),
        Pruned {
            completed: 0,
            cancelled: 1,
            dead: 1
        }
    );
    assert!(exists(&env, completed_new).await.0);
    assert!(!exists(&env, cancelled_new).await.0);
    assert!(!exists(&env, dead_mid).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_another_transaction_holds_is_skipped_not_waited_for() {
    let env = TestEnv::new().await;
    let held = finished(&env, Status::Completed).await;
    let free = finished(&env, Status::Completed).await;
    age(&env, &[held, free], 10).await;

    let mut holder = env.store.pool().get().await.expect("connection");
    let tx = holder.transaction().await.expect("begin");
    tx.execute("SELECT FROM jobs WHERE id = $1 FOR UPDATE", &[&held.0])
        .await
        .expect("lock");

    let pruner = Pruner::new(env.store.clone(), env.queue.clone(), Retention::default());
    let pruned = tokio::time::timeout(Duration::from_secs(10), pruner.run_once())
        .await
        .expect("the pass waited on the held row")
        .expect("prune");
    assert_eq!(pruned.completed, 1);
    assert!(exists(&env, held).await.0);
    assert!(!exists(&env, free).await.0);

    tx.commit().await.expect("commit");
    assert_eq!(pruner.run_once().await.expect("prune").completed, 1);
    assert!(!exists(&env, held).await.0);
}

#[tokio::test]
async fn a_pass_deletes_at_most_its_batches() {
    let env = TestEnv::new().await;
    let total = BATCH as usize + 500;
    let mut ids = Vec::with_capacity(total);
    for chunk in 0..total.div_ceil(1000) {
        let n = (total - chunk * 1000).min(1000);
        ids.extend(env.create_jobs(&vec![NewJob::new("TEST", json!({})); n]).await);
    }
    let raw: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE jobs SET status = 'COMPLETED', completed_at = now() WHERE id = ANY($1)",
            &[&raw],
        )
        .await
        .expect("complete");
    age(&env, &ids, 8).await;

    let pruner = Pruner::new(env.store.clone(), env.queue.clone(), Retention::default()).with_max_batches(1);
    assert_eq!(pruner.run_once().await.expect("prune").completed, BATCH as usize);
    assert_eq!(pruner.run_once().await.expect("prune").completed, 500);
    assert_eq!(env.count_jobs(None).await, 0);
}

#[tokio::test]
async fn a_queue_keeps_its_jobs_for_its_own_retention_and_the_others_for_the_default() {
    let env = TestEnv::new().await;
    let actor = Actor {
        principal: "test".into(),
        on_behalf_of: None,
    };
    let day_ms = DAY.as_millis() as i64;
    // "brief" keeps completed jobs 1 day and dead ones 2; "archive" keeps completed ones for
    // ever; "plain" has the default (7 days, 7, 30).
    let brief = RetentionChange {
        completed_ms: Some(Some(day_ms)),
        dead_ms: Some(Some(2 * day_ms)),
        ..Default::default()
    };
    let archive = RetentionChange {
        completed_ms: Some(Some(0)),
        ..Default::default()
    };
    for (queue, retention) in [("brief", brief), ("archive", archive)] {
        let change = SettingsChange {
            retention,
            ..Default::default()
        };
        env.jobs.set_queue(queue, change, &actor).await.expect("retention");
    }
    let brief_done = finished_in(&env, Status::Completed, "brief").await;
    let brief_cancelled = finished_in(&env, Status::Cancelled, "brief").await;
    let brief_dead = finished_in(&env, Status::Failed, "brief").await;
    let archive_done = finished_in(&env, Status::Completed, "archive").await;
    let archive_cancelled = finished_in(&env, Status::Cancelled, "archive").await;
    let plain_done = finished_in(&env, Status::Completed, "plain").await;
    let plain_dead = finished_in(&env, Status::Failed, "plain").await;
    age(
        &env,
        &[
            brief_done,
            brief_cancelled,
            brief_dead,
            archive_done,
            archive_cancelled,
            plain_done,
            plain_dead,
        ],
        3,
    )
    .await;

    let pruner = Pruner::new(env.store.clone(), env.queue.clone(), Retention::default());
    assert_eq!(
        pruner.run_once().await.expect("prune"),
        Pruned {
            completed: 1,
            cancelled: 0,
            dead: 1
        }
    );
    assert!(!exists(&env, brief_done).await.0 && !exists(&env, brief_dead).await.0);
    for kept in [brief_cancelled, archive_done, archive_cancelled, plain_done, plain_dead] {
        assert!(exists(&env, kept).await.0, "{kept} was deleted");
    }

    // 60 days on: the default reaches the rest, but never "archive"'s completed job.
    age(
        &env,
        &[brief_cancelled, archive_done, archive_cancelled, plain_done, plain_dead],
        60,
    )
    .await;
    assert_eq!(
        pruner.run_once().await.expect("prune"),
        Pruned {
            completed: 1,
            cancelled: 2,
            dead: 1
        }
    );
    assert!(exists(&env, archive_done).await.0);
    assert_eq!(env.count_jobs(None).await, 1);

    // Back to the default: the next pass takes it.
    let change = SettingsChange {
        retention: RetentionChange {
            completed_ms: Some(None),
            ..Default::default()
        },
        ..Default::default()
    };
    env.jobs
        .set_queue("archive", change, &actor)
        .await
        .expect("default again");
    assert_eq!(pruner.run_once().await.expect("prune").completed, 1);
    assert_eq!(env.count_jobs(None).await, 0);
}
