//! jobq's domain. Postgres is the record of every job; Redis is the fast path and can always be
//! rebuilt from Postgres. A map of the modules:
//!
//! - [`job`]: the job record, its statuses, attempt history, and [`job::NewJob::parse`] for requests.
//! - [`state`]: the state machine, a pure `(status, event) -> status`.
//! - [`store`]: Postgres: create, get, find, list the DLQ, requeue, cancel, claim with a lease and
//!   fencing token, heartbeat, complete, fail, release. SQL in `src/sql/`, one file per method.
//! - [`queue`]: Redis: ready lists per priority level, the schedule ZSET, the DLQ list. Lua in `src/lua/`.
//! - [`retry`]: the backoff policy (when a failed job runs again).
//! - [`health`]: the queues' health: jobs per status, cheap on big tables, and outcomes per minute.
//! - [`bulk`]: acting on every job a filter matches, a batch at a time, and the audit log.
//! - [`schedule`]: recurring jobs: cron expressions on a time zone's wall clock, each tick fired
//!   once by a compare-and-set in the statement that inserts its job.
//! - [`search`]: finding jobs: the filter, the cursor of its pages, a page of results.
//! - [`jobs`]: the API operations, Postgres first then Redis.
//! - [`handler`]: the `JobHandler` trait, the registry, the built-in `TEST` handler.
//! - [`http_job`]: the built-in `http` job: a request per attempt, signed, to checked addresses only.
//! - [`worker`]: the engine that runs jobs with timeouts, heartbeats and graceful shutdown.
//! - [`maintenance`]: the promoter (due jobs to ready lists), reaper (expired leases), repairer
//!   (Redis rebuilt from Postgres), pruner (finished jobs deleted after their retention) and
//!   scheduler (the schedules' due ticks fired).
//! - [`metrics`]: counters and histograms of what this process ran, and the queues' state, as
//!   Prometheus text.
//! - [`trace`]: the W3C `traceparent` a job was created in, stored and continued by the worker.
//! - [`clock`]: the database's clock, read on any host; leases and due times are decided on it.
//! - [`config`]: typed configuration from the environment.
//! - `secrets` (feature `aws-secrets`): the database URL, the Redis credentials and the `http`
//!   job's signing secret from AWS Secrets Manager secrets.
//! - `testing` and `fault` (feature `test-support`): a fresh database and namespace per test, and
//!   a TCP proxy that injects partial network faults into one process's connections.

pub mod bulk;
pub mod clock;
pub mod config;
pub mod error;
#[cfg(feature = "test-support")]
pub mod fault;
pub mod handler;
pub mod health;
pub mod http_job;
pub mod job;
pub mod jobs;
pub mod maintenance;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod schedule;
pub mod search;
#[cfg(feature = "aws-secrets")]
pub mod secrets;
pub mod state;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod trace;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
pub use handler::{HandlerError, JobContext, JobHandler, Registry};
pub use job::{Job, JobId, NewJob, Status};
pub use jobs::Jobs;
pub use queue::Queue;
pub use store::Store;
pub use worker::Worker;
