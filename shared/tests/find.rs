//! Finding jobs: every filter, the pages, and the plans Postgres makes for them over a large table;
//! and counting them for the queues' health over that table, exactly up to the bound and estimated
//! past it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::pruner::{Scope, prune_statement};
use jobq_shared::search::{JobCursor, JobFilter};
use jobq_shared::store::{Claim, Lease};
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob, Status};
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(30);

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_900_000_000_000 + ms).expect("valid time")
}

async fn create(env: &TestEnv, new: NewJob, now: DateTime<Utc>) -> JobId {
    env.store.create(&new, 60_000, now).await.expect("create").job.id
}

async fn claim(env: &TestEnv, id: JobId, now: DateTime<Utc>) -> Lease {
    match env.store.claim(id, "w", now, LEASE).await.expect("claim") {
        Claim::Claimed(lease) => *lease,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn ids(found: &jobq_shared::search::Found) -> Vec<JobId> {
    found.items.iter().map(|job| job.id).collect()
}

#[tokio::test]
async fn every_filter_finds_its_jobs_newest_first() {
    let env = TestEnv::new().await;
    let email_old = create(
        &env,
        NewJob::new("email.send", json!({"userId": 1, "tags": ["a", "b"]})).queue("EMAIL"),
        at(0),
    )
    .await;
    let email_new = create(
        &env,
        NewJob::new("email.send", json!({"userId": 2, "tags": ["b"]})).queue("EMAIL"),
        at(10),
    )
    .await;
    let thumb = create(
        &env,
        NewJob::new("thumbnail", json!({"userId": 1})).queue("MEDIA"),
        at(20),
    )
    .await;
    let dead = create(&env, NewJob::new("sync", json!("x")).max_attempts(1), at(30)).await;
    let lease = claim(&env, dead, at(31)).await;
    env.store
        .fail(
            &lease,
            at(32),
            "Upstream TIMED OUT after 30 s (50% done)",
            false,
            at(32),
            Outcome::Failed,
        )
        .await
        .expect("fail");

    let find = |filter: JobFilter| {
        let store = env.store.clone();
        async move { ids(&store.find(&filter, None, 100).await.expect("find")) }
    };
    assert_eq!(
        find(JobFilter::default()).await,
        vec![dead, thumb, email_new, email_old]
    );
    assert_eq!(find(JobFilter::default().status(Status::Failed)).await, vec![dead]);
    assert_eq!(
        find(JobFilter::default().status(Status::Pending)).await,
        vec![thumb, email_new, email_old]
    );
    assert_eq!(
        find(JobFilter::default().queue(" EMAIL ").expect("queue")).await,
        vec![email_new, email_old]
    );
    assert_eq!(find(JobFilter::default().queue("email").expect("queue")).await, vec![]);
    assert_eq!(
        find(JobFilter::default().job_type("thumbnail").expect("type")).await,
        vec![thumb]
    );
    assert_eq!(
        find(JobFilter::default().payload(json!({"userId": 1})).expect("payload")).await,
        vec![thumb, email_old]
    );
    assert_eq!(
        find(JobFilter::default().payload(json!({"tags": ["b"]})).expect("payload")).await,
        vec![email_new, email_old]
    );
    assert_eq!(
        find(JobFilter::default().error("timed out").expect("error")).await,
        vec![dead]
    );
    // `%` and `_` are text, not wildcards.
    assert_eq!(
        find(JobFilter::default().error("50%").expect("error")).await,
        vec![dead]
    );
    assert_eq!(find(JobFilter::default().error("5_%").expect("error")).await, vec![]);
    assert_eq!(
        find(JobFilter::default().created_after(at(10)).created_before(at(30))).await,
        vec![thumb, email_new]
    );
    assert_eq!(
        find(
            JobFilter::default()
                .queue("EMAIL")
                .expect("queue")
                .payload(json!({"userId": 2}))
                .expect("payload")
        )
        .await,
        vec![email_new]
    );

    // Found jobs come whole, with their history.
    let found = env
        .store
        .find(&JobFilter::default().status(Status::Failed), None, 10)
        .await
        .expect("find");
    assert_eq!(found.items[0], env.store.get(dead).await.expect("get"));
    assert_eq!(found.items[0].history.len(), 1);
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats_even_within_one_instant() {
    let env = TestEnv::new().await;
    let mut created = Vec::new();
    // Five jobs created in the same microsecond: the id breaks the tie.
    for i in 0..5 {
        created.push(create(&env, NewJob::new("T", json!(i)), at(0)).await);
    }
    for i in 0..4 {
        created.push(create(&env, NewJob::new("T", json!(i)), at(1 + i)).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<JobCursor> = None;
    let mut pages = 0;
    loop {
        let page = env.store.find(&JobFilter::default(), cursor, 2).await.expect("page");
        pages += 1;
        seen.extend(ids(&page));
        match page.next {
            Some(next) => cursor = Some(next.to_string().parse().expect("the cursor parses back")),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    // Newest first; within one instant, the higher id first.
    let mut by_time: Vec<(DateTime<Utc>, JobId)> = Vec::new();
    for id in &created {
        by_time.push((env.store.get(*id).await.expect("get").created_at, *id));
    }
    by_time.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, by_time.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_cancel_request_is_kept_through_what_the_existing_sql_does_with_its_attempt() {
    let env = TestEnv::new().await;
    let limited = NewJob::new("T", json!(1)).max_attempts(2);

    // Completes anyway: COMPLETED, the request kept as a record.
    let completes = create(&env, limited.clone(), at(0)).await;
    let lease = claim(&env, completes, at(1)).await;
    let requested = env.store.request_cancel(completes, at(2)).await.expect("request");
    assert_eq!(
        (requested.status, requested.cancel_requested_at),
        (Status::InProgress, Some(at(2)))
    );
    // A second request keeps the first one's time.
    let again = env.store.request_cancel(completes, at(3)).await.expect("request again");
    assert_eq!(again.cancel_requested_at, Some(at(2)));
    env.store.complete(&lease, at(4)).await.expect("complete");
    let job = env.store.get(completes).await.expect("get");
    assert_eq!((job.status, job.cancel_requested_at), (Status::Completed, Some(at(2))));

    // Fails for good: dead, the request kept.
    let dies = create(&env, limited.clone(), at(0)).await;
    let lease = claim(&env, dies, at(1)).await;
    env.store.request_cancel(dies, at(2)).await.expect("request");
    env.store
        .fail(&lease, at(3), "boom", false, at(3), Outcome::Failed)
        .await
        .expect("fail");
    let job = env.store.get(dies).await.expect("get");
    assert_eq!((job.status, job.cancel_requested_at), (Status::Failed, Some(at(2))));

    // Fails with attempts left: not run again, but CANCELLED, as requested (the request kept).
    let retries = create(&env, limited.clone(), at(0)).await;
    let lease = claim(&env, retries, at(1)).await;
    env.store.request_cancel(retries, at(2)).await.expect("request");
    let after = env
        .store
        .fail(&lease, at(3), "flaky", true, at(4), Outcome::Failed)
        .await
        .expect("fail");
    assert_eq!(after, jobq_shared::store::AfterFailure::Cancelled);
    let job = env.store.get(retries).await.expect("get");
    assert_eq!(
        (job.status, job.cancel_requested_at, job.completed_at),
        (Status::Cancelled, Some(at(2)), Some(at(3)))
    );
    assert_eq!(job.history[0].outcome, Outcome::Failed);

    // Given back unfinished (a worker shutting down): CANCELLED too, uncharged.
    let released = create(&env, limited, at(0)).await;
    let lease = claim(&env, released, at(1)).await;
    env.store.request_cancel(released, at(2)).await.expect("request");
    let after = env.store.release(&lease, at(3), "shutdown").await.expect("release");
    assert_eq!(after, jobq_shared::store::AfterFailure::Cancelled);
    let job = env.store.get(released).await.expect("get");
    assert_eq!((job.status, job.attempts), (Status::Cancelled, 0));
    assert_eq!(job.history[0].outcome, Outcome::Released);

    // Only a running job takes a request.
    let pending = create(&env, NewJob::new("T", json!(1)), at(0)).await;
    assert!(matches!(
        env.store.request_cancel(pending, at(1)).await,
        Err(jobq_shared::Error::InvalidTransition {
            status: Status::Pending,
            ..
        })
    ));
    assert!(matches!(
        env.store.request_cancel(completes, at(5)).await,
        Err(jobq_shared::Error::InvalidTransition {
            status: Status::Completed,
            ..
        })
    ));
    assert!(matches!(
        env.store.request_cancel(JobId::new(), at(1)).await,
        Err(jobq_shared::Error::NotFound(_))
    ));
}

// --------------------------------------------------------------------------------------------------
// Plans over a large table

const LARGE: i64 = 200_000;

/// How many jobs the filters' plans are checked over: `JOBQ_FIND_JOBS` (at least `LARGE`; a
/// million for the figures in docs/PERFORMANCE.md), else `LARGE`.
fn filter_jobs() -> i64 {
    std::env::var("JOBQ_FIND_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .map_or(LARGE, |n: i64| n.max(LARGE))
}

/// Fills `jobs` (and `job_listing`) with `n` rows in one statement: 70% COMPLETED, 10% FAILED (with an error naming
/// one of 1000 hosts), 10% PENDING, 5% IN_PROGRESS, 5% CANCELLED; 50 queues, 200 types, 10,000
/// users in the payloads; one job every 10 s from 2025-01-01.
async fn fill(env: &TestEnv, n: i64) {
    let client = env.store.pool().get().await.expect("connection");
    // Filling 200,000 rows takes longer than the bound jobq puts on its own statements.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .expect("unbounded for the fill");
    client
        .batch_execute(&format!(
            "INSERT INTO jobs (id, job_type, queue, payload, status, attempts, max_attempts, priority,
                               run_at, timeout_ms, lease_expires_at, worker_id, last_error,
                               created_at, updated_at, started_at, completed_at)
             SELECT gen_random_uuid(), 'type-' || (i % 200), 'queue-' || (i % 50),
                    jsonb_build_object('userId', i % 10000, 'tenant', 'tenant-' || (i % 100), 'seq', i),
                    s.status,
                    CASE WHEN s.status = 'PENDING' THEN 0 ELSE 1 END, 3, 50,
                    t, 60000,
                    CASE WHEN s.status = 'IN_PROGRESS' THEN now() + interval '1 hour' END,
                    CASE WHEN s.status = 'IN_PROGRESS' THEN 'w' END,
                    CASE WHEN s.status = 'FAILED'
                         THEN 'connection to host-' || ((i / 20) % 1000) || '.internal timed out after 30 s' END,
                    t, t,
                    CASE WHEN s.status <> 'PENDING' THEN t END,
                    CASE WHEN s.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN t + interval '1 second' END
             FROM generate_series(1, {n}) AS i,
                  LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00' + i * interval '10 seconds' AS t) AS c,
                  LATERAL (SELECT CASE
                      WHEN i % 20 < 14 THEN 'COMPLETED'
                      WHEN i % 20 < 16 THEN 'FAILED'
                      WHEN i % 20 < 18 THEN 'PENDING'
                      WHEN i % 20 < 19 THEN 'IN_PROGRESS'
                      ELSE 'CANCELLED' END AS status) AS s;
             INSERT INTO job_listing (id, created_at, queue, job_type)
             SELECT id, created_at, queue, job_type FROM jobs;"
        ))
        .await
        .expect("fill jobs");
    // As autovacuum keeps a live table: GIN's pending list merged, statistics fresh.
    for table in ["jobs", "job_listing"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .expect("vacuum");
    }
    client
        .batch_execute("RESET statement_timeout")
        .await
        .expect("bounded again");
}

/// (what, filter, cursor, the indexes that may serve it, rows on the page).
type PlanCase = (
    &'static str,
    JobFilter,
    Option<JobCursor>,
    &'static [&'static str],
    usize,
);

/// Every node of a plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut all = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            all.extend(nodes(child));
        }
    }
    all
}

fn date(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("date").with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_is_answered_from_an_index_over_200000_jobs() {
    let env = TestEnv::new().await;
    let started = Instant::now();
    let n = filter_jobs();
    fill(&env, n).await;
    eprintln!("inserted {n} jobs with every index in place in {:?}", started.elapsed());
    assert_eq!(env.count_jobs(None).await, n);

    let first_completed = env
        .store
        .find(&JobFilter::default().status(Status::Completed), None, 20)
        .await
        .expect("first page");
    let cursor = first_completed.next.expect("more than one page");

    // (what, filter, cursor, the indexes that may serve it, rows on the page). Where most jobs match
    // (70% are COMPLETED), walking the creation-time index and skipping the few others is as good.
    let cases: Vec<PlanCase> = vec![
        (
            "no filter",
            JobFilter::default(),
            None,
            &["job_listing_created_idx"],
            20,
        ),
        (
            "status=FAILED",
            JobFilter::default().status(Status::Failed),
            None,
            &["jobs_status_created_idx"],
            20,
        ),
        (
            "status=COMPLETED, page 2",
            JobFilter::default().status(Status::Completed),
            Some(cursor),
            &["jobs_status_created_idx", "job_listing_created_idx"],
            20,
        ),
        (
            "queue=queue-7",
            JobFilter::default().queue("queue-7").expect("queue"),
            None,
            &["job_listing_queue_created_idx"],
            20,
        ),
        (
            "type=type-42",
            JobFilter::default().job_type("type-42").expect("type"),
            None,
            &["job_listing_type_created_idx"],
            20,
        ),
        (
            "payload={\"userId\":4242}",
            JobFilter::default().payload(json!({"userId": 4242})).expect("payload"),
            None,
            &["jobs_payload_idx"],
            20,
        ),
        (
            "error=host-123.internal",
            JobFilter::default().error("host-123.internal").expect("error"),
            None,
            &["jobs_last_error_trgm_idx"],
            20,
        ),
        (
            "createdAfter..createdBefore (1 hour)",
            JobFilter::default()
                .created_after(date("2025-01-10T00:00:00Z"))
                .created_before(date("2025-01-10T01:00:00Z")),
            None,
            &["job_listing_created_idx"],
            20,
        ),
    ];

    let mut report = Vec::new();
    for (name, filter, after, indexes, expected_rows) in &cases {
        let plan = env
            .store
            .explain_find(filter, *after, 20, false)
            .await
            .expect("explain");
        let root = &plan[0]["Plan"];
        let all = nodes(root);
        let scans: Vec<String> = all
            .iter()
            .filter_map(|n| n["Node Type"].as_str().map(|t| (t, n)))
            .filter(|(t, _)| t.contains("Scan"))
            .map(|(t, n)| format!("{t} {}", n["Index Name"].as_str().unwrap_or_default()))
            .collect();
        assert!(
            !all.iter().any(|n| n["Node Type"] == "Seq Scan"
                && ["jobs", "job_listing"].contains(&n["Relation Name"].as_str().unwrap_or_default())),
            "{name}: a sequential scan of a whole table: {root:#}"
        );
        assert!(
            all.iter()
                .any(|n| n["Index Name"].as_str().is_some_and(|used| indexes.contains(&used))),
            "{name}: none of {indexes:?} used: {root:#}"
        );

        let analyzed = env
            .store
            .explain_find(filter, *after, 20, true)
            .await
            .expect("explain analyze");
        let execution_ms = analyzed[0]["Execution Time"].as_f64().expect("execution time");
        let rows = analyzed[0]["Plan"]["Actual Rows"].as_f64().unwrap_or_default();
        let call = Instant::now();
        let found = env.store.find(filter, *after, 20).await.expect("find");
        let call_ms = call.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(found.items.len(), *expected_rows, "{name}");
        assert!(
            found
                .items
                .windows(2)
                .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id))
        );
        report.push(format!(
            "| {name} | {} | {rows} | {execution_ms:.3} | {call_ms:.1} |",
            scans.join(", ")
        ));
    }
    eprintln!("| filter | scans | rows | execution ms (EXPLAIN ANALYZE) | Store::find ms (with history) |");
    eprintln!("|---|---|---|---|---|");
    for line in report {
        eprintln!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_health_and_pruning_stay_on_indexes_over_200000_jobs() {
    use jobq_shared::health::{COUNT_BOUND, counts_statement};
    use std::collections::HashMap;

    let env = TestEnv::new().await;
    fill(&env, LARGE).await;
    let client = env.store.pool().get().await.expect("connection");
    let mut truth: HashMap<(String, String), i64> = HashMap::new();
    for row in client
        .query("SELECT queue, status, count(*) FROM jobs GROUP BY queue, status", &[])
        .await
        .expect("reference counts")
    {
        truth.insert((row.get(0), row.get(1)), row.get(2));
    }
    let oldest: HashMap<String, f64> = client
        .query(
            "SELECT queue, extract(epoch FROM now() - min(run_at))::float8 FROM jobs
             WHERE status = 'PENDING' GROUP BY queue",
            &[],
        )
        .await
        .expect("reference ages")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    // The four indexed statuses are counted through their own indexes, never a scan of `jobs`.
    let statuses = [Status::Pending, Status::InProgress, Status::Failed, Status::Cancelled];
    let plan: Value = client
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) {}", counts_statement(&statuses, false)),
            &[],
        )
        .await
        .expect("explain")
        .get(0);
    let all = nodes(&plan[0]["Plan"]);
    assert!(
        !all.iter()
            .any(|n| n["Node Type"] == "Seq Scan" && n["Relation Name"] == "jobs"),
        "queue_counts scans the whole of jobs: {plan:#}"
    );

    // The retention's deletes find their jobs through indexes too, never a scan of `jobs`.
    // Both the default retention's (every queue without its own) and one queue's own.
    for (status, scope) in [Status::Completed, Status::Cancelled, Status::Failed]
        .into_iter()
        .flat_map(|status| [(status, Scope::Default), (status, Scope::Queue)])
    {
        let statement = prune_statement(status, scope);
        let week_ms: i64 = 7 * 24 * 3600 * 1000;
        // The default's statement leaves out a queue that keeps its jobs for another time.
        let queues = vec!["queue-7".to_owned()];
        let plan: Value = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) {statement}"),
                &[&week_ms, &1000i64, &queues],
            )
            .await
            .expect("explain prune")
            .get(0);
        let all = nodes(&plan[0]["Plan"]);
        assert!(
            !all.iter().any(|n| n["Node Type"] == "Seq Scan"
                && ["jobs", "job_listing"].contains(&n["Relation Name"].as_str().unwrap_or_default())),
            "pruning {status} ({scope:?}) scans a whole table: {plan:#}"
        );
    }

    // 20,000 pending, 10,000 running, 20,000 dead, 10,000 cancelled: under the bound, exact. The
    // 200,000 jobs of the listing are past it, so COMPLETED is estimated.
    for (bound, estimated) in [
        (COUNT_BOUND, vec![Status::Completed]),
        (15_000, vec![Status::Pending, Status::Completed, Status::Failed]),
    ] {
        let started = Instant::now();
        let health = env.store.queue_health(None, bound).await.expect("health");
        eprintln!("queue_health over {LARGE} jobs, bound {bound}: {:?}", started.elapsed());
        assert_eq!(health.len(), 50);
        for queue in &health {
            for status in Status::ALL {
                let count = queue.count(status);
                let real = truth
                    .get(&(queue.queue.clone(), status.to_string()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(count.estimated, estimated.contains(&status), "{} {status}", queue.queue);
                if count.estimated {
                    // The planner's estimate, from the statistics of an analyzed table (with
                    // those on queue and status together); it never says less than 1.
                    let off = (count.count - real).abs();
                    assert!(
                        off <= 1 || off as f64 / real as f64 <= 0.25,
                        "{} {status}: estimated {} for {real}",
                        queue.queue,
                        count.count
                    );
                } else {
                    assert_eq!(count.count, real, "{} {status}", queue.queue);
                }
            }
            // Half the queues have no pending job (queue and status both follow the job's number).
            match (oldest.get(&queue.queue), queue.oldest_pending_age) {
                (Some(want), Some(got)) => {
                    assert!((got - want).abs() < 60.0, "{}: age {got}, want {want}", queue.queue)
                }
                (want, got) => assert_eq!(want.copied(), got, "{}", queue.queue),
            }
            let pending = truth
                .get(&(queue.queue.clone(), "PENDING".to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(queue.ready, (bound >= 20_000).then_some(pending));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_operations_count_exactly_and_act_through_indexes_over_200000_jobs() {
    use jobq_shared::bulk::{Actor, BATCH, BulkAction, OperationState, Operations};

    let env = TestEnv::new().await;
    fill(&env, LARGE).await;
    let client = env.store.pool().get().await.expect("connection");
    let actor = Actor {
        principal: "api-token".into(),
        on_behalf_of: None,
    };
    let operations = Operations::new(env.store.clone(), env.queue.clone());
    for (action, filter, truth) in [
        (
            BulkAction::Requeue,
            json!({"error": "host-42."}),
            "status = 'FAILED' AND last_error ILIKE '%host-42.%'",
        ),
        (BulkAction::Requeue, json!({}), "status = 'FAILED'"),
        (
            BulkAction::Cancel,
            json!({"queue": "queue-7"}),
            "status IN ('PENDING', 'IN_PROGRESS') AND queue = 'queue-7'",
        ),
        (
            BulkAction::Delete,
            json!({"type": "type-11", "payload": {"tenant": "tenant-11"}}),
            "status IN ('COMPLETED', 'CANCELLED', 'FAILED') AND job_type = 'type-11' AND payload @> '{\"tenant\": \"tenant-11\"}'",
        ),
        (
            BulkAction::Delete,
            json!({"status": "COMPLETED", "queue": "queue-1"}),
            "status = 'COMPLETED' AND queue = 'queue-1'",
        ),
    ] {
        let filter = JobFilter::from_json(&filter).expect("filter");
        let expected: i64 = client
            .query_one(&format!("SELECT count(*) FROM jobs WHERE {truth}"), &[])
            .await
            .expect("reference count")
            .get(0);
        assert!(expected > 0, "{truth}: the fill has matches");
        let started = Instant::now();
        let count = env.jobs.bulk_count(&filter, action).await.expect("dry run");
        let counted_in = started.elapsed();
        assert_eq!(count, expected, "{action:?} {filter:?}");

        let operation = env
            .jobs
            .start_bulk(&filter, action, &actor, Duration::ZERO)
            .await
            .expect("start");
        let mut batches = Vec::new();
        let mut current = operation;
        while current.state == OperationState::Running {
            // Every batch of every phase finds its jobs through an index.
            let plan = env
                .store
                .explain_operation_batch(&current, BATCH)
                .await
                .expect("explain batch");
            let all = nodes(&plan[0]["Plan"]);
            assert!(
                !all.iter().any(|n| n["Node Type"] == "Seq Scan"
                    && ["jobs", "job_listing"].contains(&n["Relation Name"].as_str().unwrap_or_default())),
                "{action:?} {filter:?} phase {}: a batch scans a whole table: {plan:#}",
                current.phase
            );
            let started = Instant::now();
            let outcome = operations.run_batch(&current).await.expect("batch");
            batches.push((outcome.acted.len(), started.elapsed()));
            assert!(outcome.owned);
            current = env.store.operation(current.id).await.expect("get").expect("exists");
        }
        assert_eq!(
            (current.processed, current.skipped),
            (expected, 0),
            "{action:?} {filter:?}"
        );
        let left: i64 = client
            .query_one(&format!("SELECT count(*) FROM jobs WHERE {truth}"), &[])
            .await
            .expect("count after")
            .get(0);
        assert_eq!(left, 0, "{action:?} {filter:?}: every match acted on");
        let slowest = batches.iter().map(|(_, took)| *took).max().unwrap_or_default();
        eprintln!(
            "bulk {action:?} {filter:?} over {LARGE} jobs: {expected} matches, dry run {counted_in:?}, \
             {} batches, slowest {slowest:?}, all {:?}",
            batches.len(),
            batches.iter().map(|(_, took)| *took).sum::<Duration>()
        );
    }
}
