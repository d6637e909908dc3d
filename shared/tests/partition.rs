//! One worker cut off from Postgres while the rest of the system runs: it must stop its handler
//! before its lease can expire, so that the job's next execution, on another worker, never
//! overlaps it. Executions are recorded by the handler itself, outside jobq.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jobq_shared::fault::{Fault, Proxy};
use jobq_shared::job::Outcome;
use jobq_shared::maintenance::promoter::Promoter;
use jobq_shared::maintenance::reaper::Reaper;
use jobq_shared::testing::TestEnv;
use jobq_shared::{HandlerError, JobContext, JobHandler, NewJob, Registry, Status, Store, Worker};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One execution as the handler saw it: who ran it, when it started and when it stopped
/// (returned, or was dropped by a cancellation).
#[derive(Debug, Clone)]
struct Execution {
    worker: &'static str,
    started: Instant,
    ended: Option<Instant>,
    saw_cancel: bool,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Execution>>>);

impl Log {
    fn all(&self) -> Vec<Execution> {
        self.0.lock().expect("log").clone()
    }
}

/// Sleeps `takes`, recording its execution; its end is recorded however it stops.
struct Recorded {
    worker: &'static str,
    takes: Duration,
    log: Log,
}

struct EndOnDrop {
    log: Log,
    index: usize,
    cancel: CancellationToken,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let mut log = self.log.0.lock().expect("log");
        log[self.index].ended = Some(Instant::now());
        log[self.index].saw_cancel = self.cancel.is_cancelled();
    }
}

#[async_trait]
impl JobHandler for Recorded {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let index = {
            let mut log = self.log.0.lock().expect("log");
            log.push(Execution {
                worker: self.worker,
                started: Instant::now(),
                ended: None,
                saw_cancel: false,
            });
            log.len() - 1
        };
        let _end = EndOnDrop {
            log: self.log.clone(),
            index,
            cancel: job.cancel.clone(),
        };
        tokio::time::sleep(self.takes).await;
        Ok(())
    }
}

async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_cut_off_from_postgres_stops_its_job_before_another_can_claim_it() {
    let env = TestEnv::with(|c| {
        c.worker.lease = Duration::from_secs(1);
        c.worker.heartbeat = Duration::from_millis(250);
    })
    .await;
    let log = Log::default();

    // Worker A reaches Postgres through a proxy; everything else connects directly.
    let (proxy, proxied_url) = Proxy::for_url(&env.config.database_url).await.expect("proxy");
    let a_store = Store::connect(&proxied_url, 2, Duration::from_secs(2)).expect("pool");
    let a = Worker::new(
        a_store,
        env.queue.clone(),
        Registry::new().register(
            "SLOW",
            Recorded {
                worker: "a",
                takes: Duration::from_secs(6),
                log: log.clone(),
            },
        ),
        env.config.worker.clone(),
    );
    let a_stop = CancellationToken::new();
    let a_run = tokio::spawn({
        let stop = a_stop.clone();
        async move { a.run(stop).await }
    });

    let id = env.create_job(NewJob::new("SLOW", json!({}))).await;
    wait_until("worker A starts the job", Duration::from_secs(10), || {
        !log.all().is_empty()
    })
    .await;
    // ...and renews its lease once: the job has demonstrably started there, so losing the lease
    // costs it an attempt (a lease never renewed would be given back uncharged).
    let client = env.store.pool().get().await.expect("connection");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let renewed: bool = client
            .query_one("SELECT renewed_at IS NOT NULL FROM jobs WHERE id = $1", &[&id.0])
            .await
            .expect("read")
            .get(0);
        if renewed {
            break;
        }
        assert!(Instant::now() < until, "A never renewed its lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);

    // Cut A off, half-open: its bytes to and from Postgres vanish, its sockets stay up.
    proxy.set(Fault::Blackhole);
    let cut_at = Instant::now();

    // The rest of the system: a reaper, a promoter and worker B, all healthy.
    let reaper = Reaper::new(env.store.clone(), env.queue.clone()).with_retry(env.config.worker.retry);
    let reaper_stop = CancellationToken::new();
    let reaper_run = tokio::spawn(reaper.run(Duration::from_millis(100), reaper_stop.clone()));
    let promoter_run = tokio::spawn(
        Promoter::new(env.store.clone(), env.queue.clone()).run(Duration::from_millis(50), reaper_stop.clone()),
    );
    let b = env.worker(Registry::new().register(
        "SLOW",
        Recorded {
            worker: "b",
            takes: Duration::from_millis(100),
            log: log.clone(),
        },
    ));
    let b_stop = CancellationToken::new();
    let b_run = tokio::spawn({
        let stop = b_stop.clone();
        async move { b.run(stop).await }
    });

    let job = env.wait_for(id, Status::Completed, Duration::from_secs(20)).await;

    b_stop.cancel();
    reaper_stop.cancel();
    proxy.set(Fault::None);
    a_stop.cancel();
    let a_summary = a_run.await.expect("join a").expect("run a");
    b_run.await.expect("join b").expect("run b");
    reaper_run.await.expect("join reaper");
    promoter_run.await.expect("join promoter");

    let runs = log.all();
    let a_run = runs.iter().find(|r| r.worker == "a").expect("A ran");
    let b_run = runs.iter().find(|r| r.worker == "b").expect("B ran");
    let a_ended = a_run.ended.expect("A's execution ended");
    assert!(
        a_ended <= b_run.started,
        "executions overlap: A ended {:?} after the cut, B started {:?} after it",
        a_ended - cut_at,
        b_run.started - cut_at
    );
    assert!(a_run.saw_cancel, "A's handler was told it was cancelled");
    assert!(
        a_ended - cut_at < Duration::from_secs(1),
        "A stopped within its lease of the cut ({:?})",
        a_ended - cut_at
    );
    assert_eq!(a_summary.fenced, 1, "{a_summary:?}");
    assert_eq!(a_summary.completed, 0, "{a_summary:?}");
    let outcomes: Vec<Outcome> = job.history.iter().map(|h| h.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::LeaseExpired, Outcome::Succeeded]);
    eprintln!(
        "PARTITION worker cut off at t=0: its handler stopped at {:?}; the job ran again on another worker at {:?} and completed",
        a_ended - cut_at,
        b_run.started - cut_at
    );
}
