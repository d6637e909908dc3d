//! The worker function and its deadline: a sandbox killed mid-job (the lease is never released,
//! so the reaper must take the job back), and a run that sees its deadline coming and gives back
//! what it cannot finish.

use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use jobq_functions::Deps;
use jobq_functions::worker;
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::reaper::LEASE_EXPIRED;
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Summary;
use jobq_shared::{HandlerError, JobContext, JobHandler, JobId, NewJob, Registry, Status};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const REAP_INTERVAL: Duration = Duration::from_millis(200);

/// An invocation whose deadline is `time_left` from now.
fn event(payload: Value, time_left: Duration) -> LambdaEvent<Value> {
    let mut context = Context::default();
    context.deadline = (SystemTime::now() + time_left)
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    LambdaEvent::new(payload, context)
}

async fn setup() -> TestEnv {
    TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        config.maintenance.reap_interval = REAP_INTERVAL;
    })
    .await
}

/// Hangs on its first attempt (long past any deadline), succeeds at once on later ones.
struct HangsFirstTime;

#[async_trait::async_trait]
impl JobHandler for HangsFirstTime {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        if job.attempt == 1 {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::with_builtins().register("HANGS", HangsFirstTime)
}

async fn wait_for_status(env: &TestEnv, id: JobId, status: Status, within: Duration) {
    env.wait_for(id, status, within).await;
}

#[tokio::test]
async fn a_lambda_worker_past_its_deadline_loses_its_job_to_the_reaper_and_it_completes() {
    let env = setup().await;
    let lease = env.config.worker.lease;
    let id = env
        .create_job(NewJob::new("HANGS", json!({})).timeout(Duration::from_secs(900)))
        .await;

    // The doomed invocation runs in a runtime of its own, on its own thread, like a sandbox: when
    // Lambda kills it at its timeout, nothing of it (handler, heartbeats, its in-process reaper and
    // promoter, its connections) survives, and nothing gets to release the lease.
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let mut config = env.config.clone();
    config.worker.worker_id = "sandbox-killed".to_owned();
    let sandbox = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("sandbox runtime");
        let finished_by_itself = runtime.block_on(async move {
            let deps = Deps::from_config(config).expect("deps").with_registry(registry());
            // The function believes it has ten minutes; the sandbox dies long before.
            let run = worker::handle(
                &deps,
                event(json!({"maxJobs": 1, "untilIdle": false}), Duration::from_secs(600)),
            );
            tokio::select! {
                _ = run => true,
                _ = killed => false,
            }
        });
        runtime.shutdown_background();
        finished_by_itself
    });

    wait_for_status(&env, id, Status::InProgress, Duration::from_secs(10)).await;
    // Let it renew the lease a few times, so the kill lands mid-job on a live, heartbeating lease.
    tokio::time::sleep(lease).await;
    let running = env.jobs.get(id).await.expect("get");
    assert_eq!(running.status, Status::InProgress);
    assert!(
        running.lease_expires_at.expect("lease")
            > running.history[0].started_at + chrono::Duration::from_std(lease).expect("lease"),
        "the lease was renewed while the job ran"
    );

    kill.send(()).expect("sandbox still running");
    let killed_at = Instant::now();
    assert!(
        !sandbox.join().expect("sandbox thread"),
        "the invocation ended by itself"
    );
    let orphaned = env.jobs.get(id).await.expect("get");
    assert_eq!(orphaned.status, Status::InProgress, "nothing released the lease");
    let lease_expired_at = orphaned.lease_expires_at.expect("lease");

    // The next invocation (its in-process reaper) takes the job back once the lease has expired,
    // and runs it again.
    let mut config = env.config.clone();
    config.worker.worker_id = "sandbox-next".to_owned();
    let deps = Deps::from_config(config).expect("deps").with_registry(registry());
    let summary = worker::handle(
        &deps,
        event(json!({"maxJobs": 1, "untilIdle": false}), Duration::from_secs(20)),
    )
    .await
    .expect("run");
    let recovered_in = killed_at.elapsed();

    assert_eq!(
        summary,
        Summary {
            claimed: 1,
            completed: 1,
            ..Summary::default()
        }
    );
    let slack = Duration::from_millis(700);
    assert!(
        recovered_in <= lease + REAP_INTERVAL + slack,
        "completed {recovered_in:?} after the kill; lease {lease:?} + reap interval {REAP_INTERVAL:?}"
    );
    let job = env.jobs.get(id).await.expect("get");
    assert_eq!(job.status, Status::Completed);
    assert_eq!(job.attempts, 2, "the lost attempt counts");
    assert_eq!(job.lease_expires_at, None);
    let history: Vec<(i32, Outcome)> = job.history.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(history, vec![(1, Outcome::LeaseExpired), (2, Outcome::Succeeded)]);
    let lost = &job.history[0];
    assert_eq!(lost.error.as_deref(), Some(LEASE_EXPIRED));
    let reaped_at = lost.finished_at.expect("reaped");
    assert!(
        reaped_at >= lease_expired_at,
        "reaped at {reaped_at} while the lease ran until {lease_expired_at}"
    );
    let rerun = &job.history[1];
    assert!(rerun.started_at >= reaped_at, "the second attempt overlapped the first");
    assert!(rerun.lease_token > lost.lease_token);
    assert_eq!(
        (lost.worker_id.as_str(), rerun.worker_id.as_str()),
        ("sandbox-killed", "sandbox-next")
    );
}

#[tokio::test]
async fn the_worker_function_stops_taking_jobs_before_its_deadline_and_releases_what_it_cannot_finish() {
    let env = setup().await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    let now = Utc::now();
    // With 4 s left the function takes work for 3 s (a 1 s margin), then gives running jobs 0.5 s.
    let time_left = Duration::from_secs(4);
    // A long job that becomes due 1.5 s into the run: the deadline comes before its timeout (a job
    // started at once would get at most the 3 s the run takes work for, and time out).
    let long = env
        .create_job_at(
            NewJob::new("TEST", json!("SLEEP_MS=30000"))
                .timeout(Duration::from_secs(60))
                .delay(Duration::from_millis(1_500)),
            now,
        )
        .await;
    let quick = env.create_job_at(NewJob::new("TEST", json!("hello")), now).await;
    // Due inside the margin: after the function stopped taking work, before its deadline.
    let too_late = env
        .create_job_at(
            NewJob::new("TEST", json!("hello")).delay(Duration::from_millis(3_400)),
            now,
        )
        .await;
    let started = Instant::now();

    let summary = worker::handle(&deps, event(json!({"untilIdle": false}), time_left))
        .await
        .expect("run");
    let took = started.elapsed();

    assert!(took < time_left, "returned after the deadline: {took:?}");
    assert!(
        took >= Duration::from_millis(3_000),
        "stopped taking work before the margin: {took:?}"
    );
    assert_eq!(
        summary,
        Summary {
            claimed: 2,
            completed: 1,
            released: 1,
            ..Summary::default()
        }
    );
    assert_eq!(env.jobs.get(quick).await.expect("get").status, Status::Completed);

    let released = env.jobs.get(long).await.expect("get");
    assert_eq!(released.status, Status::Pending, "given back for the next run");
    assert_eq!(released.attempts, 0, "a released attempt does not count");
    assert_eq!(released.lease_expires_at, None);
    assert!(released.run_at <= Utc::now(), "runnable at once");
    assert_eq!(released.history.len(), 1);
    let attempt = &released.history[0];
    assert_eq!((attempt.attempt, attempt.outcome), (1, Outcome::Released));
    assert!(attempt.finished_at.is_some());
    assert!(
        env.queue
            .ready_ids()
            .await
            .expect("ready")
            .contains(&long.0.to_string()),
        "the released id is back on a ready list"
    );

    let untouched = env.jobs.get(too_late).await.expect("get");
    assert_eq!(untouched.status, Status::Pending, "not taken inside the margin");
    assert_eq!(untouched.attempts, 0);
    assert!(untouched.history.is_empty());
}

#[tokio::test]
async fn with_every_slot_busy_the_worker_function_still_returns_before_its_deadline() {
    let env = TestEnv::with(|config| {
        config.maintenance.promote_interval = Duration::from_millis(50);
        config.maintenance.reap_interval = REAP_INTERVAL;
        config.worker.concurrency = 1;
    })
    .await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    let long = env
        .create_job(
            // Due 1.5 s into the run, so the deadline comes before its (cut) timeout.
            NewJob::new("TEST", json!("SLEEP_MS=30000"))
                .timeout(Duration::from_secs(60))
                .delay(Duration::from_millis(1_500)),
        )
        .await;
    let time_left = Duration::from_secs(4);
    let started = Instant::now();

    let summary = worker::handle(&deps, event(json!({"untilIdle": false}), time_left))
        .await
        .expect("run");

    let took = started.elapsed();
    assert!(took < time_left, "returned after the deadline: {took:?}");
    assert_eq!((summary.claimed, summary.released), (1, 1), "{summary:?}");
    let job = env.jobs.get(long).await.expect("get");
    assert_eq!((job.status, job.attempts), (Status::Pending, 0));
}
