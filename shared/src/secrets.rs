//! Credentials from AWS Secrets Manager. A deployment keeps the Postgres credentials in an
//! RDS-style secret (`{"username", "password", "host", "port", "dbname", "engine"}`) and names it
//! with `DB_SECRET_ARN`; without that variable the configured `DATABASE_URL` is used as it is.
//! The Redis AUTH token (ElastiCache) or ACL user and password live in a secret named by
//! `REDIS_SECRET_ARN` (`{"password": ...}` or `{"authToken": ...}`, with an optional `"username"`),
//! put into `REDIS_URL`. The `http` job's signing key lives in the secret named by
//! `JOBQ_HTTP_SIGNING_SECRET_ARN` (its text, or `{"secret": ...}`).
//! Only with the `aws-secrets` feature, so that binaries without it do not link the AWS SDK.

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;

use crate::config::Config;
use crate::http_job::SigningSecret;

/// The environment variable that names the secret (an ARN or a name).
pub const SECRET_ENV: &str = "DB_SECRET_ARN";
/// The environment variable that names the schema owner's secret, for migrations.
pub const OWNER_SECRET_ENV: &str = "DB_OWNER_SECRET_ARN";
/// The environment variable that names the Redis credentials' secret.
pub const REDIS_SECRET_ENV: &str = "REDIS_SECRET_ARN";
/// The environment variable that names the `http` job's signing secret.
pub const HTTP_SIGNING_SECRET_ENV: &str = "JOBQ_HTTP_SIGNING_SECRET_ARN";

/// Why the database URL could not be read from a secret. Each names the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {secret:?} could not be read from Secrets Manager")]
    Fetch {
        secret: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
    #[error("secret {secret:?} has no string value (binary secrets are not supported)")]
    NotText { secret: String },
    #[error("secret {secret:?} is not a JSON object with the credentials")]
    BadJson {
        secret: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("secret {secret:?} has no {field:?} field")]
    MissingField { secret: String, field: &'static str },
    #[error("secret {secret:?}: field {field:?} {problem}")]
    BadField {
        secret: String,
        field: &'static str,
        problem: String,
    },
}

fn secret_name(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

async fn sdk_client() -> Client {
    // Region, credentials and endpoint (AWS_ENDPOINT_URL_SECRETS_MANAGER) from the environment.
    Client::new(&aws_config::defaults(BehaviorVersion::latest()).load().await)
}

/// The URL to run migrations with: from the `DB_OWNER_SECRET_ARN` secret when set, else
/// `JOBQ_MIGRATION_DATABASE_URL`; `None` when neither is set (migrations then use the database URL).
pub async fn resolve_migration_database_url(config: &Config) -> Result<Option<String>, SecretError> {
    match secret_name(OWNER_SECRET_ENV) {
        None => Ok(config.migration_database_url.clone()),
        Some(secret) => Ok(Some(
            config.with_pg_tls(&fetch_database_url(&sdk_client().await, &secret).await?),
        )),
    }
}

/// `REDIS_SECRET_ARN` when set: `config.redis_url` with the secret's credentials in it. Otherwise
/// `config.redis_url`.
pub async fn resolve_redis_url(config: &Config) -> Result<String, SecretError> {
    match secret_name(REDIS_SECRET_ENV) {
        None => Ok(config.redis_url.clone()),
        Some(secret) => fetch_redis_url(&sdk_client().await, &secret, &config.redis_url).await,
    }
}

/// Reads `secret` with `client` and puts its credentials into `redis_url`.
pub async fn fetch_redis_url(client: &Client, secret: &str, redis_url: &str) -> Result<String, SecretError> {
    let text = fetch_text(client, secret).await?;
    redis_url_from_secret(secret, &text, redis_url)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedisSecret {
    username: Option<String>,
    password: Option<String>,
    auth_token: Option<String>,
}

/// `redis_url` with the user (when the secret has one) and the password or AUTH token of the
/// secret named `secret`, replacing any credentials the URL had.
pub fn redis_url_from_secret(secret: &str, text: &str, redis_url: &str) -> Result<String, SecretError> {
    let parsed: RedisSecret = serde_json::from_str(text).map_err(|source| SecretError::BadJson {
        secret: secret.to_owned(),
        source,
    })?;
    let password = parsed
        .password
        .or(parsed.auth_token)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| SecretError::MissingField {
            secret: secret.to_owned(),
            field: "password",
        })?;
    let user = parsed.username.as_deref().map(encode).unwrap_or_default();
    // A cluster's nodes (`REDIS_CLUSTER`) are listed with commas: each gets the credentials.
    let urls: Vec<String> = redis_url
        .split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
            let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
            format!("{scheme}://{user}:{}@{rest}", encode(&password))
        })
        .collect();
    Ok(urls.join(","))
}

/// `JOBQ_HTTP_SIGNING_SECRET_ARN` when set: the `http` job's signing secret read from it.
/// Otherwise `config.http.signing_secret` (`JOBQ_HTTP_SIGNING_SECRET`).
pub async fn resolve_http_signing_secret(config: &Config) -> Result<Option<SigningSecret>, SecretError> {
    match secret_name(HTTP_SIGNING_SECRET_ENV) {
        None => Ok(config.http.signing_secret.clone()),
        Some(secret) => {
            let text = fetch_text(&sdk_client().await, &secret).await?;
            signing_secret_from_secret(&secret, &text).map(Some)
        }
    }
}

#[derive(Deserialize)]
struct SigningSecretJson {
    secret: Option<String>,
}

/// The signing key in the text of the secret named `secret`: the text itself, or the `"secret"`
/// field of a JSON object (the console's key/value form).
pub fn signing_secret_from_secret(secret: &str, text: &str) -> Result<SigningSecret, SecretError> {
    let key = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => serde_json::from_str::<SigningSecretJson>(text)
            .map_err(|source| SecretError::BadJson {
                secret: secret.to_owned(),
                source,
            })?
            .secret
            .ok_or_else(|| SecretError::MissingField {
                secret: secret.to_owned(),
                field: "secret",
            })?,
        _ => text.trim().to_owned(),
    };
    SigningSecret::new(key).ok_or_else(|| SecretError::BadField {
        secret: secret.to_owned(),
        field: "secret",
        problem: "is empty".to_owned(),
    })
}

/// `DB_SECRET_ARN` when set: the database URL built from that secret, with `PGSSLMODE` /
/// `PGSSLROOTCERT` applied. Otherwise `config.database_url`.
pub async fn resolve_database_url(config: &Config) -> Result<String, SecretError> {
    match secret_name(SECRET_ENV) {
        None => Ok(config.database_url.clone()),
        // The secret's host is the URL's host, so verify-full checks the certificate against it.
        Some(secret) => Ok(config.with_pg_tls(&fetch_database_url(&sdk_client().await, &secret).await?)),
    }
}

/// Reads `secret` (an ARN or a name) with `client` and builds the database URL from it.
pub async fn fetch_database_url(client: &Client, secret: &str) -> Result<String, SecretError> {
    let text = fetch_text(client, secret).await?;
    database_url_from_secret(secret, &text)
}

async fn fetch_text(client: &Client, secret: &str) -> Result<String, SecretError> {
    let output = client
        .get_secret_value()
        .secret_id(secret)
        .send()
        .await
        .map_err(|err| SecretError::Fetch {
            secret: secret.to_owned(),
            source: Box::new(err.into()),
        })?;
    output
        .secret_string()
        .map(str::to_owned)
        .ok_or_else(|| SecretError::NotText {
            secret: secret.to_owned(),
        })
}

/// The RDS secret layout. Unknown fields (`dbInstanceIdentifier`, ...) are ignored.
#[derive(Deserialize)]
struct RdsSecret {
    username: Option<String>,
    password: Option<String>,
    host: Option<String>,
    port: Option<serde_json::Value>,
    dbname: Option<String>,
    engine: Option<String>,
}

/// Builds a `postgres://` URL from the text of an RDS-style secret named `secret`. The user name,
/// password and database name are percent-encoded; `port` may be a number or a string (5432 when
/// absent); `engine`, when given, must be a Postgres engine.
pub fn database_url_from_secret(secret: &str, text: &str) -> Result<String, SecretError> {
    let parsed: RdsSecret = serde_json::from_str(text).map_err(|source| SecretError::BadJson {
        secret: secret.to_owned(),
        source,
    })?;
    let missing = |field| SecretError::MissingField {
        secret: secret.to_owned(),
        field,
    };
    let bad = |field, problem: &str| SecretError::BadField {
        secret: secret.to_owned(),
        field,
        problem: problem.to_owned(),
    };
    if let Some(engine) = &parsed.engine
        && !engine.to_ascii_lowercase().contains("postgres")
    {
        return Err(bad("engine", &format!("is {engine:?}, not a Postgres engine")));
    }
    let username = parsed
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing("username"))?;
    let password = parsed.password.ok_or_else(|| missing("password"))?;
    let host = parsed
        .host
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| missing("host"))?;
    let dbname = parsed
        .dbname
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("dbname"))?;
    let port: u16 = match parsed.port {
        None | Some(serde_json::Value::Null) => 5432,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p > 0)
            .ok_or_else(|| bad("port", "is not a port number"))?,
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse()
            .ok()
            .filter(|&p: &u16| p > 0)
            .ok_or_else(|| bad("port", "is not a port number"))?,
        Some(_) => return Err(bad("port", "must be a number or a string")),
    };
    // An IPv6 address needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!(
        "postgres://{}:{}@{host}:{port}/{}",
        encode(&username),
        encode(&password),
        encode(&dbname)
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(secret: serde_json::Value) -> Result<String, SecretError> {
        database_url_from_secret("db", &secret.to_string())
    }

    #[test]
    fn an_rds_secret_becomes_a_url_that_postgres_parses_back() {
        let url = url(json!({
            "username": "app user", "password": "p@ss:w/rd?#%", "engine": "postgres",
            "host": "db.example.internal", "port": 6543, "dbname": "jobs/prod",
            "dbInstanceIdentifier": "jobq"
        }))
        .expect("valid secret");
        let parsed: tokio_postgres::Config = url.parse().expect("postgres parses the url");
        assert_eq!(parsed.get_user(), Some("app user"));
        assert_eq!(parsed.get_password(), Some("p@ss:w/rd?#%".as_bytes()));
        assert_eq!(parsed.get_dbname(), Some("jobs/prod"));
        assert_eq!(parsed.get_ports(), &[6543]);
        assert!(matches!(&parsed.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "db.example.internal"));
    }

    #[test]
    fn the_port_may_be_a_string_or_absent() {
        let base = json!({"username": "u", "password": "p", "host": "h", "dbname": "d"});
        assert_eq!(url(base.clone()).expect("no port"), "postgres://u:p@h:5432/d");
        let mut with_text = base;
        with_text["port"] = json!("5433");
        assert_eq!(url(with_text).expect("text port"), "postgres://u:p@h:5433/d");
    }

    #[test]
    fn redis_credentials_replace_those_of_the_url() {
        let token = json!({"authToken": "t0k/en+"}).to_string();
        assert_eq!(
            redis_url_from_secret("r", &token, "rediss://old:pw@cache.example:6379").expect("token"),
            "rediss://:t0k%2Fen%2B@cache.example:6379"
        );
        let acl = json!({"username": "jobq", "password": "p@ss"}).to_string();
        let url = redis_url_from_secret("r", &acl, "rediss://cache.example:6379/0").expect("acl");
        assert_eq!(url, "rediss://jobq:p%40ss@cache.example:6379/0");
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("redis parses it");
        assert_eq!(info.redis_settings().username(), Some("jobq"));
        assert_eq!(info.redis_settings().password(), Some("p@ss"));
        // Every node of a cluster's list.
        assert_eq!(
            redis_url_from_secret("r", &acl, "rediss://a:1, rediss://x:y@b:2").expect("acl"),
            "rediss://jobq:p%40ss@a:1,rediss://jobq:p%40ss@b:2"
        );
        match redis_url_from_secret("r", "{}", "rediss://h") {
            Err(SecretError::MissingField { field, .. }) => assert_eq!(field, "password"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_signing_secret_is_the_text_or_its_secret_field() {
        let plain = signing_secret_from_secret("s", "whsec_abc\n").expect("plain");
        assert_eq!(Some(plain), SigningSecret::new("whsec_abc"));
        let json = signing_secret_from_secret("s", r#"{"secret": "whsec_j"}"#).expect("json");
        assert_eq!(Some(json), SigningSecret::new("whsec_j"));
        assert!(matches!(
            signing_secret_from_secret("s", r#"{"other": 1}"#),
            Err(SecretError::MissingField { field: "secret", .. })
        ));
        assert!(matches!(
            signing_secret_from_secret("s", "  "),
            Err(SecretError::BadField { .. })
        ));
    }

    #[test]
    fn an_ipv6_host_is_bracketed() {
        let url = url(json!({"username": "u", "password": "p", "host": "::1", "dbname": "d"})).expect("valid");
        assert_eq!(url, "postgres://u:p@[::1]:5432/d");
        let parsed: tokio_postgres::Config = url.parse().expect("parses");
        assert_eq!(parsed.get_ports(), &[5432]);
    }

    #[test]
    fn each_problem_names_its_field() {
        let full = json!({"username": "u", "password": "p", "host": "h", "port": 5432, "dbname": "d"});
        for field in ["username", "password", "host", "dbname"] {
            let mut secret = full.clone();
            secret.as_object_mut().expect("object").remove(field);
            match url(secret) {
                Err(SecretError::MissingField { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        for (field, value) in [
            ("port", json!(70000)),
            ("port", json!("x")),
            ("port", json!([1])),
            ("engine", json!("mysql")),
        ] {
            let mut secret = full.clone();
            secret[field] = value;
            match url(secret) {
                Err(SecretError::BadField { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(
            database_url_from_secret("db", "not json"),
            Err(SecretError::BadJson { .. })
        ));
        assert!(matches!(
            database_url_from_secret("db", "[1]"),
            Err(SecretError::BadJson { .. })
        ));
    }
}
