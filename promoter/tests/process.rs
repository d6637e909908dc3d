//! The promoter binary as a process: configuration errors, SIGTERM with jobs in flight, SIGKILL.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Job, JobId, NewJob, Status};
use serde_json::json;

fn promoter(env: &TestEnv, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobq-promoter"));
    cmd.env_clear()
        .env("DATABASE_URL", &env.config.database_url)
        .env("REDIS_URL", &env.config.redis_url)
        .env("JOBQ_NAMESPACE", &env.config.namespace)
        .env("JOBQ_WORKER_CONCURRENCY", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_for(env: &TestEnv, id: JobId, status: Status, within: Duration) -> Job {
    env.wait_for(id, status, within).await
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let give_up = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if tokio::time::Instant::now() >= give_up {
            let _ = child.kill();
            panic!("promoter did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_bad_variable_stops_the_promoter_with_a_message_naming_it() {
    let env = TestEnv::new().await;
    let output = promoter(&env, &[("JOBQ_LEASE_MS", "soon")]).output().expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JOBQ_LEASE_MS"), "stderr: {stderr}");
}

#[tokio::test]
async fn sigterm_finishes_short_jobs_and_releases_long_ones_then_exits_cleanly() {
    let env = TestEnv::new().await;
    let now = Utc::now();
    let short = env.create_job_at(NewJob::new("TEST", json!("SLEEP_MS=800")), now).await;
    let long = env
        .create_job_at(NewJob::new("TEST", json!("SLEEP_MS=60000")), now)
        .await;
    let mut child = promoter(&env, &[("JOBQ_SHUTDOWN_GRACE_MS", "1500")])
        .spawn()
        .expect("spawn");
    wait_for(&env, short, Status::InProgress, Duration::from_secs(20)).await;
    wait_for(&env, long, Status::InProgress, Duration::from_secs(20)).await;

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(10)).await;

    assert!(status.success(), "exit status {status:?}");
    assert_eq!(env.jobs.get(short).await.expect("get").status, Status::Completed);
    let released = env.jobs.get(long).await.expect("get");
    assert_eq!((released.status, released.attempts), (Status::Pending, 0));
    assert_eq!(released.history.last().map(|a| a.outcome), Some(Outcome::Released));
}

#[tokio::test]
async fn a_job_on_a_killed_promoter_is_finished_by_the_next_one_after_its_lease() {
    let env = TestEnv::new().await;
    let id = env.create_job(NewJob::new("TEST", json!("SLEEP_MS=3000"))).await;
    let lease = [("JOBQ_LEASE_MS", "1000"), ("JOBQ_REAP_INTERVAL_MS", "200")];
    let mut doomed = promoter(&env, &lease).spawn().expect("spawn");
    wait_for(&env, id, Status::InProgress, Duration::from_secs(20)).await;
    // Past its first heartbeat: the job has started, so the kill costs it an attempt. (A lease
    // never renewed is given back uncharged.)
    let client = env.store.pool().get().await.expect("connection");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !client
        .query_one("SELECT renewed_at IS NOT NULL FROM jobs WHERE id = $1", &[&id.0])
        .await
        .expect("read")
        .get::<_, bool>(0)
    {
        assert!(tokio::time::Instant::now() < give_up, "the lease was never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);

    signal(&doomed, "KILL");
    wait_exit(&mut doomed, Duration::from_secs(5)).await;
    let killed_at = tokio::time::Instant::now();
    let mut next = promoter(&env, &lease).spawn().expect("spawn");
    let job = wait_for(&env, id, Status::Completed, Duration::from_secs(30)).await;
    let recovered_in = killed_at.elapsed();
    signal(&next, "TERM");
    wait_exit(&mut next, Duration::from_secs(10)).await;

    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::LeaseExpired, Outcome::Succeeded]);
    assert_ne!(job.history[0].worker_id, job.history[1].worker_id);
    // Lease (1 s) + reaper interval + the job's own 3 s, with room for a slow machine.
    assert!(recovered_in < Duration::from_secs(15), "took {recovered_in:?}");
    println!(
        "FAULT scenario=worker_killed jobs=1 lost=0 duplicates_overlapping=0 stale_completions_accepted=0 recovery_ms={} job_ms=3000",
        recovered_in.as_millis()
    );
}

#[tokio::test]
async fn sigterm_under_load_loses_no_job_and_releases_only_the_attempts_in_flight() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| NewJob::new("TEST", json!(format!("SLEEP_MS={}", 50 + (i * 37) % 400))))
        .collect();
    let ids = env.create_jobs(&jobs).await;
    let slots = [("JOBQ_WORKER_CONCURRENCY", "16"), ("JOBQ_SHUTDOWN_GRACE_MS", "100")];
    let mut first = promoter(&env, &slots).spawn().expect("spawn");
    // Let it get well into the work, then stop it while 16 jobs are running.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = completed(&env).await;
        if done >= 60 {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "only {done} jobs completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    signal(&first, "TERM");
    let status = wait_exit(&mut first, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let client = env.store.pool().get().await.expect("connection");
    let released: i64 = client
        .query_one("SELECT count(*) FROM job_attempts WHERE outcome = 'RELEASED'", &[])
        .await
        .expect("count")
        .get(0);
    let running: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE status = 'IN_PROGRESS'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(running, 0, "a stopped worker holds no lease");
    assert!(
        (1..=16).contains(&released),
        "{released} attempts released; only the 16 in flight may be"
    );

    let mut second = promoter(&env, &slots).spawn().expect("spawn");
    for id in &ids {
        wait_for(&env, *id, Status::Completed, Duration::from_secs(60)).await;
    }
    signal(&second, "TERM");
    wait_exit(&mut second, Duration::from_secs(10)).await;
    let succeeded: i64 = client
        .query_one("SELECT count(*) FROM job_attempts WHERE outcome = 'SUCCEEDED'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(succeeded, 300, "every job completed exactly once");
    let counted: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE attempts <> 1", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(counted, 0, "a released attempt does not count against the job");
    println!("SHUTDOWN jobs=300 released={released} lost=0");
}

async fn completed(env: &TestEnv) -> i64 {
    env.count_jobs(Some(Status::Completed)).await
}
