//! Postgres, the record of every job. Each method runs one statement from `sql/`, named after it.
//! Every state-changing statement checks the expected status (and, for a running job, the lease
//! token) in its `WHERE`; a statement that matches nothing becomes a typed error.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use crate::bulk::{Actor, AuditEntry, BatchOutcome, BulkAction, Operation, OperationState};
use crate::clock::DbClock;
use crate::error::{Error, Result};
use crate::job::{Attempt, Job, JobId, NewJob, Outcome, Parent, Status};
use crate::queue::Place;
use crate::search::{Found, JobCursor, JobFilter};
use crate::state::{Event, transition};
use crate::tls::{SslMode, pg_client_config, split_pg_url};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Any session may run migrations; they serialize on this advisory lock.
const MIGRATION_LOCK: i64 = 0x6a6f_6271_6d69_6772; // "jobqmigr"

/// A claimed job. Only a claim makes one, and only its holder can finish the attempt with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    job: Job,
    token: i64,
    /// How many times the job was released unfinished and uncharged before this claim.
    releases: i32,
    /// Whether its holder has renewed it since the claim (at least one heartbeat landed).
    renewed: bool,
}

impl Lease {
    pub fn job(&self) -> &Job {
        &self.job
    }
    pub fn id(&self) -> JobId {
        self.job.id
    }
    /// The fencing token: the claim's number, never reused for this job.
    pub fn token(&self) -> i64 {
        self.token
    }
    /// The attempt number within the job's budget (1 for the first).
    pub fn attempt(&self) -> i32 {
        self.job.attempts
    }
    /// How many times the job was given back unfinished, uncharged, before this claim.
    pub fn releases(&self) -> i32 {
        self.releases
    }
    /// Whether its holder renewed it at least once since the claim. A lease that ran out never
    /// renewed may never have reached a handler: its claim's answer was lost, or its worker died
    /// before the first heartbeat.
    pub fn renewed(&self) -> bool {
        self.renewed
    }
    /// Whether a failure of this attempt may be retried: it is not the last of the job's budget.
    pub fn has_attempts_left(&self) -> bool {
        self.job.attempts < self.job.max_attempts
    }
}

/// What a claim of one id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Claimed(Box<Lease>),
    /// Pending but due later; it belongs in the schedule.
    NotDue {
        run_at: DateTime<Utc>,
        priority: i16,
    },
    /// Missing, running elsewhere, or finished: nothing to do.
    Unavailable,
}

/// Where a failed attempt, or a job given back unfinished, left its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Will run again at `run_at`.
    Retry { run_at: DateTime<Utc>, priority: i16 },
    /// Dead: in the DLQ.
    Dead,
    /// `CANCELLED`: its cancellation was requested while it ran, so it does not run again.
    Cancelled,
}

impl AfterFailure {
    /// From a row of retry.sql or release.sql.
    fn from_row(row: &Row) -> Result<AfterFailure> {
        Ok(if row.try_get("cancelled")? {
            AfterFailure::Cancelled
        } else {
            AfterFailure::Retry {
                run_at: row.try_get("run_at")?,
                priority: row.try_get("priority")?,
            }
        })
    }
}

/// A new job as stored, and whether it already existed under its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub job: Job,
    pub replayed: bool,
}

/// A job to push to Redis: what its place there depends on (its queue and priority select its
/// ready list; its due time, whether it goes there or into the schedule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub id: JobId,
    pub queue: String,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
}

impl Ready {
    pub fn of(job: &Job) -> Ready {
        Ready {
            id: job.id,
            queue: job.queue.clone(),
            priority: job.priority,
            run_at: job.run_at,
        }
    }
}

/// From a row with `id`, `queue`, `priority` and `run_at`.
pub(crate) fn ready_from_row(row: &Row) -> Result<Ready> {
    Ok(Ready {
        id: JobId(row.try_get("id")?),
        queue: row.try_get("queue")?,
        priority: row.try_get("priority")?,
        run_at: row.try_get("run_at")?,
    })
}

/// What [`Store::complete_many`] recorded.
#[derive(Debug, Default)]
pub struct Completions {
    /// The jobs completed.
    pub done: Vec<JobId>,
    /// Children released by these completions (their last parent completed), to push to Redis.
    pub released: Vec<Ready>,
}

/// A position in the DLQ listing (newest first): the last job of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadCursor {
    pub completed_at: DateTime<Utc>,
    pub id: JobId,
}

impl std::fmt::Display for DeadCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.completed_at.timestamp_micros(), self.id.0.simple())
    }
}

impl FromStr for DeadCursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (micros, id) = s.split_once('.').ok_or(Error::InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| Error::InvalidCursor)?;
        // A cursor only ever holds a job's finish time: anything before 1970 or after 9999 is forged,
        // and would be outside what Postgres can compare against.
        if !(0..=253_402_300_799_999_999).contains(&micros) {
            return Err(Error::InvalidCursor);
        }
        let completed_at = DateTime::from_timestamp_micros(micros).ok_or(Error::InvalidCursor)?;
        let id = Uuid::parse_str(id).map_err(|_| Error::InvalidCursor)?;
        Ok(DeadCursor {
            completed_at,
            id: JobId(id),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<DeadCursor>,
}

/// Jobs of one queue in one status, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    pub queue: String,
    pub status: Status,
    pub count: i64,
    /// Seconds since the longest-due pending job became due (pending rows only).
    pub oldest_pending_age: Option<f64>,
}

/// What [`Store::queue_state`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueState {
    pub depth: Vec<QueueDepth>,
    /// Jobs in the dead-letter queue, all queues.
    pub dead: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// How long one statement (with getting its connection) may take before Postgres counts as
    /// unavailable: a hung server or a silent network must not hold a caller forever.
    timeout: Duration,
    /// The database's clock as read from this host (see [`crate::clock`]).
    clock: Arc<DbClock>,
}

macro_rules! sql {
    ($name:literal) => {
        include_str!(concat!("sql/", $name, ".sql"))
    };
}

impl Store {
    /// A pool that connects on demand, so a database that is down now does not stop the caller.
    /// TLS follows the URL's `sslmode` and `sslrootcert` (see [`crate::tls`]); a CA file that cannot
    /// be read is an error now, not at the first connection.
    pub fn connect(database_url: &str, pool_size: usize, timeout: Duration) -> Result<Store> {
        let target = split_pg_url(database_url)?;
        let mut pg: tokio_postgres::Config = target.url.parse()?;
        let mode = target.mode.unwrap_or(match pg.get_ssl_mode() {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        });
        pg.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let tls = MakeRustlsConnect::new(pg_client_config(mode, &target.root_certs)?);
        pg.connect_timeout(timeout);
        // Postgres ends any statement that runs past half the client's patience, so a statement the
        // client gave up on is not still running (and committing) long after.
        let server_bound = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            statement_timeout(timeout).as_millis(),
            timeout.as_millis().max(1),
        );
        let options = match pg.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {server_bound}"),
            _ => server_bound,
        };
        pg.options(&options);
        if pg.get_application_name().is_none() {
            pg.application_name("jobq");
        }
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()?;
        Ok(Store {
            pool,
            timeout,
            clock: Arc::new(DbClock::new(chrono::Duration::zero())),
        })
    }

    /// This store with its host's clock taken to be `skew` off, for tests of clock skew: the
    /// store's [`Store::now`] must still read the database's time.
    #[cfg(feature = "test-support")]
    pub fn with_host_skew(mut self, skew: chrono::Duration) -> Store {
        self.clock = Arc::new(DbClock::new(skew));
        self
    }

    /// The database's time now, read on this host: its clock corrected by the offset measured
    /// against Postgres (again every [`crate::clock::RESYNC`]). Every due time, eligibility check
    /// and recorded time is taken from here, so a host clock that is off changes nothing. While
    /// Postgres cannot be reached the last offset stands (none yet: this host's clock).
    pub async fn now(&self) -> DateTime<Utc> {
        if self.clock.sync_due()
            && let Some(_syncing) = self.clock.try_begin_sync()
            && self.clock.sync_due()
            && let Err(err) = self.sync_clock().await
        {
            self.clock.retry_soon();
            tracing::debug!(error = %err, "could not read the database clock; keeping the last offset");
        }
        self.clock.now()
    }

    /// Measures this host's offset from the database clock; returns it when the round trip was
    /// short enough to trust.
    pub async fn sync_clock(&self) -> Result<Option<chrono::Duration>> {
        let measure = async {
            let client = self.pool.get().await?;
            let statement = client.prepare_cached("SELECT clock_timestamp()").await?;
            let sent = self.clock.host_now();
            let started = Instant::now();
            let row = client.query_one(&statement, &[]).await?;
            let round_trip = started.elapsed();
            let db: DateTime<Utc> = row.try_get(0)?;
            Ok((sent, db, self.clock.host_now(), round_trip))
        };
        let (sent, db, received, round_trip) = tokio::time::timeout(self.timeout, measure)
            .await
            .unwrap_or(Err(Error::Timeout(self.timeout)))?;
        Ok(self.clock.record(sent, db, received, round_trip))
    }

    /// The version of the newest migration this build carries: once `refinery_schema_history`
    /// holds it, the schema is complete.
    pub fn schema_version() -> i64 {
        embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|migration| i64::from(migration.version()))
            .max()
            .unwrap_or(0)
    }

    /// Applies the schema migrations that are not applied yet. Safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        // Waiting for another process's migrations, or building an index, may take longer than the
        // bound on ordinary statements.
        client.batch_execute("SET statement_timeout = 0").await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let client_ref: &mut tokio_postgres::Client = &mut client;
        let outcome = embedded::migrations::runner().run_async(client_ref).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        client.batch_execute("RESET statement_timeout").await?;
        outcome?;
        Ok(())
    }

    /// Runs one statement within the client timeout. Getting a connection or preparing that runs out
    /// of time is [`Error::Timeout`]: nothing was sent. A statement sent without an answer in time
    /// (or whose connection broke) is [`Error::InDoubt`], and its connection is discarded rather than
    /// given back to the pool still busy; the server's `statement_timeout` ends the statement.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.run(sql, params, true).await
    }

    /// [`Store::query`] for a statement written for the call at hand (a search with some filters):
    /// prepared unnamed each time, so Postgres plans it for these parameters and nothing is cached.
    pub(crate) async fn query_planned(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.run(sql, params, false).await
    }

    async fn run(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        cached: bool,
    ) -> Result<Vec<Row>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let client = tokio::time::timeout_at(deadline, self.pool.get())
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        match self.run_on(client, sql, params, cached, deadline).await {
            (Some(client), Err(Error::Postgres(err))) if cached && is_stale_plan(&err) => {
                // A migration changed a table this statement reads since this connection prepared
                // it (a column added during a rolling deploy): nothing ran. Prepare it afresh.
                tracing::info!(error = %err, "a prepared statement went stale after a schema change; preparing it again");
                client.statement_cache.remove(sql, &[]);
                self.run_on(client, sql, params, cached, deadline).await.1
            }
            (_, outcome) => outcome,
        }
    }

    /// One try of [`Store::run`] on `client`; gives the connection back unless it must be dropped.
    async fn run_on(
        &self,
        client: deadpool_postgres::Object,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        cached: bool,
        deadline: tokio::time::Instant,
    ) -> (Option<deadpool_postgres::Object>, Result<Vec<Row>>) {
        let statement = if cached {
            match tokio::time::timeout_at(deadline, client.prepare_cached(sql)).await {
                Ok(Ok(prepared)) => Some(prepared),
                Ok(Err(err)) => return (Some(client), Err(err.into())),
                Err(_) => {
                    // Nothing ran, but the connection still waits for an answer: never reuse it.
                    drop(deadpool_postgres::Object::take(client));
                    return (None, Err(Error::Timeout(self.timeout)));
                }
            }
        } else {
            None
        };
        let rows = async {
            match &statement {
                Some(statement) => client.query(statement, params).await,
                None => client.query(sql, params).await,
            }
        };
        match tokio::time::timeout_at(deadline, rows).await {
            Ok(Ok(rows)) => (Some(client), Ok(rows)),
            Ok(Err(err)) if err.code().is_some() => (Some(client), Err(err.into())),
            answer => {
                drop(deadpool_postgres::Object::take(client));
                let source = answer.ok().and_then(Result::err);
                (
                    None,
                    Err(Error::InDoubt {
                        after: self.timeout,
                        jobs: Vec::new(),
                        source,
                    }),
                )
            }
        }
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Stores a new job, or returns the one its idempotency key already made (if the request is the
    /// same; a different request under the same key is a conflict).
    pub async fn create(&self, new: &NewJob, timeout_ms: i32, now: DateTime<Utc>) -> Result<Created> {
        self.create_many(std::slice::from_ref(new), timeout_ms, now)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::CorruptRow("create returned no result".into())))
    }

    /// Stores many jobs in one statement. The outer error is Postgres failing (nothing was stored);
    /// each inner result is one job's, in the order given: created, replayed, or a key conflict.
    pub async fn create_many(
        &self,
        new: &[NewJob],
        default_timeout_ms: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Created>>> {
        let ids: Vec<Uuid> = new.iter().map(|_| JobId::new().0).collect();
        let (children, parents) = dependency_edges(new, &ids)?;
        self.check_parents_exist(new).await?;
        let fingerprints: Vec<Option<serde_json::Value>> = new
            .iter()
            .map(|n| n.idempotency_key.as_ref().map(|_| n.fingerprint()))
            .collect();
        let rows = self
            .query(
                sql!("create_many"),
                &[
                    &ids,
                    &new.iter().map(|n| n.job_type.as_str()).collect::<Vec<_>>(),
                    &new.iter().map(|n| n.queue.as_str()).collect::<Vec<_>>(),
                    &new.iter().map(|n| &n.payload).collect::<Vec<_>>(),
                    &new.iter().map(|n| n.priority).collect::<Vec<_>>(),
                    &new.iter().map(|n| n.max_attempts).collect::<Vec<_>>(),
                    &new.iter().map(|n| n.first_run_at(now)).collect::<Vec<_>>(),
                    &new.iter()
                        .map(|n| n.timeout_ms.unwrap_or(default_timeout_ms))
                        .collect::<Vec<_>>(),
                    &new.iter().map(|n| n.idempotency_key.as_deref()).collect::<Vec<_>>(),
                    &fingerprints,
                    &now,
                    &new.iter()
                        .map(|n| n.traceparent.as_ref().map(ToString::to_string))
                        .collect::<Vec<_>>(),
                    &children,
                    &parents,
                ],
            )
            .await
            .map_err(|err| match err {
                // Say under which ids the jobs may have been stored, so the caller can look.
                Error::InDoubt { after, source, .. } => Error::InDoubt {
                    after,
                    jobs: ids.iter().map(|id| JobId(*id)).collect(),
                    source,
                },
                other => other,
            })?;
        let mut inserted: HashMap<Uuid, Job> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = job_from_row(row)?;
            inserted.insert(job.id.0, job);
        }
        // Jobs whose key was taken: find the job that holds it.
        let taken: Vec<&str> = new
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !inserted.contains_key(id))
            .filter_map(|(n, _)| n.idempotency_key.as_deref())
            .collect();
        let mut holders: HashMap<String, (Option<serde_json::Value>, Job)> = HashMap::new();
        if !taken.is_empty() {
            for row in self.query(sql!("find_by_keys"), &[&taken]).await? {
                let key: String = row.try_get("idempotency_key")?;
                holders.insert(key, (row.try_get("idempotency_request")?, job_from_row(&row)?));
            }
        }
        self.relink_replayed_parents(new, &ids, &inserted, &holders, now)
            .await?;
        Ok(new
            .iter()
            .zip(ids)
            .zip(fingerprints)
            .map(|((n, id), fingerprint)| {
                if let Some(job) = inserted.get(&id) {
                    return Ok(Created {
                        job: job.clone(),
                        replayed: false,
                    });
                }
                let key = n.idempotency_key.clone().unwrap_or_default();
                match holders.get(&key) {
                    Some((stored, job))
                        if fingerprint.as_ref().is_some_and(|f| {
                            crate::job::same_json(stored.as_ref().unwrap_or(&serde_json::Value::Null), f)
                        }) =>
                    {
                        Ok(Created {
                            job: job.clone(),
                            replayed: true,
                        })
                    }
                    Some((_, job)) => Err(Error::IdempotencyConflict { key, existing: job.id }),
                    None => Err(Error::CorruptRow(format!(
                        "idempotency key {key:?} conflicted but has no job"
                    ))),
                }
            })
            .collect())
    }

    /// Refuses a create whose `dependsOn` names a stored job that does not exist.
    async fn check_parents_exist(&self, new: &[NewJob]) -> Result<()> {
        let mut named: Vec<Uuid> = new
            .iter()
            .flat_map(|n| &n.depends_on)
            .filter_map(|parent| match parent {
                Parent::Job(id) => Some(id.0),
                Parent::Earlier(_) => None,
            })
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        named.sort_unstable();
        named.dedup();
        let found: HashSet<Uuid> = self
            .query(sql!("existing_ids"), &[&named])
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        let unknown: Vec<JobId> = named.into_iter().filter(|id| !found.contains(id)).map(JobId).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::UnknownParents(unknown))
        }
    }

    /// A child created in a batch that named an earlier item as its parent, where that item was an
    /// idempotent replay: its edge points at the id the batch gave the item, which was never
    /// stored. Moves it to the job stored under the item's key, then releases the child if that job
    /// has completed already.
    async fn relink_replayed_parents(
        &self,
        new: &[NewJob],
        ids: &[Uuid],
        inserted: &HashMap<Uuid, Job>,
        holders: &HashMap<String, (Option<serde_json::Value>, Job)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut children = Vec::new();
        let mut given = Vec::new();
        let mut stored = Vec::new();
        for (n, child) in new.iter().zip(ids) {
            if !inserted.contains_key(child) {
                continue;
            }
            for parent in &n.depends_on {
                let Parent::Earlier(index) = *parent else { continue };
                let parent_id = ids[index];
                if inserted.contains_key(&parent_id) {
                    continue;
                }
                let holder = new[index]
                    .idempotency_key
                    .as_ref()
                    .and_then(|key| holders.get(key))
                    .map(|(_, job)| job.id.0);
                if let Some(holder) = holder {
                    children.push(*child);
                    given.push(parent_id);
                    stored.push(holder);
                }
            }
        }
        if children.is_empty() {
            return Ok(());
        }
        self.query(sql!("relink_parents"), &[&children, &given, &stored])
            .await?;
        let stored: Vec<JobId> = stored.into_iter().map(JobId).collect();
        self.release_children(&stored, now).await?;
        Ok(())
    }

    /// The queues' state for the metrics (queue_state.sql): jobs pending, running and dead per
    /// queue, and the age of the longest-due pending job.
    pub async fn queue_state(&self) -> Result<QueueState> {
        let mut state = QueueState::default();
        for row in self.query(sql!("queue_state"), &[]).await? {
            let depth = QueueDepth {
                queue: row.try_get("queue")?,
                status: status_from_row(&row)?,
                count: row.try_get("count")?,
                oldest_pending_age: row.try_get("oldest_pending_age")?,
            };
            if depth.status == Status::Failed {
                state.dead += depth.count;
            }
            state.depth.push(depth);
        }
        Ok(state)
    }

    /// A job with its attempt history.
    pub async fn get(&self, id: JobId) -> Result<Job> {
        let row = self
            .query_opt(sql!("get"), &[&id.0])
            .await?
            .ok_or(Error::NotFound(id))?;
        let mut job = job_from_row(&row)?;
        if job.status == Status::Pending {
            let concurrency: Option<i32> = row.try_get("queue_concurrency")?;
            let running: Option<i64> = row.try_get("queue_running")?;
            if row.try_get("queue_paused")? {
                job.held_back = Some(format!("its queue {:?} is paused", job.queue));
            } else if let (Some(limit), Some(running)) = (concurrency, running)
                && running >= i64::from(limit)
            {
                job.held_back = Some(format!(
                    "its queue {:?} is at its concurrency limit ({running} of {limit} running)",
                    job.queue
                ));
            } else if let (Some(limit), Some(period_ms), Some(used)) = (
                row.try_get::<_, Option<i32>>("queue_rate_limit")?,
                row.try_get::<_, Option<i32>>("queue_rate_period_ms")?,
                row.try_get::<_, Option<i64>>("queue_rate_used")?,
            ) && used >= i64::from(limit)
            {
                job.held_back = Some(format!(
                    "its queue {:?} is at its rate limit ({used} of {limit} starts in the last {period_ms} ms)",
                    job.queue
                ));
            }
        }
        job.history = self
            .query(sql!("history"), &[&id.0])
            .await?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_>>()?;
        if job.status == Status::Blocked {
            let parents = self.parents_of(id).await?;
            job.waiting_on = Some(
                parents
                    .into_iter()
                    .filter(|(_, status)| *status != Some(Status::Completed))
                    .map(|(job_id, status)| crate::job::WaitingOn { job_id, status })
                    .collect(),
            );
        }
        Ok(job)
    }

    /// Dead jobs, newest first, `limit` a page.
    pub async fn list_dead(&self, after: Option<DeadCursor>, limit: usize) -> Result<Page<Job>> {
        let limit = limit.clamp(1, 1000);
        let rows = self
            .query(
                sql!("list_dead"),
                &[
                    &after.map(|c| c.completed_at),
                    &after.map(|c| c.id.0),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().and_then(|job| {
                job.completed_at.map(|completed_at| DeadCursor {
                    completed_at,
                    id: job.id,
                })
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Puts a dead job back to PENDING with a fresh attempt budget.
    pub async fn requeue(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        match self.query_opt(sql!("requeue"), &[&id.0, &now]).await? {
            Some(row) => job_from_row(&row),
            None => Err(self.rejected(id, Event::Requeue).await),
        }
    }

    /// Withdraws a job that has not started.
    pub async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        match self.query_opt(sql!("cancel"), &[&id.0, &now]).await? {
            Some(row) => job_from_row(&row),
            None => Err(self.rejected(id, Event::Cancel).await),
        }
    }

    /// Records that a running job should stop (its worker acts on it); the job stays IN_PROGRESS.
    /// A job that is not running is refused, as [`Store::cancel`] refuses one that is not pending.
    pub async fn request_cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        match self.query_opt(sql!("request_cancel"), &[&id.0, &now]).await? {
            Some(row) => job_from_row(&row),
            None => Err(self.rejected(id, Event::Cancel).await),
        }
    }

    /// Jobs matching every filter of `filter`, newest first, after `after`, `limit` a page (at
    /// most 1000), each with its attempt history.
    pub async fn find(&self, filter: &JobFilter, after: Option<JobCursor>, limit: usize) -> Result<Found> {
        let limit = limit.clamp(1, 1000);
        let args = FindArgs::new(filter, after, limit + 1);
        let rows = self.query_planned(&find_statement(filter), &args.params()).await?;
        let mut items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|job| JobCursor {
                created_at: job.created_at,
                id: job.id,
            })
        } else {
            None
        };
        if !items.is_empty() {
            let ids: Vec<Uuid> = items.iter().map(|job| job.id.0).collect();
            let mut histories: HashMap<Uuid, Vec<Attempt>> = HashMap::new();
            for row in self.query(sql!("history_many"), &[&ids]).await? {
                let job_id: Uuid = row.try_get("job_id")?;
                histories.entry(job_id).or_default().push(attempt_from_row(&row)?);
            }
            for job in &mut items {
                job.history = histories.remove(&job.id.0).unwrap_or_default();
            }
        }
        Ok(Found { items, next })
    }

    /// The plan Postgres makes for [`Store::find`] with these arguments, as `EXPLAIN (FORMAT JSON)`
    /// gives it; with `analyze`, run, with its timings (`EXPLAIN (ANALYZE, FORMAT JSON)`).
    pub async fn explain_find(
        &self,
        filter: &JobFilter,
        after: Option<JobCursor>,
        limit: usize,
        analyze: bool,
    ) -> Result<serde_json::Value> {
        let options = if analyze { "ANALYZE, FORMAT JSON" } else { "FORMAT JSON" };
        let sql = format!("EXPLAIN ({options})\n{}", find_statement(filter));
        let args = FindArgs::new(filter, after, limit.clamp(1, 1000) + 1);
        let rows = self.query_planned(&sql, &args.params()).await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::CorruptRow("EXPLAIN returned no row".into()))?;
        Ok(row.try_get(0)?)
    }

    /// How many jobs match `filter` in each of `statuses` (the filter's own status set aside), in
    /// all: the exact count a bulk operation's dry run answers.
    pub async fn count_matching(&self, filter: &JobFilter, statuses: &[Status]) -> Result<i64> {
        let mut total = 0;
        for &status in statuses {
            let filter = filter.clone().status(status);
            let sql = sql!("bulk_count").replace("{matching}", &find_matching(&filter));
            let args = FindArgs::new(&filter, None, 1);
            let params = args.params();
            let rows = self.query_planned(&sql, &params[..9]).await?;
            let row = rows
                .first()
                .ok_or_else(|| Error::CorruptRow("count returned no row".into()))?;
            total += row.try_get::<_, i64>("n")?;
        }
        Ok(total)
    }

    /// Records a new bulk operation and its audit entry, in one statement.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_operation(
        &self,
        action: BulkAction,
        filter: &JobFilter,
        statuses: &[Status],
        total: i64,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Operation> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let row = self
            .query_opt(
                sql!("operation_create"),
                &[
                    &Uuid::now_v7(),
                    &action.as_str(),
                    &filter.to_json(),
                    &statuses,
                    &now,
                    &total,
                    &actor.principal,
                    &actor.on_behalf_of,
                    &now,
                ],
            )
            .await?
            .ok_or_else(|| Error::CorruptRow("operation insert returned no row".into()))?;
        operation_from_row(&row)
    }

    /// A bulk operation, if it exists.
    pub async fn operation(&self, id: Uuid) -> Result<Option<Operation>> {
        self.query_opt(sql!("operation_get"), &[&id])
            .await?
            .map(|row| operation_from_row(&row))
            .transpose()
    }

    /// Records why a batch of `id` failed (shown until a batch succeeds).
    pub async fn operation_failed(&self, id: Uuid, error: &str) -> Result<()> {
        let error: String = error.replace('\0', "").chars().take(1000).collect();
        self.query(sql!("operation_failed"), &[&id, &error]).await?;
        Ok(())
    }

    /// Up to `limit` bulk operations still running, oldest first.
    pub async fn running_operations(&self, limit: i64) -> Result<Vec<Operation>> {
        self.query(sql!("operations_running"), &[&limit])
            .await?
            .iter()
            .map(operation_from_row)
            .collect()
    }

    /// One batch of `operation`'s current phase: the next `size` jobs of `filter` (the phase's
    /// search) acted on, and the operation's cursor moved past them, in one statement.
    pub async fn operation_batch(
        &self,
        operation: &Operation,
        filter: &JobFilter,
        status: Status,
        size: i64,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome> {
        let act = batch_action(operation, status)?;
        self.run_operation_batch(operation, filter, &act, size, now, None).await
    }

    /// The plan Postgres makes for the next batch of `operation` (`EXPLAIN (FORMAT JSON)`, not run).
    pub async fn explain_operation_batch(&self, operation: &Operation, size: i64) -> Result<serde_json::Value> {
        let (filter, status) = operation
            .phase_filter()?
            .ok_or_else(|| Error::CorruptRow(format!("operation {} is done", operation.id)))?;
        let act = batch_action(operation, status)?;
        let now = self.now().await;
        let mut plan = None;
        self.run_operation_batch(operation, &filter, &act, size, now, Some(&mut plan))
            .await?;
        plan.ok_or_else(|| Error::CorruptRow("EXPLAIN returned no row".into()))
    }

    /// Runs (or, with `explain`, plans) one batch.
    async fn run_operation_batch(
        &self,
        operation: &Operation,
        filter: &JobFilter,
        act: &str,
        size: i64,
        now: DateTime<Utc>,
        explain: Option<&mut Option<serde_json::Value>>,
    ) -> Result<BatchOutcome> {
        let mut sql = sql!("bulk_batch")
            .replace("{act}", act)
            .replace("{finder}", &find_statement(filter));
        if explain.is_some() {
            sql = format!("EXPLAIN (FORMAT JSON)\n{sql}");
        }
        let cursor = operation.cursor.map(|(created_at, id)| JobCursor { created_at, id });
        let args = FindArgs::new(filter, cursor, usize::try_from(size).unwrap_or(1));
        let phase = i16::try_from(operation.phase).unwrap_or(i16::MAX);
        let search = args.params();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = search.to_vec();
        params.extend([
            &operation.id as &(dyn tokio_postgres::types::ToSql + Sync),
            &phase,
            &now,
        ]);
        let rows = self.query_planned(&sql, &params).await?;
        if let Some(plan) = explain {
            *plan = rows.first().map(|row| row.try_get(0)).transpose()?;
            return Ok(BatchOutcome {
                owned: false,
                acted: Vec::new(),
            });
        }
        let row = rows
            .first()
            .ok_or_else(|| Error::CorruptRow("bulk batch returned no row".into()))?;
        let ids: Vec<Uuid> = row.try_get("ids")?;
        let queues: Vec<String> = row.try_get("queues")?;
        let priorities: Vec<i16> = row.try_get("priorities")?;
        Ok(BatchOutcome {
            owned: row.try_get::<_, i64>("owned")? > 0,
            acted: ids
                .into_iter()
                .zip(queues)
                .zip(priorities)
                .map(|((id, queue), priority)| Place {
                    id: JobId(id),
                    queue,
                    priority,
                })
                .collect(),
        })
    }

    /// Adds an entry to the audit log.
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        job_id: Option<JobId>,
        filter: Option<&serde_json::Value>,
        count: i64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.query(
            sql!("audit_insert"),
            &[
                &now,
                &actor.principal,
                &actor.on_behalf_of,
                &action,
                &job_id.map(|id| id.0),
                &None::<Uuid>,
                &filter,
                &count,
            ],
        )
        .await?;
        Ok(())
    }

    /// The audit log, newest first: up to `limit` entries after the entry `after`, and the id to
    /// pass as `after` for the next page (`None` on the last).
    pub async fn audit_log(&self, after: Option<i64>, limit: usize) -> Result<(Vec<AuditEntry>, Option<i64>)> {
        let limit = limit.clamp(1, 1000);
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let mut entries = self
            .query(sql!("audit_list"), &[&after, &fetch])
            .await?
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|entry| entry.id)
        } else {
            None
        };
        Ok((entries, next))
    }

    /// Why a guarded write on `id` matched nothing: the job is missing, or its status forbids `event`.
    async fn rejected(&self, id: JobId, event: Event) -> Error {
        match self.query_opt(sql!("status_of"), &[&id.0]).await {
            Err(err) => err,
            Ok(None) => Error::NotFound(id),
            Ok(Some(row)) => match status_from_row(&row) {
                Err(err) => err,
                Ok(status) => match transition(status, event) {
                    Err(source) => Error::InvalidTransition {
                        job_id: id,
                        status,
                        source,
                    },
                    // The status allowed it, so it changed under us between the two statements.
                    Ok(_) => Error::InvalidTransition {
                        job_id: id,
                        status,
                        source: crate::state::InvalidTransition { from: status, event },
                    },
                },
            },
        }
    }

    /// Claims `id` for `worker_id` until `now + lease`.
    pub async fn claim(&self, id: JobId, worker_id: &str, now: DateTime<Utc>, lease: Duration) -> Result<Claim> {
        if let Some(lease) = self.claim_many(&[id], worker_id, now, lease).await?.pop() {
            return Ok(Claim::Claimed(Box::new(lease)));
        }
        // A job of a limited queue is claimed only within its limits.
        if let Some(lease) = self.claim_limited(&[id], worker_id, now, lease).await?.pop() {
            return Ok(Claim::Claimed(Box::new(lease)));
        }
        self.why_unclaimed(id, now).await
    }

    /// Why `id` could not be claimed at `now`.
    pub async fn why_unclaimed(&self, id: JobId, now: DateTime<Utc>) -> Result<Claim> {
        let Some(row) = self.query_opt(sql!("status_of"), &[&id.0]).await? else {
            return Ok(Claim::Unavailable);
        };
        let run_at: DateTime<Utc> = row.try_get("run_at")?;
        if status_from_row(&row)? == Status::Pending && run_at > now {
            return Ok(Claim::NotDue {
                run_at,
                priority: row.try_get("priority")?,
            });
        }
        Ok(Claim::Unavailable)
    }

    /// Claims every runnable job among `ids` in one statement; the others are left out.
    pub async fn claim_many(
        &self,
        ids: &[JobId],
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Lease>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = self
            .query(
                sql!("claim_many"),
                &[&ids, &worker_id, &now, &lease_ms(lease), &self.start_by(now)],
            )
            .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Claims, among `ids`, the runnable jobs of queues with a concurrency limit, as many per
    /// queue as fit under its limit at this instant, fleet-wide (`jobq_claim_limited`, V14: under
    /// the queue's advisory lock, after counting its running jobs). [`Store::claim_many`] leaves
    /// these jobs out; this claims them.
    pub async fn claim_limited(
        &self,
        ids: &[JobId],
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Lease>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = self
            .query(
                "SELECT * FROM jobq_claim_limited($1, $2, $3, $4, $5)",
                &[&ids, &worker_id, &now, &lease_ms(lease), &self.start_by(now)],
            )
            .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// [`Store::claim_next`] for the jobs of queues with a concurrency limit, within their limits.
    pub async fn claim_next_limited(
        &self,
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        served: Option<&[String]>,
    ) -> Result<Vec<Lease>> {
        let rows = self
            .query(
                "SELECT * FROM jobq_claim_next_limited($1, $2, $3, $4, $5, $6)",
                &[
                    &worker_id,
                    &now,
                    &lease_ms(lease),
                    &(limit as i64),
                    &self.start_by(now),
                    &served,
                ],
            )
            .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// The next pending jobs of each limited queue (or only of `queues`), as many per queue as it
    /// has free slots: to push to Redis, since ids their limit held back were dropped.
    pub async fn limited_ready(&self, now: DateTime<Utc>, queues: Option<&[String]>) -> Result<Vec<Ready>> {
        self.query(sql!("limited_ready"), &[&now, &queues])
            .await?
            .iter()
            .map(ready_from_row)
            .collect()
    }

    /// The queues that have a concurrency limit.
    pub async fn limited_queues(&self) -> Result<std::collections::HashSet<String>> {
        self.query(sql!("limited_queues"), &[])
            .await?
            .iter()
            .map(|row| Ok(row.try_get("queue")?))
            .collect()
    }

    /// Which of `ids` are pending but not due at `now` (popped early).
    pub async fn not_due(&self, ids: &[JobId], now: DateTime<Utc>) -> Result<Vec<Ready>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        self.query(sql!("not_due"), &[&ids, &now])
            .await?
            .iter()
            .map(ready_from_row)
            .collect()
    }

    /// The latest database time at which a claim sent at `now` may still start. One that reaches
    /// Postgres later (held up in the network past the client's patience) claims nothing, and one
    /// that starts in time ends within `statement_timeout`: either way it has settled once the
    /// client timeout has passed, so what it did can then be read back ([`Store::held_by`]).
    /// Until this host has read the database clock once, there is no bound (`None`): a host clock
    /// that is far off must not make every claim a no-op.
    fn start_by(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.clock
            .synced()
            .then(|| now + chrono::Duration::from_std(self.timeout / 4).unwrap_or(chrono::Duration::MAX))
    }

    /// Which of `ids` are running under `worker_id`: after a claim in doubt, the leases it took.
    pub async fn held_by(&self, ids: &[JobId], worker_id: &str) -> Result<Vec<Lease>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = self.query(sql!("held_by"), &[&ids, &worker_id]).await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// The client timeout: how long a statement may take before its outcome is in doubt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Claims up to `limit` of the best runnable jobs directly, without Redis.
    pub async fn claim_next(
        &self,
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        served: Option<&[String]>,
    ) -> Result<Vec<Lease>> {
        let rows = self
            .query(
                sql!("claim_next"),
                &[
                    &worker_id,
                    &now,
                    &lease_ms(lease),
                    &(limit as i64),
                    &self.start_by(now),
                    &served,
                ],
            )
            .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Extends the lease to `lease` from now, by the database's clock (as every lease expiry is set
    /// and judged, so that hosts whose clocks disagree still agree on who holds a job).
    /// Returns whether the job's cancellation has been requested (its holder should stop it).
    pub async fn heartbeat(&self, held: &Lease, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
        let row = self
            .query_opt(sql!("heartbeat"), &[&held.id().0, &held.token, &now, &lease_ms(lease)])
            .await?
            .ok_or_else(|| lease_lost(held))?;
        Ok(row.try_get("cancel_requested")?)
    }

    /// Ends a running job whose cancellation was requested, after its holder stopped it: the job
    /// and the attempt are `CANCELLED`. `LeaseLost` if the lease is not held (or no request stands).
    pub async fn cancel_running(&self, held: &Lease, now: DateTime<Utc>, why: &str) -> Result<()> {
        self.query_opt(sql!("cancel_running"), &[&held.id().0, &held.token, &now, &why])
            .await?
            .map(|_| ())
            .ok_or_else(|| lease_lost(held))
    }

    /// Records success. Returns the jobs it released (children whose last parent it was), to be
    /// pushed to Redis.
    pub async fn complete(&self, held: &Lease, now: DateTime<Utc>) -> Result<Vec<Ready>> {
        let completions = self.complete_many(&[(held.id(), held.token)], now).await?;
        if completions.done.is_empty() {
            return Err(lease_lost(held));
        }
        Ok(completions.released)
    }

    /// Records success for many `(job, lease token)` pairs in one statement; one left out of
    /// `done` had lost its lease, and nothing was changed for it. Then, if any of them has
    /// dependents, releases the children they were the last parent of (`released`, to be pushed to
    /// Redis). A failed release is logged and left to the repairer: the completions stand.
    pub async fn complete_many(&self, held: &[(JobId, i64)], now: DateTime<Utc>) -> Result<Completions> {
        let ids: Vec<Uuid> = held.iter().map(|(id, _)| id.0).collect();
        let tokens: Vec<i64> = held.iter().map(|(_, token)| *token).collect();
        let rows = self.query(sql!("complete_many"), &[&ids, &tokens, &now]).await?;
        let mut done = Vec::with_capacity(rows.len());
        let mut parents = Vec::new();
        for row in &rows {
            let id = JobId(row.try_get("id")?);
            if row.try_get("has_dependents")? {
                parents.push(id);
            }
            done.push(id);
        }
        let released = if parents.is_empty() {
            Vec::new()
        } else {
            self.release_children(&parents, now).await.unwrap_or_else(|err| {
                tracing::warn!(parents = parents.len(), error = %err, "completed, but the children could not be released now; the repairer will");
                Vec::new()
            })
        };
        Ok(Completions { done, released })
    }

    /// Makes PENDING the BLOCKED children of `parents` (completed and committed) whose parents
    /// have all completed, and clears the parents' flag. Returns the children released.
    pub async fn release_children(&self, parents: &[JobId], now: DateTime<Utc>) -> Result<Vec<Ready>> {
        let ids: Vec<Uuid> = parents.iter().map(|id| id.0).collect();
        self.query(sql!("release_children"), &[&ids, &now])
            .await?
            .iter()
            .map(ready_from_row)
            .collect()
    }

    /// Releases the children of parents completed before `before` whose release did not happen
    /// (their worker stopped between the two statements), at most `limit` parents at a time.
    pub async fn release_stranded(&self, before: DateTime<Utc>, limit: i64, now: DateTime<Utc>) -> Result<Vec<Ready>> {
        let parents: Vec<JobId> = self
            .query(sql!("stranded_parents"), &[&before, &limit])
            .await?
            .iter()
            .map(|row| Ok(JobId(row.try_get("id")?)))
            .collect::<Result<_>>()?;
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        self.release_children(&parents, now).await
    }

    /// The parents job `id` depends on, each with its status (`None`: the parent is gone).
    pub async fn parents_of(&self, id: JobId) -> Result<Vec<(JobId, Option<Status>)>> {
        self.query(sql!("parents_of"), &[&id.0])
            .await?
            .iter()
            .map(|row| {
                let status: Option<String> = row.try_get("status")?;
                let status = status
                    .map(|s| s.parse::<Status>().map_err(|e| Error::CorruptRow(e.to_string())))
                    .transpose()?;
                Ok((JobId(row.try_get("id")?), status))
            })
            .collect()
    }

    /// Records a failed attempt. A retryable failure with attempts left waits until `retry_at`;
    /// anything else is dead. The decision is made here, from the lease; each statement only
    /// guards its own transition.
    pub async fn fail(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        error: &str,
        retryable: bool,
        retry_at: DateTime<Utc>,
        outcome: Outcome,
    ) -> Result<AfterFailure> {
        if retryable && held.has_attempts_left() {
            self.retry(held, now, error, retry_at, outcome, false).await
        } else {
            self.bury(held, now, error, outcome, false).await
        }
    }

    /// The job runs again at `run_at`. `only_if_expired`: the reaper's guard.
    async fn retry(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        error: &str,
        run_at: DateTime<Utc>,
        outcome: Outcome,
        only_if_expired: bool,
    ) -> Result<AfterFailure> {
        let row = self
            .query_opt(
                sql!("retry"),
                &[
                    &held.id().0,
                    &held.token,
                    &now,
                    &error,
                    &run_at,
                    &outcome.as_str(),
                    &only_if_expired,
                ],
            )
            .await?
            .ok_or_else(|| lease_lost(held))?;
        AfterFailure::from_row(&row)
    }

    /// The job is dead. `only_if_expired`: the reaper's guard.
    async fn bury(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        error: &str,
        outcome: Outcome,
        only_if_expired: bool,
    ) -> Result<AfterFailure> {
        self.query_opt(
            sql!("bury"),
            &[
                &held.id().0,
                &held.token,
                &now,
                &error,
                &outcome.as_str(),
                &only_if_expired,
            ],
        )
        .await?
        .ok_or_else(|| lease_lost(held))?;
        Ok(AfterFailure::Dead)
    }

    /// Gives the job back unfinished, to run again at once, with `why` in its history; the attempt
    /// does not count, and the release is counted. `Retry` (at once), or `Cancelled` when its
    /// cancellation was requested.
    pub async fn release(&self, held: &Lease, now: DateTime<Utc>, why: &str) -> Result<AfterFailure> {
        self.give_back(held, now, now, why, true, false).await
    }

    /// Gives the job back unfinished to run again at `run_at`, with `why` in its history; the
    /// attempt does not count. `Retry`, or `Cancelled` when its cancellation was requested.
    pub async fn defer(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        run_at: DateTime<Utc>,
        why: &str,
    ) -> Result<AfterFailure> {
        self.give_back(held, now, run_at, why, false, false).await
    }

    /// Gives back a job whose lease ran out before its holder renewed it once, uncharged and
    /// counted in its releases, to run again at `run_at`. Only if the lease is still expired when
    /// this write lands (as [`Store::expire`]); otherwise `LeaseLost`.
    pub async fn expire_unrenewed(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        run_at: DateTime<Utc>,
        why: &str,
    ) -> Result<AfterFailure> {
        self.give_back(held, now, run_at, why, true, true).await
    }

    /// [`Store::release`] and [`Store::expire_unrenewed`] (counted in the job's releases) or
    /// [`Store::defer`] (not counted). `only_if_expired`: the reaper's guard.
    async fn give_back(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        run_at: DateTime<Utc>,
        why: &str,
        counted: bool,
        only_if_expired: bool,
    ) -> Result<AfterFailure> {
        let row = self
            .query_opt(
                sql!("release"),
                &[
                    &held.id().0,
                    &held.token,
                    &now,
                    &run_at,
                    &why,
                    &counted,
                    &only_if_expired,
                ],
            )
            .await?
            .ok_or_else(|| lease_lost(held))?;
        AfterFailure::from_row(&row)
    }

    /// Running jobs whose lease has expired by the database's clock, as the leases their dead
    /// holders had.
    pub async fn expired_leases(&self, limit: usize) -> Result<Vec<Lease>> {
        let rows = self.query(sql!("expired_leases"), &[&(limit as i64)]).await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Records that `held`'s lease ran out: the job goes to `next` (`Pending`, to run again after
    /// `retry_in`, or `Failed`, dead). Only if the lease is still expired when this write lands, by
    /// the database clock: a heartbeat that renewed it since it was read wins, and this returns
    /// `LeaseLost`.
    pub async fn expire(
        &self,
        held: &Lease,
        now: DateTime<Utc>,
        error: &str,
        next: Status,
        retry_in: Duration,
    ) -> Result<AfterFailure> {
        match next {
            Status::Pending => {
                let run_at = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
                self.retry(held, now, error, run_at, Outcome::LeaseExpired, true).await
            }
            _ => self.bury(held, now, error, Outcome::LeaseExpired, true).await,
        }
    }

    /// A page of PENDING jobs in id order.
    pub async fn pending_page(&self, after: Option<JobId>, limit: usize) -> Result<Vec<Ready>> {
        let rows = self
            .query(sql!("pending_page"), &[&after.map(|id| id.0), &(limit as i64)])
            .await?;
        rows.iter().map(ready_from_row).collect()
    }

    /// Every dead job id, oldest death first.
    pub async fn dead_ids(&self) -> Result<Vec<JobId>> {
        let rows = self.query(sql!("dead_ids"), &[]).await?;
        rows.iter().map(|row| Ok(JobId(row.try_get("id")?))).collect()
    }

    /// Overdue PENDING jobs not pushed again since `overdue_before`, stamped as pushed now.
    pub async fn mark_repushed(
        &self,
        now: DateTime<Utc>,
        overdue_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Ready>> {
        let rows = self
            .query(sql!("mark_repushed"), &[&now, &overdue_before, &(limit as i64)])
            .await?;
        rows.iter().map(ready_from_row).collect()
    }

    /// Opens one pooled connection now.
    pub async fn warm(&self) -> Result<()> {
        let run = async {
            let client = self.pool.get().await?;
            client.simple_query("").await?;
            Ok(())
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or(Err(Error::Timeout(self.timeout)))
    }

    /// The pool, for tests and tools that need plain SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// `find.sql`'s parameters, owned.
struct FindArgs {
    status: Option<&'static str>,
    queue: Option<String>,
    job_type: Option<String>,
    payload: Option<serde_json::Value>,
    error: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    after_created_at: Option<DateTime<Utc>>,
    after_id: Option<Uuid>,
    limit: i64,
}

impl FindArgs {
    fn new(filter: &JobFilter, after: Option<JobCursor>, limit: usize) -> FindArgs {
        FindArgs {
            status: filter.status.map(Status::as_str),
            queue: filter.queue.clone(),
            job_type: filter.job_type.clone(),
            payload: filter.payload.clone(),
            error: filter.error_pattern(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            after_created_at: after.map(|c| c.created_at),
            after_id: after.map(|c| c.id.0),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.status,
            &self.queue,
            &self.job_type,
            &self.payload,
            &self.error,
            &self.created_after,
            &self.created_before,
            &self.after_created_at,
            &self.after_id,
            &self.limit,
        ]
    }
}

fn lease_lost(held: &Lease) -> Error {
    Error::LeaseLost {
        job_id: held.id(),
        token: held.token,
    }
}

/// What a failed or expired attempt led to, from the row its statement returned.
/// The server's bound on one statement for a client that waits `timeout`: half of it, so that a
/// statement that starts as late as [`Store::start_by`] allows still ends before the client gives up.
fn statement_timeout(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(1))
}

/// A lease length as the SQL statements take it: whole milliseconds.
fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// Postgres refusing a prepared statement whose result columns a schema change altered
/// ("cached plan must not change result type").
fn is_stale_plan(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
        && err
            .as_db_error()
            .is_some_and(|db| db.message().contains("cached plan must not change result type"))
}

/// The dependencies of a create as (child, parent) pairs of ids: a stored parent by its id, an
/// earlier item of the batch by the id given to it. An index that is not of an earlier item is
/// refused.
fn dependency_edges(new: &[NewJob], ids: &[Uuid]) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let mut children = Vec::new();
    let mut parents = Vec::new();
    for (position, (n, child)) in new.iter().zip(ids).enumerate() {
        for parent in &n.depends_on {
            let parent = match *parent {
                Parent::Job(id) => id.0,
                Parent::Earlier(index) if index < position => ids[index],
                Parent::Earlier(_) => {
                    return Err(Error::Invalid(crate::job::InvalidJob {
                        field: "dependsOn",
                        problem: "an index must be that of an earlier job of the batch".into(),
                        missing: false,
                    }));
                }
            };
            children.push(*child);
            parents.push(parent);
        }
    }
    Ok((children, parents))
}

pub(crate) fn status_from_row(row: &Row) -> Result<Status> {
    let status: &str = row.try_get("status")?;
    Status::from_str(status).map_err(|err| Error::CorruptRow(err.to_string()))
}

/// The statement [`Store::find`] runs for `filter`: find.sql, ordered newest first on the
/// creation time of the table whose index serves the filter, then limited.
///
/// A status other than COMPLETED is served by the status index of `jobs`; everything else walks
/// the creation order of `job_listing` (overall, per queue, per type), where COMPLETED, most jobs,
/// are found by skipping the few others. A payload search finds its matches first and sorts them
/// after: Postgres keeps no statistics for `payload @>` and guesses that about 1% of the jobs
/// match, and with that guess it may walk the creation order testing each payload, reading the
/// whole table when few match (it chose so for a filter that 20 of 200,000 jobs matched). There
/// `OFFSET 0` keeps the subquery from taking the outer order, so the payload index serves it: the
/// cost grows with the matches, never with the table.
fn find_statement(filter: &JobFilter) -> String {
    let t = find_table(filter);
    let matching = find_matching(filter);
    if filter.payload.is_some() {
        format!("SELECT * FROM (\n{matching}OFFSET 0\n) AS matched\nORDER BY created_at DESC, id DESC\nLIMIT $10")
    } else {
        format!("{matching}ORDER BY {t}.created_at DESC, {t}.id DESC\nLIMIT $10")
    }
}

/// The table whose creation order serves `filter` (see [`find_statement`]): `j` or `l`.
fn find_table(filter: &JobFilter) -> &'static str {
    let by_status = filter.status.is_some_and(|status| status != Status::Completed);
    if by_status || filter.payload.is_some() || filter.error.is_some() {
        "j"
    } else {
        "l"
    }
}

/// find.sql for `filter`: its conditions, without order or limit.
fn find_matching(filter: &JobFilter) -> String {
    sql!("find").replace("{t}", find_table(filter))
}

/// The part of bulk_batch.sql that acts on a batch: `operation`'s action on jobs in `status`.
fn batch_action(operation: &Operation, status: Status) -> Result<String> {
    Ok(match (operation.action, status) {
        (BulkAction::Requeue, Status::Failed) => sql!("bulk_requeue").to_owned(),
        (BulkAction::Cancel, Status::Pending | Status::Blocked) => sql!("bulk_cancel_pending").to_owned(),
        (BulkAction::Cancel, Status::InProgress) => sql!("bulk_cancel_running").to_owned(),
        (BulkAction::Delete, Status::Completed | Status::Cancelled | Status::Failed) => {
            sql!("bulk_delete").replace("'STATUS'", &format!("'{}'", status.as_str()))
        }
        (action, status) => {
            return Err(Error::CorruptRow(format!(
                "operation {} cannot {} {} jobs",
                operation.id,
                action.as_str(),
                status.as_str()
            )));
        }
    })
}

fn operation_from_row(row: &Row) -> Result<Operation> {
    let action: &str = row.try_get("action")?;
    let statuses: Vec<String> = row.try_get("statuses")?;
    let state: &str = row.try_get("state")?;
    let cursor_at: Option<DateTime<Utc>> = row.try_get("cursor_created_at")?;
    let cursor_id: Option<Uuid> = row.try_get("cursor_id")?;
    Ok(Operation {
        id: row.try_get("id")?,
        action: BulkAction::parse(action)
            .ok_or_else(|| Error::CorruptRow(format!("unknown bulk action {action:?}")))?,
        filter: row.try_get("filter")?,
        statuses: statuses
            .iter()
            .map(|s| Status::from_str(s).map_err(|err| Error::CorruptRow(err.to_string())))
            .collect::<Result<_>>()?,
        phase: usize::try_from(row.try_get::<_, i16>("phase")?).unwrap_or(usize::MAX),
        cursor: cursor_at.zip(cursor_id.map(JobId)),
        created_before: row.try_get("created_before")?,
        total: row.try_get("total")?,
        processed: row.try_get("processed")?,
        skipped: row.try_get("skipped")?,
        state: match state {
            "DONE" => OperationState::Done,
            _ => OperationState::Running,
        },
        actor: row.try_get("actor")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        last_error: row.try_get("last_error")?,
    })
}

fn audit_from_row(row: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        on_behalf_of: row.try_get("on_behalf_of")?,
        action: row.try_get("action")?,
        job_id: row.try_get::<_, Option<Uuid>>("job_id")?.map(JobId),
        operation_id: row.try_get("operation_id")?,
        filter: row.try_get("filter")?,
        count: row.try_get("count")?,
    })
}

fn lease_from_row(row: &Row) -> Result<Lease> {
    Ok(Lease {
        token: row.try_get("lease_token")?,
        releases: row.try_get("releases")?,
        renewed: row.try_get::<_, Option<DateTime<Utc>>>("renewed_at")?.is_some(),
        job: job_from_row(row)?,
    })
}

fn job_from_row(row: &Row) -> Result<Job> {
    Ok(Job {
        id: JobId(row.try_get("id")?),
        job_type: row.try_get("job_type")?,
        queue: row.try_get("queue")?,
        payload: row.try_get("payload")?,
        status: status_from_row(row)?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        priority: row.try_get("priority")?,
        run_at: row.try_get("run_at")?,
        timeout_ms: row.try_get("timeout_ms")?,
        idempotency_key: row.try_get("idempotency_key")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        cancel_requested_at: row.try_get("cancel_requested_at")?,
        traceparent: row.try_get("traceparent")?,
        schedule: match (row.try_get("schedule_name")?, row.try_get("schedule_tick")?) {
            (Some(name), Some(tick)) => Some(crate::job::ScheduledBy { name, tick }),
            _ => None,
        },
        history: Vec::new(),
        waiting_on: None,
        held_back: None,
    })
}

fn attempt_from_row(row: &Row) -> Result<Attempt> {
    let outcome: &str = row.try_get("outcome")?;
    Ok(Attempt {
        attempt: row.try_get("attempt")?,
        lease_token: row.try_get("lease_token")?,
        worker_id: row.try_get("worker_id")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: Outcome::from_str(outcome).map_err(|err| Error::CorruptRow(err.to_string()))?,
        error: row.try_get("error")?,
    })
}
