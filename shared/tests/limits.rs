//! A queue's concurrency limit: claims never take more of its jobs than it allows, however many
//! claim at once (through Redis or straight from Postgres); a held-back job says why and is
//! charged nothing; a freed slot starts the next job at once; a limit raised or removed applies
//! at once. The fleet-wide measure, across processes, is `promoter/tests/limits.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Running, wait_for};
use jobq_shared::bulk::Actor;
use jobq_shared::handler::{HandlerError, JobContext, JobHandler};
use jobq_shared::health::{RateLimit, SettingsChange};
use jobq_shared::store::Claim;
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob, Registry, Status};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);

fn actor() -> Actor {
    Actor {
        principal: "test".into(),
        on_behalf_of: None,
    }
}

fn limit(n: Option<i32>) -> SettingsChange {
    SettingsChange {
        concurrency: Some(n),
        ..Default::default()
    }
}

fn job(queue: &str) -> NewJob {
    NewJob::new("GAUGE", json!({})).queue(queue)
}

/// Counts the jobs running at once, and the most ever; each takes `sleep`.
#[derive(Clone)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
    sleep: Duration,
}

impl Gauge {
    fn new(sleep: Duration) -> Gauge {
        Gauge {
            now: Arc::default(),
            most: Arc::default(),
            ran: Arc::default(),
            sleep,
        }
    }
}

#[async_trait]
impl JobHandler for Gauge {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.ran.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_at_once_never_take_more_than_the_limit() {
    let env = TestEnv::new().await;
    env.jobs
        .set_queue("mail", limit(Some(3)), &actor())
        .await
        .expect("limit");
    let ids = env.create_jobs(&(0..20).map(|_| job("mail")).collect::<Vec<_>>()).await;
    let open = env.create_job(job("reports")).await;
    let now = env.store.now().await;

    // The ordinary claim leaves the limited queue's jobs out.
    let mut all = ids.clone();
    all.push(open);
    let plain = env.store.claim_many(&all, "w0", now, LEASE).await.expect("claim");
    assert_eq!(plain.iter().map(|l| l.id()).collect::<Vec<_>>(), vec![open]);

    // Eight claimers at once, each over every id, half through Redis's path, half Postgres's.
    let claims = (0..8).map(|i| {
        let store = env.store.clone();
        let ids = ids.clone();
        async move {
            let worker = format!("w{i}");
            if i % 2 == 0 {
                store.claim_limited(&ids, &worker, now, LEASE).await
            } else {
                store.claim_next_limited(&worker, now, LEASE, 20, None).await
            }
        }
    });
    let leases: Vec<_> = futures::future::join_all(claims)
        .await
        .into_iter()
        .flat_map(|leases| leases.expect("claim"))
        .collect();
    let claimed: Vec<JobId> = leases.iter().map(|lease| lease.id()).collect();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    assert_eq!(
        env.count_jobs(Some(Status::InProgress)).await,
        3 + 1,
        "and the other queue's job"
    );

    // A held-back job waits uncharged, and says why.
    let held = ids.iter().find(|id| !claimed.contains(id)).expect("a held job");
    let job = env.store.get(*held).await.expect("get");
    assert_eq!((job.status, job.attempts), (Status::Pending, 0));
    assert_eq!(
        job.held_back.as_deref(),
        Some("its queue \"mail\" is at its concurrency limit (3 of 3 running)")
    );

    // One finishes: exactly one more may start.
    env.store.complete(&leases[0], now).await.expect("complete");
    let ready = env.store.limited_ready(now, None).await.expect("ready");
    assert_eq!(ready.len(), 1, "one free slot: {ready:?}");
    let more = env.store.claim_limited(&ids, "w9", now, LEASE).await.expect("claim");
    assert_eq!(more.len(), 1);
    assert!(
        env.store
            .claim_limited(&ids, "w9", now, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(env.store.limited_ready(now, None).await.expect("ready").is_empty());

    // A raised limit applies at once; a removed one hands the jobs back to the ordinary claim.
    env.jobs
        .set_queue("mail", limit(Some(5)), &actor())
        .await
        .expect("raise");
    assert_eq!(
        env.store
            .claim_limited(&ids, "w9", now, LEASE)
            .await
            .expect("claim")
            .len(),
        2
    );
    env.jobs.set_queue("mail", limit(None), &actor()).await.expect("remove");
    assert_eq!(
        env.store.claim_many(&ids, "w9", now, LEASE).await.expect("claim").len(),
        14
    );

    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    let limits: Vec<_> = audit
        .iter()
        .filter(|entry| entry.action == "queue.concurrency")
        .map(|entry| entry.filter.clone())
        .collect();
    assert_eq!(limits.len(), 3, "{limits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_more_slots_runs_at_most_the_limit_and_a_freed_slot_starts_the_next_job() {
    let env = TestEnv::with(|c| c.worker.concurrency = 8).await;
    env.jobs
        .set_queue("mail", limit(Some(3)), &actor())
        .await
        .expect("limit");
    let gauge = Gauge::new(Duration::from_millis(100));
    let other = Gauge::new(Duration::from_millis(100));
    let ids = env.create_jobs(&(0..24).map(|_| job("mail")).collect::<Vec<_>>()).await;
    let others = env
        .create_jobs(
            &(0..16)
                .map(|_| NewJob::new("OTHER", json!({})).queue("reports"))
                .collect::<Vec<_>>(),
        )
        .await;
    // The worker alone, no promoter: what keeps the limited queue moving is the worker pushing
    // the next job when it frees a slot.
    let worker = env.worker(
        Registry::new()
            .register("GAUGE", gauge.clone())
            .register("OTHER", other.clone()),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    let started = tokio::time::Instant::now();
    for id in ids.iter().chain(&others) {
        let job = wait_for(&env, *id, Status::Completed, Duration::from_secs(20)).await;
        assert_eq!(job.attempts, 1, "{job:?}");
    }
    let took = started.elapsed();
    stop.cancel();
    let summary = run.await.expect("worker task").expect("worker");
    assert!(
        summary.held_back > 0,
        "8 slots pop more than the limit's 3: {summary:?}"
    );
    assert_eq!(gauge.ran.load(Ordering::SeqCst), 24);
    assert_eq!(gauge.most.load(Ordering::SeqCst), 3, "the limit, and all of it");
    assert!(other.most.load(Ordering::SeqCst) > 3, "the other queue is not limited");
    // 24 jobs of 100 ms, 3 at a time: 0.8 s if every freed slot is refilled at once.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_postgres_path_keeps_the_limit() {
    let env = TestEnv::with(|c| {
        c.worker.concurrency = 8;
        c.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;
    env.jobs
        .set_queue("mail", limit(Some(2)), &actor())
        .await
        .expect("limit");
    let gauge = Gauge::new(Duration::from_millis(100));
    let jobs: Vec<NewJob> = (0..10).map(|_| job("mail")).collect();
    let now = env.store.now().await;
    let created = env.store.create_many(&jobs, 60_000, now).await.expect("create");
    let ids: Vec<JobId> = created.into_iter().map(|c| c.expect("created").job.id).collect();
    let running = Running::start(&env, Registry::new().register("GAUGE", gauge.clone()));
    for id in &ids {
        wait_for(&env, *id, Status::Completed, Duration::from_secs(30)).await;
    }
    running.stop().await;
    assert_eq!(gauge.most.load(Ordering::SeqCst), 2);
}

/// The claim that counts must see every claim before it: one whose transaction is still open
/// holds the queue's lock, and a second claim waits for it, then counts its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_an_uncommitted_claim_of_the_queue_and_counts_it() {
    let env = TestEnv::new().await;
    env.jobs
        .set_queue("mail", limit(Some(3)), &actor())
        .await
        .expect("limit");
    let ids = env.create_jobs(&(0..10).map(|_| job("mail")).collect::<Vec<_>>()).await;
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let now = env.store.now().await;

    let mut client = env.store.pool().get().await.expect("connection");
    let open = client.transaction().await.expect("begin");
    let first = open
        .query(
            "SELECT id FROM jobq_claim_limited($1, 'open', $2, 30000, NULL)",
            &[&uuids, &now],
        )
        .await
        .expect("claim in the open transaction");
    assert_eq!(first.len(), 3);

    let (store, ids2) = (env.store.clone(), ids.clone());
    let second = tokio::spawn(async move { store.claim_limited(&ids2, "second", now, LEASE).await });
    let store = env.store.clone();
    let next = tokio::spawn(async move { store.claim_next_limited("third", now, LEASE, 10, None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished() && !next.is_finished(),
        "both wait for the open claim's lock"
    );
    open.commit().await.expect("commit");
    assert!(second.await.expect("task").expect("claim").is_empty());
    assert!(next.await.expect("task").expect("claim").is_empty());
    assert_eq!(env.count_jobs(Some(Status::InProgress)).await, 3);
}

/// How many of `ids` a claim of limited queues takes now.
async fn take(env: &TestEnv, ids: &[JobId], now: chrono::DateTime<chrono::Utc>) -> usize {
    env.store
        .claim_limited(ids, "w", now, LEASE)
        .await
        .expect("claim")
        .len()
}

/// How many jobs a claim of limited queues straight from Postgres takes now (at most 10).
async fn take_next(env: &TestEnv, now: chrono::DateTime<chrono::Utc>) -> usize {
    env.store
        .claim_next_limited("w", now, LEASE, 10, None)
        .await
        .expect("claim")
        .len()
}

fn rate(limit: i32, period_ms: i32, key: Option<&str>) -> SettingsChange {
    SettingsChange {
        rate_limit: Some(Some(RateLimit {
            limit,
            period_ms,
            key: key.map(str::to_owned),
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_admits_so_many_starts_per_window_through_either_claim() {
    let env = TestEnv::new().await;
    env.jobs
        .set_queue("mail", rate(3, 1000, None), &actor())
        .await
        .expect("rate");
    let ids = env.create_jobs(&(0..10).map(|_| job("mail")).collect::<Vec<_>>()).await;
    let now = env.store.now().await;
    assert!(
        env.store
            .claim_many(&ids, "w", now, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );

    let first = tokio::time::Instant::now();
    assert_eq!(take(&env, &ids, now).await, 3);
    // The window is full, whichever way the claim comes, and however many jobs are free to run.
    assert_eq!((take(&env, &ids, now).await, take_next(&env, now).await), (0, 0));
    let waiting = env.store.get(ids[9]).await.expect("get");
    assert_eq!(
        waiting.held_back.as_deref(),
        Some("its queue \"mail\" is at its rate limit (3 of 3 starts in the last 1000 ms)")
    );
    assert!(env.store.limited_ready(now, None).await.expect("ready").is_empty());

    // A period after the first starts, the window has room for 3 more.
    tokio::time::sleep_until(first + Duration::from_millis(1050)).await;
    let now = env.store.now().await;
    assert_eq!(env.store.limited_ready(now, None).await.expect("ready").len(), 3);
    assert_eq!(take_next(&env, now).await, 3);
    assert_eq!(take(&env, &ids, now).await, 0);

    // Removed, the queue's jobs go back to the ordinary claim.
    let none = SettingsChange {
        rate_limit: Some(None),
        ..Default::default()
    };
    env.jobs.set_queue("mail", none, &actor()).await.expect("remove");
    assert_eq!(
        env.store.claim_many(&ids, "w", now, LEASE).await.expect("claim").len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_rate_limit_holds_per_key_and_not_across_keys() {
    let env = TestEnv::new().await;
    env.jobs
        .set_queue("calls", rate(2, 60_000, Some("customer.id")), &actor())
        .await
        .expect("rate");
    let keyed = |customer: Option<&str>| {
        let payload = match customer {
            Some(id) => json!({"customer": {"id": id}}),
            None => json!({}),
        };
        NewJob::new("GAUGE", payload).queue("calls")
    };
    let mut jobs = Vec::new();
    for customer in [Some("a"), Some("b"), None] {
        jobs.extend((0..4).map(|_| keyed(customer)));
    }
    let ids = env.create_jobs(&jobs).await;
    let now = env.store.now().await;
    let claimed = env.store.claim_limited(&ids, "w", now, LEASE).await.expect("claim");
    let mut per_key: std::collections::BTreeMap<String, usize> = Default::default();
    for lease in &claimed {
        let key = lease.job().payload["customer"]["id"]
            .as_str()
            .unwrap_or("none")
            .to_owned();
        *per_key.entry(key).or_default() += 1;
    }
    // Two per customer, and two for the jobs without one (they share a window).
    assert_eq!(per_key, [("a".into(), 2), ("b".into(), 2), ("none".into(), 2)].into());
    assert_eq!(take(&env, &ids, now).await, 0);
    // A new customer has a window of its own.
    let c = env.create_job(keyed(Some("c"))).await;
    let now = env.store.now().await;
    assert_eq!(take(&env, &[c], now).await, 1);
}

#[tokio::test]
async fn the_single_claim_of_the_library_api_claims_a_limited_queues_job_within_its_limit() {
    let env = TestEnv::new().await;
    env.jobs
        .set_queue("mail", limit(Some(1)), &actor())
        .await
        .expect("limit");
    let ids = env.create_jobs(&[job("mail"), job("mail")]).await;
    let now = env.store.now().await;
    let first = env.store.claim(ids[0], "w", now, LEASE).await.expect("claim");
    assert!(matches!(first, Claim::Claimed(_)), "{first:?}");
    let second = env.store.claim(ids[1], "w", now, LEASE).await.expect("claim");
    assert!(matches!(second, Claim::Unavailable), "{second:?}");
}
