//! Routing: a worker takes the jobs of the queues it serves (`JOBQ_QUEUES`), in their order or by
//! their weights, and leaves the others, through Redis and through Postgres while Redis is down.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::{Running, wait_for};
use jobq_shared::queue::Served;
use jobq_shared::testing::TestEnv;
use jobq_shared::{HandlerError, JobContext, JobHandler, JobId, NewJob, Registry, Status};
use serde_json::json;

const SOON: Duration = Duration::from_secs(10);

/// Records the queue of each job it runs (its payload names it), in the order they start.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.0.lock().expect("recorder lock").clone()
    }
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        self.0
            .lock()
            .expect("recorder lock")
            .push(job.payload["queue"].as_str().unwrap_or_default().to_owned());
        Ok(())
    }
}

fn job(queue: &str) -> NewJob {
    NewJob::new("REC", json!({ "queue": queue })).queue(queue)
}

async fn create(env: &TestEnv, queue: &str, n: usize) -> Vec<JobId> {
    env.create_jobs(&vec![job(queue); n]).await
}

fn worker(env: &TestEnv, served: &str, recorder: &Recorder, slots: usize) -> jobq_shared::Worker {
    let mut config = env.config.worker.clone();
    config.queues = served.parse().expect("JOBQ_QUEUES");
    config.concurrency = slots;
    jobq_shared::Worker::new(
        env.store.clone(),
        env.queue.clone(),
        Registry::new().register("REC", recorder.clone()),
        config,
    )
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < SOON, "{what} not within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_takes_only_the_queues_it_serves_and_leaves_the_rest_pending() {
    let env = TestEnv::new().await;
    let email = create(&env, "email", 5).await;
    let reports = create(&env, "reports", 5).await;
    let other = create(&env, "default", 5).await;
    let recorder = Recorder::default();

    let running = Running::start_with(&env, worker(&env, "email,reports", &recorder, 4));
    for id in email.iter().chain(&reports) {
        wait_for(&env, *id, Status::Completed, SOON).await;
    }
    // Time for a worker that took every queue to have taken the rest too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &other {
        let job = env.jobs.get(*id).await.expect("get");
        assert_eq!(
            (job.status, job.attempts),
            (Status::Pending, 0),
            "a job of a queue not served"
        );
    }
    let summary = running.stop().await;
    assert_eq!(summary.completed, 10);
    assert!(recorder.seen().iter().all(|queue| queue != "default"));

    // A worker that serves every queue takes them.
    let running = Running::start_with(&env, worker(&env, "", &recorder, 4));
    for id in &other {
        wait_for(&env, *id, Status::Completed, SOON).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn listed_queues_are_taken_in_their_order() {
    let env = TestEnv::new().await;
    create(&env, "later", 15).await;
    create(&env, "first", 15).await;
    let recorder = Recorder::default();

    let running = Running::start_with(&env, worker(&env, "first,later", &recorder, 1));
    wait_until("30 jobs", || recorder.seen().len() == 30).await;
    running.stop().await;

    let seen = recorder.seen();
    assert_eq!(seen[..15], vec!["first".to_owned(); 15][..], "{seen:?}");
    assert_eq!(seen[15..], vec!["later".to_owned(); 15][..], "{seen:?}");
}

#[tokio::test]
async fn a_higher_priority_comes_first_across_the_listed_queues() {
    let env = TestEnv::new().await;
    create(&env, "first", 5).await;
    env.create_job(job("later").priority(90)).await;
    let recorder = Recorder::default();

    let running = Running::start_with(&env, worker(&env, "first,later", &recorder, 1));
    wait_until("6 jobs", || recorder.seen().len() == 6).await;
    running.stop().await;

    assert_eq!(recorder.seen()[0], "later");
}

#[tokio::test]
async fn weighted_queues_are_served_in_proportion_to_their_weights() {
    let env = TestEnv::new().await;
    create(&env, "heavy", 200).await;
    create(&env, "light", 200).await;
    let recorder = Recorder::default();

    // One slot: each pop takes one job, from the queue that came first in that pop's draw.
    let running = Running::start_with(&env, worker(&env, "heavy:3,light:1", &recorder, 1));
    wait_until("120 jobs", || recorder.seen().len() >= 120).await;
    running.stop().await;

    let seen = recorder.seen();
    let heavy = seen[..120].iter().filter(|queue| *queue == "heavy").count();
    // 3 in 4 expected: 90 of 120. The bounds are over 4 standard deviations (4.7) away.
    assert!((70..=110).contains(&heavy), "heavy {heavy} of 120");
    assert!(heavy < 120, "the light queue was served too");
}

#[tokio::test]
async fn a_worker_of_every_queue_takes_a_new_queues_job_at_once() {
    // A long poll: without the wake, a new queue's job would wait for the pop to time out.
    let env = TestEnv::with(|config| config.worker.poll = Duration::from_secs(5)).await;
    let recorder = Recorder::default();
    let running = Running::start_with(&env, worker(&env, "", &recorder, 2));
    let first = env.create_job(job("known")).await;
    wait_for(&env, first, Status::Completed, SOON).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for queue in ["brand-new", "newer"] {
        let started = tokio::time::Instant::now();
        let id = env.create_job(job(queue)).await;
        wait_for(&env, id, Status::Completed, SOON).await;
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "the first job of queue {queue} waited {:?}",
            started.elapsed()
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn while_redis_is_down_the_postgres_claims_take_only_the_queues_served() {
    let env = TestEnv::new().await;
    let ids_a = create(&env, "a", 3).await;
    create(&env, "b", 3).await;
    let limited = create(&env, "c", 2).await;
    env.jobs
        .set_queue(
            "c",
            jobq_shared::health::SettingsChange {
                concurrency: Some(Some(5)),
                ..Default::default()
            },
            &jobq_shared::bulk::Actor {
                principal: "test".into(),
                on_behalf_of: None,
            },
        )
        .await
        .expect("limit c");
    let now = Utc::now();
    let served = Some(vec!["a".to_owned()]);
    let lease = Duration::from_secs(30);

    let claimed = env
        .store
        .claim_next("w", now, lease, 10, served.as_deref())
        .await
        .expect("claim");
    let mut got: Vec<JobId> = claimed.iter().map(|lease| lease.id()).collect();
    got.sort_by_key(|id| id.to_string());
    let mut want = ids_a.clone();
    want.sort_by_key(|id| id.to_string());
    assert_eq!(got, want);
    assert!(
        env.store
            .claim_next_limited("w", now, lease, 10, served.as_deref())
            .await
            .expect("limited claim")
            .is_empty(),
        "a limited queue not served"
    );
    let c = Some(vec!["c".to_owned()]);
    let claimed = env
        .store
        .claim_next_limited("w", now, lease, 10, c.as_deref())
        .await
        .expect("limited claim");
    assert_eq!(claimed.len(), limited.len());
    assert_eq!(env.count_jobs(Some(Status::Pending)).await, 3, "b's jobs are left");
}

#[tokio::test]
async fn a_queue_with_nothing_ready_is_forgotten_until_its_next_push() {
    let env = TestEnv::new().await;
    let repairer = jobq_shared::maintenance::repairer::Repairer::new(
        env.store.clone(),
        env.queue.clone(),
        Duration::from_secs(30),
    );
    let id = env.create_job(job("rare")).await;
    env.create_job(job("busy")).await;
    repairer.run_once(Utc::now()).await.expect("repair");
    assert_eq!(env.queue.queue_names().await.expect("names"), ["busy", "rare"]);

    env.jobs.cancel(id, Utc::now()).await.expect("cancel");
    let repaired = repairer.run_once(Utc::now()).await.expect("repair");
    assert_eq!(repaired.idle_queues, 1);
    assert_eq!(env.queue.queue_names().await.expect("names"), ["busy"]);

    // Named again by its next push, and its job is taken.
    let recorder = Recorder::default();
    let running = Running::start_with(&env, worker(&env, "", &recorder, 2));
    let again = env.create_job(job("rare")).await;
    wait_for(&env, again, Status::Completed, SOON).await;
    running.stop().await;
}

#[test]
fn jobq_queues_is_read_from_the_environment() {
    let config =
        jobq_shared::Config::from_lookup(|name| (name == "JOBQ_QUEUES").then(|| "email:2, default".to_owned()))
            .expect("config");
    assert_eq!(
        config.worker.queues,
        Served::Weighted(vec![("email".into(), 2), ("default".into(), 1)])
    );
    let err = jobq_shared::Config::from_lookup(|name| (name == "JOBQ_QUEUES").then(|| "a,,b".to_owned()))
        .expect_err("an empty name");
    assert_eq!(err.var, "JOBQ_QUEUES");
}
