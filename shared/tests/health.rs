//! The queues' health: counts per status and queue, the pending jobs due now, the outcomes per
//! minute (also under concurrent completions), and their pruning. The estimates past the bound,
//! over a large table, are in `find.rs`.

use std::time::Duration;

use jobq_shared::health::{COUNT_BOUND, QueueHealth, THROUGHPUT_MINUTES};
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::{NewJob, Status};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn queue<'a>(all: &'a [QueueHealth], name: &str) -> &'a QueueHealth {
    all.iter()
        .find(|q| q.queue == name)
        .unwrap_or_else(|| panic!("no queue {name:?} in {all:#?}"))
}

/// The outcomes over the whole window: (completed, retried, dead, cancelled).
fn outcomes(health: &QueueHealth) -> (i64, i64, i64, i64) {
    health.throughput.iter().fold((0, 0, 0, 0), |(c, r, d, x), m| {
        (c + m.completed, r + m.retried, d + m.dead, x + m.cancelled)
    })
}

#[track_caller]
fn assert_counts(health: &QueueHealth, expected: [(Status, i64); 6]) {
    for (status, count) in expected {
        let got = health.count(status);
        assert_eq!(got.count, count, "{} {status}: {health:#?}", health.queue);
        assert!(!got.estimated, "{} {status} estimated: {health:#?}", health.queue);
    }
}

#[tokio::test]
async fn every_status_and_outcome_is_counted_per_queue() {
    let env = TestEnv::new().await;
    let new = |queue: &str| NewJob::new("TEST", json!({})).queue(queue);
    let ids = env.create_jobs(&vec![new("a"); 6]).await;
    env.create_job(new("a").delay(Duration::from_secs(3600))).await;
    env.create_job(new("b")).await;
    let now = env.store.now().await;

    let completed = env.claim_job(ids[0], "w", now, LEASE).await;
    env.store.complete(&completed, now).await.expect("complete");
    let dead = env.claim_job(ids[1], "w", now, LEASE).await;
    env.store
        .fail(&dead, now, "boom", false, now, Outcome::Failed)
        .await
        .expect("bury");
    let retried = env.claim_job(ids[2], "w", now, LEASE).await;
    let later = now + chrono::Duration::hours(1);
    env.store
        .fail(&retried, now, "again", true, later, Outcome::Failed)
        .await
        .expect("retry");
    env.jobs.cancel(ids[3], now).await.expect("cancel");
    env.claim_job(ids[4], "w", now, LEASE).await;

    let all = env.store.queue_health(None, COUNT_BOUND).await.expect("health");
    assert_eq!(all.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(), ["a", "b"]);

    let a = queue(&all, "a");
    assert_counts(
        a,
        [
            (Status::Pending, 3),
            (Status::Blocked, 0),
            (Status::InProgress, 1),
            (Status::Completed, 1),
            (Status::Failed, 1),
            (Status::Cancelled, 1),
        ],
    );
    // Of the three pending jobs, one is due now: one waits for its delay, one for its retry.
    assert_eq!(a.ready, Some(1));
    let age = a.oldest_pending_age.expect("a pending job is due");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(a.dlq_depth(), 1);
    assert_eq!(outcomes(a), (1, 1, 1, 1));
    assert_eq!(a.throughput.len(), THROUGHPUT_MINUTES as usize);
    assert!(
        a.throughput
            .windows(2)
            .all(|w| w[1].minute - w[0].minute == chrono::Duration::minutes(1))
    );

    let b = queue(&all, "b");
    assert_counts(
        b,
        [
            (Status::Pending, 1),
            (Status::Blocked, 0),
            (Status::InProgress, 0),
            (Status::Completed, 0),
            (Status::Failed, 0),
            (Status::Cancelled, 0),
        ],
    );
    assert_eq!(b.ready, Some(1));
    assert_eq!(outcomes(b), (0, 0, 0, 0));
    assert_eq!(b.throughput.len(), THROUGHPUT_MINUTES as usize);

    // One queue by name; one without jobs is all zeros.
    let only = env
        .store
        .queue_health(Some("a"), COUNT_BOUND)
        .await
        .expect("health of a");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].counts, a.counts);
    let empty = env
        .store
        .queue_health(Some("nobody"), COUNT_BOUND)
        .await
        .expect("health");
    assert_eq!(empty.len(), 1);
    assert_counts(
        &empty[0],
        [
            (Status::Pending, 0),
            (Status::Blocked, 0),
            (Status::InProgress, 0),
            (Status::Completed, 0),
            (Status::Failed, 0),
            (Status::Cancelled, 0),
        ],
    );
    assert_eq!(empty[0].ready, Some(0));
    assert_eq!(empty[0].oldest_pending_age, None);
    assert_eq!(empty[0].throughput.len(), THROUGHPUT_MINUTES as usize);

    // Past a bound of 0, every count is the planner's estimate, marked so; the age is still read.
    let estimated = env.store.queue_health(Some("a"), 0).await.expect("estimated");
    // No job is blocked anywhere: a status with no job at all is counted, exactly, past any bound.
    for status in Status::ALL {
        assert_eq!(
            estimated[0].count(status).estimated,
            status != Status::Blocked,
            "{status}: {estimated:#?}"
        );
    }
    assert_eq!(estimated[0].ready, None);
    assert_eq!(estimated[0].oldest_pending_age.map(f64::is_sign_positive), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_are_all_counted() {
    let env = TestEnv::new().await;
    const JOBS: usize = 200;
    let ids = env
        .create_jobs(&vec![NewJob::new("TEST", json!({})).queue("busy"); JOBS])
        .await;
    let now = env.store.now().await;
    let leases = env.store.claim_many(&ids, "w", now, LEASE).await.expect("claim");
    assert_eq!(leases.len(), JOBS);
    // 40 batches of 5 at once: many statements adding to the same minute's rows.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in leases.chunks(5) {
        let store = env.store.clone();
        let held: Vec<_> = chunk.iter().map(|l| (l.id(), l.token())).collect();
        tasks.spawn(async move { store.complete_many(&held, now).await });
    }
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        done += result.expect("task").expect("complete_many").done.len();
    }
    assert_eq!(done, JOBS);
    let health = env.store.queue_health(Some("busy"), COUNT_BOUND).await.expect("health");
    assert_eq!(outcomes(&health[0]).0, JOBS as i64);
    assert_eq!(health[0].count(Status::Completed).count, JOBS as i64);
}

#[tokio::test]
async fn outcomes_older_than_an_hour_are_pruned() {
    let env = TestEnv::new().await;
    let id = env.create_job(NewJob::new("TEST", json!({})).queue("q")).await;
    let now = env.store.now().await;
    let lease = env.claim_job(id, "w", now, LEASE).await;
    env.store.complete(&lease, now).await.expect("complete");
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "INSERT INTO queue_throughput (queue, minute, shard, completed)
             VALUES ('q', date_trunc('minute', now()) - interval '61 minutes', 0, 7),
                    ('q', date_trunc('minute', now()) - interval '50 minutes', 0, 3)",
            &[],
        )
        .await
        .expect("old rows");

    assert_eq!(env.store.prune_throughput().await.expect("prune"), 1);
    let left: i64 = client
        .query_one("SELECT sum(completed)::int8 FROM queue_throughput", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(left, 4, "the row of 61 minutes ago is gone, the others stay");
    // The window shows the last 15 minutes only.
    let health = env.store.queue_health(Some("q"), COUNT_BOUND).await.expect("health");
    assert_eq!(outcomes(&health[0]).0, 1);
}
