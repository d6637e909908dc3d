//! Pausing a queue: no job of it starts (through Redis or straight from Postgres), running ones
//! finish, a held-back job says why and is charged nothing, the repairer leaves it alone, and a
//! resume starts the queue's jobs again at once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Running, wait_for};
use jobq_shared::bulk::Actor;
use jobq_shared::handler::{HandlerError, JobContext, JobHandler};
use jobq_shared::health::SettingsChange;
use jobq_shared::maintenance::repairer::Repairer;
use jobq_shared::testing::TestEnv;
use jobq_shared::{NewJob, Registry, Status};
use serde_json::json;

const SOON: Duration = Duration::from_secs(10);

fn actor() -> Actor {
    Actor {
        principal: "test".into(),
        on_behalf_of: None,
    }
}

fn pause(paused: bool) -> SettingsChange {
    SettingsChange {
        paused: Some(paused),
        ..Default::default()
    }
}

/// Records the payload of each job it runs; a job named `slow` takes 500 ms.
#[derive(Clone, Default)]
struct Recorder {
    ran: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let name = job.payload.as_str().unwrap_or_default().to_owned();
        if name == "slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.ran.lock().expect("lock").push(name);
        Ok(())
    }
}

fn job(queue: &str, name: &str) -> NewJob {
    NewJob::new("REC", json!(name)).queue(queue)
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_resumed_while_others_run_and_running_jobs_finish() {
    let env = TestEnv::with(|c| c.worker.concurrency = 2).await;
    let recorder = Recorder::default();
    let running = Running::start(&env, Registry::with_builtins().register("REC", recorder.clone()));

    let slow = env.create_job(job("mail", "slow")).await;
    wait_for(&env, slow, Status::InProgress, SOON).await;
    env.jobs.set_queue("mail", pause(true), &actor()).await.expect("pause");
    let held: Vec<_> =
        futures::future::join_all((0..5).map(|i| env.create_job(job("mail", &format!("held-{i}"))))).await;
    let other = env.create_job(job("reports", "other")).await;

    // The running job finishes; the other queue runs; the paused one does not start.
    wait_for(&env, slow, Status::Completed, SOON).await;
    wait_for(&env, other, Status::Completed, SOON).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &held {
        let job = env.store.get(*id).await.expect("get");
        assert_eq!((job.status, job.attempts), (Status::Pending, 0), "{job:?}");
        assert_eq!(job.held_back.as_deref(), Some("its queue \"mail\" is paused"));
    }
    let health = env.store.queue_health(Some("mail"), 10_000).await.expect("health");
    assert!(health[0].settings.paused);

    let resumed_at = tokio::time::Instant::now();
    let settings = env
        .jobs
        .set_queue("mail", pause(false), &actor())
        .await
        .expect("resume");
    assert!(!settings.paused);
    for id in &held {
        let job = wait_for(&env, *id, Status::Completed, SOON).await;
        assert_eq!(job.attempts, 1, "charged once, for the attempt that ran: {job:?}");
    }
    // Pushed back at once, not left for the repairer's 30 s.
    assert!(
        resumed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        resumed_at.elapsed()
    );
    running.stop().await;
    let ran = recorder.ran.lock().expect("lock").clone();
    assert_eq!(ran.len(), 7, "{ran:?}");

    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|entry| entry.action.as_str()).collect();
    assert!(
        actions.contains(&"queue.pause") && actions.contains(&"queue.resume"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn claims_straight_from_postgres_skip_a_paused_queue() {
    let env = TestEnv::new().await;
    let paused = env.create_job(job("mail", "held")).await;
    let open = env.create_job(job("reports", "runs")).await;
    env.jobs.set_queue("mail", pause(true), &actor()).await.expect("pause");
    let now = env.store.now().await;
    let leases = env
        .store
        .claim_next("w1", now, Duration::from_secs(30), 10, None)
        .await
        .expect("claim");
    let claimed: Vec<_> = leases.iter().map(|lease| lease.id()).collect();
    assert_eq!(claimed, vec![open]);
    // And an id popped from Redis is not claimed either.
    let popped = env
        .store
        .claim_many(&[paused], "w1", now, Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(popped.is_empty());
    assert_eq!(env.store.get(paused).await.expect("get").status, Status::Pending);
}

#[tokio::test]
async fn the_repairer_leaves_a_paused_queue_to_its_resume() {
    let env = TestEnv::new().await;
    let now = chrono::Utc::now();
    let paused = env.insert_job_at(job("mail", "held"), now).await;
    let open = env.insert_job_at(job("reports", "runs"), now).await;
    env.jobs.set_queue("mail", pause(true), &actor()).await.expect("pause");
    let repairer = Repairer::new(env.store.clone(), env.queue.clone(), Duration::from_secs(30));
    repairer
        .run_once(now + chrono::Duration::seconds(60))
        .await
        .expect("repair");
    let ready = env.queue.ready_ids().await.expect("ready");
    assert!(ready.contains(&open.to_string()), "{ready:?}");
    assert!(!ready.contains(&paused.to_string()), "{ready:?}");

    env.jobs
        .set_queue("mail", pause(false), &actor())
        .await
        .expect("resume");
    let ready = env.queue.ready_ids().await.expect("ready");
    assert!(ready.contains(&paused.to_string()), "{ready:?}");
}
