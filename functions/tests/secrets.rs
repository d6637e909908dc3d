//! The database URL read from Secrets Manager, against a local moto server (installed into
//! `.venv-tools` by `scripts/tools.sh`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use jobq_functions::Deps;
use jobq_shared::secrets::{SECRET_ENV, SecretError, fetch_database_url, fetch_redis_url};
use jobq_shared::testing::TestEnv;
use jobq_shared::{Config, Store};
use serde_json::json;

/// A moto server on a free port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = repo.join(".venv-tools/bin/moto_server");
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/tools.sh to install the test tools (moto's server)",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}; run scripts/tools.sh", binary.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start ({status}); run scripts/tools.sh");
            }
            assert!(
                Instant::now() < give_up,
                "moto_server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn client(&self) -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .build();
        Client::from_conf(config)
    }

    /// Creates a secret and returns its ARN.
    async fn secret(&self, name: &str, value: &serde_json::Value) -> String {
        let created = self
            .client()
            .create_secret()
            .name(name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("create secret");
        created.arn().expect("arn").to_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn current_database(url: &str) -> String {
    let store = Store::connect(url, 1, Duration::from_secs(5)).expect("pool");
    let client = store.pool().get().await.expect("connect with the secret's url");
    client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query")
        .get(0)
}

fn rds_secret(database: &str) -> serde_json::Value {
    json!({
        "username": "postgres", "password": "p@ss:w/rd?#% é", "engine": "postgres",
        "host": "127.0.0.1", "port": 5432, "dbname": database, "dbInstanceIdentifier": "jobq"
    })
}

#[tokio::test]
async fn a_database_url_is_read_from_a_secret_by_name_or_arn_and_connects() {
    let env = TestEnv::new().await;
    let moto = Moto::start();
    let arn = moto.secret("jobq/db", &rds_secret(env.database())).await;

    for id in ["jobq/db", arn.as_str()] {
        let url = fetch_database_url(&moto.client(), id).await.expect("resolved");
        assert!(
            url.contains("p%40ss%3Aw%2Frd%3F%23%25%20%C3%A9@127.0.0.1:5432/"),
            "{url}"
        );
        assert_eq!(current_database(&url).await, env.database());
    }
}

#[tokio::test]
async fn a_redis_auth_token_or_acl_user_is_read_from_a_secret_into_the_redis_url() {
    let moto = Moto::start();
    moto.secret("jobq/redis-token", &json!({"authToken": "tok:en/1"})).await;
    let acl = moto
        .secret("jobq/redis-acl", &json!({"username": "jobq", "password": "pw@2"}))
        .await;
    moto.secret("jobq/redis-empty", &json!({"username": "jobq"})).await;

    let url = fetch_redis_url(&moto.client(), "jobq/redis-token", "rediss://cache.internal:6379")
        .await
        .expect("token");
    assert_eq!(url, "rediss://:tok%3Aen%2F1@cache.internal:6379");
    let url = fetch_redis_url(&moto.client(), &acl, "rediss://cache.internal:6379")
        .await
        .expect("acl user");
    assert_eq!(url, "rediss://jobq:pw%402@cache.internal:6379");
    match fetch_redis_url(&moto.client(), "jobq/redis-empty", "rediss://cache.internal:6379").await {
        Err(err @ SecretError::MissingField { field: "password", .. }) => {
            assert!(err.to_string().contains("jobq/redis-empty"), "{err}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_secret_without_a_field_or_a_missing_secret_is_an_error_that_names_it() {
    let moto = Moto::start();
    let mut no_host = rds_secret("jobq");
    no_host.as_object_mut().expect("object").remove("host");
    moto.secret("no-host", &no_host).await;
    moto.secret("not-json", &json!("just text")).await;

    match fetch_database_url(&moto.client(), "no-host").await {
        Err(err @ SecretError::MissingField { field: "host", .. }) => assert!(err.to_string().contains("no-host")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fetch_database_url(&moto.client(), "not-json").await,
        Err(SecretError::BadJson { .. })
    ));
    match fetch_database_url(&moto.client(), "does-not-exist").await {
        Err(err @ SecretError::Fetch { .. }) => assert!(err.to_string().contains("does-not-exist")),
        other => panic!("{other:?}"),
    }
}

/// A cold start reads `DB_SECRET_ARN` and the SDK's usual environment. The variables are set on
/// a child process (this test binary again, running the ignored test below): a test cannot set
/// them on its own process.
#[tokio::test]
async fn a_cold_start_with_db_secret_arn_uses_the_secret_over_database_url() {
    let env = TestEnv::new().await;
    let moto = Moto::start();
    let arn = moto.secret("jobq/cold-start", &rds_secret(env.database())).await;

    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "cold_start_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SECRET_ENV, &arn)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/wrong")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("JOBQ_EXPECT_DATABASE", env.database())
        .output()
        .expect("run the child");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run by the test above with the environment it sets; does nothing on its own.
#[tokio::test]
#[ignore = "a child of a_cold_start_with_db_secret_arn_uses_the_secret_over_database_url"]
async fn cold_start_child() {
    let Ok(expected) = std::env::var("JOBQ_EXPECT_DATABASE") else {
        return;
    };
    let deps = Deps::from_env().await.expect("cold start");
    assert_ne!(
        deps.config.database_url,
        Config::from_env().expect("config").database_url
    );
    let client = deps.jobs.store().pool().get().await.expect("connect");
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(database, expected);
}
