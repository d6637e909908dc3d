//! The seed's flows through jobq's own APIs, over whatever servers a test set up.

use std::time::{Duration, Instant};

use chrono::Utc;
use jobq_shared::config::WorkerConfig;
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::{promoter::Promoter, reaper::Reaper};
use jobq_shared::{Job, JobId, Jobs, NewJob, Queue, Registry, Status, Store, Worker};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub fn worker_config() -> WorkerConfig {
    let mut config = WorkerConfig {
        concurrency: 4,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(2),
        ..WorkerConfig::default()
    };
    config.retry.base = Duration::from_millis(10);
    config.retry.cap = Duration::from_millis(100);
    config
}

pub async fn wait_for(jobs: &Jobs, id: JobId, status: Status) -> Job {
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let job = jobs.get(id).await.expect("get job");
        if job.status == status {
            return job;
        }
        assert!(Instant::now() < give_up, "job {id} is {:?}, not {status:?}", job.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker and the maintenance loops over `store` and `queue`, then the seed's jobs: a plain one
/// completes; `FAIL_TIMES=2` completes on its third attempt; `FAIL_ALWAYS` is dead after three, in
/// the DLQ, and runs its three attempts again once requeued.
pub async fn run_seed_flows(store: &Store, queue: &Queue) {
    let jobs = Jobs::new(store.clone(), queue.clone(), Duration::from_secs(30));

    let shutdown = CancellationToken::new();
    let worker = Worker::new(store.clone(), queue.clone(), Registry::with_builtins(), worker_config());
    let token = shutdown.clone();
    let worker = tokio::spawn(async move { worker.run(token).await });
    let promoter =
        tokio::spawn(Promoter::new(store.clone(), queue.clone()).run(Duration::from_millis(20), shutdown.clone()));
    let reaper =
        tokio::spawn(Reaper::new(store.clone(), queue.clone()).run(Duration::from_millis(50), shutdown.clone()));

    let now = Utc::now();
    let plain = jobs
        .create(&NewJob::new("TEST", json!("hello")), now)
        .await
        .expect("create");
    let flaky = jobs
        .create(&NewJob::new("TEST", json!("FAIL_TIMES=2")), now)
        .await
        .expect("create");
    let doomed = jobs
        .create(&NewJob::new("TEST", json!("FAIL_ALWAYS")), now)
        .await
        .expect("create");

    let done = wait_for(&jobs, plain.job.id, Status::Completed).await;
    assert_eq!(done.attempts, 1);
    let done = wait_for(&jobs, flaky.job.id, Status::Completed).await;
    assert_eq!(done.attempts, 3);
    let outcomes: Vec<Outcome> = done.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Failed, Outcome::Failed, Outcome::Succeeded]);
    let dead = wait_for(&jobs, doomed.job.id, Status::Failed).await;
    assert_eq!(dead.attempts, 3);
    let page = jobs.list_dead(None, 10).await.expect("dlq");
    assert_eq!(page.items.iter().map(|j| j.id).collect::<Vec<_>>(), vec![doomed.job.id]);
    assert_eq!(
        queue.dead_ids().await.expect("dlq index"),
        vec![doomed.job.id.to_string()]
    );

    let requeued = jobs.requeue(doomed.job.id, Utc::now()).await.expect("requeue");
    assert_eq!(requeued.status, Status::Pending);
    let dead_again = wait_for(&jobs, doomed.job.id, Status::Failed).await;
    assert_eq!(
        dead_again.history.len(),
        6,
        "the requeued job ran its three attempts again"
    );

    shutdown.cancel();
    let summary = worker.await.expect("worker task").expect("worker run");
    promoter.await.expect("promoter");
    reaper.await.expect("reaper");
    assert!(summary.completed >= 2, "{summary:?}");
}
