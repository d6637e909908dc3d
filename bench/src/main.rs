//! jobq's benchmark. Each run creates its own database and Redis namespace on the servers the
//! README's set-up provides (`DATABASE_URL`, `REDIS_URL`), then measures, for no-op jobs:
//!
//! - enqueue: `--mode bulk` stores jobs through the batch API (`--batch` per call), `--mode single`
//!   one call per job from `--callers` concurrent callers;
//! - process: one worker (`--concurrency` slots) drains the pre-enqueued jobs; every completion is
//!   committed and in the attempt history;
//! - latency: on an idle queue, from `create` returning to the handler starting, `--samples` times.
//!
//! Every job is in one queue, [`QUEUE`], or with `--queues K` spread evenly over `K` queues
//! (`q0` .. `q<K-1>`, the latency probes in `q0`), which a worker of every queue serves. With
//! `--limit N`, each queue's concurrency limit is set to `N` (as `PUT /queues/{name}` sets it) after
//! the enqueue, so the drain and the latency probes run under it; without it no queue has a limit.
//! `REDIS_CLUSTER=true` with a list of nodes in `REDIS_URL` runs it against a Redis Cluster.
//! `JOBQ_BENCH_SETUP_SQL` is run on each run's database once its schema is in place, for A/B
//! experiments on the schema (`DROP INDEX jobs_payload_idx`, say); the figures of such a run are
//! not jobq's.
//!
//! It prints one line per run:
//! `RESULT system=jobq mode=<m> n=<jobs> enqueue_per_s=<x> process_per_s=<x> latency_ms_p50=<x> latency_ms_p95=<x> ... limit=<N|none> queues=<K> redis=<single|cluster>`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use chrono::Utc;
use jobq_shared::bulk::Actor;
use jobq_shared::health::SettingsChange;
use jobq_shared::job::limits::DEFAULT_QUEUE;
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Limits;
use jobq_shared::{HandlerError, JobContext, JobHandler, NewJob, Registry, Status};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The queue of every job the bench creates.
const QUEUE: &str = DEFAULT_QUEUE;

#[derive(Debug, Clone)]
struct Args {
    jobs: usize,
    mode: Mode,
    concurrency: usize,
    batch: usize,
    callers: usize,
    samples: usize,
    runs: usize,
    /// The queues' concurrency limit during the drain and the latency probes; `None`: no limit.
    limit: Option<i32>,
    /// How many queues the jobs are spread over.
    queues: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Bulk,
    Single,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            jobs: 20_000,
            mode: Mode::Bulk,
            concurrency: 1000,
            batch: 1000,
            callers: 32,
            samples: 200,
            runs: 1,
            limit: None,
            queues: 1,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--jobs" => args.jobs = value()?.parse().context("--jobs")?,
                "--mode" => {
                    args.mode = match value()?.as_str() {
                        "bulk" => Mode::Bulk,
                        "single" => Mode::Single,
                        other => bail!("--mode is bulk or single, not {other:?}"),
                    }
                }
                "--concurrency" => args.concurrency = value()?.parse().context("--concurrency")?,
                "--batch" => args.batch = value()?.parse().context("--batch")?,
                "--callers" => args.callers = value()?.parse().context("--callers")?,
                "--samples" => args.samples = value()?.parse().context("--samples")?,
                "--runs" => args.runs = value()?.parse().context("--runs")?,
                "--limit" => args.limit = Some(value()?.parse().context("--limit")?),
                "--queues" => args.queues = value()?.parse().context("--queues")?,
                "-h" | "--help" => {
                    println!(
                        "jobq-bench [--jobs N] [--mode bulk|single] [--concurrency N] [--batch N] [--callers N] [--samples N] [--runs N] [--limit N] [--queues K]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other:?} (try --help)"),
            }
        }
        if args.jobs == 0 || args.batch == 0 || args.callers == 0 || args.concurrency == 0 || args.queues == 0 {
            bail!("--jobs, --batch, --callers, --concurrency and --queues must be at least 1");
        }
        if args.limit.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
            bail!("--limit must be from 1 to 1000000");
        }
        Ok(args)
    }
}

struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Tells the latency probe when each job's handler started.
struct Probe(mpsc::UnboundedSender<Instant>);

#[async_trait]
impl JobHandler for Probe {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        let _ = self.0.send(Instant::now());
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    for _ in 0..args.runs {
        run(&args).await?;
    }
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let concurrency = args.concurrency;
    let pool = (args.callers + 8).max(16);
    let env = TestEnv::with(|c| {
        c.worker.concurrency = concurrency;
        c.worker.lease = Duration::from_secs(60);
        c.worker.heartbeat = Duration::from_secs(20);
        c.worker.poll = Duration::from_millis(200);
        c.pg_pool_size = pool;
    })
    .await;
    if let Ok(sql) = std::env::var("JOBQ_BENCH_SETUP_SQL") {
        let client = env
            .store
            .pool()
            .get()
            .await
            .context("a connection for JOBQ_BENCH_SETUP_SQL")?;
        client.batch_execute(&sql).await.context("JOBQ_BENCH_SETUP_SQL")?;
        eprintln!("jobq-bench: ran JOBQ_BENCH_SETUP_SQL: {sql}");
    }

    let enqueue_per_s = enqueue(&env, args).await?;
    if let Some(n) = args.limit {
        let change = SettingsChange {
            concurrency: Some(Some(n)),
            ..SettingsChange::default()
        };
        let actor = Actor {
            principal: "jobq-bench".into(),
            on_behalf_of: None,
        };
        for queue in 0..args.queues {
            env.jobs
                .set_queue(&queue_name(args, queue), change.clone(), &actor)
                .await?;
        }
    }
    let process_per_s = drain(&env, args.jobs).await?;
    let (p50, p95, e2e_p50, e2e_p95) = latency(&env, args).await?;

    let mode = match args.mode {
        Mode::Bulk => "bulk",
        Mode::Single => "single",
    };
    let limit = args.limit.map_or("none".to_owned(), |n| n.to_string());
    println!(
        "RESULT system=jobq mode={mode} n={} enqueue_per_s={enqueue_per_s:.0} process_per_s={process_per_s:.0} \
         latency_ms_p50={p50:.2} latency_ms_p95={p95:.2} create_to_start_ms_p50={e2e_p50:.2} \
         create_to_start_ms_p95={e2e_p95:.2} concurrency={} batch={} callers={} limit={limit} queues={} redis={}",
        args.jobs,
        args.concurrency,
        args.batch,
        args.callers,
        args.queues,
        if env.queue.is_cluster() { "cluster" } else { "single" }
    );
    Ok(())
}

/// The name of the `i`th queue: [`QUEUE`] when there is one.
fn queue_name(args: &Args, i: usize) -> String {
    if args.queues == 1 {
        QUEUE.to_owned()
    } else {
        format!("q{i}")
    }
}

/// A job of `job_type` in the queue of job number `i`.
fn job(args: &Args, job_type: &str, i: usize) -> NewJob {
    NewJob::new(job_type, json!(null)).queue(queue_name(args, i % args.queues))
}

fn noop_jobs(args: &Args) -> Vec<NewJob> {
    (0..args.jobs).map(|i| job(args, "NOOP", i)).collect()
}

async fn enqueue(env: &TestEnv, args: &Args) -> anyhow::Result<f64> {
    let started = Instant::now();
    match args.mode {
        Mode::Bulk => {
            for chunk in noop_jobs(args).chunks(args.batch) {
                for result in env.jobs.create_many(chunk, Utc::now()).await? {
                    result?;
                }
            }
        }
        Mode::Single => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut callers = tokio::task::JoinSet::new();
            for _ in 0..args.callers {
                let jobs = env.jobs.clone();
                let next = next.clone();
                let total = args.jobs;
                let args = args.clone();
                callers.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        jobs.create(&job(&args, "NOOP", i), Utc::now()).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = callers.join_next().await {
                done??;
            }
        }
    }
    Ok(args.jobs as f64 / started.elapsed().as_secs_f64())
}

async fn drain(env: &TestEnv, n: usize) -> anyhow::Result<f64> {
    let worker = env.worker(Registry::new().register("NOOP", Noop));
    let started = Instant::now();
    let limits = Limits {
        max_jobs: Some(n),
        ..Limits::default()
    };
    let summary = worker.run_with(CancellationToken::new(), limits).await?;
    let elapsed = started.elapsed().as_secs_f64();
    if summary.completed != n {
        bail!("drained {} of {n} jobs: {summary:?}", summary.completed);
    }
    let client = env.store.pool().get().await?;
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM jobs j JOIN job_attempt_history a ON a.job_id = j.id \
             WHERE j.status = $1 AND a.outcome = 'SUCCEEDED'",
            &[&Status::Completed.as_str()],
        )
        .await?
        .get(0);
    if done as usize != n {
        bail!("{done} completions recorded for {n} jobs");
    }
    Ok(n as f64 / elapsed)
}

/// Percentiles of create-returned → handler-started and create-called → handler-started, in ms.
async fn latency(env: &TestEnv, args: &Args) -> anyhow::Result<(f64, f64, f64, f64)> {
    let samples = args.samples;
    if samples == 0 {
        return Ok((f64::NAN, f64::NAN, f64::NAN, f64::NAN));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = env.worker(Registry::new().register("PROBE", Probe(tx)));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after_return = Vec::with_capacity(samples);
    let mut after_call = Vec::with_capacity(samples);
    for _ in 0..samples {
        let called = Instant::now();
        env.jobs.create(&job(args, "PROBE", 0), Utc::now()).await?;
        let returned = Instant::now();
        let started = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("a probe job did not start within 10 s")?
            .context("probe channel closed")?;
        // The push precedes create's return, so a handler can start first: that counts as 0.
        after_return.push(started.saturating_duration_since(returned).as_secs_f64() * 1000.0);
        after_call.push(started.saturating_duration_since(called).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    running.await??;
    Ok((
        percentile(&mut after_return, 0.50),
        percentile(&mut after_return, 0.95),
        percentile(&mut after_call, 0.50),
        percentile(&mut after_call, 0.95),
    ))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank.min(values.len() - 1)]
}
