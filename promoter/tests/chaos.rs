//! Chaos soak: 20,000 jobs of mixed behaviour through three worker processes (this test binary run
//! again as a child, with a recording handler) and worker-function invocations in this process,
//! while, at random, single processes are cut off from Postgres and/or Redis, their Postgres
//! answers come later than their client waits, their connections are reset, the private Redis
//! restarts (empty, or from a snapshot) and processes are SIGKILLed and replaced.
//!
//! Every execution's start and end is written by the handler itself to a file of its process,
//! outside jobq, one line each, so the verdict does not rest on jobq's own account: after the
//! faults heal, no job may be lost, no two executions of a job may overlap, each completion must
//! come from an execution of that attempt that ran to its end, and no attempt may be charged that
//! no execution started.
//!
//! Beside them, a queue with a concurrency limit carries some of the jobs, and a schedule fires
//! every second: from the same records, at no instant may more of the limited queue's jobs run
//! than its limit, and from Postgres, each tick of the schedule must have exactly one job.
//!
//! `JOBQ_CHAOS_SEED` replays a run's choices (the seed is printed first).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobq_functions::Deps;
use jobq_functions::worker;
use jobq_shared::fault::{Fault, Proxy};
use jobq_shared::maintenance::{
    promoter::Promoter, reaper::Reaper, repairer::Repairer, scheduler, scheduler::Scheduler,
};
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Summary;
use jobq_shared::{Config, HandlerError, JobContext, JobHandler, NewJob, Queue, Registry, Store, Worker};
use lambda_runtime::{Context, LambdaEvent};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::PrivateRedis;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOTAL: usize = 20_000;
const BATCH: usize = 1_000;
const PROCESSES: usize = 3;
const LEASE_MS: u64 = 2_000;
/// Each worker process's `JOBQ_PG_TIMEOUT_MS`; latency spikes are longer than this.
const PG_TIMEOUT_MS: u64 = 1_000;
const SPIKE: Duration = Duration::from_millis(1_500);
const JOB_TYPE: &str = "CHAOS";
/// Faults go on while jobs are unsettled, for at most this long after the last job was created.
const CHAOS_AFTER_CREATES: Duration = Duration::from_secs(30);
/// How long the jobs may take to settle once the faults have healed.
const SETTLE_WITHIN: Duration = Duration::from_secs(300);
/// The child's environment variable naming its record file; unset, the child test does nothing.
const RECORD_ENV: &str = "JOBQ_CHAOS_RECORD";
const WORKER_FUNCTION_ID: &str = "chaos-fn";
/// The queue with a concurrency limit, and its limit.
const LIMITED: &str = "chaos-limited";
const LIMIT: i32 = 4;
/// The schedule that fires a job every second through the soak.
const SCHEDULE: &str = "chaos-every-second";

/// The payload kinds, how many jobs of each, and their attempt budget. `FAIL_ALWAYS` and
/// `FAIL_PERMANENT` must end FAILED, everything else COMPLETED: the others' budget leaves room for
/// attempts that faults cost.
const KINDS: [(&str, usize, i32); 6] = [
    ("ok", 8_000, 8),
    ("FAIL_TIMES=1", 3_000, 8),
    ("FAIL_TIMES=2", 2_000, 8),
    ("FAIL_ALWAYS", 1_500, 3),
    ("FAIL_PERMANENT", 500, 3),
    ("SLEEP_MS", 5_000, 8),
];

fn kind_of(payload: &str) -> &'static str {
    KINDS
        .iter()
        .map(|(kind, _, _)| *kind)
        .find(|kind| payload == *kind || (*kind == "SLEEP_MS" && payload.starts_with("SLEEP_MS=")))
        .unwrap_or("unknown")
}

fn should_fail(kind: &str) -> bool {
    matches!(kind, "FAIL_ALWAYS" | "FAIL_PERMANENT")
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros() as i64
}

/// The handler every worker runs: does what the payload says, and writes `S` when it starts and
/// `E` when it stops (returned, or dropped by a cancellation) to its process's record file, each
/// line in one `write` to a file opened for appending, so that a line is out of the process before
/// the next thing happens.
///
/// `S <worker> <execution> <job> <attempt> <pid> <micros>` and
/// `E <worker> <execution> <job> <attempt> <pid> <micros> <ok|err|cancelled>`.
struct Recorder {
    file: Arc<File>,
    worker: String,
    executions: AtomicU64,
}

impl Recorder {
    fn open(path: &Path, worker: &str) -> Recorder {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|err| panic!("record file {}: {err}", path.display()));
        Recorder {
            file: Arc::new(file),
            worker: worker.to_owned(),
            executions: AtomicU64::new(0),
        }
    }
}

fn write_line(file: &File, line: &str) {
    let mut file = file;
    file.write_all(line.as_bytes()).expect("write a record line");
}

/// Writes the `E` line however the execution stops.
struct Running {
    file: Arc<File>,
    head: String,
    outcome: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        write_line(
            &self.file,
            &format!("E {} {} {}\n", self.head, micros_now(), self.outcome),
        );
    }
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let execution = self.executions.fetch_add(1, Ordering::Relaxed);
        let head = format!(
            "{} {execution} {} {} {}",
            self.worker,
            job.id,
            job.attempt,
            std::process::id()
        );
        write_line(&self.file, &format!("S {head} {}\n", micros_now()));
        let mut running = Running {
            file: self.file.clone(),
            head,
            outcome: "cancelled",
        };
        let result = behave(&job).await;
        running.outcome = if result.is_ok() { "ok" } else { "err" };
        result
    }
}

async fn behave(job: &JobContext) -> Result<(), HandlerError> {
    let command = job.payload.as_str().unwrap_or("");
    match command {
        "FAIL_ALWAYS" => return Err(HandlerError::retryable("FAIL_ALWAYS")),
        "FAIL_PERMANENT" => return Err(HandlerError::permanent("FAIL_PERMANENT")),
        _ => {}
    }
    if let Some(n) = command.strip_prefix("FAIL_TIMES=") {
        let n: i32 = n.parse().map_err(|_| HandlerError::permanent("bad FAIL_TIMES"))?;
        if job.attempt <= n {
            return Err(HandlerError::retryable(format!(
                "FAIL_TIMES={n}: attempt {}",
                job.attempt
            )));
        }
    }
    if let Some(ms) = command.strip_prefix("SLEEP_MS=") {
        let ms: u64 = ms.parse().map_err(|_| HandlerError::permanent("bad SLEEP_MS"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// A worker process of the chaos soak: the promoter's services and a worker whose registry holds
/// the recording handler. Started by the soak as this test binary again; does nothing on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of chaos_soak_..., started by it"]
async fn chaos_worker_process() {
    let Ok(record) = std::env::var(RECORD_ENV) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let config = Config::from_env().expect("config");
    let store = Store::connect(&config.database_url, config.pg_pool_size, config.pg_timeout).expect("store");
    let queue = Queue::from_config(&config).expect("queue");
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
            term.recv().await;
            shutdown.cancel();
        }
    });
    let m = &config.maintenance;
    let mut services = tokio::task::JoinSet::new();
    services.spawn(Promoter::new(store.clone(), queue.clone()).run(m.promote_interval, shutdown.clone()));
    services.spawn(
        Reaper::new(store.clone(), queue.clone())
            .with_retry(config.worker.retry)
            .run(m.reap_interval, shutdown.clone()),
    );
    services
        .spawn(Repairer::new(store.clone(), queue.clone(), m.repair_after).run(m.repair_interval, shutdown.clone()));
    services.spawn(
        Scheduler::new(store.clone(), queue.clone(), config.worker.default_timeout)
            .run(scheduler::INTERVAL, shutdown.clone()),
    );
    let registry = Registry::new().register(JOB_TYPE, Recorder::open(Path::new(&record), &config.worker.worker_id));
    let summary = Worker::new(store, queue, registry, config.worker.clone())
        .run(shutdown.clone())
        .await
        .expect("worker");
    eprintln!("chaos worker {} stopped: {summary:?}", config.worker.worker_id);
    while services.join_next().await.is_some() {}
}

/// One worker process's place: its proxies to Postgres and Redis, and the process now in it.
struct Slot {
    pg: Proxy,
    redis: Proxy,
    pg_url: String,
    redis_url: String,
    child: Option<(String, Child)>,
    /// When the fault now on each proxy heals.
    pg_fault_until: Option<Instant>,
    redis_fault_until: Option<Instant>,
}

/// The worker processes; any still running when this is dropped (a failed assertion) are killed.
struct Fleet {
    dir: PathBuf,
    common: Vec<(String, String)>,
    slots: Vec<Slot>,
    started: usize,
    /// Worker id → when its process was SIGKILLed and reaped (micros).
    killed: HashMap<String, i64>,
}

impl Fleet {
    fn spawn(&mut self, slot: usize) {
        self.started += 1;
        let worker_id = format!("chaos-p{slot}-{}", self.started);
        let log = File::create(self.dir.join(format!("{worker_id}.log"))).expect("log file");
        let s = &mut self.slots[slot];
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "chaos_worker_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_clear()
            .envs(self.common.iter().map(|(k, v)| (k, v)))
            .env("DATABASE_URL", &s.pg_url)
            .env("REDIS_URL", &s.redis_url)
            .env("JOBQ_WORKER_ID", &worker_id)
            .env(RECORD_ENV, self.dir.join(format!("{worker_id}.record")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn a worker process");
        s.child = Some((worker_id, child));
    }

    /// SIGKILLs the process in `slot`, reaps it, notes when, and starts a new one in its place.
    fn kill_and_replace(&mut self, slot: usize) -> u32 {
        let (worker_id, mut child) = self.slots[slot].child.take().expect("a process in the slot");
        let pid = child.id();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Reaped: nothing of it runs after this instant.
        self.killed.insert(worker_id, micros_now());
        self.spawn(slot);
        pid
    }

    fn assert_all_running(&mut self) {
        for slot in &mut self.slots {
            if let Some((worker_id, child)) = slot.child.as_mut()
                && let Some(status) = child.try_wait().expect("try_wait")
            {
                panic!(
                    "worker process {worker_id} exited by itself ({status}); its log: {}",
                    self.dir.join(format!("{worker_id}.log")).display()
                );
            }
        }
    }

    /// SIGTERMs every process and waits for clean exits.
    async fn stop(&mut self) {
        for slot in &self.slots {
            if let Some((_, child)) = &slot.child {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            }
        }
        let give_up = Instant::now() + Duration::from_secs(60);
        for slot in &mut self.slots {
            let Some((worker_id, mut child)) = slot.child.take() else {
                continue;
            };
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    assert!(status.success(), "worker process {worker_id} exited with {status}");
                    break;
                }
                if Instant::now() >= give_up {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("worker process {worker_id} did not stop on SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some((_, child)) = slot.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    PartitionPostgres,
    PartitionRedis,
    PartitionBoth,
    PostgresDelay,
    PostgresDelayReplies,
    ResetConnections,
    RedisRestartEmpty,
    RedisRestartWithData,
    Kill,
}

const FAULT_KINDS: [(FaultKind, u32); 9] = [
    (FaultKind::PartitionPostgres, 3),
    (FaultKind::PartitionRedis, 2),
    (FaultKind::PartitionBoth, 2),
    (FaultKind::PostgresDelay, 2),
    (FaultKind::PostgresDelayReplies, 2),
    (FaultKind::ResetConnections, 2),
    (FaultKind::RedisRestartEmpty, 1),
    (FaultKind::RedisRestartWithData, 1),
    (FaultKind::Kill, 3),
];

fn pick_fault(rng: &mut StdRng) -> FaultKind {
    let total: u32 = FAULT_KINDS.iter().map(|(_, w)| w).sum();
    let mut at = rng.random_range(0..total);
    for (kind, weight) in FAULT_KINDS {
        if at < weight {
            return kind;
        }
        at -= weight;
    }
    FaultKind::Kill
}

/// Ends a fault. The connections that lived through it are closed first: the black hole drops
/// bytes from the middle of a stream, which no real network does (TCP delivers in order or the
/// connection dies), and a client that kept such a connection would read answers to requests
/// that never arrived as answers to later ones. A partition that heals here is one the
/// connections did not survive; one that they survive is a delay.
fn heal(proxy: &Proxy) {
    proxy.reset();
    proxy.set(Fault::None);
}

/// An invocation of the worker function whose deadline is `time_left` from now.
fn event(payload: Value, time_left: Duration) -> LambdaEvent<Value> {
    let mut context = Context::default();
    context.deadline = (SystemTime::now() + time_left)
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    LambdaEvent::new(payload, context)
}

/// A count, through `checks`: the test's own pool, whose statements have minutes, not the bound
/// jobq puts on its own (a check that scans every job and attempt must not fail for taking
/// longer on a busy machine).
async fn count(checks: &Store, sql: &str) -> i64 {
    let client = checks.pool().get().await.expect("pg");
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// One execution as its handler recorded it.
#[derive(Debug, Clone)]
struct Execution {
    worker: String,
    job: String,
    attempt: i32,
    start: i64,
    end: Option<i64>,
    outcome: String,
}

/// Reads every record file in `dir`; an execution of a SIGKILLed process that has no end ends at
/// its kill.
fn read_executions(dir: &Path, killed: &HashMap<String, i64>) -> Vec<Execution> {
    let mut by_key: BTreeMap<(String, u64), Execution> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("record dir").flatten() {
        if entry.path().extension().is_none_or(|e| e != "record") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("record file");
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let parsed = (|| -> Option<()> {
                let key = (f.get(1)?.to_string(), f.get(2)?.parse::<u64>().ok()?);
                let at: i64 = f.get(6)?.parse().ok()?;
                match *f.first()? {
                    "S" => {
                        by_key.insert(
                            key.clone(),
                            Execution {
                                worker: key.0,
                                job: f.get(3)?.to_string(),
                                attempt: f.get(4)?.parse().ok()?,
                                start: at,
                                end: None,
                                outcome: String::new(),
                            },
                        );
                    }
                    "E" => {
                        let execution = by_key.get_mut(&key)?;
                        execution.end = Some(at);
                        execution.outcome = f.get(7)?.to_string();
                    }
                    _ => return None,
                }
                Some(())
            })();
            assert!(parsed.is_some(), "a record line that does not parse: {line:?}");
        }
    }
    by_key
        .into_values()
        .map(|mut execution| {
            if execution.end.is_none()
                && let Some(at) = killed.get(&execution.worker)
            {
                execution.end = Some(*at);
                execution.outcome = "killed".into();
            }
            execution
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_20000_jobs_through_partitions_latency_resets_redis_restarts_and_kills_loses_nothing_and_never_overlaps()
 {
    let mut redis = PrivateRedis::start_new();
    let env = TestEnv::with(|config| {
        config.redis_url = redis.url();
        config.worker.lease = Duration::from_millis(LEASE_MS);
        config.worker.heartbeat = Duration::from_millis(LEASE_MS / 3);
        config.worker.concurrency = 16;
        config.worker.poll = Duration::from_millis(200);
        config.worker.retry.base = Duration::from_millis(50);
        config.worker.retry.cap = Duration::from_millis(200);
        config.worker.worker_id = WORKER_FUNCTION_ID.into();
        config.maintenance.promote_interval = Duration::from_millis(100);
        config.maintenance.reap_interval = Duration::from_millis(200);
        config.maintenance.repair_interval = Duration::from_millis(1_000);
        config.maintenance.repair_after = Duration::from_millis(3_000);
    })
    .await;
    let seed: u64 = std::env::var("JOBQ_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("chaos seed={seed} (JOBQ_CHAOS_SEED={seed} replays it)");
    let checks = Store::connect(&env.config.database_url, 2, Duration::from_secs(300)).expect("the checks' pool");
    let mut rng = StdRng::seed_from_u64(seed);

    // (payload, max attempts, queue)
    let mut payloads: Vec<(String, i32, &str)> = Vec::with_capacity(TOTAL);
    for (kind, n, max_attempts) in KINDS {
        for _ in 0..n {
            let payload = if kind == "SLEEP_MS" {
                // Mostly short; one in ten outlives a heartbeat period and a latency spike.
                let ms = if rng.random_ratio(1, 10) {
                    rng.random_range(700..=1_500)
                } else {
                    rng.random_range(1..=60)
                };
                format!("SLEEP_MS={ms}")
            } else {
                kind.to_owned()
            };
            // One in eight of the sleeping jobs goes through the limited queue: enough of them
            // sleep long enough that the limit binds.
            let queue = if kind == "SLEEP_MS" && rng.random_ratio(1, 8) {
                LIMITED
            } else {
                "default"
            };
            payloads.push((payload, max_attempts, queue));
        }
    }
    assert_eq!(payloads.len(), TOTAL);
    payloads.shuffle(&mut rng);
    env.jobs
        .set_queue(
            LIMITED,
            jobq_shared::health::SettingsChange {
                concurrency: Some(Some(LIMIT)),
                ..Default::default()
            },
            &jobq_shared::bulk::Actor {
                principal: "chaos".into(),
                on_behalf_of: None,
            },
        )
        .await
        .expect("limit the queue");
    let schedule: jobq_shared::schedule::ScheduleRequest = serde_json::from_value(json!({
        "cron": "* * * * * *",
        "missedFires": "catchUp",
        "job": {"type": JOB_TYPE, "payload": "ok", "queue": "chaos-ticks", "maxAttempts": 8}
    }))
    .expect("a schedule body");
    let schedule = jobq_shared::schedule::ScheduleSpec::parse(SCHEDULE, schedule).expect("a schedule");
    env.store
        .put_schedule(&schedule, env.store.now().await)
        .await
        .expect("put the schedule");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}", env.database()));
    std::fs::create_dir_all(&dir).expect("record dir");
    let common: Vec<(String, String)> = [
        ("JOBQ_NAMESPACE", env.config.namespace.as_str()),
        ("JOBQ_WORKER_CONCURRENCY", "24"),
        ("JOBQ_LEASE_MS", "2000"),
        ("JOBQ_PG_TIMEOUT_MS", "1000"),
        ("JOBQ_PG_POOL_SIZE", "6"),
        ("JOBQ_REAP_INTERVAL_MS", "200"),
        ("JOBQ_RETRY_BASE_MS", "50"),
        ("JOBQ_RETRY_CAP_MS", "200"),
        ("JOBQ_PROMOTE_INTERVAL_MS", "100"),
        ("JOBQ_POLL_MS", "200"),
        ("JOBQ_SHUTDOWN_GRACE_MS", "2000"),
        // Ids that a fault took out of Redis exist only in Postgres until the repairer pushes them.
        ("JOBQ_REPAIR_INTERVAL_MS", "1000"),
        ("JOBQ_REPAIR_AFTER_MS", "3000"),
        ("RUST_LOG", "warn,jobq_shared::worker=info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(PG_TIMEOUT_MS, 1_000, "JOBQ_PG_TIMEOUT_MS above");
    let mut slots = Vec::new();
    for _ in 0..PROCESSES {
        let (pg, pg_url) = Proxy::for_url(&env.config.database_url).await.expect("pg proxy");
        let (redis_proxy, redis_url) = Proxy::for_url(&redis.url()).await.expect("redis proxy");
        slots.push(Slot {
            pg,
            redis: redis_proxy,
            pg_url,
            redis_url,
            child: None,
            pg_fault_until: None,
            redis_fault_until: None,
        });
    }
    let mut fleet = Fleet {
        dir: dir.clone(),
        common,
        slots,
        started: 0,
        killed: HashMap::new(),
    };
    for slot in 0..PROCESSES {
        fleet.spawn(slot);
    }

    // Worker-function invocations in this process, straight to the servers, with the recording
    // handler too.
    let stop_lambda = Arc::new(AtomicBool::new(false));
    let lambda = {
        let registry = Registry::new().register(
            JOB_TYPE,
            Recorder::open(&dir.join(format!("{WORKER_FUNCTION_ID}.record")), WORKER_FUNCTION_ID),
        );
        let deps = Deps::from_config(env.config.clone())
            .expect("deps")
            .with_registry(registry);
        let stop = stop_lambda.clone();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut total = Summary::default();
            let mut invocations = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let time_left = Duration::from_millis(rng.random_range(4_000..8_000));
                let request = json!({"maxJobs": rng.random_range(50..400), "untilIdle": rng.random_bool(0.5)});
                let summary = worker::handle(&deps, event(request, time_left))
                    .await
                    .expect("worker invocation");
                invocations += 1;
                total.claimed += summary.claimed;
                total.completed += summary.completed;
                total.released += summary.released;
                total.fenced += summary.fenced;
                total.unrecorded += summary.unrecorded;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (invocations, total)
        })
    };

    // The jobs arrive in batches, one about every second, while the faults go on.
    let started = Instant::now();
    let started_micros = micros_now();
    println!("chaos t=0 is {}", Utc::now());
    let created_all = Arc::new(AtomicBool::new(false));
    let creator = {
        let jobs = env.jobs.clone();
        let created_all = created_all.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(TOTAL);
            for chunk in payloads.chunks(BATCH) {
                let batch: Vec<NewJob> = chunk
                    .iter()
                    .map(|(payload, max_attempts, queue)| {
                        NewJob::new(JOB_TYPE, json!(payload))
                            .max_attempts(*max_attempts)
                            .queue(*queue)
                    })
                    .collect();
                let results = jobs.create_many(&batch, Utc::now()).await.expect("create_many");
                for result in results {
                    ids.push(result.expect("created").job.id);
                }
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
            created_all.store(true, Ordering::Relaxed);
            ids
        })
    };

    let unsettled = "SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS')";
    // While the schedule fires, the soak's own jobs.
    let unsettled_created =
        "SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS') AND schedule_name IS NULL";
    let mut faults: BTreeMap<FaultKind, usize> = BTreeMap::new();
    // Every kind once, in a random order, then at random.
    let mut first_round: Vec<FaultKind> = FAULT_KINDS.iter().map(|(k, _)| *k).collect();
    first_round.shuffle(&mut rng);
    let mut next_fault = Instant::now() + Duration::from_millis(rng.random_range(500..1_500));
    let mut creates_done_at: Option<Instant> = None;
    let mut last_redis_restart = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fleet.assert_all_running();
        let now = Instant::now();
        for slot in &mut fleet.slots {
            if slot.pg_fault_until.is_some_and(|until| now >= until) {
                heal(&slot.pg);
                slot.pg_fault_until = None;
            }
            if slot.redis_fault_until.is_some_and(|until| now >= until) {
                heal(&slot.redis);
                slot.redis_fault_until = None;
            }
        }
        if creates_done_at.is_none() && created_all.load(Ordering::Relaxed) {
            creates_done_at = Some(now);
        }
        if let Some(done) = creates_done_at
            && (now >= done + CHAOS_AFTER_CREATES || count(&checks, unsettled_created).await == 0)
        {
            break;
        }
        if now < next_fault {
            continue;
        }
        next_fault = now + Duration::from_millis(rng.random_range(300..1_500));
        let kind = first_round.pop().unwrap_or_else(|| pick_fault(&mut rng));
        let slot = rng.random_range(0..PROCESSES);
        let lasts = Duration::from_millis(rng.random_range(1_000..4_000));
        let s = &mut fleet.slots[slot];
        let pg_free = s.pg_fault_until.is_none();
        let redis_free = s.redis_fault_until.is_none();
        let applied = match kind {
            FaultKind::PartitionPostgres if pg_free => {
                s.pg.set(Fault::Blackhole);
                s.pg_fault_until = Some(now + lasts);
                true
            }
            FaultKind::PartitionRedis if redis_free => {
                s.redis.set(Fault::Blackhole);
                s.redis_fault_until = Some(now + lasts);
                true
            }
            FaultKind::PartitionBoth if pg_free && redis_free => {
                s.pg.set(Fault::Blackhole);
                s.redis.set(Fault::Blackhole);
                s.pg_fault_until = Some(now + lasts);
                s.redis_fault_until = Some(now + lasts);
                true
            }
            FaultKind::PostgresDelay if pg_free => {
                s.pg.set(Fault::Delay(SPIKE));
                s.pg_fault_until = Some(now + lasts);
                true
            }
            FaultKind::PostgresDelayReplies if pg_free => {
                s.pg.set(Fault::DelayReplies(SPIKE));
                s.pg_fault_until = Some(now + lasts);
                true
            }
            FaultKind::ResetConnections => {
                match rng.random_range(0..3) {
                    0 => s.pg.reset(),
                    1 => s.redis.reset(),
                    _ => {
                        s.pg.reset();
                        s.redis.reset();
                    }
                }
                true
            }
            FaultKind::RedisRestartEmpty | FaultKind::RedisRestartWithData
                if now >= last_redis_restart + Duration::from_secs(3) =>
            {
                let keep_data = kind == FaultKind::RedisRestartWithData;
                tokio::task::block_in_place(|| redis.restart(keep_data));
                last_redis_restart = Instant::now();
                true
            }
            FaultKind::Kill => {
                fleet.kill_and_replace(slot);
                true
            }
            _ => false,
        };
        if applied {
            *faults.entry(kind).or_default() += 1;
            println!(
                "chaos t={:.1}s {kind:?} process={slot} lasts={}ms",
                started.elapsed().as_secs_f64(),
                lasts.as_millis()
            );
        } else {
            // Its proxy was busy with another fault, or Redis restarted a moment ago: try it later.
            first_round.insert(0, kind);
        }
    }

    // The schedule stops firing; heal everything, then let the jobs settle.
    let mut paused = schedule.clone();
    paused.paused = true;
    env.store
        .put_schedule(&paused, env.store.now().await)
        .await
        .expect("pause the schedule");
    for slot in &mut fleet.slots {
        heal(&slot.pg);
        heal(&slot.redis);
        slot.pg_fault_until = None;
        slot.redis_fault_until = None;
    }
    let healed_at = Instant::now();
    println!("chaos t={:.1}s healed", started.elapsed().as_secs_f64());
    let ids = creator.await.expect("creator");
    assert_eq!(ids.len(), TOTAL);
    loop {
        let left = count(&checks, unsettled).await;
        if left == 0 {
            break;
        }
        assert!(
            healed_at.elapsed() < SETTLE_WITHIN,
            "{left} jobs still PENDING or IN_PROGRESS {SETTLE_WITHIN:?} after the faults healed (records in {})",
            dir.display()
        );
        fleet.assert_all_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = started.elapsed();
    let settle_after_heal = healed_at.elapsed();
    stop_lambda.store(true, Ordering::Relaxed);
    let (invocations, lambda_summary) = lambda.await.expect("worker-function loop");
    fleet.assert_all_running();
    fleet.stop().await;
    println!("chaos worker-function invocations={invocations} summary={lambda_summary:?}");

    // What the handlers recorded.
    let executions = read_executions(&dir, &fleet.killed);
    let unended: Vec<&Execution> = executions.iter().filter(|e| e.end.is_none()).collect();
    let mut by_job: HashMap<&str, Vec<&Execution>> = HashMap::new();
    for execution in &executions {
        by_job.entry(execution.job.as_str()).or_default().push(execution);
    }
    // No two executions of a job overlap, across processes.
    let mut overlapping = 0usize;
    for runs in by_job.values_mut() {
        runs.sort_by_key(|e| e.start);
        let mut ended_by: Option<(i64, &Execution)> = None;
        for run in runs.iter() {
            if let Some((end, before)) = ended_by
                && run.start < end
            {
                overlapping += 1;
                println!(
                    "chaos OVERLAP job {}: attempt {} on {} ran {}..{:?} ({}); attempt {} on {} started {} ({} us before that ended)",
                    run.job,
                    before.attempt,
                    before.worker,
                    before.start,
                    before.end,
                    before.outcome,
                    run.attempt,
                    run.worker,
                    run.start,
                    end - run.start
                );
            }
            let end = run.end.unwrap_or(i64::MAX);
            if ended_by.is_none_or(|(e, _)| end > e) {
                ended_by = Some((end, run));
            }
        }
    }
    // At no instant more of the limited queue's jobs running than its limit, across processes.
    let limited: HashSet<String> = env
        .store
        .pool()
        .get()
        .await
        .expect("pg")
        .query("SELECT id::text FROM jobs WHERE queue = $1", &[&LIMITED])
        .await
        .expect("limited jobs")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut edges: Vec<(i64, i32)> = executions
        .iter()
        .filter(|e| limited.contains(&e.job))
        .flat_map(|e| [(e.start, 1), (e.end.unwrap_or(i64::MAX), -1)])
        .collect();
    // An end and a start at the same microsecond: the end first.
    edges.sort();
    let (mut limited_running, mut limited_most) = (0, 0);
    for (_, step) in &edges {
        limited_running += step;
        limited_most = limited_most.max(limited_running);
    }
    let started_attempts: HashSet<(&str, i32, &str)> = executions
        .iter()
        .map(|e| (e.job.as_str(), e.attempt, e.worker.as_str()))
        .collect();
    let ok_ends: HashMap<(&str, i32, &str), i64> = executions
        .iter()
        .filter(|e| e.outcome == "ok")
        .filter_map(|e| Some(((e.job.as_str(), e.attempt, e.worker.as_str()), e.end?)))
        .collect();

    // What Postgres recorded.
    let client = checks.pool().get().await.expect("pg");
    let jobs = client
        .query("SELECT id::text, payload #>> '{}', status FROM jobs", &[])
        .await
        .expect("jobs");
    let mut per_kind: BTreeMap<(&str, String), i64> = BTreeMap::new();
    let mut lost = 0usize;
    let mut status_of: HashMap<String, String> = HashMap::new();
    for row in &jobs {
        let (id, payload, status): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let kind = kind_of(&payload);
        *per_kind.entry((kind, status.clone())).or_default() += 1;
        let expected = if should_fail(kind) { "FAILED" } else { "COMPLETED" };
        if status != expected {
            lost += 1;
            if lost <= 10 {
                println!("chaos LOST job {id} {payload}: {status}, wanted {expected}");
            }
        }
        status_of.insert(id, status);
    }
    let ticks = client
        .query(
            "SELECT schedule_tick, count(*) FROM jobs WHERE schedule_name = $1 GROUP BY 1 ORDER BY 1",
            &[&SCHEDULE],
        )
        .await
        .expect("ticks");
    let ticks: Vec<(DateTime<Utc>, i64)> = ticks.iter().map(|row| (row.get(0), row.get(1))).collect();
    let fired: i64 = ticks.iter().map(|(_, n)| n).sum();
    assert_eq!(jobs.len() as i64, TOTAL as i64 + fired);
    let attempts = client
        .query(
            "SELECT a.job_id::text, a.lease_token, a.attempt, a.worker_id, a.outcome, a.finished_at,
                    coalesce(a.error, ''), a.lease_token = j.lease_token, a.started_at
             FROM job_attempt_history a JOIN jobs j ON j.id = a.job_id",
            &[],
        )
        .await
        .expect("attempts");
    let mut charged_unstarted = 0usize;
    // (worker, outcome, error) -> (attempts, first and last claimed at, seconds into the run)
    let mut unstarted_by_worker: BTreeMap<(String, String, String), (usize, f64, f64)> = BTreeMap::new();
    let mut stale_completions_accepted = 0usize;
    let mut successes: HashMap<String, usize> = HashMap::new();
    let mut counted_by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for row in &attempts {
        let job: String = row.get(0);
        let attempt: i32 = row.get(2);
        let worker_id: String = row.get(3);
        let outcome: String = row.get(4);
        let finished_at: Option<DateTime<Utc>> = row.get(5);
        let error: String = row.get(6);
        let last: bool = row.get(7);
        *counted_by_outcome.entry(outcome.clone()).or_default() += 1;
        let key = (job.as_str(), attempt, worker_id.as_str());
        if outcome != "RELEASED" && !started_attempts.contains(&key) {
            charged_unstarted += 1;
            let claimed: DateTime<Utc> = row.get(8);
            let at = |micros: i64| (micros - started_micros) as f64 / 1e6;
            let entry = unstarted_by_worker
                .entry((
                    worker_id.clone(),
                    outcome.clone(),
                    error.chars().take(40).collect::<String>(),
                ))
                .or_insert((0, f64::MAX, f64::MIN));
            let t = at(claimed.timestamp_micros());
            *entry = (entry.0 + 1, entry.1.min(t), entry.2.max(t));
            if charged_unstarted <= 12 {
                println!(
                    "chaos CHARGED UNSTARTED job {job} attempt {attempt} on {worker_id}, claimed t={t:.3}s: {outcome}"
                );
            }
        }
        if outcome == "SUCCEEDED" {
            *successes.entry(job.clone()).or_default() += 1;
            let finished = finished_at.map(|t| t.timestamp_micros()).unwrap_or(i64::MIN);
            // The execution of that attempt on that worker ran to its end, returned Ok, and did so
            // before the completion was written (100 ms for the two clocks' reading).
            let genuine = last
                && status_of.get(&job).is_some_and(|s| s == "COMPLETED")
                && ok_ends.get(&key).is_some_and(|end| *end <= finished + 100_000);
            if !genuine {
                stale_completions_accepted += 1;
                println!(
                    "chaos STALE COMPLETION job {job} attempt {attempt} on {worker_id}: last lease {last}, \
                     status {:?}, recorded ok end {:?}, finished {finished}",
                    status_of.get(&job),
                    ok_ends.get(&key)
                );
            }
        }
    }
    let completed = status_of.values().filter(|s| *s == "COMPLETED").count();
    let failed = status_of.values().filter(|s| *s == "FAILED").count();
    let completed_without_one_success = status_of
        .iter()
        .filter(|(id, s)| *s == "COMPLETED" && successes.get(*id).copied() != Some(1))
        .count();
    let still_running = count(
        &checks,
        "SELECT count(*) FROM job_attempt_history WHERE outcome = 'RUNNING' OR finished_at IS NULL",
    )
    .await;
    let attempt_count_mismatches = count(
        &checks,
        // One pass over each table: the count per job, correlated, once ran into jobq's statement
        // timeout in CI on a loaded machine.
        "SELECT count(*) FROM jobs j
         LEFT JOIN (SELECT job_id, count(*) AS charged FROM job_attempt_history
                    WHERE outcome IN ('SUCCEEDED', 'FAILED', 'LEASE_EXPIRED') GROUP BY job_id) a
                ON a.job_id = j.id
         WHERE j.attempts <> coalesce(a.charged, 0)",
    )
    .await;
    let unsettled_left = count(&checks, unsettled).await;
    let by_function = executions.iter().filter(|e| e.worker == WORKER_FUNCTION_ID).count();
    let ended_by_kill = executions.iter().filter(|e| e.outcome == "killed").count();
    let cancelled = executions.iter().filter(|e| e.outcome == "cancelled").count();
    let injected: usize = faults.values().sum();
    let fault_list: Vec<String> = faults.iter().map(|(k, n)| format!("{k:?}={n}")).collect();
    for ((worker_id, outcome, error), (n, first, last)) in &unstarted_by_worker {
        let killed = fleet
            .killed
            .get(worker_id)
            .map(|at| format!("killed at t={:.1}s", (at - started_micros) as f64 / 1e6));
        println!(
            "chaos CHARGED UNSTARTED {n} attempts on {worker_id} ({}), claimed t={first:.1}..{last:.1}s: {outcome} {error:?}",
            killed.unwrap_or_else(|| "not killed".into())
        );
    }
    println!("chaos per kind: {per_kind:?}");
    println!("chaos attempts by outcome: {counted_by_outcome:?}");
    println!(
        "CHAOS seed={seed} jobs={TOTAL} completed={completed} failed={failed} executions={} \
         by_worker_function={by_function} ended_by_kill={ended_by_kill} cancelled={cancelled} \
         faults={injected} ({}) lost={lost} overlapping={overlapping} \
         stale_completions_accepted={stale_completions_accepted} charged_unstarted={charged_unstarted} \
         duration_s={:.1} settle_after_heal_s={:.1} drain_rate={:.0}/s \
         limited_jobs={} limited_most_running={limited_most} (limit {LIMIT}) schedule_ticks={}",
        executions.len(),
        fault_list.join(" "),
        wall.as_secs_f64(),
        settle_after_heal.as_secs_f64(),
        TOTAL as f64 / wall.as_secs_f64(),
        limited.len(),
        ticks.len()
    );

    assert!(
        unended.is_empty(),
        "executions with no end: {:?}",
        &unended[..unended.len().min(5)]
    );
    assert_eq!(unsettled_left, 0, "jobs PENDING or IN_PROGRESS at the end");
    assert_eq!(still_running, 0, "attempts left RUNNING");
    assert_eq!(lost, 0, "jobs not COMPLETED or FAILED as their payload says");
    assert_eq!(overlapping, 0, "executions of one job overlapping");
    assert_eq!(
        stale_completions_accepted, 0,
        "completions not from a finished execution of that attempt"
    );
    assert_eq!(
        completed_without_one_success, 0,
        "COMPLETED jobs without exactly one SUCCEEDED attempt"
    );
    assert_eq!(
        attempt_count_mismatches, 0,
        "attempt counters out of step with the history"
    );
    for (kind, _) in FAULT_KINDS {
        assert!(faults.contains_key(&kind), "{kind:?} never injected: {fault_list:?}");
    }
    assert!(by_function > 0, "the worker function ran nothing");
    assert!(limited.len() > 400, "{} jobs in the limited queue", limited.len());
    assert!(
        (2..=LIMIT).contains(&limited_most),
        "at most {limited_most} of the limited queue's jobs ran at once; its limit is {LIMIT}"
    );
    let duplicated: Vec<_> = ticks.iter().filter(|(_, n)| *n != 1).collect();
    assert!(duplicated.is_empty(), "ticks with more than one job: {duplicated:?}");
    let gaps: Vec<_> = ticks
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 != chrono::Duration::seconds(1))
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert!(gaps.is_empty(), "ticks without a job between: {gaps:?}");
    assert!(
        ticks.len() as f64 >= wall.as_secs_f64() - settle_after_heal.as_secs_f64() - 5.0,
        "{} ticks fired in {:.0} s of chaos",
        ticks.len(),
        (wall - settle_after_heal).as_secs_f64()
    );
    assert_eq!(
        charged_unstarted, 0,
        "attempts charged that no execution started (CHARGED UNSTARTED above)"
    );
    drop(client);
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The smallest case of what the soak finds: a worker's claim commits, its answer is held up
/// longer than the lease (replies from Postgres 1.5 s late, 1 s client timeout, for 4 s), the
/// worker cannot read back what it took before the lease runs out, and gives the ids back. The
/// job never ran there, so it must not be charged for that claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_is_lost_for_longer_than_the_lease_charges_no_attempt() {
    let env = TestEnv::with(|c| {
        c.worker.lease = Duration::from_secs(2);
        c.worker.heartbeat = Duration::from_millis(500);
        c.maintenance.reap_interval = Duration::from_millis(100);
    })
    .await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lost-claim-{}", env.database()));
    std::fs::create_dir_all(&dir).expect("record dir");
    let (proxy, proxied_url) = Proxy::for_url(&env.config.database_url).await.expect("proxy");
    let store = Store::connect(&proxied_url, 4, Duration::from_millis(PG_TIMEOUT_MS)).expect("pool");
    store.sync_clock().await.expect("read the database clock");
    // The claim is prepared already, so that the claim itself is what is held up.
    let warm = store
        .claim_many(&[], "warm-up", store.now().await, Duration::from_secs(1))
        .await
        .expect("claim nothing");
    assert!(warm.is_empty());
    let id = env
        .jobs
        .create(
            &NewJob::new(JOB_TYPE, json!("ok")).max_attempts(10),
            env.store.now().await,
        )
        .await
        .expect("create")
        .job
        .id;

    proxy.set(Fault::DelayReplies(SPIKE));
    let worker = Worker::new(
        store,
        env.queue.clone(),
        Registry::new().register(JOB_TYPE, Recorder::open(&dir.join("w.record"), "w")),
        env.config.worker.clone(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    // The rest of the system, healthy.
    let services = CancellationToken::new();
    let reaper = tokio::spawn(
        Reaper::new(env.store.clone(), env.queue.clone())
            .with_retry(env.config.worker.retry)
            .run(env.config.maintenance.reap_interval, services.clone()),
    );
    let promoter = tokio::spawn(
        Promoter::new(env.store.clone(), env.queue.clone()).run(Duration::from_millis(100), services.clone()),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    heal(&proxy);

    let job = env
        .wait_for(id, jobq_shared::Status::Completed, Duration::from_secs(30))
        .await;
    stop.cancel();
    services.cancel();
    run.await.expect("join").expect("worker");
    reaper.await.expect("join reaper");
    promoter.await.expect("join promoter");
    let executions = read_executions(&dir, &HashMap::new());
    let _ = std::fs::remove_dir_all(&dir);
    let history: Vec<(i32, String)> = job
        .history
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str().to_owned()))
        .collect();
    let started: Vec<i32> = executions.iter().map(|e| e.attempt).collect();
    println!("LOST CLAIM history={history:?} executions started for attempts {started:?}");
    assert_eq!(
        job.attempts, 1,
        "charged {} attempts; history {history:?}; executions started for attempts {started:?}",
        job.attempts
    );
}
