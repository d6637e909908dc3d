//! jobq's AWS Lambda functions. Each binary in `src/bin/` is a few lines: set up logging, build
//! [`Deps`] once per cold start, then serve one of the handlers below. The handlers parse the
//! request into domain types, make one call into `jobq_shared`, and map the outcome to a response
//! through [`api_error`], the one error-to-HTTP table.
//!
//! - [`create_job`]: `POST /jobs` (and ChronoQueue's `POST /api/jobs`).
//! - [`create_jobs`]: `POST /jobs/batch`.
//! - [`get_job`]: `GET /jobs/{id}` (and `GET /api/jobs/{id}`).
//! - [`find_jobs`]: `GET /jobs?status=&queue=&type=&payload=&error=&createdAfter=&createdBefore=`
//!   (and `GET /api/jobs`).
//! - [`cancel_job`]: `POST /jobs/{id}/cancel`.
//! - [`list_dlq`]: `GET /dlq?limit=&cursor=`.
//! - [`requeue_dlq`]: `POST /dlq/{id}/requeue`.
//! - [`list_queues`]: `GET /queues` and `GET /queues/{name}`: the queues' health.
//! - [`bulk_jobs`]: `POST /jobs/bulk` and `GET /operations/{id}`: acting on every job a filter
//!   matches.
//! - [`list_audit`]: `GET /audit`: who cancelled, requeued or acted in bulk.
//! - [`schedules`]: `PUT`, `GET` and `DELETE /schedules/{name}`, `GET /schedules`: recurring jobs.
//! - [`dashboard`]: `GET /dashboard`: the web page, and the API it calls under `/dashboard/api/`.
//! - [`worker`]: the worker function (scheduled, or invoked with `{"maxJobs": n}`).
//! - [`request`]: reading bodies, path ids and query parameters; [`job_body`]: a job as responses
//!   show it; [`deps`]: clients and the API token; [`encoding`]: gzip for clients that accept it;
//!   [`telemetry`]: logging.

pub mod api_error;
pub mod bulk_jobs;
pub mod cancel_job;
pub mod create_job;
pub mod create_jobs;
pub mod dashboard;
pub mod deps;
pub mod encoding;
pub mod find_jobs;
pub mod get_job;
pub mod job_body;
pub mod list_audit;
pub mod list_dlq;
pub mod list_queues;
pub mod request;
pub mod requeue_dlq;
pub mod runtime;
pub mod schedules;
pub mod telemetry;
pub mod worker;

pub use api_error::ApiError;
pub use deps::Deps;
