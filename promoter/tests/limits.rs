//! A queue's concurrency and rate limits, fleet-wide: two worker processes with eight slots each
//! serve a limited queue and an unlimited one, and the handler records, in a file per process,
//! when each job really started and ended.
//! - Concurrency 3: at no instant do more than 3 of the queue's jobs run, and 3 do run at once
//!   (the limit is used, not just respected); the unlimited queue runs more than 3 at once, so
//!   the processes had the room.
//! - Rate 5 a second: no window holds more than 5 starts.

mod support;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jobq_shared::bulk::Actor;
use jobq_shared::health::{RateLimit, SettingsChange};
use jobq_shared::maintenance::promoter::Promoter;
use jobq_shared::testing::TestEnv;
use jobq_shared::{Config, HandlerError, JobContext, JobHandler, NewJob, Queue, Registry, Status, Store, Worker};
use serde_json::json;
use support::ChildGuard;
use tokio_util::sync::CancellationToken;

/// The child's environment variable naming its record file; unset, the child test does nothing.
const RECORD_ENV: &str = "JOBQ_LIMITS_RECORD";
const JOB_TYPE: &str = "GAUGE";
const LIMIT: i32 = 3;
const PROCESSES: usize = 2;
const SLOTS: usize = 8;

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros() as i64
}

/// Writes `S <queue> <micros>` when a job starts and `E <queue> <micros>` when it ends, each in
/// one `write` to a file opened for appending (the queue is named in the payload); the job
/// sleeps its payload's `ms` in between.
struct Recorder {
    file: Arc<File>,
}

fn write_line(file: &File, line: &str) {
    let mut file = file;
    file.write_all(line.as_bytes()).expect("write a record line");
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let queue = job.payload["queue"].as_str().unwrap_or("?").to_owned();
        write_line(&self.file, &format!("S {queue} {}\n", micros_now()));
        let ms = job.payload["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        write_line(&self.file, &format!("E {queue} {}\n", micros_now()));
        Ok(())
    }
}

/// A worker process: a promoter and a worker whose registry holds the recording handler. Started
/// by the test below as this test binary again; does nothing on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the test below, started by it"]
async fn limits_worker_process() {
    let Ok(record) = std::env::var(RECORD_ENV) else {
        return;
    };
    let config = Config::from_env().expect("config");
    let store = Store::connect(&config.database_url, config.pg_pool_size, config.pg_timeout).expect("store");
    let queue = Queue::from_config(&config).expect("queue");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
        .expect("record file");
    let shutdown = CancellationToken::new();
    tokio::spawn(
        Promoter::new(store.clone(), queue.clone()).run(config.maintenance.promote_interval, shutdown.clone()),
    );
    let registry = Registry::new().register(JOB_TYPE, Recorder { file: Arc::new(file) });
    Worker::new(store, queue, registry, config.worker.clone())
        .run(shutdown)
        .await
        .expect("worker");
}

/// The most of `queue`'s jobs running at once, from the records: starts and ends in time order,
/// a start counted before an end at the same microsecond (the cautious reading).
fn most_at_once(records: &[PathBuf], queue: &str) -> (usize, usize) {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for path in records {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "a record line: {line:?}");
            if fields[1] != queue {
                continue;
            }
            let at: i64 = fields[2].parse().expect("micros");
            events.push((at, if fields[0] == "S" { 0 } else { 1 }));
        }
    }
    events.sort();
    let (mut now, mut most, mut starts) = (0i64, 0i64, 0usize);
    for (_, kind) in &events {
        if *kind == 0 {
            now += 1;
            starts += 1;
        } else {
            now -= 1;
        }
        most = most.max(now);
    }
    (most as usize, starts)
}

fn actor() -> Actor {
    Actor {
        principal: "test".into(),
        on_behalf_of: None,
    }
}

/// Runs `jobs` on [`PROCESSES`] worker processes of [`SLOTS`] slots each until every one has
/// completed; returns the record files and the directory holding them.
async fn run_on_the_fleet(env: &TestEnv, jobs: &[NewJob]) -> (Vec<PathBuf>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("jobq-limits-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("record dir");
    let records: Vec<PathBuf> = (0..PROCESSES).map(|i| dir.join(format!("p{i}.record"))).collect();
    let ids = env.create_jobs(jobs).await;
    let processes: Vec<ChildGuard> = records.iter().map(|record| spawn(env, record)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = env.count_jobs(Some(Status::Completed)).await;
        if done == ids.len() as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {} completed within 90 s",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(processes);
    (records, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_eight_slots_each_never_run_more_than_the_limit_at_once() {
    let env = TestEnv::new().await;
    let limit = SettingsChange {
        concurrency: Some(Some(LIMIT)),
        ..Default::default()
    };
    env.jobs.set_queue("limited", limit, &actor()).await.expect("limit");
    let mut jobs: Vec<NewJob> = (0..60)
        .map(|i| NewJob::new(JOB_TYPE, json!({"ms": 40 + (i % 5) * 20, "queue": "limited"})).queue("limited"))
        .collect();
    jobs.extend((0..60).map(|_| NewJob::new(JOB_TYPE, json!({"ms": 200, "queue": "open"})).queue("open")));
    let (records, dir) = run_on_the_fleet(&env, &jobs).await;

    let (limited, limited_starts) = most_at_once(&records, "limited");
    let (open, open_starts) = most_at_once(&records, "open");
    assert_eq!((limited_starts, open_starts), (60, 60), "every job ran once");
    assert_eq!(limited, LIMIT as usize, "the most limited jobs running at once");
    assert!(open > LIMIT as usize, "the unlimited queue ran {open} at most at once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The starts of `queue`'s jobs, in micros, in time order.
fn starts(records: &[PathBuf], queue: &str) -> Vec<i64> {
    let mut starts: Vec<i64> = records
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter(|line| line.starts_with(&format!("S {queue} ")))
                .map(|line| {
                    line.rsplit(' ')
                        .next()
                        .unwrap_or_default()
                        .parse::<i64>()
                        .expect("micros")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    starts.sort_unstable();
    starts
}

/// The most starts in any window of `window_us`.
fn most_in_a_window(starts: &[i64], window_us: i64) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, at) in starts.iter().enumerate() {
        while *at - starts[first] >= window_us {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// A rate limit of 5 starts a second on a queue served by two processes of 8 slots: the handler's
/// recorded starts hold at most 5 in any window. The limit is enforced on claims, timed by the
/// database; a handler starts a little after its claim, by a delay that varies, so the windows
/// are measured [`START_SLACK_US`] short of the period. A limit not kept (not shared by the two
/// processes, or not kept at all) puts 10 or more starts within a few milliseconds: still caught.
const START_SLACK_US: i64 = 250_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_start_no_more_than_the_rate_limit_in_any_window() {
    const RATE: i32 = 5;
    let env = TestEnv::new().await;
    let rate = SettingsChange {
        rate_limit: Some(Some(RateLimit {
            limit: RATE,
            period_ms: 1000,
            key: None,
        })),
        ..Default::default()
    };
    env.jobs.set_queue("limited", rate, &actor()).await.expect("rate");
    let mut jobs: Vec<NewJob> = (0..20)
        .map(|_| NewJob::new(JOB_TYPE, json!({"ms": 20, "queue": "limited"})).queue("limited"))
        .collect();
    jobs.extend((0..40).map(|_| NewJob::new(JOB_TYPE, json!({"ms": 20, "queue": "open"})).queue("open")));
    let (records, dir) = run_on_the_fleet(&env, &jobs).await;

    let limited = starts(&records, "limited");
    let open = starts(&records, "open");
    assert_eq!((limited.len(), open.len()), (20, 40), "every job ran once");
    // The delay from claim to start varies most in a process's first claims: on a busy machine
    // (the Redis Cluster tier of CI), two batches of 5 started 924 ms apart.
    let window = 1_000_000 - START_SLACK_US;
    let most = most_in_a_window(&limited, window);
    assert!(most <= RATE as usize, "{most} starts in one window");
    // 20 jobs at 5 a second: the last 5 start 3 s or more after the first.
    let spread = limited[limited.len() - 1] - limited[0];
    assert!(
        spread >= 3 * 1_000_000 - START_SLACK_US,
        "all started within {spread} us"
    );
    assert!(
        most_in_a_window(&open, window) > RATE as usize,
        "the other queue is not limited"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn spawn(env: &TestEnv, record: &Path) -> ChildGuard {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "limits_worker_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_clear()
    .env("DATABASE_URL", &env.config.database_url)
    .env("REDIS_URL", &env.config.redis_url)
    .env("REDIS_CLUSTER", env.config.redis_cluster.to_string())
    .env("JOBQ_NAMESPACE", &env.config.namespace)
    .env("JOBQ_WORKER_CONCURRENCY", SLOTS.to_string())
    .env("JOBQ_METRICS_ADDR", "off")
    .env("RUST_LOG", "warn")
    .env(RECORD_ENV, record)
    .stdout(Stdio::null());
    ChildGuard::spawn(cmd)
}
