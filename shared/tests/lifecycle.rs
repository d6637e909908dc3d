//! The seed's flows and the worker engine, end to end against real Postgres and Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::{Running, wait_for};
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::{HandlerError, JobContext, JobHandler, NewJob, Registry, Status};
use serde_json::json;

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_plain_job_completes() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, Registry::with_builtins());
    let created = env
        .jobs
        .create(&NewJob::new("TEST", json!("hello")), Utc::now())
        .await
        .expect("create");
    assert_eq!(created.job.status, Status::Pending);

    let job = wait_for(&env, created.job.id, Status::Completed, SOON).await;

    assert_eq!(job.attempts, 1);
    assert!(job.completed_at.is_some());
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, Outcome::Succeeded);
    let summary = running.stop().await;
    assert_eq!(summary.completed, 1);
}

#[tokio::test]
async fn fail_times_2_completes_on_the_third_attempt_with_its_failures_in_history() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, Registry::with_builtins());
    let id = env.create_job(NewJob::new("TEST", json!("FAIL_TIMES=2"))).await;

    let job = wait_for(&env, id, Status::Completed, SOON).await;

    assert_eq!(job.attempts, 3);
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Failed, Outcome::Failed, Outcome::Succeeded]);
    assert!(job.history[0].error.as_deref().unwrap_or("").contains("FAIL_TIMES=2"));
    running.stop().await;
}

#[tokio::test]
async fn fail_always_is_dead_after_three_attempts_and_runs_again_after_requeue() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, Registry::with_builtins());
    let id = env.create_job(NewJob::new("TEST", json!("FAIL_ALWAYS"))).await;

    let dead = wait_for(&env, id, Status::Failed, SOON).await;
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.as_deref().unwrap_or("").contains("FAIL_ALWAYS"));
    let page = env.jobs.list_dead(None, 10).await.expect("dlq");
    assert_eq!(page.items.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(env.queue.dead_ids().await.expect("dlq list"), vec![id.to_string()]);

    let requeued = env.jobs.requeue(id, Utc::now()).await.expect("requeue");
    assert_eq!(requeued.status, Status::Pending);
    assert_eq!(requeued.attempts, 0);
    assert!(env.queue.dead_ids().await.expect("dlq list").is_empty());

    let dead_again = wait_for(&env, id, Status::Failed, SOON).await;
    assert_eq!(dead_again.attempts, 3);
    assert_eq!(
        dead_again.history.len(),
        6,
        "the first three attempts stay in the history"
    );
    assert_eq!(dead_again.history.iter().filter(|a| a.attempt == 1).count(), 2);
    running.stop().await;
}

#[tokio::test]
async fn a_scheduled_job_does_not_run_before_its_time() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, Registry::with_builtins());
    let created_at = Utc::now();
    let new = NewJob::new("TEST", json!("later")).delay(Duration::from_millis(1500));
    let id = env.create_job_at(new, created_at).await;

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(env.jobs.get(id).await.expect("get").status, Status::Pending);

    let job = wait_for(&env, id, Status::Completed, SOON).await;
    let started = job.history[0].started_at;
    assert!(
        started >= created_at + chrono::Duration::milliseconds(1500),
        "started {started}, created {created_at}"
    );
    running.stop().await;
}

/// Records the order in which jobs start.
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .expect("lock")
            .push(job.payload.as_str().unwrap_or_default().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn higher_priority_jobs_run_first() {
    let env = TestEnv::with(|c| c.worker.concurrency = 1).await;
    let now = Utc::now();
    for (name, priority) in [("low", 0), ("mid", 50), ("high", 100), ("mid2", 50)] {
        env.create_job_at(NewJob::new("REC", json!(name)).priority(priority), now)
            .await;
    }
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let running = Running::start(&env, Registry::new().register("REC", Recorder(order.clone())));
    let give_up = tokio::time::Instant::now() + SOON;
    while order.lock().expect("lock").len() < 4 {
        assert!(tokio::time::Instant::now() < give_up, "jobs did not all run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    assert_eq!(*order.lock().expect("lock"), vec!["high", "mid", "mid2", "low"]);
}

#[tokio::test]
async fn a_job_no_worker_here_can_run_is_never_charged_and_runs_once_a_worker_has_its_handler() {
    let env = TestEnv::new().await;
    let id = env
        .create_job(NewJob::new("ADDED_LATER", json!({})).max_attempts(1))
        .await;
    // A worker from before the deploy that adds the type: it must not dead-letter the job.
    let old = Running::start(&env, Registry::with_builtins());
    let until = tokio::time::Instant::now() + SOON;
    loop {
        let job = env.jobs.get(id).await.expect("get");
        if job.history.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "not taken and given back twice: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = old.stop().await;
    let job = env.jobs.get(id).await.expect("get");
    assert_eq!(job.status, Status::Pending, "{job:?}");
    assert_eq!(job.attempts, 0, "no attempt charged");
    assert!(summary.deferred >= 2, "{summary:?}");
    assert!(job.history.iter().all(|a| a.outcome == Outcome::Released));
    assert!(
        job.history[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no handler registered for job type \"ADDED_LATER\"")
    );

    // The new deploy has the handler: the job runs, on its one and only counted attempt.
    let new = Running::start(&env, Registry::with_builtins().register("ADDED_LATER", Succeeds));
    let job = wait_for(&env, id, Status::Completed, SOON).await;
    assert_eq!(job.attempts, 1);
    new.stop().await;
}

struct Succeeds;

#[async_trait]
impl JobHandler for Succeeds {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

struct Panics(Arc<AtomicUsize>);

#[async_trait]
impl JobHandler for Panics {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if job.attempt == 1 {
            panic!("boom on attempt one");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_costs_one_attempt_not_the_worker() {
    let env = TestEnv::new().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let running = Running::start(
        &env,
        Registry::with_builtins().register("PANICS", Panics(calls.clone())),
    );
    let id = env.create_job(NewJob::new("PANICS", json!(null))).await;
    let job = wait_for(&env, id, Status::Completed, SOON).await;
    assert_eq!(job.attempts, 2);
    assert!(
        job.history[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("handler panicked: boom on attempt one")
    );

    // The same worker goes on running other jobs.
    let other = env.create_job(NewJob::new("TEST", json!("after"))).await;
    wait_for(&env, other, Status::Completed, SOON).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    running.stop().await;
}

/// Sleeps for a long time and notes whether it ever got to the end.
struct Stuck {
    finished: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

#[async_trait]
impl JobHandler for Stuck {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A cancel requested while the job runs reaches its worker at the next heartbeat: the handler is
/// stopped (it never reaches its end) and the job and its attempt end CANCELLED, uncharged by a
/// retry; the slot is free for the next job.
#[tokio::test]
async fn a_running_job_whose_cancel_is_requested_is_stopped_at_its_next_heartbeat_and_cancelled() {
    let env = TestEnv::with(|c| {
        c.worker.concurrency = 1;
        c.worker.lease = Duration::from_millis(1500);
        c.worker.heartbeat = Duration::from_millis(300);
    })
    .await;
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let registry = Registry::with_builtins().register(
        "STUCK",
        Stuck {
            finished: finished.clone(),
            started: started.clone(),
        },
    );
    let running = Running::start(&env, registry);
    let id = env
        .jobs
        .create(&NewJob::new("STUCK", json!(null)).max_attempts(3), Utc::now())
        .await
        .expect("create")
        .job
        .id;
    wait_for(&env, id, Status::InProgress, SOON).await;
    let asked = std::time::Instant::now();
    let requested = env.jobs.cancel(id, Utc::now()).await.expect("cancel");
    assert!(
        matches!(requested, jobq_shared::jobs::Cancellation::Requested(_)),
        "{requested:?}"
    );

    let job = wait_for(&env, id, Status::Cancelled, SOON).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "stopped {took:?} after the request");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the handler never reached its end");
    assert_eq!(started.load(Ordering::SeqCst), 1);
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Cancelled]);
    assert!(job.completed_at.is_some() && job.lease_expires_at.is_none());
    assert_eq!(
        job.history[0].error.as_deref(),
        Some(jobq_shared::worker::CANCELLED_ON_REQUEST)
    );
    // The one slot is free again: another job runs.
    let next = env
        .jobs
        .create(&NewJob::new("TEST", json!("x")), Utc::now())
        .await
        .expect("create")
        .job
        .id;
    wait_for(&env, next, Status::Completed, SOON).await;
    let summary = running.stop().await;
    assert_eq!((summary.cancelled, summary.completed), (1, 1), "{summary:?}");
}

#[tokio::test]
async fn a_handler_that_overruns_its_timeout_is_cancelled_and_the_attempt_fails() {
    let env = TestEnv::with(|c| c.worker.concurrency = 1).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let registry = Registry::with_builtins().register(
        "STUCK",
        Stuck {
            finished: finished.clone(),
            started: started.clone(),
        },
    );
    let running = Running::start(&env, registry);
    let new = NewJob::new("STUCK", json!(null))
        .timeout(Duration::from_millis(200))
        .max_attempts(2);
    let id = env.create_job(new).await;

    let job = wait_for(&env, id, Status::Failed, SOON).await;

    assert_eq!(job.attempts, 2);
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 200 ms")
    );
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a cancelled handler never reaches its end"
    );
    // The one slot is free again: another job runs.
    let next = env.create_job(NewJob::new("TEST", json!("x"))).await;
    wait_for(&env, next, Status::Completed, SOON).await;
    running.stop().await;
}

#[tokio::test]
async fn shutdown_lets_short_jobs_finish_and_releases_the_rest_to_another_worker() {
    let env = TestEnv::with(|c| {
        c.worker.concurrency = 4;
        c.worker.shutdown_grace = Duration::from_millis(500);
        c.worker.lease = Duration::from_secs(30);
        c.worker.heartbeat = Duration::from_secs(5);
    })
    .await;
    let now = Utc::now();
    let short = env.create_job_at(NewJob::new("TEST", json!("SLEEP_MS=100")), now).await;
    let long = env
        .create_job_at(NewJob::new("TEST", json!("SLEEP_MS=20000")), now)
        .await;
    let running = Running::start(&env, Registry::with_builtins());
    wait_for(&env, long, Status::InProgress, SOON).await;
    wait_for(&env, short, Status::InProgress, SOON).await;

    let summary = running.stop().await;

    assert_eq!(summary.completed, 1);
    assert_eq!(summary.released, 1);
    assert_eq!(env.jobs.get(short).await.expect("get").status, Status::Completed);
    let released = env.jobs.get(long).await.expect("get");
    assert_eq!(released.status, Status::Pending);
    assert_eq!(released.attempts, 0, "a released attempt does not count");
    assert_eq!(released.history.last().map(|a| a.outcome), Some(Outcome::Released));
    // Its id is back at the head of the ready list, so the next worker takes it at once.
    assert_eq!(
        env.queue.ready_ids().await.expect("ready").first(),
        Some(&long.to_string())
    );
}

#[tokio::test]
async fn a_job_released_unfinished_again_and_again_is_charged_past_the_free_releases() {
    let env = TestEnv::with(|c| {
        c.worker.shutdown_grace = Duration::from_millis(200);
        c.worker.lease = Duration::from_secs(30);
        c.worker.heartbeat = Duration::from_secs(5);
    })
    .await;
    let long = env
        .create_job(NewJob::new("TEST", json!("SLEEP_MS=20000")).max_attempts(5))
        .await;
    for round in 1..=jobq_shared::worker::MAX_FREE_RELEASES + 1 {
        let running = Running::start(&env, Registry::with_builtins());
        wait_for(&env, long, Status::InProgress, SOON).await;
        let summary = running.stop().await;
        let job = env.jobs.get(long).await.expect("get");
        assert_eq!(job.status, Status::Pending, "round {round}");
        if round <= jobq_shared::worker::MAX_FREE_RELEASES {
            assert_eq!(summary.released, 1, "round {round}: {summary:?}");
            assert_eq!(job.attempts, 0, "round {round}: a release is free up to the bound");
        } else {
            assert_eq!(summary.retried, 1, "round {round}: {summary:?}");
            assert_eq!(job.attempts, 1, "past the bound the attempt counts");
            let last = job.history.last().expect("history");
            assert_eq!(last.outcome, Outcome::Failed);
            assert!(
                last.error
                    .as_deref()
                    .is_some_and(|e| e.contains("given back 3 times before")),
                "{last:?}"
            );
        }
    }
}

#[tokio::test]
async fn many_jobs_run_concurrently_and_each_completes_once() {
    let env = TestEnv::with(|c| c.worker.concurrency = 8).await;
    let running = Running::start(&env, Registry::with_builtins());
    let mut ids = Vec::new();
    for i in 0..200 {
        let payload = if i % 10 == 0 { json!("FAIL_TIMES=1") } else { json!(i) };
        ids.push(env.create_job(NewJob::new("TEST", payload)).await);
    }
    for id in &ids {
        wait_for(&env, *id, Status::Completed, Duration::from_secs(30)).await;
    }
    let summary = running.stop().await;
    assert_eq!(summary.completed, 200);
    assert_eq!(summary.retried, 20);
    let client = env.store.pool().get().await.expect("conn");
    let succeeded: i64 = client
        .query_one(
            "SELECT count(*) FROM job_attempt_history WHERE outcome = 'SUCCEEDED'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(succeeded, 200);
}

#[tokio::test]
async fn a_batch_created_at_once_is_drained_by_a_worker_taking_many_ids_per_round_trip() {
    let env = TestEnv::with(|c| c.worker.concurrency = 64).await;
    let batch: Vec<NewJob> = (0..500).map(|i| NewJob::new("TEST", json!(i))).collect();
    let ids = env.create_jobs(&batch).await;
    assert_eq!(env.queue.depths().await.expect("depths").ready, 500);

    let running = Running::start(&env, Registry::with_builtins());
    for id in ids {
        wait_for(&env, id, Status::Completed, Duration::from_secs(30)).await;
    }
    let summary = running.stop().await;
    assert_eq!((summary.claimed, summary.completed), (500, 500));
}

/// Notes each job it starts (by payload), and holds a job whose payload is "hold" until the test
/// lets it go.
struct Gated {
    starts: tokio::sync::mpsc::UnboundedSender<String>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl JobHandler for Gated {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let name = job.payload.as_str().unwrap_or_default().to_owned();
        let _ = self.starts.send(name.clone());
        if name.starts_with("hold") {
            self.gate.acquire().await.expect("gate").forget();
        }
        Ok(())
    }
}

/// A slot is free for the next job as soon as its handler returns, while the outcome is still
/// being written; but a worker holds at most twice its concurrency in jobs not yet recorded: with
/// completions stuck (their rows locked by another transaction), a worker of one slot runs a
/// second job, and not a third until the writes go through.
#[tokio::test]
async fn a_slot_takes_the_next_job_while_the_outcome_is_written_up_to_twice_the_concurrency() {
    // The rows stay locked for over a second. With the test's one-second lease, a finished job's
    // lease would run out meanwhile, and the reaper, queued on the same row lock, could take the
    // job back before its completion is written (correctly: the lease had expired) and run it
    // again, into a gate that never opens. A lease longer than the test keeps the reaper out.
    let env = TestEnv::with(|c| {
        c.worker.concurrency = 1;
        c.worker.lease = Duration::from_secs(60);
    })
    .await;
    let (tx, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = Registry::with_builtins().register(
        "GATED",
        Gated {
            starts: tx,
            gate: gate.clone(),
        },
    );
    let first = env.create_job(NewJob::new("GATED", json!("hold-1"))).await;
    let running = Running::start(&env, registry);
    assert_eq!(started(&mut starts).await, "hold-1");

    let mut locker = env.store.pool().get().await.expect("connection");
    // The pool's connections end a transaction left idle for a few seconds; this one must last.
    locker
        .batch_execute("SET idle_in_transaction_session_timeout = 0")
        .await
        .expect("no idle timeout");
    let lock = locker.transaction().await.expect("begin");
    let lock_row = "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE";
    lock.execute(lock_row, &[&first.0]).await.expect("lock the first job");
    let second = env.create_job(NewJob::new("GATED", json!("hold-2"))).await;
    let third = env.create_job(NewJob::new("GATED", json!("third"))).await;

    // The first handler returns; its completion waits on the lock, and the slot runs the second.
    gate.add_permits(1);
    assert_eq!(started(&mut starts).await, "hold-2");
    assert_eq!(env.store.get(first).await.expect("get").status, Status::InProgress);
    lock.execute(lock_row, &[&second.0]).await.expect("lock the second job");
    gate.add_permits(1);

    // Two jobs unrecorded: the third is not taken while the slot is free.
    let waited = tokio::time::timeout(Duration::from_secs(1), starts.recv()).await;
    assert!(waited.is_err(), "a third job started: {waited:?}");
    assert_eq!(env.store.get(third).await.expect("get").status, Status::Pending);

    lock.commit().await.expect("unlock");
    assert_eq!(started(&mut starts).await, "third");
    for id in [first, second, third] {
        wait_for(&env, id, Status::Completed, SOON).await;
    }
    assert_eq!(running.stop().await.completed, 3);
}

async fn started(starts: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    let next = tokio::time::timeout(SOON, starts.recv()).await;
    next.expect("a job started in time").expect("handler alive")
}

/// Fails (retryably) once the test lets it go, counting its starts.
struct FailsWhenLetGo {
    starts: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl JobHandler for FailsWhenLetGo {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate").forget();
        Err(HandlerError::retryable("upstream said 503"))
    }
}

/// A worker whose heartbeats are too far apart to hear of a cancel request before its job ends.
async fn cancel_env_and_handler() -> (TestEnv, Registry, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
    let env = TestEnv::with(|c| {
        c.worker.concurrency = 1;
        c.worker.lease = Duration::from_secs(30);
        c.worker.heartbeat = Duration::from_secs(10);
        c.worker.shutdown_grace = Duration::from_millis(200);
        c.worker.retry.base = Duration::from_millis(20);
        c.worker.retry.cap = Duration::from_millis(50);
    })
    .await;
    let starts = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = Registry::with_builtins().register(
        "FAILS",
        FailsWhenLetGo {
            starts: starts.clone(),
            gate: gate.clone(),
        },
    );
    (env, registry, starts, gate)
}

async fn request_cancel(env: &TestEnv, id: jobq_shared::JobId) {
    wait_for(env, id, Status::InProgress, SOON).await;
    let requested = env.jobs.cancel(id, Utc::now()).await.expect("cancel");
    assert!(
        matches!(requested, jobq_shared::jobs::Cancellation::Requested(_)),
        "{requested:?}"
    );
}

/// A job whose cancellation was requested while it ran, and which then fails with attempts left
/// before a heartbeat could stop it, ends CANCELLED: it does not run again.
#[tokio::test]
async fn a_cancel_requested_job_that_fails_with_attempts_left_is_cancelled_not_retried() {
    let (env, registry, starts, gate) = cancel_env_and_handler().await;
    let running = Running::start(&env, registry);
    let id = env.create_job(NewJob::new("FAILS", json!(null)).max_attempts(5)).await;
    request_cancel(&env, id).await;

    gate.add_permits(1);
    let job = wait_for(&env, id, Status::Cancelled, SOON).await;
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Failed],
        "the attempt failed; the job is cancelled"
    );
    assert_eq!(job.attempts, 1);
    assert!(job.completed_at.is_some());
    // Past the retry backoff (20 ms): nothing ran it again.
    gate.add_permits(5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(env.store.get(id).await.expect("get").status, Status::Cancelled);
    let summary = running.stop().await;
    assert_eq!((summary.cancelled, summary.retried), (1, 0), "{summary:?}");
}

/// A job whose cancellation was requested while it ran, and which is released unfinished at
/// shutdown before a heartbeat could stop it, ends CANCELLED rather than going back to the queue.
#[tokio::test]
async fn a_cancel_requested_job_released_at_shutdown_is_cancelled_not_queued_again() {
    let (env, registry, starts, _gate) = cancel_env_and_handler().await;
    let running = Running::start(&env, registry);
    let id = env.create_job(NewJob::new("FAILS", json!(null))).await;
    request_cancel(&env, id).await;

    let summary = running.stop().await;
    assert_eq!((summary.cancelled, summary.released), (1, 0), "{summary:?}");
    let job = env.store.get(id).await.expect("get");
    assert_eq!((job.status, job.attempts), (Status::Cancelled, 0));
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Released]);
    assert_eq!(starts.load(Ordering::SeqCst), 1);
}

/// Records the `traceparent` each attempt is given.
struct TraceRecorder(Arc<std::sync::Mutex<Vec<Option<String>>>>);

#[async_trait]
impl JobHandler for TraceRecorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        self.0.lock().expect("lock").push(job.traceparent.clone());
        Ok(())
    }
}

#[tokio::test]
async fn the_creators_trace_is_stored_and_continued_by_the_worker() {
    use jobq_shared::trace::TraceParent;
    let env = TestEnv::new().await;
    let creator = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = env
        .create_job(NewJob::new("TRACE", json!("traced")).traceparent(TraceParent::parse(creator)))
        .await;
    let plain = env.create_job(NewJob::new("TRACE", json!("plain"))).await;
    assert_eq!(
        env.jobs.get(traced).await.expect("get").traceparent.as_deref(),
        Some(creator)
    );
    assert_eq!(env.jobs.get(plain).await.expect("get").traceparent, None);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let running = Running::start(&env, Registry::new().register("TRACE", TraceRecorder(seen.clone())));
    wait_for(&env, traced, Status::Completed, SOON).await;
    wait_for(&env, plain, Status::Completed, SOON).await;
    running.stop().await;

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.contains(&None), "{seen:?}");
    let given = seen
        .iter()
        .flatten()
        .next()
        .and_then(|t| TraceParent::parse(t))
        .expect("a valid traceparent for the traced job");
    // The same trace and flags, with a span of the attempt's own.
    assert_eq!(given.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(given.parent_id(), "00f067aa0ba902b7");
    assert!(given.to_string().ends_with("-01"));
}
