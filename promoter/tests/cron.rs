//! A one-second schedule fired by three promoter processes for a minute, one of them killed
//! (SIGKILL) half-way: every tick of the minute has exactly one job, and every job runs.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobq_shared::schedule::{ScheduleRequest, ScheduleSpec};
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, Status};
use serde_json::json;
use support::ChildGuard;

fn promoter(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobq-promoter"));
    cmd.env_clear()
        .env("DATABASE_URL", &env.config.database_url)
        .env("REDIS_URL", &env.config.redis_url)
        .env("JOBQ_NAMESPACE", &env.config.namespace)
        .env("JOBQ_WORKER_CONCURRENCY", "2")
        // A job the killed promoter held is taken back within seconds.
        .env("JOBQ_LEASE_MS", "3000")
        .env("JOBQ_METRICS_ADDR", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    cmd
}

/// The ticks that have a job, each with its number of jobs, and the jobs.
async fn fired(env: &TestEnv) -> (Vec<(DateTime<Utc>, i64)>, Vec<(JobId, Status)>) {
    let client = env.store.pool().get().await.expect("connection");
    let ticks = client
        .query(
            "SELECT schedule_tick, count(*) FROM jobs WHERE schedule_name = 'every-second' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("ticks")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let jobs = client
        .query("SELECT id, status FROM jobs WHERE schedule_name = 'every-second'", &[])
        .await
        .expect("jobs")
        .iter()
        .map(|row| (JobId(row.get(0)), row.get::<_, &str>(1).parse().expect("a status")))
        .collect();
    (ticks, jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_promoters_fire_each_tick_once_though_one_is_killed_mid_minute() {
    let env = TestEnv::new().await;
    let request: ScheduleRequest = serde_json::from_value(json!({
        "cron": "* * * * * *",
        "job": {"type": "TEST", "payload": "SLEEP_MS=200"}
    }))
    .expect("a schedule body");
    let spec = ScheduleSpec::parse("every-second", request).expect("a schedule");
    env.store.put_schedule(&spec, env.store.now().await).await.expect("put");

    let mut promoters: Vec<ChildGuard> = (0..3).map(|_| ChildGuard::spawn(promoter(&env))).collect();
    let started = env.store.now().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    for p in &mut promoters {
        p.assert_running();
    }
    // SIGKILL, whatever it was doing: mid-pass, mid-statement, mid-job.
    drop(promoters.remove(0));
    tokio::time::sleep(Duration::from_secs(30)).await;
    for p in &mut promoters {
        p.assert_running();
    }
    // Pause the schedule, let the survivors run what was fired, then look.
    let ended = env.store.now().await;
    let mut paused = spec.clone();
    paused.paused = true;
    env.store.put_schedule(&paused, ended).await.expect("pause");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (ticks, jobs) = loop {
        let (ticks, jobs) = fired(&env).await;
        if jobs.iter().all(|(_, status)| *status == Status::Completed) || tokio::time::Instant::now() > deadline {
            break (ticks, jobs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(promoters);

    let duplicated: Vec<_> = ticks.iter().filter(|(_, n)| *n != 1).collect();
    assert!(duplicated.is_empty(), "ticks with more than one job: {duplicated:?}");
    let gaps: Vec<_> = ticks
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 != chrono::Duration::seconds(1))
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert!(gaps.is_empty(), "ticks without a job between: {gaps:?}");
    let (first, last) = (ticks[0].0, ticks[ticks.len() - 1].0);
    assert!(
        first - started < chrono::Duration::seconds(5),
        "first tick {first}, started {started}"
    );
    assert!(
        (ended - last).abs() < chrono::Duration::seconds(2),
        "last tick {last}, paused at {ended}"
    );
    assert!(ticks.len() >= 56, "{} ticks in a minute", ticks.len());
    let schedule = env
        .store
        .schedule("every-second")
        .await
        .expect("get")
        .expect("schedule");
    assert_eq!(
        (schedule.fired, schedule.skipped),
        (ticks.len() as i64, 0),
        "{schedule:?}"
    );
    let unfinished: Vec<_> = jobs.iter().filter(|(_, s)| *s != Status::Completed).collect();
    assert!(unfinished.is_empty(), "jobs that never completed: {unfinished:?}");
}
