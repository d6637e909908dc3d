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
        // Tests run promoters side by side: none takes the default metrics port unless asked.
        .env("JOBQ_METRICS_ADDR", "off")
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
    let metrics = free_addr();
    let mut next = promoter(&env, &[lease[0], lease[1], ("JOBQ_METRICS_ADDR", metrics.as_str())])
        .spawn()
        .expect("spawn");
    let job = wait_for(&env, id, Status::Completed, Duration::from_secs(30)).await;
    let recovered_in = killed_at.elapsed();
    // The next promoter's reaper took the lease back and its worker ran the job.
    let (_, text) = http_get(&metrics, "/metrics").await;
    for series in [
        r#"jobq_leases_reaped_total{queue="default",outcome="retried"}"#,
        r#"jobq_jobs_finished_total{queue="default",outcome="completed"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(1.0), "{series} in:\n{text}");
    }
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
        .query_one(
            "SELECT count(*) FROM job_attempt_history WHERE outcome = 'RELEASED'",
            &[],
        )
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
        .query_one(
            "SELECT count(*) FROM job_attempt_history WHERE outcome = 'SUCCEEDED'",
            &[],
        )
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

/// A loopback address with a port free a moment ago.
fn free_addr() -> String {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    free.local_addr().expect("addr").to_string()
}

/// `GET path` on `addr`; the status line, the headers and the body, as text.
async fn http_get(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample named exactly `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What the promoter ran shows on /metrics as it happened: runs started and finished by outcome,
/// their durations, and the queues' state read from Postgres (a job not yet due, the DLQ).
#[tokio::test]
async fn metrics_count_what_the_promoter_ran_and_what_waits() {
    let env = TestEnv::new().await;
    let done: Vec<JobId> = env
        .create_jobs(&[
            NewJob::new("TEST", json!("a")),
            NewJob::new("TEST", json!("b")),
            NewJob::new("TEST", json!("c")),
        ])
        .await;
    let dead = env
        .create_job(NewJob::new("TEST", json!("FAIL_ALWAYS")).max_attempts(1))
        .await;
    // Fails once, then completes: one retried run and one completed.
    let retried = env.create_job(NewJob::new("TEST", json!("FAIL_TIMES=1"))).await;
    // Stopped by its timeout on its only attempt: timed out, and dead.
    let timed_out = env
        .create_job(
            NewJob::new("TEST", json!("SLEEP_MS=5000"))
                .timeout(Duration::from_millis(200))
                .max_attempts(1),
        )
        .await;
    env.create_job(NewJob::new("TEST", json!("later")).delay(Duration::from_secs(3600)))
        .await;
    let addr = free_addr();
    let mut child = promoter(&env, &[("JOBQ_METRICS_ADDR", addr.as_str())])
        .spawn()
        .expect("spawn");
    for id in done.iter().chain([&retried]) {
        wait_for(&env, *id, Status::Completed, Duration::from_secs(20)).await;
    }
    wait_for(&env, dead, Status::Failed, Duration::from_secs(20)).await;
    wait_for(&env, timed_out, Status::Failed, Duration::from_secs(20)).await;

    let (head, text) = http_get(&addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("application/openmetrics-text"), "{head}");
    let expect = [
        (r#"jobq_jobs_started_total{queue="default"}"#, 7.0),
        (r#"jobq_jobs_finished_total{queue="default",outcome="completed"}"#, 4.0),
        (r#"jobq_jobs_finished_total{queue="default",outcome="retried"}"#, 1.0),
        (r#"jobq_jobs_finished_total{queue="default",outcome="dead"}"#, 2.0),
        (r#"jobq_jobs_timed_out_total{queue="default"}"#, 1.0),
        (r#"jobq_job_duration_seconds_count{queue="default"}"#, 7.0),
        (r#"jobq_job_wait_seconds_count{queue="default"}"#, 7.0),
        (r#"jobq_queue_jobs{queue="default",status="PENDING"}"#, 1.0),
        (r#"jobq_queue_jobs{queue="default",status="FAILED"}"#, 2.0),
        ("jobq_dlq_jobs", 2.0),
        ("jobq_redis_fallback_active", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    // The job not yet due is not waiting: no pending age for the queue.
    assert_eq!(
        sample(&text, r#"jobq_queue_oldest_pending_age_seconds{queue="default"}"#),
        None,
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    let (head, _) = http_get(&addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn a_bad_metrics_address_stops_the_promoter_with_a_message_naming_it() {
    let env = TestEnv::new().await;
    let output = promoter(&env, &[("JOBQ_METRICS_ADDR", "everywhere")])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JOBQ_METRICS_ADDR"), "stderr: {stderr}");
}

/// With `JOBQ_EMF_INTERVAL_MS`, the promoter prints the queues' state as CloudWatch Embedded
/// Metric Format lines on stdout: per queue, and for all queues.
#[tokio::test]
async fn emf_lines_on_stdout_carry_the_queues_state() {
    use std::io::BufRead;
    let env = TestEnv::new().await;
    let dead = env
        .create_job(NewJob::new("TEST", json!("FAIL_ALWAYS")).max_attempts(1))
        .await;
    env.create_job(NewJob::new("TEST", json!("later")).delay(Duration::from_secs(3600)))
        .await;
    let mut child = promoter(&env, &[("JOBQ_EMF_INTERVAL_MS", "200")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for(&env, dead, Status::Failed, Duration::from_secs(20)).await;

    // Read lines until one for all queues shows the dead job (earlier ones may predate it), and
    // one of the promoter's own activity says its worker's run of it ended dead.
    let stdout = child.stdout.take().expect("stdout");
    let deployment = env.config.namespace.clone();
    let found = tokio::task::spawn_blocking(move || {
        let give_up = std::time::Instant::now() + Duration::from_secs(15);
        let (mut state, mut activity) = (None, None);
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if doc.get("_aws").is_some() && doc.get("Queue").is_none() && doc["DeadJobs"] == 1 {
                state = Some(doc);
            } else if doc["Queue"] == "default" && doc["Outcome"] == "dead" && doc["JobsFinished"] == 1.0 {
                activity = Some(doc);
            }
            if state.is_some() && activity.is_some() {
                return state.zip(activity);
            }
            if std::time::Instant::now() > give_up {
                break;
            }
        }
        None
    });
    let (doc, activity) = tokio::time::timeout(Duration::from_secs(20), found)
        .await
        .expect("a line in time")
        .expect("reader")
        .expect("an EMF line for all queues with the dead job, and one of the run that ended dead");
    assert_eq!(
        activity["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Deployment", "Queue", "Outcome"]])
    );
    assert_eq!(doc["Deployment"], deployment.as_str());
    assert_eq!(doc["PendingJobs"], 1, "{doc}");
    assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "jobq");
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).await.success());
}
