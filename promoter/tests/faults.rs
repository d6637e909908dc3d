//! Fault injection against real servers that each test starts for itself (see `support`): Redis
//! restarted empty, Redis down, Postgres down and back, a push lost after a committed create. Each
//! test drives the promoter binary as a process and prints one parseable line:
//! `FAULT scenario=<name> jobs=<n> lost=<n> duplicates_overlapping=<n> stale_completions_accepted=<n> recovery_ms=<n> ...`

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use jobq_functions::Deps;
use jobq_shared::job::Outcome;
use jobq_shared::queue::{Keys, level};
use jobq_shared::store::AfterFailure;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Config, Job, JobId, Jobs, NewJob, Queue, Status, Store};
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use support::{ChildGuard, PrivatePostgres, PrivateRedis, free_port};
use tokio::time::Instant;

/// The promoter binary over the given servers, with fast maintenance periods.
fn promoter(database_url: &str, redis_url: &str, namespace: &str, extra: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobq-promoter"));
    cmd.env_clear()
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .env("JOBQ_NAMESPACE", namespace)
        .env("JOBQ_WORKER_CONCURRENCY", "4")
        .env("JOBQ_PG_POOL_SIZE", "6")
        .env("JOBQ_POLL_MS", "200")
        .env("JOBQ_PROMOTE_INTERVAL_MS", "200")
        .env("JOBQ_REAP_INTERVAL_MS", "200")
        .env("JOBQ_REPAIR_INTERVAL_MS", "200")
        .env("JOBQ_SHUTDOWN_GRACE_MS", "1000")
        .env("JOBQ_METRICS_ADDR", "off")
        .env("RUST_LOG", "warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ChildGuard::spawn(cmd)
}

fn post_json(body: &str) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/jobs")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn body_json(response: &lambda_http::Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null)
}

/// Creates a job through the HTTP handler; returns its id and how long the call took.
async fn create_via_handler(deps: &Deps, body: Value) -> (JobId, Duration) {
    let started = Instant::now();
    let response = jobq_functions::create_job::handle(deps, post_json(&body.to_string())).await;
    let took = started.elapsed();
    let json = body_json(&response);
    assert_eq!(response.status().as_u16(), 201, "create answered {json}");
    let id: uuid::Uuid = json["jobId"].as_str().expect("jobId").parse().expect("uuid");
    (JobId(id), took)
}

/// Waits until every job in `ids` has `status`; returns how long that took.
async fn wait_all(jobs: &Jobs, ids: &[JobId], status: Status, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for &id in ids {
            match jobs.get(id).await {
                Ok(job) if job.status == status => {}
                Ok(job) => missing.push(format!("{id}={}", job.status)),
                Err(err) => missing.push(format!("{id}: {err}")),
            }
        }
        if missing.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "after {within:?}, {} of {} jobs are not {status}: {:?}",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_all(jobs: &Jobs, ids: &[JobId]) -> Vec<Job> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        out.push(jobs.get(id).await.expect("get"));
    }
    out
}

/// Attempts of one job whose run times overlap (the next started before the previous ended).
fn overlapping_attempts(job: &Job) -> usize {
    let mut attempts = job.history.clone();
    attempts.sort_by_key(|a| a.started_at);
    attempts
        .windows(2)
        .filter(|w| w[0].finished_at.is_none_or(|end| w[1].started_at < end))
        .count()
}

/// Completions that should have been refused: a second success, or a success on an attempt that
/// was not the job's last.
fn stale_completions(job: &Job) -> usize {
    let succeeded = job.history.iter().filter(|a| a.outcome == Outcome::Succeeded).count();
    let last_succeeded = job.history.last().is_some_and(|a| a.outcome == Outcome::Succeeded);
    succeeded.saturating_sub(1) + usize::from(succeeded > 0 && !last_succeeded)
}

fn fault_line(
    scenario: &str,
    jobs: usize,
    lost: usize,
    overlapping: usize,
    stale: usize,
    recovery: Duration,
    extra: &str,
) {
    println!(
        "FAULT scenario={scenario} jobs={jobs} lost={lost} duplicates_overlapping={overlapping} \
         stale_completions_accepted={stale} recovery_ms={}{}{extra}",
        recovery.as_millis(),
        if extra.is_empty() { "" } else { " " }
    );
}

/// Waits until the repairer has (re)built this namespace's keys.
async fn wait_epoch(queue: &Queue, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if queue.built().await.unwrap_or(false) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "redis keys not rebuilt within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_rebuilt_from_postgres_and_every_job_keeps_its_place_and_runs_once() {
    let mut redis = PrivateRedis::start_new();
    let redis_url = redis.url();
    let env = TestEnv::with(|c| c.redis_url = redis_url.clone()).await;
    let now = Utc::now();

    // Ready jobs at several priorities.
    let mut ready = Vec::new();
    for i in 0..24i16 {
        let job = NewJob::new("TEST", json!(format!("ready-{i}"))).priority((i * 9) % 101);
        ready.push(env.jobs.create(&job, now).await.expect("create").job);
    }
    // Scheduled minutes ahead.
    let mut later = Vec::new();
    for i in 0..4i64 {
        let job = NewJob::new("TEST", json!("later"))
            .priority(20 + i as i16 * 20)
            .run_at(now + chrono::Duration::minutes(5 + i));
        later.push(env.create_job_at(job, now).await);
    }
    // Waiting for a retry minutes ahead.
    for i in 0..3i64 {
        let id = env.create_job_at(NewJob::new("TEST", json!("retry")), now).await;
        // The create pushed it as ready: take it off, as a worker's pop would.
        let lease = env
            .claim_job(id, "fault-test", Utc::now(), Duration::from_secs(30))
            .await;
        let retry_at = now + chrono::Duration::minutes(3 + i);
        match env
            .store
            .fail(&lease, now, "transient", true, retry_at, Outcome::Failed)
            .await
            .expect("fail")
        {
            AfterFailure::Retry { run_at, priority } => env
                .queue
                .enqueue(id, "default", priority, run_at, now)
                .await
                .expect("enqueue"),
            other => panic!("retry expected, not {other:?}"),
        }
        later.push(id);
    }
    // Dead.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let id = env.create_job_at(NewJob::new("TEST", json!("FAIL_ALWAYS")), now).await;
        let lease = env
            .claim_job(id, "fault-test", Utc::now(), Duration::from_secs(30))
            .await;
        let after = env
            .store
            .fail(&lease, now, "boom", false, now, Outcome::Failed)
            .await
            .expect("fail");
        assert!(matches!(after, AfterFailure::Dead));
        env.queue.add_dead(id).await.expect("add dead");
        dead.push(id);
    }
    let total = ready.len() + later.len() + dead.len();
    let later_before: HashMap<JobId, Job> = get_all(&env.jobs, &later)
        .await
        .into_iter()
        .map(|j| (j.id, j))
        .collect();

    // Redis loses everything.
    redis.stop();
    redis.start();
    let restarted = Instant::now();
    assert!(env.queue.ready_ids().await.expect("ready ids").is_empty());

    // Stray duplicates: every ready id twice more, and the delayed and dead ones on a ready list too.
    let pushed_at = Utc::now();
    for job in &ready {
        for _ in 0..2 {
            env.queue
                .enqueue(job.id, &job.queue, job.priority, pushed_at, pushed_at)
                .await
                .expect("push copy");
        }
    }
    for id in later.iter().chain(&dead) {
        env.queue
            .enqueue(*id, "default", 50, pushed_at, pushed_at)
            .await
            .expect("push copy");
    }

    let mut child = promoter(&env.config.database_url, &redis.url(), &env.config.namespace, &[]);
    let ready_ids: Vec<JobId> = ready.iter().map(|j| j.id).collect();
    wait_all(&env.jobs, &ready_ids, Status::Completed, Duration::from_secs(30)).await;
    let recovery = restarted.elapsed();
    wait_epoch(&env.queue, Duration::from_secs(5)).await;
    child.assert_running();

    // Let any remaining copies drain, then check nothing ran twice.
    let drained_by = Instant::now() + Duration::from_secs(10);
    while !env.queue.ready_ids().await.expect("ready ids").is_empty() {
        assert!(Instant::now() < drained_by, "copies still on the ready lists");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut lost = 0;
    let mut overlapping = 0;
    let mut stale = 0;
    let mut ran_twice = Vec::new();
    for job in get_all(&env.jobs, &ready_ids).await {
        let succeeded = job.history.iter().filter(|a| a.outcome == Outcome::Succeeded).count();
        if job.status != Status::Completed {
            lost += 1;
        }
        if succeeded != 1 || job.history.len() != 1 || job.attempts != 1 {
            ran_twice.push(format!("{}: {:?}", job.id, job.history));
        }
        overlapping += overlapping_attempts(&job);
        stale += stale_completions(&job);
    }

    // Delayed jobs: still pending, untouched, and back in the schedule at their own due times.
    let deadline = Instant::now() + Duration::from_secs(5);
    let scheduled = loop {
        let scheduled: HashMap<String, i64> = env.queue.scheduled().await.expect("scheduled").into_iter().collect();
        let all_there = later_before
            .values()
            .all(|j| scheduled.contains_key(&Keys::scheduled_member(j.id, &j.queue, level(j.priority))));
        if all_there || Instant::now() >= deadline {
            break scheduled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for job in get_all(&env.jobs, &later).await {
        let before = &later_before[&job.id];
        let member = Keys::scheduled_member(job.id, &job.queue, level(job.priority));
        match scheduled.get(&member) {
            Some(score) => assert_eq!(
                *score,
                before.run_at.timestamp_millis(),
                "job {} is scheduled at the wrong time",
                job.id
            ),
            None => lost += 1,
        }
        assert_eq!(job.status, Status::Pending, "job {}", job.id);
        assert_eq!(job.attempts, before.attempts, "job {} ran early", job.id);
        assert_eq!(job.run_at, before.run_at, "job {} was moved", job.id);
    }
    // Dead jobs: back on the DLQ list, still dead.
    let dlq: HashSet<String> = env.queue.dead_ids().await.expect("dlq").into_iter().collect();
    for job in get_all(&env.jobs, &dead).await {
        assert_eq!(job.status, Status::Failed);
        if !dlq.contains(&job.id.to_string()) {
            lost += 1;
        }
    }

    fault_line(
        "redis_restarted_empty",
        total,
        lost,
        overlapping,
        stale,
        recovery,
        &format!("ran_twice={}", ran_twice.len()),
    );
    assert_eq!(lost, 0, "jobs lost");
    assert!(
        ran_twice.is_empty(),
        "jobs that did not run exactly once: {ran_twice:?}"
    );
    assert_eq!((overlapping, stale), (0, 0));
    assert!(recovery < Duration::from_secs(20), "recovery took {recovery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_jobs_are_accepted_and_run_from_postgres_and_redis_is_repaired_when_it_returns() {
    let mut redis = PrivateRedis::start_new();
    let redis_url = redis.url();
    let env = TestEnv::with(|c| c.redis_url = redis_url.clone()).await;
    let deps = Deps::from_config(env.config.clone()).expect("deps");
    let _child = promoter(
        &env.config.database_url,
        &redis.url(),
        &env.config.namespace,
        &[("JOBQ_REPAIR_AFTER_MS", "60000")],
    );
    let (warm, _) = create_via_handler(&deps, json!({"type": "TEST", "payload": "warm"})).await;
    wait_all(&env.jobs, &[warm], Status::Completed, Duration::from_secs(30)).await;

    // Redis goes away.
    redis.stop();
    let mut during = Vec::new();
    let mut slowest_create = Duration::ZERO;
    for i in 0..8 {
        let (id, took) = create_via_handler(
            &deps,
            json!({"type": "TEST", "payload": format!("SLEEP_MS={}", 50 + i)}),
        )
        .await;
        slowest_create = slowest_create.max(took);
        during.push(id);
    }
    let (scheduled_id, took) =
        create_via_handler(&deps, json!({"type": "TEST", "payload": "later", "delaySeconds": 3600})).await;
    slowest_create = slowest_create.max(took);
    assert!(
        slowest_create < Duration::from_secs(5),
        "a create took {slowest_create:?} with Redis down"
    );
    // Stored, and run from Postgres while Redis stays down.
    let drained_in = wait_all(&env.jobs, &during, Status::Completed, Duration::from_secs(30)).await;
    assert_eq!(env.jobs.get(scheduled_id).await.expect("get").status, Status::Pending);

    // Redis comes back empty: the repairer rebuilds the keys, the scheduled job is back in the ZSET.
    redis.start();
    let back = Instant::now();
    wait_epoch(&env.queue, Duration::from_secs(15)).await;
    let scheduled_job = env.jobs.get(scheduled_id).await.expect("get");
    let member = Keys::scheduled_member(scheduled_id, &scheduled_job.queue, level(scheduled_job.priority));
    let give_up = Instant::now() + Duration::from_secs(5);
    let score = loop {
        let scheduled = env.queue.scheduled().await.expect("scheduled");
        if let Some((_, score)) = scheduled.iter().find(|(m, _)| *m == member) {
            break *score;
        }
        assert!(
            Instant::now() < give_up,
            "the scheduled job was not pushed back to redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(score, scheduled_job.run_at.timestamp_millis());
    let repaired = back.elapsed();

    // The fast path is back: once the worker has given Redis another try (it stays on Postgres
    // for 5 s after a failure), a job pushed to Redis runs while one that is only in Postgres
    // waits. Probe until that holds, for at most 20 s after Redis came back.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(back.elapsed())).await;
    let mut after = Vec::new();
    let mut unpushed_ids = Vec::new();
    let resumed = loop {
        let unpushed = env
            .insert_job_at(NewJob::new("TEST", json!("only-in-postgres")), Utc::now())
            .await;
        unpushed_ids.push(unpushed);
        let mut pushed = Vec::new();
        for _ in 0..4 {
            pushed.push(
                create_via_handler(&deps, json!({"type": "TEST", "payload": "after"}))
                    .await
                    .0,
            );
        }
        wait_all(&env.jobs, &pushed, Status::Completed, Duration::from_secs(15)).await;
        after.extend(pushed);
        let resumed = back.elapsed();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let waiting = env.jobs.get(unpushed).await.expect("get");
        if (waiting.status, waiting.attempts) == (Status::Pending, 0) {
            break resumed;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "20 s after redis came back, a job that is not in redis is still claimed: the worker claims from postgres"
        );
    };
    // Pushing the waiting one lets it run.
    let unpushed = *unpushed_ids.last().expect("probe");
    let waiting = env.jobs.get(unpushed).await.expect("get");
    env.queue
        .enqueue(unpushed, &waiting.queue, waiting.priority, waiting.run_at, Utc::now())
        .await
        .expect("push");
    wait_all(&env.jobs, &unpushed_ids, Status::Completed, Duration::from_secs(10)).await;

    let all: Vec<JobId> = during.iter().chain(&after).chain(&unpushed_ids).copied().collect();
    let jobs = get_all(&env.jobs, &all).await;
    let lost = jobs.iter().filter(|j| j.status != Status::Completed).count();
    let overlapping: usize = jobs.iter().map(overlapping_attempts).sum();
    let stale: usize = jobs.iter().map(stale_completions).sum();
    fault_line(
        "redis_down",
        all.len() + 1,
        lost,
        overlapping,
        stale,
        repaired,
        &format!(
            "create_ms_max_while_down={} drained_from_postgres_ms={} fast_path_resumed_ms={}",
            slowest_create.as_millis(),
            drained_in.as_millis(),
            resumed.as_millis()
        ),
    );
    assert_eq!((lost, overlapping, stale), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_creates_get_503_quickly_and_jobs_in_flight_finish_after_it_returns() {
    let (mut pg, redis, namespace, deps) = private_servers().await;
    let database_url = pg.url("jobq");
    let jobs = deps.jobs.clone();

    let mut child = promoter(
        &database_url,
        &redis.url(),
        &namespace,
        &[
            ("JOBQ_PG_TIMEOUT_MS", "1000"),
            ("JOBQ_LEASE_MS", "3000"),
            ("JOBQ_RETRY_BASE_MS", "100"),
        ],
    );
    const SLEEP_MS: i64 = 1500;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let new = NewJob::new("TEST", json!(format!("SLEEP_MS={SLEEP_MS}"))).max_attempts(5);
        ids.push(jobs.create(&new, Utc::now()).await.expect("create").job.id);
    }
    // Wait until jobs are in flight.
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let running = get_all(&jobs, &ids)
            .await
            .iter()
            .filter(|j| j.status == Status::InProgress)
            .count();
        if running > 0 {
            break;
        }
        assert!(Instant::now() < give_up, "no job started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Postgres goes away with jobs in flight.
    pg.stop();
    let down = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let response =
            jobq_functions::create_job::handle(&deps, post_json(r#"{"type":"TEST","payload":"during"}"#)).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(response.status().as_u16(), 503, "body: {}", body_json(&response));
        assert!(response.headers().contains_key("retry-after"), "no Retry-After");
        let text = String::from_utf8_lossy(response.body().as_ref()).to_lowercase();
        assert!(
            !text.contains("postgres") && !text.contains("127.0.0.1"),
            "internals leaked: {text}"
        );
    }
    assert!(
        slowest < Duration::from_secs(10),
        "a create took {slowest:?} with Postgres down"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    child.assert_running();
    let outage = down.elapsed();

    pg.start();
    let back = Instant::now();
    wait_all(&jobs, &ids, Status::Completed, Duration::from_secs(40)).await;
    let recovery = back.elapsed();
    child.assert_running();
    // Creates work again.
    let (after, _) = create_via_handler(&deps, json!({"type": "TEST", "payload": "after"})).await;
    wait_all(&jobs, &[after], Status::Completed, Duration::from_secs(20)).await;

    let finished = get_all(&jobs, &ids).await;
    let mut too_short = Vec::new();
    for job in &finished {
        for attempt in job.history.iter().filter(|a| a.outcome == Outcome::Succeeded) {
            let ran = attempt
                .finished_at
                .map(|end| (end - attempt.started_at).num_milliseconds());
            if ran.is_none_or(|ms| ms < SLEEP_MS) {
                too_short.push(format!("{}: attempt {} ran {ran:?} ms", job.id, attempt.attempt));
            }
        }
    }
    let lost = finished.iter().filter(|j| j.status != Status::Completed).count();
    let overlapping: usize = finished.iter().map(overlapping_attempts).sum();
    let stale: usize = finished.iter().map(stale_completions).sum();
    let reruns: usize = finished.iter().map(|j| j.history.len().saturating_sub(1)).sum();
    fault_line(
        "postgres_down",
        ids.len(),
        lost,
        overlapping,
        stale,
        recovery,
        &format!(
            "create_503_ms_max={} outage_ms={} reruns={} completed_too_early={}",
            slowest.as_millis(),
            outage.as_millis(),
            reruns,
            too_short.len()
        ),
    );
    assert!(
        too_short.is_empty(),
        "recorded COMPLETED without finishing: {too_short:?}"
    );
    assert_eq!((lost, overlapping, stale), (0, 0, 0));
    if let Ok(queue) = Queue::connect(&redis.url(), &namespace) {
        let _ = queue.delete_namespace().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_push_failed_after_its_create_committed_still_runs() {
    let mut redis = PrivateRedis::start_new();
    let redis_url = redis.url();
    let env = TestEnv::with(|c| c.redis_url = redis_url.clone()).await;
    const REPAIR_AFTER_MS: i64 = 1000;
    let _child = promoter(
        &env.config.database_url,
        &redis.url(),
        &env.config.namespace,
        &[("JOBQ_REPAIR_AFTER_MS", "1000")],
    );
    wait_epoch(&env.queue, Duration::from_secs(30)).await;
    let warm = env.create_job(NewJob::new("TEST", json!("warm"))).await;
    wait_all(&env.jobs, &[warm], Status::Completed, Duration::from_secs(30)).await;

    // Part 1: Redis is up and keeps its keys, but these pushes fail (a Redis that does not answer).
    let nowhere = Queue::connect(&format!("redis://127.0.0.1:{}", free_port()), &env.config.namespace).expect("client");
    let unlucky = Jobs::new(env.store.clone(), nowhere, Duration::from_secs(300));
    let mut lost_pushes = Vec::new();
    for i in 0..6 {
        let created = unlucky
            .create(&NewJob::new("TEST", json!(format!("lost-push-{i}"))), Utc::now())
            .await
            .expect("the create is accepted although its push failed");
        lost_pushes.push(created.job.id);
    }
    let created_at = Instant::now();
    let ready: HashSet<String> = env.queue.ready_ids().await.expect("ready").into_iter().collect();
    assert!(lost_pushes.iter().all(|id| !ready.contains(&id.to_string())));
    wait_all(&env.jobs, &lost_pushes, Status::Completed, Duration::from_secs(20)).await;
    let swept_in = created_at.elapsed();
    let swept = get_all(&env.jobs, &lost_pushes).await;
    for job in &swept {
        // Run by the overdue sweep, not by a push: not before the job was overdue.
        let waited = (job.history[0].started_at - job.created_at).num_milliseconds();
        assert!(
            waited >= REPAIR_AFTER_MS - 100,
            "job {} started after {waited} ms",
            job.id
        );
    }

    // Part 2: Redis is stopped between the commit and the push, then comes back (empty).
    redis.stop();
    let mut while_down = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let started = Instant::now();
        let created = env
            .jobs
            .create(&NewJob::new("TEST", json!(format!("redis-down-{i}"))), Utc::now())
            .await
            .expect("the create is accepted with redis down");
        slowest = slowest.max(started.elapsed());
        while_down.push(created.job.id);
    }
    redis.start();
    let back = Instant::now();
    wait_all(&env.jobs, &while_down, Status::Completed, Duration::from_secs(30)).await;
    let recovered_in = back.elapsed();
    wait_epoch(&env.queue, Duration::from_secs(10)).await;

    let all: Vec<JobId> = lost_pushes.iter().chain(&while_down).copied().collect();
    let jobs = get_all(&env.jobs, &all).await;
    let lost = jobs.iter().filter(|j| j.status != Status::Completed).count();
    let overlapping: usize = jobs.iter().map(overlapping_attempts).sum();
    let stale: usize = jobs.iter().map(stale_completions).sum();
    let ran_more_than_once = jobs.iter().filter(|j| j.history.len() != 1).count();
    fault_line(
        "push_failed_after_commit",
        all.len(),
        lost,
        overlapping,
        stale,
        swept_in.max(recovered_in),
        &format!(
            "overdue_sweep_ms={} redis_back_ms={} create_ms_max_while_down={} ran_more_than_once={}",
            swept_in.as_millis(),
            recovered_in.as_millis(),
            slowest.as_millis(),
            ran_more_than_once
        ),
    );
    assert_eq!((lost, overlapping, stale, ran_more_than_once), (0, 0, 0, 0));
}

/// A private Postgres with a migrated `jobq` database, a private Redis, and function dependencies
/// over them (pg_timeout 1 s).
async fn private_servers() -> (PrivatePostgres, PrivateRedis, String, Deps) {
    let pg = PrivatePostgres::start_new();
    let redis = PrivateRedis::start_new();
    {
        let admin = Store::connect(&pg.url("postgres"), 1, Duration::from_secs(5)).expect("pool");
        let client = admin.pool().get().await.expect("connect to private postgres");
        client
            .batch_execute("CREATE DATABASE jobq")
            .await
            .expect("create database");
    }
    let namespace = format!("jobq-faults-{}", uuid::Uuid::new_v4().simple());
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", pg.url("jobq")),
        ("REDIS_URL", redis.url()),
        ("JOBQ_NAMESPACE", namespace.clone()),
        ("JOBQ_PG_TIMEOUT_MS", "1000".to_owned()),
        ("JOBQ_PG_POOL_SIZE", "4".to_owned()),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let deps = Deps::from_config(config).expect("deps");
    deps.jobs.store().migrate().await.expect("migrate");
    (pg, redis, namespace, deps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_accepted_before_a_postgres_crash_survives_it_and_completes() {
    let (mut pg, redis, namespace, deps) = private_servers().await;
    let deps = std::sync::Arc::new(deps);
    let _child = promoter(
        &pg.url("jobq"),
        &redis.url(),
        &namespace,
        &[
            ("JOBQ_PG_TIMEOUT_MS", "1000"),
            ("JOBQ_LEASE_MS", "3000"),
            ("JOBQ_RETRY_BASE_MS", "100"),
        ],
    );
    // A caller creating jobs one after another, recording each one accepted (201).
    let stop = tokio_util::sync::CancellationToken::new();
    let caller = {
        let deps = deps.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = 0usize;
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                let body = format!(r#"{{"type":"TEST","payload":"SLEEP_MS={}"}}"#, 20 + i % 30);
                let response = jobq_functions::create_job::handle(&deps, post_json(&body)).await;
                // About 40 creates a second: enough to straddle the crash, few enough to run quickly.
                tokio::time::sleep(Duration::from_millis(25)).await;
                match response.status().as_u16() {
                    201 => {
                        let id: uuid::Uuid = body_json(&response)["jobId"]
                            .as_str()
                            .expect("jobId")
                            .parse()
                            .expect("uuid");
                        accepted.push(JobId(id));
                    }
                    503 => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("create answered {other}: {}", body_json(&response)),
                }
            }
            (accepted, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.crash();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.start();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (accepted, refused) = caller.await.expect("caller");
    assert!(refused > 0, "the crash was not noticed by the caller");
    assert!(accepted.len() > 5, "too few jobs accepted: {}", accepted.len());

    // Every accepted job is stored, and completes.
    let mut missing = 0;
    for &id in &accepted {
        if let Err(err) = deps.jobs.get(id).await {
            assert!(matches!(err, jobq_shared::Error::NotFound(_)), "get {id}: {err}");
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "{missing} accepted jobs are gone after the crash");
    wait_all(&deps.jobs, &accepted, Status::Completed, Duration::from_secs(40)).await;
    let recovery = back.elapsed();
    let jobs = get_all(&deps.jobs, &accepted).await;
    let lost = jobs.iter().filter(|j| j.status != Status::Completed).count();
    let overlapping: usize = jobs.iter().map(overlapping_attempts).sum();
    let stale: usize = jobs.iter().map(stale_completions).sum();
    fault_line(
        "postgres_crash",
        accepted.len(),
        lost + missing,
        overlapping,
        stale,
        recovery,
        &format!("refused_503={refused}"),
    );
    assert_eq!((lost, overlapping, stale), (0, 0, 0));
    if let Ok(queue) = Queue::connect(&redis.url(), &namespace) {
        let _ = queue.delete_namespace().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_hangs_a_create_still_answers_503_within_its_timeout() {
    let (mut pg, redis, namespace, deps) = private_servers().await;
    // A pooled connection exists, as in any warm function.
    create_via_handler(&deps, json!({"type": "TEST", "payload": "before"})).await;

    pg.freeze();
    let started = Instant::now();
    let answered = tokio::time::timeout(
        Duration::from_secs(15),
        jobq_functions::create_job::handle(&deps, post_json(r#"{"type":"TEST","payload":"during"}"#)),
    )
    .await;
    let took = started.elapsed();
    pg.thaw();
    println!(
        "FAULT scenario=postgres_hangs jobs=1 lost=0 duplicates_overlapping=0 stale_completions_accepted=0 recovery_ms=0 create_ms={} answered={}",
        took.as_millis(),
        answered
            .as_ref()
            .map(|r| r.status().as_u16().to_string())
            .unwrap_or_else(|_| "none".to_owned())
    );
    let response = answered.unwrap_or_else(|_| panic!("no answer within 15 s with pg_timeout = 1 s"));
    assert_eq!(response.status().as_u16(), 503, "body: {}", body_json(&response));
    assert!(response.headers().contains_key("retry-after"));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    if let Ok(queue) = Queue::connect(&redis.url(), &namespace) {
        let _ = queue.delete_namespace().await;
    }
}
