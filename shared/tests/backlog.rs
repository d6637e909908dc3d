//! A large backlog that waits: 100,000 jobs queued with no worker while repair passes run through
//! twice the repair threshold, each finding every job overdue. Redis must then hold each pending
//! id exactly once, and a worker must drain the backlog about as fast as it drains the same number
//! of fresh jobs that never waited (the control, in a second environment, drained in turns with
//! the backlog).

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use jobq_shared::maintenance::repairer::Repairer;
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Limits;
use jobq_shared::{NewJob, Registry, Status};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const JOBS: usize = 100_000;
const BATCH: usize = 1_000;
const REPAIR_AFTER: Duration = Duration::from_secs(1);
/// The backlog may drain at no less than this fraction of the control's rate.
const MIN_RATIO: f64 = 0.8;
/// The drains take turns in this many parts.
const PARTS: usize = 4;
/// How long one part of a drain may take before the test gives up (debug build, a busy machine).
const DRAIN_WITHIN: Duration = Duration::from_secs(600);

async fn environment() -> TestEnv {
    TestEnv::with(|c| {
        // Generous statement timeouts: 100,000-row passes on a debug build beside other tests.
        c.pg_timeout = Duration::from_secs(60);
        c.worker.lease = Duration::from_secs(30);
        c.worker.heartbeat = Duration::from_secs(10);
        c.worker.concurrency = 32;
        c.maintenance.repair_after = REPAIR_AFTER;
    })
    .await
}

/// Queues `JOBS` jobs in batches; returns how long it took.
async fn queue_jobs(env: &TestEnv) -> Duration {
    let started = Instant::now();
    let batch: Vec<NewJob> = (0..BATCH).map(|i| NewJob::new("TEST", json!(i))).collect();
    for _ in 0..JOBS / BATCH {
        for result in env.jobs.create_many(&batch, Utc::now()).await.expect("create_many") {
            result.expect("created");
        }
    }
    started.elapsed()
}

/// Runs a worker until it has taken `jobs` more jobs and finished them; returns how long that took.
async fn drain_part(env: &TestEnv, jobs: usize) -> Duration {
    let worker = env.worker(Registry::with_builtins());
    let started = Instant::now();
    let limits = Limits {
        max_jobs: Some(jobs),
        ..Limits::default()
    };
    let summary = tokio::time::timeout(DRAIN_WITHIN, worker.run_with(CancellationToken::new(), limits))
        .await
        .unwrap_or_else(|_| panic!("{jobs} jobs not drained within {DRAIN_WITHIN:?}"))
        .expect("worker");
    assert_eq!(summary.completed, jobs, "{summary:?}");
    started.elapsed()
}

fn rate(took: Duration) -> f64 {
    JOBS as f64 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_job_backlog_that_waits_past_the_repair_threshold_is_held_once_and_drains_as_fast_as_fresh_jobs() {
    let backlog = environment().await;
    let created_in = queue_jobs(&backlog).await;
    println!(
        "backlog: {JOBS} jobs queued in {:.1} s ({:.0}/s)",
        created_in.as_secs_f64(),
        rate(created_in)
    );

    // No worker. Repair passes run back to back until twice the threshold has passed since the
    // last job was queued; every pass after the first threshold finds every job overdue.
    let repairer = Repairer::new(backlog.store.clone(), backlog.queue.clone(), REPAIR_AFTER);
    let wait_until = Instant::now() + 2 * REPAIR_AFTER;
    let waited = Instant::now();
    let (mut passes, mut full_passes, mut pushed) = (0usize, 0usize, 0usize);
    while Instant::now() < wait_until || full_passes < 2 {
        let repaired = repairer.run_once(backlog.store.now().await).await.expect("repair pass");
        passes += 1;
        pushed += repaired.pushed;
        if repaired.checked >= JOBS {
            full_passes += 1;
        }
        println!("backlog: repair pass {passes}: {repaired:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = waited.elapsed();

    // Redis holds exactly the pending ids, once each.
    let depths = backlog.queue.depths().await.expect("depths");
    let mut in_redis: Vec<String> = backlog.queue.ready_ids().await.expect("ready ids");
    in_redis.extend(
        backlog
            .queue
            .scheduled()
            .await
            .expect("scheduled")
            .into_iter()
            .map(|(id, _)| id),
    );
    let held: HashSet<&String> = in_redis.iter().collect();
    let client = backlog.store.pool().get().await.expect("pg");
    let pending: HashSet<String> = client
        .query("SELECT id::text FROM jobs WHERE status = 'PENDING'", &[])
        .await
        .expect("pending ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(client);
    assert_eq!(pending.len(), JOBS);
    assert!(
        in_redis.len() <= JOBS,
        "Redis holds {} ids for {JOBS} jobs",
        in_redis.len()
    );
    assert_eq!(held.len(), in_redis.len(), "an id held twice");
    assert_eq!(depths.ready + depths.scheduled, JOBS, "{depths:?}");
    assert!(
        held.iter().all(|id| pending.contains(*id)) && held.len() == pending.len(),
        "Redis holds other ids than the pending ones"
    );
    assert_eq!(pushed, 0, "repair pushed ids that Redis still held");
    assert!(
        full_passes >= 2,
        "only {full_passes} passes found the whole backlog overdue"
    );

    // The control: as many fresh jobs in a second environment, queued just before the drains.
    let control = environment().await;
    queue_jobs(&control).await;

    // The two drains take turns, a quarter at a time, so that a change in the machine's load
    // (other tests, other builds) falls on both alike.
    let (mut backlog_took, mut control_took) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..PARTS {
        backlog_took += drain_part(&backlog, JOBS / PARTS).await;
        control_took += drain_part(&control, JOBS / PARTS).await;
    }
    assert_eq!(backlog.count_jobs(Some(Status::Completed)).await, JOBS as i64);
    assert_eq!(control.count_jobs(Some(Status::Completed)).await, JOBS as i64);
    let ratio = rate(backlog_took) / rate(control_took);
    println!(
        "BACKLOG jobs={JOBS} waited_s={:.1} repair_passes={passes} full_passes={full_passes} pushed={pushed} \
         redis_ids={} backlog_drain_s={:.1} backlog_rate={:.0}/s control_drain_s={:.1} control_rate={:.0}/s \
         ratio={ratio:.2} (at least {MIN_RATIO})",
        waited.as_secs_f64(),
        in_redis.len(),
        backlog_took.as_secs_f64(),
        rate(backlog_took),
        control_took.as_secs_f64(),
        rate(control_took),
    );
    assert!(
        ratio >= MIN_RATIO,
        "the backlog drained at {:.0}/s, the control at {:.0}/s: {ratio:.2} of it, under {MIN_RATIO}",
        rate(backlog_took),
        rate(control_took)
    );
}
