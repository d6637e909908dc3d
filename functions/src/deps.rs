//! What a function builds once per cold start and reuses across invocations: configuration, the
//! Postgres pool, the Redis connection and the job operations over them.

use jobq_shared::bulk::Actor;
use jobq_shared::config::ConfigError;
#[cfg(feature = "aws-secrets")]
use jobq_shared::secrets::{SecretError, resolve_database_url, resolve_http_signing_secret, resolve_redis_url};
use jobq_shared::{Config, Jobs, Queue, Registry, Store};
use lambda_http::Request;

use crate::api_error::ApiError;

/// The environment variable that, when set, makes every HTTP route require `Authorization: Bearer <it>`.
pub const API_TOKEN_ENV: &str = "JOBQ_API_TOKEN";

/// The environment variable of a second token that reads (every `GET`, and bulk dry runs) but
/// cannot act: a create, cancel, requeue or bulk operation with it is a 403.
pub const READONLY_TOKEN_ENV: &str = "JOBQ_READONLY_TOKEN";

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[cfg(feature = "aws-secrets")]
    #[error("database secret")]
    Secret(#[from] SecretError),
    #[error("TLS settings")]
    Tls(#[from] jobq_shared::tls::TlsError),
    #[error("clients")]
    Clients(#[from] jobq_shared::Error),
}

pub struct Deps {
    pub config: Config,
    pub jobs: Jobs,
    /// The handlers the worker function runs.
    pub registry: Registry,
    api_token: Option<ApiToken>,
    readonly_token: Option<ApiToken>,
    /// How the audit log names a caller that presented the API token.
    token_principal: &'static str,
    /// Set once this instance has applied (or found applied) every migration.
    migrated: tokio::sync::OnceCell<()>,
}

/// The database and Redis URLs from their AWS Secrets Manager secrets, when those are set.
#[cfg(feature = "aws-secrets")]
async fn resolve_secrets(mut config: Config) -> Result<Config, InitError> {
    config.database_url = resolve_database_url(&config).await?;
    config.redis_url = resolve_redis_url(&config).await?;
    config.http.signing_secret = resolve_http_signing_secret(&config).await?;
    Ok(config)
}

/// Without the `aws-secrets` feature (a build that only parses requests, such as the fuzz
/// targets'), the URLs are the environment's as they are.
#[cfg(not(feature = "aws-secrets"))]
async fn resolve_secrets(config: Config) -> Result<Config, InitError> {
    Ok(config)
}

/// The schema owner's database URL: from the `DB_OWNER_SECRET_ARN` secret when set, else
/// `JOBQ_MIGRATION_DATABASE_URL`.
#[cfg(feature = "aws-secrets")]
async fn migration_database_url(config: &Config) -> Result<Option<String>, InitError> {
    Ok(jobq_shared::secrets::resolve_migration_database_url(config).await?)
}

/// Without the `aws-secrets` feature: `JOBQ_MIGRATION_DATABASE_URL` as it is.
#[cfg(not(feature = "aws-secrets"))]
async fn migration_database_url(config: &Config) -> Result<Option<String>, InitError> {
    Ok(config.migration_database_url.clone())
}

impl Deps {
    /// Reads the environment: configuration, the database URL (from the `DB_SECRET_ARN` secret
    /// when set) and `JOBQ_API_TOKEN`, and opens the connections, so that the first request finds them
    /// ready. A database that is down now does not stop the function from starting; requests then
    /// get 503.
    pub async fn from_env() -> Result<Deps, InitError> {
        let config = resolve_secrets(Config::from_env()?).await?;
        let token = std::env::var(API_TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
        let readonly = std::env::var(READONLY_TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
        let mut deps = Deps::from_config(config)?;
        deps.jobs.warm().await;
        if let Some(token) = token {
            deps = deps.with_api_token(token);
        }
        if let Some(token) = readonly {
            deps = deps.with_readonly_token(token);
        }
        Ok(deps)
    }

    /// [`Deps::from_env`] for the dashboard's function: its tokens are `JOBQ_DASHBOARD_TOKEN` (sees
    /// and acts) and `JOBQ_DASHBOARD_READONLY_TOKEN` (sees), not the API's; without either, the
    /// dashboard's API answers 403 (see [`crate::dashboard`]).
    pub async fn for_dashboard() -> Result<Deps, InitError> {
        let token = |name: &str| std::env::var(name).ok().filter(|t| !t.trim().is_empty());
        let mut deps = Deps::from_env().await?;
        deps.api_token = token(crate::dashboard::TOKEN_ENV).map(|t| ApiToken(t.trim().to_owned()));
        deps.readonly_token = token(crate::dashboard::READONLY_TOKEN_ENV).map(|t| ApiToken(t.trim().to_owned()));
        Ok(deps.with_token_principal("dashboard"))
    }

    /// Clients for `config`, with the built-in job handlers (`http` configured by `config.http`)
    /// and no API token.
    pub fn from_config(config: Config) -> Result<Deps, InitError> {
        let store = Store::connect(&config.database_url, config.pg_pool_size, config.pg_timeout)?;
        let queue = Queue::from_config(&config)?;
        let jobs = Jobs::new(store, queue, config.worker.default_timeout);
        let registry = Registry::builtins(&config.http);
        Ok(Deps {
            config,
            jobs,
            registry,
            api_token: None,
            readonly_token: None,
            token_principal: "api-token",
            migrated: tokio::sync::OnceCell::new(),
        })
    }

    /// Applies the migrations this code needs, once per instance, as the schema owner when
    /// `DB_OWNER_SECRET_ARN` (or `JOBQ_MIGRATION_DATABASE_URL`) names one. The worker function does
    /// this so that a deployment without the promoter container still gets its schema; several
    /// instances (and promoters) at once serialize on an advisory lock. A failure is returned and
    /// tried again at the next call.
    pub async fn migrate_once(&self) -> Result<(), InitError> {
        self.migrated
            .get_or_try_init(|| async {
                let owner = migration_database_url(&self.config).await?;
                match owner {
                    Some(url) => Store::connect(&url, 1, self.config.pg_timeout)?.migrate().await?,
                    None => self.jobs.store().migrate().await?,
                }
                tracing::info!("schema migrations applied");
                Ok::<(), InitError>(())
            })
            .await
            .map(|_| ())
    }

    /// Requires `Authorization: Bearer <token>` on every HTTP route.
    pub fn with_api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = Some(ApiToken(token.into().trim().to_owned()));
        self
    }

    /// Also accepts a read-only token: it may read, but [`Deps::authorize_action`] refuses it.
    /// With a read-only token and no API token, nothing can act.
    pub fn with_readonly_token(mut self, token: impl Into<String>) -> Self {
        self.readonly_token = Some(ApiToken(token.into().trim().to_owned()));
        self
    }

    /// Names callers with the API token `principal` in the audit log (`api-token` by default).
    pub fn with_token_principal(mut self, principal: &'static str) -> Self {
        self.token_principal = principal;
        self
    }

    /// Prints the jobs a request created as EMF lines (`JobsEnqueued` per queue), when
    /// `JOBQ_EMF_INTERVAL_MS` is set: CloudWatch Logs turns them into metrics.
    pub async fn log_enqueued<'a>(&self, created: impl IntoIterator<Item = &'a jobq_shared::store::Created>) {
        if self.config.maintenance.emf_interval.is_zero() {
            return;
        }
        let at = self.jobs.store().now().await;
        for document in jobq_shared::metrics::enqueued_emf(created, &self.config.namespace, at) {
            println!("{document}");
        }
    }

    /// Whether a token is required at all.
    pub fn requires_token(&self) -> bool {
        self.api_token.is_some() || self.readonly_token.is_some()
    }

    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Checks that the caller may read: when a token is configured, the bearer token must be the
    /// API token or the read-only one.
    pub fn authorize(&self, req: &Request) -> Result<(), ApiError> {
        self.access(req).map(|_| ())
    }

    /// Checks that the caller may act (create, cancel, requeue, bulk): when a token is configured,
    /// the bearer token must be the API token. The read-only token gets a 403.
    pub fn authorize_action(&self, req: &Request) -> Result<(), ApiError> {
        match self.access(req)? {
            Access::Full => Ok(()),
            Access::ReadOnly => Err(ApiError::Forbidden),
        }
    }

    fn access(&self, req: &Request) -> Result<Access, ApiError> {
        if !self.requires_token() {
            return Ok(Access::Full);
        }
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(token) = presented else {
            return Err(ApiError::Unauthorized);
        };
        // Both comparisons always run, so that the time taken does not tell which token matched.
        let full = self.api_token.as_ref().is_some_and(|t| t.matches(token));
        let readonly = self.readonly_token.as_ref().is_some_and(|t| t.matches(token));
        match (full, readonly) {
            (true, _) => Ok(Access::Full),
            (false, true) => Ok(Access::ReadOnly),
            (false, false) => Err(ApiError::Unauthorized),
        }
    }
}

/// What a presented token allows.
enum Access {
    Full,
    ReadOnly,
}

/// The header in which a caller names whom it acts for (a person behind the CLI or a page); kept
/// in the audit log next to the authenticated caller, not verified.
pub const ACTOR_HEADER: &str = "x-jobq-actor";

/// The longest name kept from [`ACTOR_HEADER`], in characters.
pub const MAX_ACTOR_LEN: usize = 100;

impl Deps {
    /// Who is asking, for the audit log: the IAM ARN API Gateway verified when the API uses IAM
    /// auth, else `api-token` when a token is required (and was checked), else `anonymous`; with
    /// the `X-Jobq-Actor` header as the name it gives, control characters removed and cut to
    /// [`MAX_ACTOR_LEN`] characters.
    pub fn actor(&self, req: &Request) -> Actor {
        use lambda_http::RequestExt;
        use lambda_http::request::RequestContext;
        let iam = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|authorizer| authorizer.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone()),
            _ => None,
        };
        let principal = iam.unwrap_or_else(|| {
            if self.requires_token() {
                self.token_principal
            } else {
                "anonymous"
            }
            .to_owned()
        });
        let on_behalf_of = req
            .headers()
            .get(ACTOR_HEADER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .map(|name| {
                name.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_ACTOR_LEN)
                    .collect::<String>()
                    .trim()
                    .to_owned()
            })
            .filter(|name| !name.is_empty());
        Actor {
            principal,
            on_behalf_of,
        }
    }
}

/// The API token; never printed.
struct ApiToken(String);

impl ApiToken {
    /// Compares in time that depends on the lengths only, not on where the first difference is.
    fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(std::hint::black_box(x ^ y));
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::ApiToken;

    #[test]
    fn tokens_match_only_when_equal() {
        let token = ApiToken("s3cret".into());
        assert!(token.matches("s3cret"));
        for other in ["", "s3cre", "s3cret!", "S3cret", "x3cret"] {
            assert!(!token.matches(other), "{other:?}");
        }
    }
}
