//! The one error type of the library. Callers map it to HTTP (or logs) in one place each.

use crate::job::{InvalidJob, JobId, Status};
use crate::search::InvalidFilter;
use crate::state::InvalidTransition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error("invalid schedule: {0}")]
    InvalidSchedule(#[from] crate::schedule::InvalidSchedule),
    #[error("invalid filter: {0}")]
    InvalidFilter(#[from] InvalidFilter),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("job {0} not found")]
    NotFound(JobId),
    /// `dependsOn` named jobs that do not exist; nothing was stored.
    #[error("dependsOn names jobs that do not exist: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    UnknownParents(Vec<JobId>),
    #[error("idempotency key {key:?} was already used by job {existing} for a different request")]
    IdempotencyConflict { key: String, existing: JobId },
    #[error("job {job_id} is {status}: {source}")]
    InvalidTransition {
        job_id: JobId,
        status: Status,
        #[source]
        source: InvalidTransition,
    },
    /// The caller's lease was taken over (or the job was finished by someone else): nothing was changed.
    #[error("lease on job {job_id} (token {token}) was lost")]
    LeaseLost { job_id: JobId, token: i64 },
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres pool configuration")]
    PoolConfig(#[from] deadpool_postgres::BuildError),
    #[error("postgres did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The statement was sent but its outcome never came back (no answer in time, or the connection
    /// broke): it may have committed. Never act as if it did not; look at what it did, or say so.
    #[error("postgres did not confirm a statement within {after:?}; it may have committed")]
    InDoubt {
        after: std::time::Duration,
        /// The jobs a create in doubt may have stored, under these ids.
        jobs: Vec<JobId>,
        #[source]
        source: Option<tokio_postgres::Error>,
    },
    #[error("TLS configuration")]
    Tls(#[from] crate::tls::TlsError),
    #[error("redis")]
    Redis(#[from] redis::RedisError),
    #[error("migration")]
    Migration(#[from] refinery::Error),
    #[error("stored row is not a valid job: {0}")]
    CorruptRow(String),
}

impl Error {
    /// True when Postgres could not be reached (down, restarting, pool exhausted): the caller may
    /// try again later, and an HTTP caller answers 503.
    pub fn is_database_unavailable(&self) -> bool {
        match self {
            Error::Pool(_) | Error::Timeout(_) | Error::InDoubt { .. } => true,
            Error::Postgres(err) => match err.code() {
                Some(code) => is_unavailable_code(code),
                None => err.is_closed() || !is_client_side(err),
            },
            _ => false,
        }
    }

    /// True when a statement may have committed although the caller got no answer.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, Error::InDoubt { .. })
    }
}

/// An error tokio-postgres raises on this side without the server being at fault: a parameter or
/// a column that does not convert, a column that is not there, a wrong count. It is a bug here (or
/// a row this code cannot read), not an outage: retrying cannot help, and an HTTP caller gets 500.
/// tokio-postgres does not expose its error kinds; its `Display` names them, and only them (the
/// cause is the `source`).
fn is_client_side(err: &tokio_postgres::Error) -> bool {
    let kind = err.to_string();
    [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number",
        "expected ",
    ]
    .iter()
    .any(|prefix| kind.starts_with(prefix))
}

fn is_unavailable_code(code: &tokio_postgres::error::SqlState) -> bool {
    use tokio_postgres::error::SqlState;
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
    ]
    .contains(code)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
