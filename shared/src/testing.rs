//! Test support: every test gets a database of its own (created, migrated, and dropped when the
//! test ends) and a Redis namespace of its own (its keys deleted when the test ends). Tests thus
//! run in parallel against the real servers and never see each other's data.
//!
//! `DATABASE_URL` names the server and a database to connect to for creating others (default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`), its `sslmode` and `sslrootcert` included;
//! `REDIS_URL` (and `REDIS_CA_FILE`, `REDIS_CLUSTER`) the Redis server or cluster.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::handler::Registry;
use crate::job::{Job, JobId, NewJob, Status};
use crate::jobs::Jobs;
use crate::queue::Queue;
use crate::store::{Claim, Lease, Store};
use crate::worker::Worker;

pub struct TestEnv {
    pub config: Config,
    pub store: Store,
    pub queue: Queue,
    pub jobs: Jobs,
    admin_url: String,
    database: String,
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

pub fn admin_url() -> String {
    std::env::var("JOBQ_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .map(|url| with_database(&url, "postgres"))
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestEnv {
    /// A fresh database and namespace with fast timings: 1 s leases, 10 ms retry backoff.
    pub async fn new() -> TestEnv {
        Self::with(|_| {}).await
    }

    /// Like [`TestEnv::new`], with `adjust` applied to the configuration first.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let admin_url = admin_url();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("jobq_test_{suffix}");
        // Through Store, so that the URL's TLS settings apply to this connection too.
        let admin_pool = Store::connect(&admin_url, 1, Duration::from_secs(10)).expect("admin pool");
        let admin = admin_pool
            .pool()
            .get()
            .await
            .unwrap_or_else(|err| panic!("cannot reach postgres at {admin_url}: {err}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create test database");

        let mut config = Config::from_lookup(|name| match name {
            "REDIS_URL" | "REDIS_CA_FILE" | "REDIS_CLUSTER" => std::env::var(name).ok(),
            _ => None,
        })
        .expect("default config");
        config.database_url = with_database(&admin_url, &database);
        config.namespace = format!("jobq-test-{suffix}");
        config.pg_pool_size = 8;
        config.pg_timeout = Duration::from_secs(5);
        config.worker.lease = Duration::from_secs(1);
        config.worker.heartbeat = Duration::from_millis(250);
        config.worker.poll = Duration::from_millis(100);
        config.worker.shutdown_grace = Duration::from_secs(2);
        config.worker.concurrency = 4;
        config.worker.retry.base = Duration::from_millis(10);
        config.worker.retry.cap = Duration::from_millis(100);
        adjust(&mut config);

        let store = Store::connect(&config.database_url, config.pg_pool_size, config.pg_timeout).expect("pool");
        store.migrate().await.expect("migrate test database");
        let queue = Queue::from_config(&config).expect("redis client");
        let jobs = Jobs::new(store.clone(), queue.clone(), config.worker.default_timeout);
        TestEnv {
            config,
            store,
            queue,
            jobs,
            admin_url,
            database,
        }
    }

    /// A worker over this environment's store and queue.
    pub fn worker(&self, registry: Registry) -> Worker {
        Worker::new(
            self.store.clone(),
            self.queue.clone(),
            registry,
            self.config.worker.clone(),
        )
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates `new` as the API does (stored in Postgres, then pushed to Redis) at the database's
    /// time now, as this environment's store reads it, and returns its id. Panics if the create
    /// fails.
    pub async fn create_job(&self, new: NewJob) -> JobId {
        let now = self.store.now().await;
        self.create_job_at(new, now).await
    }

    /// Like [`TestEnv::create_job`], created at `now`.
    pub async fn create_job_at(&self, new: NewJob, now: DateTime<Utc>) -> JobId {
        match self.jobs.create(&new, now).await {
            Ok(created) => created.job.id,
            Err(err) => panic!("cannot create a {} job at {now}: {err}", new.job_type),
        }
    }

    /// Creates `new` in one batch as the API does, at the database's time now, and returns the ids
    /// in the order given. Panics if the batch or any job in it fails.
    pub async fn create_jobs(&self, new: &[NewJob]) -> Vec<JobId> {
        let now = self.store.now().await;
        self.create_jobs_at(new, now).await
    }

    /// Like [`TestEnv::create_jobs`], created at `now`.
    pub async fn create_jobs_at(&self, new: &[NewJob], now: DateTime<Utc>) -> Vec<JobId> {
        let results = self
            .jobs
            .create_many(new, now)
            .await
            .unwrap_or_else(|err| panic!("cannot create a batch of {} jobs at {now}: {err}", new.len()));
        assert_eq!(results.len(), new.len(), "one result for each job of the batch");
        results
            .into_iter()
            .zip(new)
            .enumerate()
            .map(|(i, (result, job))| match result {
                Ok(created) => created.job.id,
                Err(err) => panic!("cannot create job {i} ({}) of a batch at {now}: {err}", job.job_type),
            })
            .collect()
    }

    /// Stores `new` in Postgres only, at `now`, with the default timeout the API would give it:
    /// its id is never pushed to Redis, as when Redis failed right after the commit. Returns its
    /// id; panics if the insert fails.
    pub async fn insert_job_at(&self, new: NewJob, now: DateTime<Utc>) -> JobId {
        let timeout_ms = i32::try_from(self.config.worker.default_timeout.as_millis()).unwrap_or(i32::MAX);
        match self.store.create(&new, timeout_ms, now).await {
            Ok(created) => created.job.id,
            Err(err) => panic!("cannot insert a {} job at {now}: {err}", new.job_type),
        }
    }

    /// Claims job `id` for `worker_id` at `now`, for `lease`, and returns the lease. Panics if the
    /// job is not claimed (not due yet, running elsewhere, finished or missing) or the claim fails.
    pub async fn claim_job(&self, id: JobId, worker_id: &str, now: DateTime<Utc>, lease: Duration) -> Lease {
        match self.store.claim(id, worker_id, now, lease).await {
            Ok(Claim::Claimed(lease)) => *lease,
            Ok(other) => panic!("job {id} not claimed by {worker_id} at {now}: {other:?}"),
            Err(err) => panic!("cannot claim job {id} for {worker_id} at {now}: {err}"),
        }
    }

    /// Polls until the job reaches `status` and returns it; panics (failing the test) after `within`.
    pub async fn wait_for(&self, id: JobId, status: Status, within: Duration) -> Job {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let job = self.jobs.get(id).await.expect("get job");
            if job.status == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "job {id} still {} (attempts {}, last error {:?}) after {within:?}, wanted {status}",
                job.status,
                job.attempts,
                job.last_error
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows in the `jobs` table, optionally only those with `status`.
    pub async fn count_jobs(&self, status: Option<Status>) -> i64 {
        let client = self.store.pool().get().await.expect("connection");
        let row = match status {
            None => client.query_one("SELECT count(*) FROM jobs", &[]).await,
            Some(status) => {
                client
                    .query_one("SELECT count(*) FROM jobs WHERE status = $1", &[&status.as_str()])
                    .await
            }
        };
        row.expect("count jobs").get(0)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let database = self.database.clone();
        let config = self.config.clone();
        self.store.pool().close();
        // Drop runs inside the test's runtime, which cannot block on its own futures: clean up on a
        // thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                // A new connection: the test's own is driven by the runtime this thread blocks.
                if let Ok(queue) = Queue::from_config(&config) {
                    let _ = queue.delete_namespace().await;
                }
                let admin = Store::connect(&admin_url, 1, Duration::from_secs(10));
                if let Ok(admin) = admin
                    && let Ok(admin) = admin.pool().get().await
                {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
