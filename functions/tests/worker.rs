mod common;

use std::time::{Duration, Instant, SystemTime};

use jobq_functions::Deps;
use jobq_functions::worker::{self, WorkerError};
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Summary;
use jobq_shared::{HandlerError, JobContext, JobHandler, NewJob, Registry, Status};
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
    let hello = env.create_job(NewJob::new("TEST", json!("hello"))).await;
    let sleepy = env.create_job(NewJob::new("TEST", json!("SLEEP_MS=50"))).await;
    let unknown_type = env.create_job(NewJob::new("NO_SUCH_TYPE", json!({}))).await;
    let later = env
        .create_job(NewJob::new("TEST", json!("later")).delay(Duration::from_secs(600)))
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
    let flaky = env.create_job(NewJob::new("TEST", json!("FAIL_TIMES=2"))).await;

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
        env.create_job(NewJob::new("TEST", json!(i))).await;
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
    let time_left = Duration::from_secs(3);
    let started = Instant::now();

    let run = tokio::spawn({
        let deps = Deps::from_config(env.config.clone()).expect("deps");
        async move { worker::handle(&deps, event(json!({"untilIdle": false}), time_left)).await }
    });
    // A long job that arrives late in the run: the deadline comes before its timeout.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let long = env
        .create_job(NewJob::new("TEST", json!("SLEEP_MS=30000")).timeout(Duration::from_secs(60)))
        .await;
    let summary = run.await.expect("run task").expect("run");

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
    drop(deps);
}

#[tokio::test]
async fn a_job_longer_than_a_run_is_stopped_within_it_released_and_charged_past_the_bound() {
    let env = TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        // Its retry is not due within this run.
        config.worker.retry.base = Duration::from_secs(60);
        config.worker.retry.cap = Duration::from_secs(60);
    })
    .await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    // Its own timeout (60 s) is more than any run of this function (3 s here) can give.
    let long = env
        .create_job(
            NewJob::new("TEST", json!("SLEEP_MS=30000"))
                .timeout(Duration::from_secs(60))
                .max_attempts(2),
        )
        .await;
    let started = Instant::now();
    let summary = worker::handle(&deps, event(json!({"untilIdle": false}), Duration::from_secs(3)))
        .await
        .expect("run");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the run outlived its deadline"
    );
    assert_eq!(summary.claimed, 1);
    assert_eq!(summary.released, 1, "{summary:?}");
    assert_eq!(summary.retried, 0, "{summary:?}");
    let job = env.jobs.get(long).await.expect("job");
    assert_eq!((job.status, job.attempts), (Status::Pending, 0), "not charged");
    let released = job.history.last().expect("history");
    assert_eq!(released.outcome, Outcome::Released);
    let cut_to_ms: Option<u64> = released
        .error
        .as_deref()
        .and_then(|e| e.strip_prefix("released unfinished after "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok());
    assert!(
        cut_to_ms.is_some_and(|ms| (1_500..=2_000).contains(&ms)),
        "stopped at the 2 s this run takes work for: {:?}",
        released.error
    );

    // Given back as often as the bound allows: the next time it is cut short, it is charged.
    deps.jobs
        .store()
        .pool()
        .get()
        .await
        .expect("connection")
        .execute(
            "UPDATE jobs SET releases = $2 WHERE id = $1",
            &[&long.0, &jobq_shared::worker::MAX_FREE_RELEASES],
        )
        .await
        .expect("set releases");
    let summary = worker::handle(&deps, event(json!({"untilIdle": false}), Duration::from_secs(3)))
        .await
        .expect("run");
    assert_eq!(
        (summary.claimed, summary.released, summary.retried),
        (1, 0, 1),
        "{summary:?}"
    );
    let job = env.jobs.get(long).await.expect("job");
    assert_eq!(job.attempts, 1, "the attempt counts");
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("stopped unfinished: given back 3 times before")),
        "{:?}",
        job.last_error
    );
}

/// With no promoter at all: each run applies the migrations, repairs Redis, and waits a while for
/// work, so nothing a promoter would have done is missing.
#[tokio::test]
async fn without_a_promoter_the_worker_function_migrates_repairs_and_picks_up_new_jobs_at_once() {
    let env = TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        config.maintenance.reap_interval = Duration::from_millis(200);
        config.maintenance.repair_after = Duration::from_millis(200);
    })
    .await;

    // A database nobody has migrated: the first run creates the schema.
    let fresh = FreshDatabase::create().await;
    let mut config = env.config.clone();
    config.database_url = fresh.url.clone();
    let deps = Deps::from_config(config).expect("deps");
    let summary = worker::handle(&deps, event(json!({}), Duration::from_secs(10)))
        .await
        .expect("first run on an empty database");
    assert_eq!(summary, Summary::default());
    let tables: i64 = deps
        .jobs
        .store()
        .pool()
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(tables, 1, "the run applied the migrations");
    drop(deps);

    // Jobs whose ids Redis lost: the next run's repair pass pushes them, and it runs them.
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    let mut lost = Vec::new();
    for _ in 0..5 {
        lost.push(env.create_job(NewJob::new("TEST", json!("hello"))).await);
    }
    let ready = env.queue.ready_ids().await.expect("ready");
    assert_eq!(env.queue.forget_ready("default", 50, &ready).await.expect("forget"), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let summary = worker::handle(&deps, event(json!({}), Duration::from_secs(10)))
        .await
        .expect("run");
    assert_eq!(summary.completed, 5, "{summary:?}");
    for id in lost {
        assert_eq!(env.jobs.get(id).await.expect("job").status, Status::Completed);
    }

    // A run that waits for work once the queue is empty starts a new job at once.
    let run = tokio::spawn({
        let deps = Deps::from_config(env.config.clone()).expect("deps");
        async move { worker::handle(&deps, event(json!({"idleWaitMs": 3000}), Duration::from_secs(20))).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let created_at = Instant::now();
    let late = env.create_job(NewJob::new("TEST", json!("hello"))).await;
    env.wait_for(late, Status::Completed, Duration::from_secs(2)).await;
    let picked_up = created_at.elapsed();
    let summary = run.await.expect("run task").expect("run");
    assert_eq!(summary.completed, 1, "{summary:?}");
    assert!(picked_up < Duration::from_secs(2), "took {picked_up:?}");
}

/// A database created empty for one test, dropped when the test ends.
struct FreshDatabase {
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create() -> FreshDatabase {
        let admin = jobq_shared::testing::admin_url();
        let name = format!("jobq_test_{}", uuid_suffix());
        let store = jobq_shared::Store::connect(&admin, 1, Duration::from_secs(10)).expect("admin");
        let client = store.pool().get().await.expect("admin connection");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = jobq_shared::testing::with_database(&admin, &name);
        FreshDatabase { name, url }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                let admin = jobq_shared::testing::admin_url();
                if let Ok(store) = jobq_shared::Store::connect(&admin, 1, Duration::from_secs(10))
                    && let Ok(client) = store.pool().get().await
                {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn uuid_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}_{}", std::process::id())
}

#[tokio::test]
async fn an_invocation_past_its_deadline_takes_no_work() {
    let (env, deps) = setup_fast_maintenance().await;
    let waiting = env.create_job(NewJob::new("TEST", json!("hello"))).await;

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
    let panics = env.create_job(NewJob::new("PANIC", json!({})).max_attempts(2)).await;
    let fine = env.create_job(NewJob::new("TEST", json!("hello"))).await;

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
