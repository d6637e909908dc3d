//! Job dependencies: a job created with `dependsOn` is BLOCKED until every parent has completed,
//! then runs; a parent that dies keeps it blocked and says so; nothing is lost to a race between a
//! child's create and its parent's completion, or to a worker that stops between a completion and
//! the release of its children.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::{Running, wait_for};
use jobq_shared::handler::{HandlerError, JobContext, JobHandler};
use jobq_shared::job::{Parent, WaitingOn};
use jobq_shared::maintenance::repairer::Repairer;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Error, JobId, NewJob, Registry, Status};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);
const SOON: Duration = Duration::from_secs(10);

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_900_000_000_000 + ms).expect("valid time")
}

/// Records the order in which jobs ran, by payload name; fails those named `fail`.
#[derive(Clone, Default)]
struct Recorder {
    ran: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let name = job.payload["name"].as_str().unwrap_or_default().to_owned();
        // Long enough that a child started too early would be seen beside its parent.
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.ran.lock().expect("lock").push(name.clone());
        if job.payload["fail"].as_bool().unwrap_or(false) {
            return Err(HandlerError::permanent("told to fail"));
        }
        Ok(())
    }
}

fn step(name: &str) -> NewJob {
    NewJob::new("STEP", json!({"name": name}))
}

/// Asserts that `job` is blocked on `parent` alone, which is in `status`.
#[track_caller]
fn assert_waits_on(job: &jobq_shared::Job, parent: JobId, status: Status) {
    assert_eq!(job.status, Status::Blocked, "{job:?}");
    let expected = vec![WaitingOn {
        job_id: parent,
        status: Some(status),
    }];
    assert_eq!(job.waiting_on.as_ref(), Some(&expected), "{job:?}");
}

/// Claims and completes `id` at `ms`; returns the ids of the children that completion released.
async fn run_at(env: &TestEnv, id: JobId, ms: i64) -> Vec<JobId> {
    let lease = env.claim_job(id, "w1", at(ms), LEASE).await;
    let released = env.store.complete(&lease, at(ms + 1)).await.expect("complete");
    released.into_iter().map(|ready| ready.id).collect()
}

fn position(ran: &[String], name: &str) -> usize {
    ran.iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("{name} did not run: {ran:?}"))
}

#[tokio::test]
async fn a_child_is_blocked_until_its_parent_completes_then_runs_after_it() {
    let env = TestEnv::with(|c| c.worker.concurrency = 4).await;
    let parent = env.create_job(step("parent")).await;
    let child = env.create_job(step("child").depends_on(parent)).await;

    let blocked = env.store.get(child).await.expect("get");
    assert_eq!(blocked.status, Status::Blocked);
    assert_waits_on(&blocked, parent, Status::Pending);
    // Only the parent is in Redis: nothing pops a blocked job.
    let ready = env.queue.ready_ids().await.expect("ready ids");
    assert_eq!(ready, vec![parent.to_string()]);

    let recorder = Recorder::default();
    let running = Running::start(&env, Registry::with_builtins().register("STEP", recorder.clone()));
    wait_for(&env, child, Status::Completed, SOON).await;
    running.stop().await;
    let ran = recorder.ran.lock().expect("lock").clone();
    assert_eq!(ran, vec!["parent", "child"]);
    let parent_job = env.store.get(parent).await.expect("parent");
    let child_job = env.store.get(child).await.expect("child");
    assert!(
        child_job.started_at > parent_job.completed_at,
        "{child_job:?} {parent_job:?}"
    );
    assert_eq!(child_job.waiting_on, None);
}

#[tokio::test]
async fn a_batch_names_earlier_items_by_index_and_a_diamond_runs_in_order() {
    let env = TestEnv::with(|c| c.worker.concurrency = 4).await;
    let ids = env
        .create_jobs(&[
            step("a"),
            step("b").depends_on(Parent::Earlier(0)),
            step("c").depends_on(Parent::Earlier(0)),
            step("d").depends_on(Parent::Earlier(1)).depends_on(Parent::Earlier(2)),
        ])
        .await;
    let statuses: Vec<Status> = futures::future::join_all(ids.iter().map(|id| env.store.get(*id)))
        .await
        .into_iter()
        .map(|job| job.expect("get").status)
        .collect();
    assert_eq!(
        statuses,
        vec![Status::Pending, Status::Blocked, Status::Blocked, Status::Blocked]
    );

    let recorder = Recorder::default();
    let running = Running::start(&env, Registry::with_builtins().register("STEP", recorder.clone()));
    wait_for(&env, ids[3], Status::Completed, SOON).await;
    running.stop().await;
    let ran = recorder.ran.lock().expect("lock").clone();
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert!(position(&ran, "a") < position(&ran, "b"), "{ran:?}");
    assert!(position(&ran, "a") < position(&ran, "c"), "{ran:?}");
    assert!(position(&ran, "b") < position(&ran, "d"), "{ran:?}");
    assert!(position(&ran, "c") < position(&ran, "d"), "{ran:?}");
}

#[tokio::test]
async fn a_child_of_a_completed_parent_is_pending_at_once() {
    let env = TestEnv::new().await;
    let parent = env.create_job_at(step("parent"), at(0)).await;
    run_at(&env, parent, 1).await;
    let child = env.create_job_at(step("child").depends_on(parent), at(3)).await;
    assert_eq!(env.store.get(child).await.expect("get").status, Status::Pending);
    assert!(env.queue.ready_ids().await.expect("ready").contains(&child.to_string()));
}

#[tokio::test]
async fn an_unknown_parent_is_refused_and_nothing_is_stored() {
    let env = TestEnv::new().await;
    let parent = env.create_job(step("parent")).await;
    let ghost = JobId::new();
    let result = env
        .store
        .create_many(
            &[step("ok"), step("child").depends_on(parent).depends_on(ghost)],
            60_000,
            at(0),
        )
        .await;
    assert!(
        matches!(&result, Err(Error::UnknownParents(ids)) if ids == &vec![ghost]),
        "{result:?}"
    );
    assert_eq!(env.count_jobs(None).await, 1, "only the parent");
}

#[tokio::test]
async fn a_dead_parent_keeps_its_child_blocked_with_the_reason_until_it_is_requeued_and_completes() {
    let env = TestEnv::new().await;
    let parent = env.create_job_at(step("parent"), at(0)).await;
    let child = env.create_job_at(step("child").depends_on(parent), at(0)).await;
    let lease = env.claim_job(parent, "w1", at(1), LEASE).await;
    env.store
        .fail(&lease, at(2), "broken", false, at(2), jobq_shared::job::Outcome::Failed)
        .await
        .expect("fail");

    let blocked = env.store.get(child).await.expect("get");
    assert_eq!(blocked.status, Status::Blocked);
    assert_waits_on(&blocked, parent, Status::Failed);

    env.store.requeue(parent, at(3)).await.expect("requeue");
    let released = run_at(&env, parent, 4).await;
    assert_eq!(released, vec![child]);
    let job = env.store.get(child).await.expect("get");
    assert_eq!(job.status, Status::Pending);
    // Due from its release, not from its creation: its wait for the parent is not a backlog.
    assert_eq!(job.run_at, at(5));
}

#[tokio::test]
async fn a_blocked_job_can_be_cancelled() {
    let env = TestEnv::new().await;
    let parent = env.create_job_at(step("parent"), at(0)).await;
    let child = env.create_job_at(step("child").depends_on(parent), at(0)).await;
    let cancelled = env.store.cancel(child, at(1)).await.expect("cancel");
    assert_eq!(cancelled.status, Status::Cancelled);
    // The parent's completion leaves a cancelled child alone.
    assert!(run_at(&env, parent, 2).await.is_empty());
    assert_eq!(env.store.get(child).await.expect("get").status, Status::Cancelled);
}

/// Two parents completing in separate statements, one child: whichever completes last releases it.
#[tokio::test]
async fn a_child_waits_for_every_parent() {
    let env = TestEnv::new().await;
    let first = env.create_job_at(step("first"), at(0)).await;
    let second = env.create_job_at(step("second"), at(0)).await;
    let child = env
        .create_job_at(step("child").depends_on(first).depends_on(second), at(0))
        .await;
    assert!(run_at(&env, first, 1).await.is_empty());
    let job = env.store.get(child).await.expect("get");
    assert_eq!(job.status, Status::Blocked);
    assert_waits_on(&job, second, Status::Pending);
    let released = run_at(&env, second, 3).await;
    assert_eq!(released, vec![child]);
}

/// A child created while its parent completes, many times over: the child always ends runnable,
/// whichever of the two commits first.
#[tokio::test]
async fn a_child_created_while_its_parent_completes_is_never_left_blocked() {
    let env = TestEnv::new().await;
    for round in 0..60 {
        let parent = env.create_job_at(step("parent"), at(round)).await;
        let lease = env.claim_job(parent, "w1", at(round), LEASE).await;
        let store = env.store.clone();
        let completing = tokio::spawn(async move { store.complete(&lease, at(round + 1)).await });
        // Stagger the create a little either side of the completion.
        if round % 3 == 1 {
            tokio::task::yield_now().await;
        }
        let child = env
            .store
            .create(&step("child").depends_on(parent), 60_000, at(round + 1))
            .await
            .expect("create child");
        let released = completing.await.expect("task").expect("complete");
        let job = env.store.get(child.job.id).await.expect("get");
        let released_here = released.iter().any(|r| r.id == child.job.id);
        assert_eq!(
            job.status,
            Status::Pending,
            "round {round}: child {} created {:?}, released by the completion: {released_here}",
            child.job.id,
            child.job.status
        );
        assert!(
            child.job.status == Status::Pending || released_here,
            "round {round}: a child created blocked must be released by the completion"
        );
    }
}

#[tokio::test]
async fn the_repairer_releases_children_whose_release_never_followed_the_completion() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let parent = env.create_job_at(step("parent"), now).await;
    let child = env.create_job_at(step("child").depends_on(parent), now).await;
    // The completion as complete_many.sql writes it, without the release that follows it: a worker
    // that stopped in between.
    let client = env.store.pool().get().await.expect("connection");
    env.claim_job(parent, "w1", now, LEASE).await;
    client
        .execute(
            "UPDATE jobs SET status = 'COMPLETED', completed_at = $2, lease_expires_at = NULL, worker_id = NULL,
                 dependents_pending = has_dependents
             WHERE id = $1",
            &[&parent.0, &now],
        )
        .await
        .expect("complete without release");
    assert_eq!(env.store.get(child).await.expect("get").status, Status::Blocked);

    let repairer = Repairer::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30));
    // Not yet: the completion may still be about to release it.
    let early = repairer
        .run_once(now + chrono::Duration::seconds(1))
        .await
        .expect("repair");
    assert_eq!(early.released, 0);
    let repaired = repairer
        .run_once(now + chrono::Duration::seconds(31))
        .await
        .expect("repair");
    assert_eq!(repaired.released, 1);
    assert_eq!(env.store.get(child).await.expect("get").status, Status::Pending);
    assert!(env.queue.ready_ids().await.expect("ready").contains(&child.to_string()));
    let again = repairer
        .run_once(now + chrono::Duration::seconds(62))
        .await
        .expect("repair");
    assert_eq!(again.released, 0, "the flag is cleared once released");
}

/// A batch that replays a stored parent by its key and adds a child of it: the child waits on the
/// stored job, not on the id the batch would have given a new one.
#[tokio::test]
async fn a_child_of_a_replayed_batch_item_waits_on_the_stored_job() {
    let env = TestEnv::new().await;
    let parent = env
        .create_job_at(step("parent").idempotency_key("parent-1"), at(0))
        .await;
    let results = env
        .store
        .create_many(
            &[
                step("parent").idempotency_key("parent-1"),
                step("child").depends_on(Parent::Earlier(0)),
            ],
            60_000,
            at(1),
        )
        .await
        .expect("create");
    let replay = results[0].as_ref().expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.job.id, parent);
    let child = results[1].as_ref().expect("child").job.id;
    let job = env.store.get(child).await.expect("get");
    assert_waits_on(&job, parent, Status::Pending);
    let released = run_at(&env, parent, 2).await;
    assert_eq!(released, vec![child]);
}

#[tokio::test]
async fn an_index_that_is_not_of_an_earlier_item_is_refused() {
    let env = TestEnv::new().await;
    let result = env
        .store
        .create_many(&[step("a").depends_on(Parent::Earlier(0))], 60_000, at(0))
        .await;
    assert!(
        matches!(&result, Err(Error::Invalid(invalid)) if invalid.field == "dependsOn"),
        "{result:?}"
    );
    assert_eq!(env.count_jobs(None).await, 0);
}

#[tokio::test]
async fn queue_health_counts_blocked_jobs_apart_from_completed_ones() {
    let env = TestEnv::new().await;
    let parent = env.create_job_at(step("parent"), at(0)).await;
    env.create_job_at(step("child").depends_on(parent), at(0)).await;
    let health = env.store.queue_health(Some("default"), 10_000).await.expect("health");
    let counts: Vec<(Status, i64)> = health[0].counts.iter().map(|c| (c.status, c.count)).collect();
    assert_eq!(
        counts,
        vec![
            (Status::Pending, 1),
            (Status::Blocked, 1),
            (Status::InProgress, 0),
            (Status::Completed, 0),
            (Status::Failed, 0),
            (Status::Cancelled, 0),
        ]
    );
}
