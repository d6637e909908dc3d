//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use jobq_shared::maintenance::{promoter::Promoter, reaper::Reaper};
use jobq_shared::testing::TestEnv;
use jobq_shared::worker::Summary;
use jobq_shared::{Job, JobId, Registry, Status};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A worker and the maintenance loops running in the background, at test speed.
pub struct Running {
    pub shutdown: CancellationToken,
    worker: JoinHandle<jobq_shared::Result<Summary>>,
    services: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn start(env: &TestEnv, registry: Registry) -> Running {
        Running::start_with(env, env.worker(registry))
    }

    /// Runs `worker` (one with a store or queue of its own, say) beside the environment's
    /// promoter and reaper.
    pub fn start_with(env: &TestEnv, worker: jobq_shared::Worker) -> Running {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let worker = tokio::spawn(async move { worker.run(token).await });
        let services = vec![
            tokio::spawn(
                Promoter::new(env.store.clone(), env.queue.clone()).run(Duration::from_millis(20), shutdown.clone()),
            ),
            tokio::spawn(
                Reaper::new(env.store.clone(), env.queue.clone())
                    .with_retry(env.config.worker.retry)
                    .run(Duration::from_millis(50), shutdown.clone()),
            ),
        ];
        Running {
            shutdown,
            worker,
            services,
        }
    }

    pub async fn stop(self) -> Summary {
        self.shutdown.cancel();
        for service in self.services {
            service.await.expect("service task");
        }
        self.worker.await.expect("worker task").expect("worker run")
    }
}

/// Polls until the job reaches `status`, failing the test after `within`.
pub async fn wait_for(env: &TestEnv, id: JobId, status: Status, within: Duration) -> Job {
    env.wait_for(id, status, within).await
}

/// Rows in the jobs table.
pub async fn count_jobs(env: &TestEnv) -> i64 {
    env.count_jobs(None).await
}
