//! Least privilege in the database, with the SQL the README tells an operator to run
//! (docs/sql/roles.sql, docs/sql/grants.sql): the promoter migrates as the owner, the seed's flows
//! run as a role that can only read and write rows, and that role can change no schema.

mod support;

use std::time::{Duration, Instant};

use jobq_shared::{Queue, Store};
use support::seed::run_seed_flows;
use support::{ChildGuard, PrivatePostgres, PrivateRedis};

const ROLES_SQL: &str = include_str!("../../docs/sql/roles.sql");
const GRANTS_SQL: &str = include_str!("../../docs/sql/grants.sql");

/// Runs each statement of `sql` on its own, as psql -f does (CREATE DATABASE refuses to run in the
/// implicit transaction of a multi-statement query).
async fn run_file(url: &str, sql: &str) {
    let store = Store::connect(url, 1, Duration::from_secs(5)).expect("pool");
    let client = store.pool().get().await.expect("connect");
    let without_comments: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err:?}"));
    }
}

/// True once every migration of this build is applied (the promoter migrates one at a time: the
/// tables appear before the schema is complete).
async fn migrated(url: &str) -> bool {
    let Ok(store) = Store::connect(url, 1, Duration::from_secs(2)) else {
        return false;
    };
    let Ok(client) = store.pool().get().await else {
        return false;
    };
    client
        .query_one(
            "SELECT to_regclass('public.refinery_schema_history') IS NOT NULL
                    AND (SELECT max(version)::int8 FROM refinery_schema_history) = $1",
            &[&Store::schema_version()],
        )
        .await
        .ok()
        .and_then(|row| row.get::<_, Option<bool>>(0))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promoter_migrates_as_the_owner_and_the_app_role_runs_jobs_but_changes_no_schema() {
    let pg = PrivatePostgres::start_new();
    let redis = PrivateRedis::start_new();
    run_file(&pg.url("postgres"), ROLES_SQL).await;
    let owner = format!("postgres://jobq_owner@127.0.0.1:{}/jobq", pg.port());
    let app = format!("postgres://jobq_app@127.0.0.1:{}/jobq", pg.port());
    run_file(&owner, GRANTS_SQL).await;

    // The app role cannot migrate: it may not create anything.
    let err = Store::connect(&app, 1, Duration::from_secs(5))
        .expect("pool")
        .migrate()
        .await
        .expect_err("jobq_app must not create tables");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");

    // The promoter, given both URLs, migrates as the owner and runs as the app role.
    let mut promoter = std::process::Command::new(env!("CARGO_BIN_EXE_jobq-promoter"));
    promoter
        .env_clear()
        .env("DATABASE_URL", &app)
        .env("JOBQ_MIGRATION_DATABASE_URL", &owner)
        .env("REDIS_URL", redis.url())
        .env("JOBQ_NAMESPACE", "jobq-roles")
        .env("JOBQ_WORKER_CONCURRENCY", "0")
        .env("JOBQ_METRICS_ADDR", "off")
        .env("RUST_LOG", "warn");
    let mut promoter = ChildGuard::spawn(promoter);
    let give_up = Instant::now() + Duration::from_secs(30);
    while !migrated(&app).await {
        promoter.assert_running();
        assert!(Instant::now() < give_up, "the promoter did not migrate within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    promoter.assert_running();

    let store = Store::connect(&app, 4, Duration::from_secs(5)).expect("pool");
    let queue = Queue::connect(&redis.url(), "jobq-roles-test").expect("client");
    run_seed_flows(&store, &queue).await;

    let client = store.pool().get().await.expect("connect");
    for ddl in [
        "DROP TABLE jobs",
        "ALTER TABLE jobs ADD COLUMN x int",
        "TRUNCATE jobs",
        "CREATE TABLE intruder (id int)",
    ] {
        let err = client.batch_execute(ddl).await.expect_err(ddl);
        assert!(
            err.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{ddl}: {err:?}"
        );
    }
}
