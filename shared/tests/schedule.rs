//! Schedules: stored and changed as documented, each tick fired exactly once however many
//! schedulers run at once, missed ticks and overlaps handled per policy. Time is passed in, so
//! nothing here waits for a clock.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobq_shared::maintenance::scheduler::Scheduler;
use jobq_shared::schedule::{ScheduleRequest, ScheduleSpec};
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, Status};
use serde_json::json;

fn spec(name: &str, body: serde_json::Value) -> ScheduleSpec {
    let request: ScheduleRequest = serde_json::from_value(body).expect("a schedule body");
    ScheduleSpec::parse(name, request).expect("a valid schedule")
}

fn scheduler(env: &TestEnv) -> Scheduler {
    Scheduler::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30))
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

/// Every job fired by `name`: (tick, id, status), by tick.
async fn fired(env: &TestEnv, name: &str) -> Vec<(DateTime<Utc>, JobId, Status)> {
    let client = env.store.pool().get().await.expect("connection");
    client
        .query(
            "SELECT schedule_tick, id, status FROM jobs WHERE schedule_name = $1 ORDER BY schedule_tick",
            &[&name],
        )
        .await
        .expect("query")
        .iter()
        .map(|row| {
            (
                row.get(0),
                JobId(row.get(1)),
                row.get::<_, &str>(2).parse().expect("a status"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_schedule_is_stored_changed_and_deleted_as_documented() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body = json!({"cron": "0 0 3 * * *", "timezone": "Europe/Paris", "job": {"type": "TEST", "queue": "reports"}});
    let (created, was_new) = env
        .store
        .put_schedule(&spec("nightly", body.clone()), now)
        .await
        .expect("put");
    assert!(was_new);
    assert!(created.next_fire_at > now && created.next_fire_at <= now + chrono::Duration::days(1));
    assert_eq!(created.timezone, "Europe/Paris");

    // A new job body keeps the next tick; a new expression moves it.
    let mut changed = body.clone();
    changed["job"]["priority"] = json!(90);
    let (same_tick, was_new) = env
        .store
        .put_schedule(&spec("nightly", changed), now + ms(5))
        .await
        .expect("put");
    assert!(!was_new);
    assert_eq!(same_tick.next_fire_at, created.next_fire_at);
    assert_eq!(same_tick.job["priority"], 90);
    let hourly = json!({"cron": "0 0 * * * *", "job": {"type": "TEST"}});
    let (moved, _) = env
        .store
        .put_schedule(&spec("nightly", hourly), now + ms(10))
        .await
        .expect("put");
    assert!(moved.next_fire_at <= now + chrono::Duration::hours(1));
    assert_eq!(moved.timezone, "UTC", "the default zone");

    env.store
        .put_schedule(
            &spec("a-first", json!({"cron": "* * * * *", "job": {"type": "TEST"}})),
            now,
        )
        .await
        .expect("put");
    let names: Vec<String> = env
        .store
        .schedules(None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["a-first", "nightly"]);
    let after: Vec<String> = env
        .store
        .schedules(Some("a-first"), 10)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(after, vec!["nightly"]);

    assert!(env.store.delete_schedule("nightly").await.expect("delete"));
    assert!(!env.store.delete_schedule("nightly").await.expect("delete"));
    assert!(env.store.schedule("nightly").await.expect("get").is_none());
}

#[tokio::test]
async fn a_tick_makes_one_job_that_records_its_schedule_and_tick() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body =
        json!({"cron": "* * * * * *", "job": {"type": "TEST", "queue": "ticks", "payload": {"a": 1}, "priority": 70}});
    let (schedule, _) = env
        .store
        .put_schedule(&spec("every-second", body), now)
        .await
        .expect("put");
    let tick = schedule.next_fire_at;

    let scheduler = scheduler(&env);
    assert_eq!(
        scheduler.run_once(tick - ms(1)).await.expect("pass").jobs,
        0,
        "not due yet"
    );
    let pass = scheduler.run_once(tick + ms(300)).await.expect("pass");
    assert_eq!((pass.schedules, pass.jobs), (1, 1));
    assert_eq!(
        scheduler.run_once(tick + ms(300)).await.expect("pass").jobs,
        0,
        "the tick is fired"
    );

    let jobs = fired(&env, "every-second").await;
    assert_eq!(jobs.len(), 1);
    let job = env.store.get(jobs[0].1).await.expect("the job");
    let by = job.schedule.as_ref().expect("a scheduled job");
    assert_eq!((by.name.as_str(), by.tick), ("every-second", tick));
    assert_eq!((job.queue.as_str(), job.priority, job.run_at), ("ticks", 70, tick));
    assert_eq!(job.payload, json!({"a": 1}));
    assert_eq!(
        job.idempotency_key.as_deref(),
        Some(
            format!(
                "schedule:every-second:{}",
                tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
            .as_str()
        )
    );
    let after = env
        .store
        .schedule("every-second")
        .await
        .expect("get")
        .expect("a schedule");
    assert_eq!(after.last_tick, Some(tick));
    assert_eq!(after.last_job_id, Some(job.id));
    assert_eq!(after.next_fire_at, tick + chrono::Duration::seconds(1));
    assert_eq!(after.lag(), Some(ms(300)));
    assert_eq!(after.fired, 1);
    // The job is in Redis, ready.
    assert_eq!(env.queue.ready_ids().await.expect("ready"), vec![job.id.to_string()]);
}

#[tokio::test]
async fn schedulers_racing_on_every_tick_fire_each_tick_exactly_once() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body = json!({"cron": "* * * * * *", "job": {"type": "TEST"}});
    let (schedule, _) = env.store.put_schedule(&spec("raced", body), now).await.expect("put");
    let first = schedule.next_fire_at;
    let schedulers: Vec<Scheduler> = (0..4).map(|_| scheduler(&env)).collect();
    for second in 0..30 {
        let at = first + chrono::Duration::seconds(second) + ms(100);
        let passes = futures::future::join_all(schedulers.iter().map(|s| s.run_once(at))).await;
        let jobs: usize = passes.into_iter().map(|p| p.expect("pass").jobs).sum();
        assert_eq!(jobs, 1, "second {second}: one job among four schedulers");
    }
    let jobs = fired(&env, "raced").await;
    let ticks: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.0).collect();
    let expected: Vec<DateTime<Utc>> = (0..30).map(|s| first + chrono::Duration::seconds(s)).collect();
    assert_eq!(ticks, expected);
}

#[tokio::test]
async fn missed_ticks_are_skipped_coalesced_or_caught_up_as_asked() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let minutes = |n: i64| chrono::Duration::minutes(n);
    let mut first = HashMap::new();
    for policy in ["skip", "coalesce", "catchUp"] {
        let body = json!({"cron": "0 */5 * * * *", "missedFires": policy, "job": {"type": "TEST"}});
        let (schedule, _) = env.store.put_schedule(&spec(policy, body), now).await.expect("put");
        first.insert(policy, schedule.next_fire_at);
    }
    let f = first["skip"];
    assert!(first.values().all(|t| *t == f));
    let ticks = |jobs: Vec<(DateTime<Utc>, JobId, Status)>| jobs.into_iter().map(|j| j.0).collect::<Vec<_>>();

    // Nothing fires until 25 minutes and 2 seconds after the first tick: six ticks are due, the
    // last one 2 s ago, on time.
    scheduler(&env)
        .run_once(f + minutes(25) + ms(2000))
        .await
        .expect("pass");
    assert_eq!(ticks(fired(&env, "skip").await), vec![f + minutes(25)]);
    assert_eq!(ticks(fired(&env, "coalesce").await), vec![f + minutes(25)]);
    assert_eq!(
        ticks(fired(&env, "catchUp").await),
        (0..6).map(|i| f + minutes(5 * i)).collect::<Vec<_>>()
    );
    let skip = env.store.schedule("skip").await.expect("get").expect("schedule");
    assert_eq!((skip.fired, skip.skipped), (1, 5));

    // Then nothing until 90 s after the tick of f + 35 min: both due ticks are missed.
    scheduler(&env)
        .run_once(f + minutes(35) + ms(90_000))
        .await
        .expect("pass");
    assert_eq!(
        ticks(fired(&env, "skip").await),
        vec![f + minutes(25)],
        "missed ticks make no job"
    );
    assert_eq!(
        ticks(fired(&env, "coalesce").await),
        vec![f + minutes(25), f + minutes(35)]
    );
    assert_eq!(
        ticks(fired(&env, "catchUp").await),
        (0..8).map(|i| f + minutes(5 * i)).collect::<Vec<_>>()
    );
    for policy in ["skip", "coalesce", "catchUp"] {
        let schedule = env.store.schedule(policy).await.expect("get").expect("schedule");
        assert_eq!(schedule.next_fire_at, f + minutes(40), "{policy}");
    }
    let skip = env.store.schedule("skip").await.expect("get").expect("schedule");
    assert_eq!((skip.fired, skip.skipped), (1, 7));
}

#[tokio::test]
async fn overlap_skip_fires_nothing_while_the_last_job_is_unfinished() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body = json!({"cron": "* * * * * *", "overlap": "skip", "job": {"type": "TEST"}});
    let (schedule, _) = env.store.put_schedule(&spec("single", body), now).await.expect("put");
    let tick = schedule.next_fire_at;
    let scheduler = scheduler(&env);
    scheduler.run_once(tick + ms(10)).await.expect("pass");
    let first = fired(&env, "single").await[0].1;

    // Pending, then running: the next ticks are skipped.
    scheduler.run_once(tick + ms(1010)).await.expect("pass");
    env.claim_job(first, "w", tick + ms(1500), Duration::from_secs(30))
        .await;
    scheduler.run_once(tick + ms(2010)).await.expect("pass");
    assert_eq!(fired(&env, "single").await.len(), 1);
    let skipped = env.store.schedule("single").await.expect("get").expect("schedule");
    assert_eq!((skipped.fired, skipped.skipped), (1, 2));
    assert_eq!(skipped.next_fire_at, tick + chrono::Duration::seconds(3));

    // Finished: the next tick fires again.
    env.jobs.cancel(first, tick + ms(2500)).await.expect("cancel");
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE jobs SET status = 'COMPLETED', completed_at = now(), lease_expires_at = NULL, worker_id = NULL WHERE id = $1",
            &[&first.0],
        )
        .await
        .expect("finish the job");
    scheduler.run_once(tick + ms(3010)).await.expect("pass");
    let jobs = fired(&env, "single").await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].0, tick + chrono::Duration::seconds(3));
}

#[tokio::test]
async fn a_paused_schedule_fires_nothing_and_resumes_from_now() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body = json!({"cron": "* * * * * *", "job": {"type": "TEST"}});
    let (schedule, _) = env
        .store
        .put_schedule(&spec("pausable", body.clone()), now)
        .await
        .expect("put");
    let tick = schedule.next_fire_at;
    let mut paused = body.clone();
    paused["paused"] = json!(true);
    env.store
        .put_schedule(&spec("pausable", paused), now)
        .await
        .expect("pause");
    let scheduler = scheduler(&env);
    scheduler
        .run_once(tick + chrono::Duration::seconds(20))
        .await
        .expect("pass");
    assert!(fired(&env, "pausable").await.is_empty());

    let resumed_at = tick + chrono::Duration::seconds(20);
    let (resumed, _) = env
        .store
        .put_schedule(&spec("pausable", body), resumed_at)
        .await
        .expect("resume");
    assert_eq!(
        resumed.next_fire_at,
        tick + chrono::Duration::seconds(21),
        "ticks during the pause never fire"
    );
    scheduler.run_once(resumed.next_fire_at + ms(5)).await.expect("pass");
    let ticks: Vec<DateTime<Utc>> = fired(&env, "pausable").await.into_iter().map(|j| j.0).collect();
    assert_eq!(ticks, vec![resumed.next_fire_at]);
}

#[tokio::test]
async fn a_schedule_whose_job_no_longer_parses_records_why_and_keeps_its_tick() {
    let env = TestEnv::new().await;
    let now = env.store.now().await;
    let body = json!({"cron": "* * * * * *", "job": {"type": "TEST"}});
    let (schedule, _) = env.store.put_schedule(&spec("broken", body), now).await.expect("put");
    let client = env.store.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE schedules SET job = '{\"type\": \"\"}' WHERE name = 'broken'",
            &[],
        )
        .await
        .expect("break it");
    let pass = scheduler(&env)
        .run_once(schedule.next_fire_at + ms(5))
        .await
        .expect("pass");
    assert_eq!((pass.failed, pass.jobs), (1, 0));
    let after = env.store.schedule("broken").await.expect("get").expect("schedule");
    assert!(
        after.last_error.as_deref().is_some_and(|e| e.contains("job.type")),
        "{:?}",
        after.last_error
    );
    assert_eq!(after.next_fire_at, schedule.next_fire_at);
}
