//! jobq on a real Redis Cluster of three masters (redis-server in cluster mode, created by the
//! test support):
//! - each queue's keys live on one shard, and twelve queues spread over all three;
//! - jobs of every queue flow, delayed ones and priorities included, through a worker that serves
//!   every queue (looking at each shard) and one that serves a single queue (a blocking pop on
//!   its shard), each job run exactly once, by a handler that records what ran;
//! - a queue whose slot moves to another shard while its jobs flow loses none and runs none
//!   twice, and the jobs created after the move are pushed to its new shard: the client follows
//!   the ASK and MOVED redirects;
//! - a master killed while its queue's jobs flow fails over to its replica: jobs created before,
//!   during and after run exactly once (what the replica had not received is pushed again by the
//!   repairer; workers claim from Postgres while Redis fails them);
//! - an idle worker of queues on several shards is woken by the push that gives one of them a
//!   ready id (`{ns}:ready`), not by its next look.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jobq_shared::maintenance::promoter::Promoter;
use jobq_shared::maintenance::repairer::Repairer;
use jobq_shared::testing::TestEnv;
use jobq_shared::{HandlerError, JobContext, JobHandler, JobId, NewJob, Registry, Status};
use serde_json::json;
use support::PrivateCluster;
use tokio_util::sync::CancellationToken;

const JOB_TYPE: &str = "REC";

/// Records every run's job id, after sleeping the payload's `ms`.
#[derive(Clone, Default)]
struct Recorder {
    ran: Arc<Mutex<Vec<JobId>>>,
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let ms = job.payload["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.ran.lock().expect("lock").push(job.id);
        Ok(())
    }
}

async fn cluster_env(cluster: &PrivateCluster) -> TestEnv {
    let urls = cluster.urls();
    TestEnv::with(move |config| {
        config.redis_url = urls;
        config.redis_cluster = true;
    })
    .await
}

/// Runs a worker serving `served` (`JOBQ_QUEUES`) until `shutdown`.
fn spawn_worker(env: &TestEnv, served: &str, recorder: &Recorder, shutdown: &CancellationToken) {
    let mut config = env.config.worker.clone();
    config.queues = served.parse().expect("JOBQ_QUEUES");
    let worker = jobq_shared::Worker::new(
        env.store.clone(),
        env.queue.clone(),
        Registry::new().register(JOB_TYPE, recorder.clone()),
        config,
    );
    let shutdown = shutdown.clone();
    tokio::spawn(async move { worker.run(shutdown).await.expect("worker") });
}

/// A promoter, and a repairer that pushes again what waits `repair_after` past its due time.
fn spawn_maintenance(env: &TestEnv, repair_after: Duration, shutdown: &CancellationToken) {
    tokio::spawn(Promoter::new(env.store.clone(), env.queue.clone()).run(Duration::from_millis(50), shutdown.clone()));
    tokio::spawn(
        Repairer::new(env.store.clone(), env.queue.clone(), repair_after)
            .run(Duration::from_millis(500), shutdown.clone()),
    );
}

/// Waits until every job in `ids` has completed, then asserts each ran exactly once.
async fn assert_ran_once(env: &TestEnv, recorder: &Recorder, ids: &[JobId]) {
    for id in ids {
        env.wait_for(*id, Status::Completed, Duration::from_secs(30)).await;
    }
    let ran = recorder.ran.lock().expect("lock").clone();
    let mut runs: HashMap<JobId, usize> = HashMap::new();
    for id in &ran {
        *runs.entry(*id).or_default() += 1;
    }
    for id in ids {
        assert_eq!(runs.get(id), Some(&1), "job {id} ran {:?} times", runs.get(id));
    }
    assert_eq!(ran.len(), ids.len(), "runs of jobs not created here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_the_shards_and_their_jobs_flow() {
    let cluster = PrivateCluster::start_new(3);
    let env = cluster_env(&cluster).await;
    assert!(env.queue.is_cluster());
    let queues: Vec<String> = (0..12).map(|i| format!("q{i}")).collect();
    let mut ids = Vec::new();
    for (i, queue) in queues.iter().enumerate() {
        let mut batch = Vec::new();
        for j in 0..6 {
            let job = NewJob::new(JOB_TYPE, json!({ "ms": 5 }))
                .queue(queue.as_str())
                .priority(((i + j) * 17 % 101) as i16);
            // Two of each queue's jobs wait in its schedule first.
            batch.push(if j < 2 {
                job.delay(Duration::from_millis(400))
            } else {
                job
            });
        }
        ids.extend(env.create_jobs(&batch).await);
    }

    // Every queue's keys on the shard of its own hash tag, and the queues on every shard.
    let mut shards: HashMap<u16, usize> = HashMap::new();
    for queue in &queues {
        let slot = cluster.slot(&env.queue.keys().ready(queue, 0));
        assert_eq!(cluster.slot(&env.queue.keys().schedule(queue)), slot);
        *shards.entry(cluster.owner(slot)).or_default() += 1;
    }
    assert_eq!(shards.len(), 3, "twelve queues on {shards:?}");
    for port in cluster.ports() {
        assert!(cluster.keys_on(port) > 0, "no key on the master at {port}");
    }
    let depths = env.queue.depths().await.expect("depths");
    assert_eq!((depths.ready, depths.scheduled), (48, 24));

    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    spawn_maintenance(&env, Duration::from_secs(30), &shutdown);
    spawn_worker(&env, "", &recorder, &shutdown);
    spawn_worker(&env, "q0", &recorder, &shutdown);
    assert_ran_once(&env, &recorder, &ids).await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_moved_to_another_shard_while_its_jobs_flow_loses_none() {
    let cluster = PrivateCluster::start_new(3);
    let env = cluster_env(&cluster).await;
    let queue = "moving";
    let slot = cluster.slot(&env.queue.keys().ready(queue, 0));
    let from = cluster.owner(slot);
    let to = cluster
        .ports()
        .into_iter()
        .find(|port| *port != from)
        .expect("another master");
    let job = || NewJob::new(JOB_TYPE, json!({ "ms": 20 })).queue(queue);

    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    spawn_maintenance(&env, Duration::from_secs(30), &shutdown);
    spawn_worker(&env, "", &recorder, &shutdown);
    spawn_worker(&env, queue, &recorder, &shutdown);
    let mut ids = env.create_jobs(&vec![job(); 150]).await;
    ids.extend(
        env.create_jobs(&vec![job().delay(Duration::from_millis(300)); 20])
            .await,
    );

    // Move the queue's slot once some of its jobs have run, while the rest wait on it.
    while recorder.ran.lock().expect("lock").len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = env.queue.depths().await.expect("depths").ready;
    assert!(waiting > 0, "every job ran before the move");
    let move_slot = tokio::task::spawn_blocking(move || {
        cluster.move_slot(slot, to);
        cluster
    });
    let cluster = move_slot.await.expect("move the slot");
    assert_eq!(cluster.owner(slot), to);
    // Through the connections made before the move: pushed to the new owner (MOVED followed),
    // into the schedule, where they stay for a second.
    let later = env.create_jobs(&vec![job().delay(Duration::from_secs(1)); 30]).await;
    let scheduled = env.queue.scheduled().await.expect("the schedule");
    for id in &later {
        assert!(
            scheduled.iter().any(|(member, _)| member.contains(&id.to_string())),
            "job {id} was not pushed after the move"
        );
    }
    assert!(cluster.keys_on(to) > 0, "no key on the new owner");
    ids.extend(later);
    ids.extend(env.create_jobs(&vec![job(); 30]).await);
    assert_ran_once(&env, &recorder, &ids).await;
    shutdown.cancel();
}

/// Tells when each job's handler started.
struct Started(tokio::sync::mpsc::UnboundedSender<std::time::Instant>);

#[async_trait]
impl JobHandler for Started {
    async fn handle(&self, _job: JobContext) -> Result<(), HandlerError> {
        let _ = self.0.send(std::time::Instant::now());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_of_queues_on_several_shards_is_woken_by_a_push() {
    let cluster = PrivateCluster::start_new(3);
    let env = cluster_env(&cluster).await;
    // Two queues on different shards, so that the worker looks at each in turn (no BZMPOP).
    let queues = ["a", "b", "c", "d", "e", "f"];
    let shard = |queue: &str| cluster.owner(cluster.slot(&env.queue.keys().ready(queue, 0)));
    let first = queues[0];
    let other = *queues
        .iter()
        .find(|queue| shard(queue) != shard(first))
        .expect("a queue on another shard");
    let mut config = env.config.worker.clone();
    config.queues = format!("{first},{other}").parse().expect("JOBQ_QUEUES");
    config.poll = Duration::from_secs(5);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = jobq_shared::Worker::new(
        env.store.clone(),
        env.queue.clone(),
        Registry::new().register(JOB_TYPE, Started(tx)),
        config,
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Without the bell, a job waits for the worker's next look: up to 250 ms, and about that
    // long when it comes just after one (as here, right after the last job ran).
    let mut waits = Vec::new();
    for i in 0..20 {
        let queue = if i % 2 == 0 { first } else { other };
        let before = std::time::Instant::now();
        let created = env.create_job(NewJob::new(JOB_TYPE, json!({})).queue(queue)).await;
        let started = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("job {created} did not start within 10 s"))
            .expect("the handler's channel");
        // From the call to create (its Postgres insert and Redis push included) to the start.
        waits.push(started.saturating_duration_since(before));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    shutdown.cancel();
    running.await.expect("worker task").expect("worker");
    assert!(median < Duration::from_millis(60), "median wait {median:?}: {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_fails_over_to_its_replica_and_no_job_is_lost() {
    let mut cluster = PrivateCluster::start_with_replicas(3, 1);
    cluster.wait_for_replicas();
    let env = cluster_env(&cluster).await;
    let queue = "doomed";
    let slot = cluster.slot(&env.queue.keys().ready(queue, 0));
    let master = cluster.owner(slot);
    let job = || NewJob::new(JOB_TYPE, json!({ "ms": 20 })).queue(queue);

    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    spawn_maintenance(&env, Duration::from_secs(1), &shutdown);
    spawn_worker(&env, "", &recorder, &shutdown);
    spawn_worker(&env, queue, &recorder, &shutdown);
    let mut ids = env.create_jobs(&vec![job(); 100]).await;
    while recorder.ran.lock().expect("lock").len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(master);
    // Created while the shard has no master: stored in Postgres, their pushes fail.
    for _ in 0..5 {
        ids.extend(env.create_jobs(&vec![job(); 10]).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster = tokio::task::spawn_blocking(move || {
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while cluster.try_owner(slot).is_none_or(|owner| owner == master) {
            assert!(std::time::Instant::now() < give_up, "no replica took over slot {slot}");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    })
    .await
    .expect("the failover");
    let replica = cluster.owner(slot);
    ids.extend(env.create_jobs(&vec![job(); 30]).await);
    assert_ran_once(&env, &recorder, &ids).await;
    // Redis serves the queue again, from the replica that took over.
    let later = env.create_jobs(&[job().delay(Duration::from_secs(60))]).await;
    let scheduled = env.queue.scheduled().await.expect("the schedule, after the failover");
    assert!(
        scheduled
            .iter()
            .any(|(member, _)| member.contains(&later[0].to_string()))
    );
    assert!(cluster.keys_on(replica) > 0, "no key on the master that took over");
    shutdown.cancel();
}
