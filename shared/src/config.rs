//! Configuration, read from the environment in one place into typed values. A bad variable is an
//! error that names it.

use std::str::FromStr;
use std::time::Duration;

use crate::http_job::{HttpJobConfig, SigningSecret};
use crate::queue::Served;
use crate::retry::RetryPolicy;
use crate::tls::{SslMode, split_pg_url, with_pg_defaults};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// How a worker runs jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Jobs run at once by one process.
    pub concurrency: usize,
    /// How long a claim holds a job without a heartbeat.
    pub lease: Duration,
    /// How often a running job renews its lease.
    pub heartbeat: Duration,
    /// A job's timeout when its request gave none.
    pub default_timeout: Duration,
    /// On shutdown, how long running jobs may take to finish before their leases are released.
    pub shutdown_grace: Duration,
    /// How long one blocking pop waits for work before checking for shutdown.
    pub poll: Duration,
    /// Names this process in leases and attempt history.
    pub worker_id: String,
    /// The queues this process takes jobs from (`JOBQ_QUEUES`; default: every queue).
    pub queues: Served,
    pub retry: RetryPolicy,
    /// The longest any job may run here, whatever its own timeout. The worker function sets it to
    /// what one invocation can give. A job stopped by this bound, not by its own timeout, is
    /// released unfinished and uncharged up to `MAX_FREE_RELEASES` times, and charged after that,
    /// so it is neither failed for the invocation's limit nor released forever.
    pub max_job_timeout: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 8,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            default_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            worker_id: default_worker_id(),
            queues: Served::All,
            retry: RetryPolicy::default(),
            max_job_timeout: None,
        }
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// How often the maintenance services run.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceConfig {
    pub promote_interval: Duration,
    pub reap_interval: Duration,
    pub repair_interval: Duration,
    /// A pending job whose due time is this far past is pushed to Redis again, in case its id was lost.
    pub repair_after: Duration,
    /// How often the promoter logs the queues' state as CloudWatch Embedded Metric Format lines
    /// (the worker function: once per run); zero for never.
    pub emf_interval: Duration,
    /// How often finished jobs past their retention are deleted (the worker function: once per run).
    pub prune_interval: Duration,
    pub retention: Retention,
}

/// How long finished jobs (with their attempts) are kept after they finished; `None` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub completed: Option<Duration>,
    pub cancelled: Option<Duration>,
    /// Dead jobs (the DLQ).
    pub dead: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        Retention {
            completed: Some(7 * DAY),
            cancelled: Some(7 * DAY),
            dead: Some(30 * DAY),
        }
    }
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            promote_interval: Duration::from_secs(1),
            reap_interval: Duration::from_secs(1),
            repair_interval: Duration::from_secs(5),
            repair_after: Duration::from_secs(30),
            emf_interval: Duration::ZERO,
            prune_interval: Duration::from_secs(60),
            retention: Retention::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    /// PEM CA certificates that a `rediss://` server's certificate must chain to (`REDIS_CA_FILE`);
    /// the system's roots when unset.
    pub redis_ca_file: Option<PathBuf>,
    /// `REDIS_CLUSTER`: `REDIS_URL` names a Redis Cluster (a comma-separated list of some of its
    /// nodes, or its configuration endpoint).
    pub redis_cluster: bool,
    /// `PGSSLMODE` and `PGSSLROOTCERT`: used where the database URL (from `DATABASE_URL` or the
    /// secret) does not set `sslmode` / `sslrootcert` itself.
    pub pg_sslmode: Option<SslMode>,
    pub pg_sslrootcert: Option<String>,
    /// `JOBQ_MIGRATION_DATABASE_URL`: the schema owner's URL, for the promoter's migrations, when
    /// the rest runs under a role that may only read and write rows (docs/sql/roles.sql).
    pub migration_database_url: Option<String>,
    /// Every Redis key starts with `{namespace}:` or, for a queue's keys, `{namespace:q:<queue>}:`;
    /// the braces make them Redis Cluster hash tags.
    pub namespace: String,
    pub pg_pool_size: usize,
    /// How long a caller waits for Postgres before it is reported unavailable.
    pub pg_timeout: Duration,
    pub worker: WorkerConfig,
    pub maintenance: MaintenanceConfig,
    /// `JOBQ_WORKER_IDLE_WAIT_MS`: how long a worker function run keeps waiting for work once the
    /// queue is empty before it returns (default 0: at the first empty poll).
    pub worker_idle_wait: Duration,
    /// The built-in `http` job: `JOBQ_HTTP_ALLOW_PRIVATE` and `JOBQ_HTTP_SIGNING_SECRET` (with
    /// `aws-secrets`, `JOBQ_HTTP_SIGNING_SECRET_ARN` replaces the latter: `secrets`).
    pub http: HttpJobConfig,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/jobq";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&lookup);
        let worker_defaults = WorkerConfig::default();
        let maint = MaintenanceConfig::default();
        let retry_defaults = RetryPolicy::default();

        let lease = env.millis("JOBQ_LEASE_MS", worker_defaults.lease)?;
        let heartbeat = env.millis("JOBQ_HEARTBEAT_MS", lease / 3)?;
        // A worker stops a job it could not renew for 4/5 of the lease: leave room for a failed
        // heartbeat and one more try before that.
        if heartbeat.saturating_mul(5) > lease.saturating_mul(2) {
            return Err(ConfigError {
                var: "JOBQ_HEARTBEAT_MS",
                problem: "must be at most 2/5 of JOBQ_LEASE_MS (a worker stops a job it could not renew for 4/5 of the lease)".into(),
            });
        }
        let jitter: f64 = env.parse("JOBQ_RETRY_JITTER", retry_defaults.jitter)?;
        if !(0.0..=1.0).contains(&jitter) {
            return Err(ConfigError {
                var: "JOBQ_RETRY_JITTER",
                problem: "must be between 0 and 1".into(),
            });
        }
        let factor: f64 = env.parse("JOBQ_RETRY_FACTOR", retry_defaults.factor)?;
        if !(1.0..=100.0).contains(&factor) {
            return Err(ConfigError {
                var: "JOBQ_RETRY_FACTOR",
                problem: "must be between 1 and 100".into(),
            });
        }
        let namespace = env.string("JOBQ_NAMESPACE", "jobq")?;
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(ConfigError {
                var: "JOBQ_NAMESPACE",
                problem: "must be non-empty and contain no braces".into(),
            });
        }
        let pg_sslmode = match env.string("PGSSLMODE", "")? {
            mode if mode.is_empty() => None,
            mode => Some(mode.parse().map_err(|problem| ConfigError {
                var: "PGSSLMODE",
                problem,
            })?),
        };
        let pg_sslrootcert = Some(env.string("PGSSLROOTCERT", "")?).filter(|r| !r.is_empty());
        let database_url = with_pg_defaults(
            &env.string("DATABASE_URL", DEFAULT_DATABASE_URL)?,
            pg_sslmode,
            pg_sslrootcert.as_deref(),
        );
        split_pg_url(&database_url).map_err(|err| ConfigError {
            var: "DATABASE_URL",
            problem: err.to_string(),
        })?;
        let migration_database_url = match env.string("JOBQ_MIGRATION_DATABASE_URL", "")? {
            url if url.is_empty() => None,
            url => {
                let url = with_pg_defaults(&url, pg_sslmode, pg_sslrootcert.as_deref());
                split_pg_url(&url).map_err(|err| ConfigError {
                    var: "JOBQ_MIGRATION_DATABASE_URL",
                    problem: err.to_string(),
                })?;
                Some(url)
            }
        };
        let redis_url = env.string("REDIS_URL", DEFAULT_REDIS_URL)?;
        let redis_ca_file = Some(env.string("REDIS_CA_FILE", "")?)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        if let Some(file) = &redis_ca_file
            && let Err(err) = crate::tls::read_ca_file(file)
        {
            return Err(ConfigError {
                var: "REDIS_CA_FILE",
                problem: err.to_string(),
            });
        }
        Ok(Config {
            database_url,
            redis_url,
            redis_ca_file,
            redis_cluster: env.parse("REDIS_CLUSTER", false)?,
            pg_sslmode,
            pg_sslrootcert,
            migration_database_url,
            namespace,
            pg_pool_size: env.positive("JOBQ_PG_POOL_SIZE", 16)?,
            pg_timeout: env.millis("JOBQ_PG_TIMEOUT_MS", Duration::from_secs(5))?,
            worker: WorkerConfig {
                concurrency: env.parse("JOBQ_WORKER_CONCURRENCY", worker_defaults.concurrency)?,
                lease,
                heartbeat,
                default_timeout: env.millis("JOBQ_JOB_TIMEOUT_MS", worker_defaults.default_timeout)?,
                shutdown_grace: env.millis("JOBQ_SHUTDOWN_GRACE_MS", worker_defaults.shutdown_grace)?,
                poll: env.millis("JOBQ_POLL_MS", worker_defaults.poll)?,
                worker_id: env.string("JOBQ_WORKER_ID", &worker_defaults.worker_id)?,
                queues: env.parse("JOBQ_QUEUES", Served::All)?,
                retry: RetryPolicy {
                    base: env.millis("JOBQ_RETRY_BASE_MS", retry_defaults.base)?,
                    factor,
                    cap: env.millis("JOBQ_RETRY_CAP_MS", retry_defaults.cap)?,
                    jitter,
                },
                max_job_timeout: None,
            },
            maintenance: MaintenanceConfig {
                promote_interval: env.millis("JOBQ_PROMOTE_INTERVAL_MS", maint.promote_interval)?,
                reap_interval: env.millis("JOBQ_REAP_INTERVAL_MS", maint.reap_interval)?,
                repair_interval: env.millis("JOBQ_REPAIR_INTERVAL_MS", maint.repair_interval)?,
                repair_after: env.millis("JOBQ_REPAIR_AFTER_MS", maint.repair_after)?,
                emf_interval: Duration::from_millis(env.parse("JOBQ_EMF_INTERVAL_MS", 0)?),
                prune_interval: env.millis("JOBQ_PRUNE_INTERVAL_MS", maint.prune_interval)?,
                retention: Retention {
                    completed: env.retention("JOBQ_RETAIN_COMPLETED_MS", maint.retention.completed)?,
                    cancelled: env.retention("JOBQ_RETAIN_CANCELLED_MS", maint.retention.cancelled)?,
                    dead: env.retention("JOBQ_RETAIN_DEAD_MS", maint.retention.dead)?,
                },
            },
            worker_idle_wait: Duration::from_millis(env.parse("JOBQ_WORKER_IDLE_WAIT_MS", 0)?),
            http: HttpJobConfig {
                allow_private: env.parse("JOBQ_HTTP_ALLOW_PRIVATE", false)?,
                signing_secret: SigningSecret::new(env.string("JOBQ_HTTP_SIGNING_SECRET", "")?),
            },
        })
    }
}

impl Config {
    /// `url` with `PGSSLMODE` / `PGSSLROOTCERT` applied where it does not set them itself.
    pub fn with_pg_tls(&self, url: &str) -> String {
        with_pg_defaults(url, self.pg_sslmode, self.pg_sslrootcert.as_deref())
    }

    /// The PEM of `REDIS_CA_FILE`, when set.
    pub fn redis_ca(&self) -> Result<Option<Vec<u8>>, crate::tls::TlsError> {
        self.redis_ca_file.as_deref().map(crate::tls::read_ca_file).transpose()
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn string(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.0(var)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| default.to_owned()))
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|err| ConfigError {
                var,
                problem: format!("cannot parse {raw:?}: {err}"),
            }),
        }
    }

    fn positive(&self, var: &'static str, default: usize) -> Result<usize, ConfigError> {
        let value = self.parse(var, default)?;
        if value == 0 {
            return Err(ConfigError {
                var,
                problem: "must be at least 1".into(),
            });
        }
        Ok(value)
    }

    /// A retention in milliseconds; 0 keeps for ever.
    fn retention(&self, var: &'static str, default: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
        let default_ms = default.map_or(0, |d| d.as_millis() as u64);
        let ms = self.parse::<u64>(var, default_ms)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms)))
    }

    fn millis(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = default.as_millis() as u64;
        let ms = self.parse::<u64>(var, default_ms)?;
        if ms == 0 {
            return Err(ConfigError {
                var,
                problem: "must be at least 1 millisecond".into(),
            });
        }
        Ok(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(c.worker.lease, Duration::from_secs(30));
        assert_eq!(c.worker.heartbeat, Duration::from_secs(10));
        assert_eq!(c.worker.retry, RetryPolicy::default());
    }

    #[test]
    fn the_http_job_is_configured_from_its_variables() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.http, HttpJobConfig::default());
        let c = config(&[
            ("JOBQ_HTTP_ALLOW_PRIVATE", "true"),
            ("JOBQ_HTTP_SIGNING_SECRET", "whsec_1"),
        ])
        .expect("valid");
        assert!(c.http.allow_private);
        assert_eq!(c.http.signing_secret, SigningSecret::new("whsec_1"));
        assert!(!format!("{c:?}").contains("whsec_1"), "the secret stays out of logs");
        let err = config(&[("JOBQ_HTTP_ALLOW_PRIVATE", "yes")]).expect_err("not a bool");
        assert_eq!(err.var, "JOBQ_HTTP_ALLOW_PRIVATE");
    }

    #[test]
    fn tls_settings_are_checked_and_named() {
        let err = config(&[("PGSSLMODE", "verify")]).expect_err("bad mode");
        assert_eq!(err.var, "PGSSLMODE");
        let err = config(&[("DATABASE_URL", "postgres://u@h/d?sslmode=on")]).expect_err("bad mode");
        assert_eq!(err.var, "DATABASE_URL");
        let err = config(&[("JOBQ_MIGRATION_DATABASE_URL", "postgres://u@h/d?sslmode=yes")]).expect_err("bad mode");
        assert_eq!(err.var, "JOBQ_MIGRATION_DATABASE_URL");
        let err = config(&[("REDIS_CA_FILE", "/nonexistent/ca.pem")]).expect_err("no file");
        assert_eq!(err.var, "REDIS_CA_FILE");
        let c = config(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/rds.pem"),
        ])
        .expect("valid");
        assert_eq!(
            c.database_url,
            "postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/rds.pem"
        );
        assert_eq!(
            c.with_pg_tls("postgres://v@k/e"),
            "postgres://v@k/e?sslmode=verify-full&sslrootcert=/etc/rds.pem"
        );
    }

    #[test]
    fn every_knob_is_read() {
        let c = config(&[
            ("JOBQ_RETRY_BASE_MS", "250"),
            ("JOBQ_RETRY_CAP_MS", "5000"),
            ("JOBQ_RETRY_FACTOR", "3"),
            ("JOBQ_RETRY_JITTER", "0"),
            ("JOBQ_WORKER_CONCURRENCY", "0"),
            ("JOBQ_LEASE_MS", "900"),
            ("JOBQ_NAMESPACE", "ns1"),
        ])
        .expect("valid");
        assert_eq!(c.worker.retry.base, Duration::from_millis(250));
        assert_eq!(c.worker.retry.cap, Duration::from_secs(5));
        assert_eq!(c.worker.retry.factor, 3.0);
        assert_eq!(c.worker.retry.jitter, 0.0);
        assert_eq!(c.worker.concurrency, 0);
        assert_eq!(c.worker.heartbeat, Duration::from_millis(300));
        assert_eq!(c.namespace, "ns1");
    }

    #[test]
    fn a_bad_variable_is_named_in_the_error() {
        for (var, value) in [
            ("JOBQ_WORKER_CONCURRENCY", "many"),
            ("JOBQ_LEASE_MS", "0"),
            ("JOBQ_RETRY_JITTER", "1.5"),
            ("JOBQ_PG_POOL_SIZE", "0"),
            ("JOBQ_NAMESPACE", "{x}"),
        ] {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
        }
        for heartbeat in ["1000", "401"] {
            let err = config(&[("JOBQ_LEASE_MS", "1000"), ("JOBQ_HEARTBEAT_MS", heartbeat)]).expect_err("heartbeat");
            assert_eq!(err.var, "JOBQ_HEARTBEAT_MS");
        }
        assert!(config(&[("JOBQ_LEASE_MS", "1000"), ("JOBQ_HEARTBEAT_MS", "400")]).is_ok());
    }
}
