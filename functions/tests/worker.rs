mod common;

use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use jobq_functions::Deps;
use jobq_functions::worker::{self, WorkerError};
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Summary;
use jobq_shared::{HandlerError, JobContext, JobHandler, JobId, NewJob, Registry, Status};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

/// The fixtures `cargo lambda invoke worker --data-file ...` uses.
fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// An invocation whose deadline is `time_left` from now.
fn event(payload: Value, time_left: Duration) -> LambdaEvent<Value> {
    let mut context = Context::default();
    let deadline = SystemTime::now() + time_left;
    context.deadline = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    LambdaEvent::new(payload, context)
}

async fn setup_fast_maintenance() -> (TestEnv, Deps) {
    let env = TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        config.maintenance.reap_interval = Duration::from_millis(200);
    })
    .await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    (env, deps)
}

async fn create(env: &TestEnv, job: NewJob) -> JobId {
    env.jobs.create(&job, Utc::now()).await.expect("create").job.id
}

#[tokio::test]
async fn a_scheduled_invocation_runs_the_ready_jobs_and_returns_once_the_queue_is_idle() {
    let env = TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        config.maintenance.reap_interval = Duration::from_millis(200);
        // A job of a type this function has no handler for is deferred for a minute.
        config.worker.retry.base = Duration::from_secs(60);
        config.worker.retry.cap = Duration::from_secs(60);
    })
    .await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    let hello = create(&env, NewJob::new("TEST", json!("hello"))).await;
    let sleepy = create(&env, NewJob::new("TEST", json!("SLEEP_MS=50"))).await;
    let unknown_type = create(&env, NewJob::new("NO_SUCH_TYPE", json!({}))).await;
    let later = create(
        &env,
        NewJob::new("TEST", json!("later")).delay(Duration::from_secs(600)),
    )
    .await;
    let started = Instant::now();

    let summary = worker::handle(&deps, event(fixture("schedule.json"), Duration::from_secs(20)))
        .await
        .expect("run");

    assert_eq!(
        summary,
        Summary {
            claimed: 3,
            completed: 2,
            deferred: 1,
            ..Summary::default()
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an idle queue ends the run early: {:?}",
        started.elapsed()
    );
    for (id, status) in [
        (hello, Status::Completed),
        (sleepy, Status::Completed),
        (unknown_type, Status::Pending),
        (later, Status::Pending),
    ] {
        assert_eq!(env.jobs.get(id).await.expect("job").status, status, "{id}");
    }
    let as_json = serde_json::to_value(summary).expect("json");
    assert_eq!(as_json["deferred"], 1);
    assert_eq!(
        env.jobs.get(unknown_type).await.expect("job").attempts,
        0,
        "not charged"
    );
    assert_eq!(as_json["claimed"], 3);
}

#[tokio::test]
async fn a_drain_request_runs_retries_until_its_job_count() {
    let (env, deps) = setup_fast_maintenance().await;
    let flaky = create(&env, NewJob::new("TEST", json!("FAIL_TIMES=2"))).await;

    let summary = worker::handle(
        &deps,
        event(json!({"maxJobs": 3, "untilIdle": false}), Duration::from_secs(20)),
    )
    .await
    .expect("run");

    assert_eq!(
        summary,
        Summary {
            claimed: 3,
            retried: 2,
            completed: 1,
            ..Summary::default()
        }
    );
    let job = env.jobs.get(flaky).await.expect("job");
    assert_eq!(job.status, Status::Completed);
    assert_eq!(job.history.len(), 3);
}

#[tokio::test]
async fn the_max_jobs_fixture_is_a_drain_request() {
    let (env, deps) = setup_fast_maintenance().await;
    for i in 0..7 {
        create(&env, NewJob::new("TEST", json!(i))).await;
    }

    let summary = worker::handle(&deps, event(fixture("max-jobs.json"), Duration::from_secs(20)))
        .await
        .expect("run");

    let max: usize = fixture("max-jobs.json")["maxJobs"].as_u64().expect("maxJobs") as usize;
    assert_eq!(summary.claimed, max.min(7));
    assert_eq!(summary.completed, summary.claimed);
}

#[tokio::test]
async fn a_run_stops_taking_work_before_the_deadline_and_releases_what_is_still_running() {
    let (env, deps) = setup_fast_maintenance().await;
    let long = create(
        &env,
        NewJob::new("TEST", json!("SLEEP_MS=30000")).timeout(Duration::from_secs(60)),
    )
    .await;
    let time_left = Duration::from_secs(3);
    let started = Instant::now();

    let summary = worker::handle(&deps, event(json!({"untilIdle": false}), time_left))
        .await
        .expect("run");

    let took = started.elapsed();
    assert!(took < time_left, "returned after the deadline: {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "kept taking work until the margin: {took:?}"
    );
    assert_eq!(
        summary,
        Summary {
            claimed: 1,
            released: 1,
            ..Summary::default()
        }
    );
    let job = env.jobs.get(long).await.expect("job");
    assert_eq!(job.status, Status::Pending, "released, for the next run");
    assert_eq!(job.attempts, 0, "a released attempt does not count");
}

#[tokio::test]
async fn an_invocation_past_its_deadline_takes_no_work() {
    let (env, deps) = setup_fast_maintenance().await;
    let waiting = create(&env, NewJob::new("TEST", json!("hello"))).await;

    let summary = worker::handle(&deps, event(fixture("schedule.json"), Duration::ZERO))
        .await
        .expect("run");

    assert_eq!(summary, Summary::default());
    assert_eq!(env.jobs.get(waiting).await.expect("job").status, Status::Pending);
}

#[tokio::test]
async fn a_panicking_handler_costs_its_job_one_attempt() {
    let (env, deps) = setup_fast_maintenance().await;
    let deps = deps.with_registry(Registry::with_builtins().register("PANIC", PanickingHandler));
    let panics = create(&env, NewJob::new("PANIC", json!({})).max_attempts(2)).await;
    let fine = create(&env, NewJob::new("TEST", json!("hello"))).await;

    let summary = worker::handle(
        &deps,
        event(json!({"maxJobs": 3, "untilIdle": false}), Duration::from_secs(20)),
    )
    .await
    .expect("run");

    assert_eq!(summary.claimed, 3);
    assert_eq!(summary.completed, 1);
    assert_eq!(summary.retried, 1);
    assert_eq!(summary.dead_lettered, 1);
    let job = env.jobs.get(panics).await.expect("job");
    assert_eq!(job.status, Status::Failed);
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("handler panicked")),
        "{:?}",
        job.last_error
    );
    assert_eq!(env.jobs.get(fine).await.expect("job").status, Status::Completed);
}

#[tokio::test]
async fn an_unsupported_event_is_an_error_that_says_what_is_accepted() {
    let (_env, deps) = setup_fast_maintenance().await;

    let err = worker::handle(&deps, event(json!({"jobs": 1}), Duration::from_secs(5)))
        .await
        .expect_err("refused");

    assert!(matches!(err, WorkerError::BadEvent(_)));
    assert!(err.to_string().contains("maxJobs"), "{err}");
}

/// A handler that panics: the engine must turn that into a failed attempt.
struct PanickingHandler;

#[async_trait::async_trait]
impl JobHandler for PanickingHandler {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        panic!("the handler blew up")
    }
}
