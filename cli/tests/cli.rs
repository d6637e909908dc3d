//! The `jobq` binary against the real API: every HTTP route served in this process
//! (`jobq-local-api`) over a fresh Postgres database and Redis namespace, and `jobq` run as a child
//! process, as a person or a script runs it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jobq_functions::Deps;
use jobq_shared::bulk::Operations;
use jobq_shared::job::Outcome;
use jobq_shared::store::AfterFailure;
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob, Status, Store};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

/// The API over a test environment, served until dropped.
struct Api {
    env: TestEnv,
    url: String,
    server: AbortHandle,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    async fn start() -> Api {
        Api::start_with(|deps| deps).await
    }

    /// `adjust` gets the functions' dependencies before they serve (to require a token, say).
    async fn start_with(adjust: impl FnOnce(Deps) -> Deps) -> Api {
        let env = TestEnv::new().await;
        let deps = Deps::from_config(env.config.clone()).expect("deps");
        let (url, server) = serve(adjust(deps)).await;
        Api { env, url, server }
    }

    /// `jobq --url <this API> args...`.
    fn jobq(&self, args: &[&str]) -> Command {
        jobq(&self.url, args)
    }

    /// Runs `jobq args...` to its end.
    async fn run(&self, args: &[&str]) -> Ran {
        run(self.jobq(args)).await
    }

    async fn status(&self, id: JobId) -> Status {
        self.env.jobs.get(id).await.expect("job").status
    }

    /// Creates a job and fails its first attempt for good, so that it is dead (in the DLQ).
    async fn dead_job(&self, new: NewJob) -> JobId {
        let env = &self.env;
        let now = env.store.now().await;
        let id = env.create_job_at(new, now).await;
        let lease = env.claim_job(id, "worker-7", now, Duration::from_secs(30)).await;
        let after = env
            .store
            .fail(&lease, now, "smtp timed out", false, now, Outcome::Failed)
            .await
            .expect("fail");
        assert!(matches!(after, AfterFailure::Dead));
        id
    }

    async fn completed_job(&self, new: NewJob) -> JobId {
        let env = &self.env;
        let now = env.store.now().await;
        let id = env.create_job_at(new, now).await;
        let lease = env.claim_job(id, "worker-7", now, Duration::from_secs(30)).await;
        env.store.complete(&lease, now).await.expect("complete");
        id
    }
}

/// What a finished `jobq` printed, and how it exited.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    #[track_caller]
    fn succeeded(self) -> Ran {
        assert_eq!(self.code, Some(0), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    fn failed(self) -> Ran {
        assert_eq!(self.code, Some(1), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(
            self.stdout.is_empty(),
            "a failure prints nothing on stdout: {}",
            self.stdout
        );
        self
    }

    /// A command line refused before any request, as clap refuses one: exit status 2.
    #[track_caller]
    fn refused(self) -> Ran {
        assert_eq!(self.code, Some(2), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(
            self.stdout.is_empty(),
            "a refusal prints nothing on stdout: {}",
            self.stdout
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.stdout))
    }
}

impl From<Output> for Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Serves every route over `deps` on a free port; returns its URL and how to stop it.
async fn serve(deps: Deps) -> (String, AbortHandle) {
    // The server runs until the test ends; its dependencies live as long as the process.
    let deps: &'static Deps = Box::leak(Box::new(deps));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(jobq_local_api::serve(listener, deps));
    (url, server.abort_handle())
}

/// `jobq --url url args...`, with none of jobq's variables from the environment.
fn jobq(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobq"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("JOBQ_URL")
        .env_remove("JOBQ_API_TOKEN")
        .env_remove("JOBQ_ACTOR");
    command
}

/// Runs `command` on a blocking thread, so that the server in this process goes on answering it.
async fn run(mut command: Command) -> Ran {
    tokio::task::spawn_blocking(move || command.output().expect("run jobq"))
        .await
        .expect("join")
        .into()
}

/// The value of the field `name` in a field list (`queues show`), as printed.
#[track_caller]
fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no field {name:?} in {text}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["jobId"].as_str().expect("jobId").to_owned())
        .collect()
}

/// The first audit entry (the newest), as `jobq audit ls --json` prints it.
async fn newest_audit_entry(api: &Api) -> Value {
    let audit = api.run(&["audit", "ls", "--json"]).await.succeeded().json();
    audit["items"][0].clone()
}

#[tokio::test]
async fn jobs_ls_lists_the_jobs_that_match_as_json_and_as_a_table_a_page_at_a_time() {
    let api = Api::start().await;
    let mut emails = Vec::new();
    for user in 1..=3 {
        let new = NewJob::new("TEST", json!({"userId": user})).queue("emails");
        emails.push(api.env.create_job(new).await.to_string());
    }
    let report = api
        .env
        .create_job(NewJob::new("TEST", json!({})).queue("reports"))
        .await;
    emails.reverse(); // newest first

    let listed = api
        .run(&["jobs", "ls", "--json", "--queue", "emails"])
        .await
        .succeeded();
    assert_eq!(ids(&listed.json()), emails);
    assert_eq!(listed.json()["nextCursor"], Value::Null);

    let by_payload = api
        .run(&["jobs", "ls", "--json", "--payload", r#"{"userId":2}"#])
        .await
        .succeeded();
    assert_eq!(ids(&by_payload.json()), [emails[1].clone()]);

    // The status is the API's name, in any case.
    let pending = api
        .run(&["jobs", "ls", "--json", "--status", "pending"])
        .await
        .succeeded();
    assert_eq!(ids(&pending.json()).len(), 4);
    let running = api
        .run(&["jobs", "ls", "--json", "--status", "in_progress"])
        .await
        .succeeded();
    assert_eq!(ids(&running.json()).len(), 0);

    let first = api
        .run(&["jobs", "ls", "--queue", "emails", "--limit", "2"])
        .await
        .succeeded();
    for header in ["id", "type", "queue", "status", "attempts", "created", "last error"] {
        assert!(first.stdout.contains(header), "{}", first.stdout);
    }
    assert!(first.stdout.contains(&emails[0]) && first.stdout.contains(&emails[1]));
    assert!(!first.stdout.contains(&emails[2]), "{}", first.stdout);
    assert!(!first.stdout.contains(&report.to_string()), "{}", first.stdout);
    assert!(first.stdout.contains("PENDING") && first.stdout.contains("0/3"));
    let cursor = first
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("next page: --cursor "))
        .unwrap_or_else(|| panic!("no next cursor: {}", first.stdout));

    let second = api
        .run(&["jobs", "ls", "--queue", "emails", "--limit", "2", "--cursor", cursor])
        .await
        .succeeded();
    assert!(second.stdout.contains(&emails[2]), "{}", second.stdout);
    assert!(!second.stdout.contains("next page"), "{}", second.stdout);

    let none = api.run(&["jobs", "ls", "--queue", "nothing-here"]).await.succeeded();
    assert_eq!(none.stdout, "no jobs\n");
}

#[tokio::test]
async fn jobs_show_prints_the_fields_and_the_attempt_timeline() {
    let api = Api::start().await;
    let id = api
        .dead_job(NewJob::new("TEST", json!({"to": "a@example.com"})).queue("emails"))
        .await
        .to_string();

    let shown = api.run(&["jobs", "show", &id]).await.succeeded();

    for expected in [
        id.as_str(),
        "emails",
        "FAILED",
        "1 of 3",
        "smtp timed out",
        "\"to\": \"a@example.com\"",
        "worker-7",
    ] {
        assert!(shown.stdout.contains(expected), "{expected:?} in {}", shown.stdout);
    }
    let as_json = api.run(&["jobs", "show", &id, "--json"]).await.succeeded().json();
    assert_eq!(as_json["jobId"], id.as_str());
    assert_eq!(as_json["history"][0]["workerId"], "worker-7");

    let unknown = api
        .run(&["jobs", "show", "0193c4f0-0000-7000-8000-000000000000"])
        .await
        .failed();
    assert!(unknown.stderr.contains("(HTTP 404, not_found)"), "{}", unknown.stderr);
}

#[tokio::test]
async fn jobs_cancel_cancels_a_pending_job_and_names_who_asked() {
    let api = Api::start().await;
    let id = api.env.create_job(NewJob::new("TEST", json!({}))).await;

    let cancelled = api
        .run(&["jobs", "cancel", &id.to_string(), "--actor", "bob"])
        .await
        .succeeded();

    assert_eq!(cancelled.stdout, format!("cancelled job {id} (CANCELLED)\n"));
    assert_eq!(api.status(id).await, Status::Cancelled);
    let entry = newest_audit_entry(&api).await;
    assert_eq!(entry["action"], "job.cancel");
    assert_eq!(entry["jobId"], id.to_string());
    assert_eq!(entry["onBehalfOf"], "bob");

    // A finished job cannot be cancelled: the API's message, and exit status 1.
    let again = api.run(&["jobs", "cancel", &id.to_string()]).await.failed();
    assert!(again.stderr.starts_with("jobq: "), "{}", again.stderr);
    assert!(again.stderr.contains("(HTTP 409, not_cancellable)"), "{}", again.stderr);

    // Without --actor, the audit log names the user at this machine.
    let other = api.env.create_job(NewJob::new("TEST", json!({}))).await;
    let mut command = api.jobq(&["jobs", "cancel", &other.to_string()]);
    command.env("USER", "carol");
    run(command).await.succeeded();
    let entry = newest_audit_entry(&api).await;
    assert_eq!(entry["jobId"], other.to_string());
    let on_behalf_of = entry["onBehalfOf"].as_str().expect("onBehalfOf");
    assert!(on_behalf_of.starts_with("carol@") && on_behalf_of.len() > "carol@".len());
}

#[tokio::test]
async fn dlq_requeue_all_counts_in_a_dry_run_then_requeues_the_matching_dead_jobs() {
    let api = Api::start().await;
    let mut tenant_one = Vec::new();
    for n in 0..3 {
        tenant_one.push(api.dead_job(NewJob::new("TEST", json!({"tenant": 1, "n": n}))).await);
    }
    let tenant_two = api.dead_job(NewJob::new("TEST", json!({"tenant": 2}))).await;
    let alive = api.env.create_job(NewJob::new("TEST", json!({"tenant": 1}))).await;

    let dead = api.run(&["dlq", "ls", "--json"]).await.succeeded();
    assert_eq!(ids(&dead.json()).len(), 4);
    let table = api.run(&["dlq", "ls"]).await.succeeded();
    assert!(table.stdout.contains(&tenant_two.to_string()), "{}", table.stdout);
    assert!(table.stdout.contains("smtp timed out"), "{}", table.stdout);

    let filter = ["--payload", r#"{"tenant":1}"#];
    let dry_run = api
        .run(&[&["dlq", "requeue", "--all", "--dry-run"], &filter[..]].concat())
        .await
        .succeeded();
    assert_eq!(
        dry_run.stdout,
        "3 dead jobs would be requeued (dry run: nothing changed)\n"
    );
    let dry_json = api
        .run(&[&["dlq", "requeue", "--all", "--dry-run", "--json"], &filter[..]].concat())
        .await
        .succeeded()
        .json();
    assert_eq!(
        (dry_json["count"].clone(), dry_json["dryRun"].clone()),
        (json!(3), json!(true))
    );
    assert_eq!(
        api.env.count_jobs(Some(Status::Failed)).await,
        4,
        "a dry run changes nothing"
    );

    let requeued = api
        .run(&[&["dlq", "requeue", "--all", "--actor", "alice@laptop"], &filter[..]].concat())
        .await
        .succeeded();

    assert!(
        requeued.stdout.starts_with("requeued 3 dead jobs (0 skipped"),
        "{}",
        requeued.stdout
    );
    for id in &tenant_one {
        assert_eq!(api.status(*id).await, Status::Pending);
    }
    assert_eq!(api.status(tenant_two).await, Status::Failed);
    assert_eq!(api.status(alive).await, Status::Pending);

    let audit = api.run(&["audit", "ls", "--json"]).await.succeeded().json();
    let bulk: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|entry| entry["action"] == "bulk.requeue")
        .collect();
    assert_eq!(bulk.len(), 1, "dry runs are not logged: {audit}");
    assert_eq!(bulk[0]["onBehalfOf"], "alice@laptop");
    assert_eq!(bulk[0]["count"], 3);
    assert_eq!(bulk[0]["filter"]["status"], "FAILED");
    assert_eq!(bulk[0]["filter"]["payload"], json!({"tenant": 1}));
    let table = api.run(&["audit", "ls"]).await.succeeded();
    assert!(
        table.stdout.contains("bulk.requeue") && table.stdout.contains("alice@laptop"),
        "{}",
        table.stdout
    );
}

/// A bulk operation that its request does not finish is followed until it is done: here its first
/// batch waits on a row lock past the server's statement timeout, so the API answers 202 with
/// the operation `RUNNING`, and a processor like the promoter's finishes it once the lock goes.
#[tokio::test]
async fn dlq_requeue_all_follows_a_running_operation_to_its_end() {
    let api = Api::start().await;
    // A server whose statements give up after a second (half its client timeout): the first batch
    // does, on the locked row.
    let mut config = api.env.config.clone();
    config.pg_timeout = Duration::from_secs(2);
    let (url, server) = serve(Deps::from_config(config).expect("deps")).await;
    let mut dead = Vec::new();
    for n in 0..3 {
        dead.push(api.dead_job(NewJob::new("TEST", json!({"n": n}))).await);
    }
    let locker = Store::connect(&api.env.config.database_url, 1, Duration::from_secs(60)).expect("pool");
    let lock = locker.pool().get().await.expect("connection");
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM jobs WHERE id = '{}' FOR UPDATE",
        dead[0]
    ))
    .await
    .expect("lock a dead job");

    let cli = tokio::spawn(run(jobq(&url, &["dlq", "requeue", "--all"])));
    let store = api.env.store.pool().get().await.expect("connection");
    let started = tokio::time::Instant::now();
    while store
        .query("SELECT 1 FROM operations", &[])
        .await
        .expect("operations")
        .is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no operation was started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the statement timeout: the request has given up its batch and answered RUNNING.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running: String = store
        .query_one("SELECT state FROM operations", &[])
        .await
        .expect("operation")
        .get(0);
    assert_eq!(running, "RUNNING");
    lock.batch_execute("ROLLBACK").await.expect("unlock");
    let operations = Operations::new(api.env.store.clone(), api.env.queue.clone());
    let processor = tokio::spawn(async move {
        loop {
            let _ = operations.run_once(Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let ran = cli.await.expect("join");
    processor.abort();
    server.abort();

    let ran = ran.succeeded();
    assert!(
        ran.stdout.starts_with("requeued 3 dead jobs (0 skipped"),
        "{}",
        ran.stdout
    );
    for id in dead {
        assert_eq!(api.status(id).await, Status::Pending);
    }
}

#[tokio::test]
async fn dlq_requeue_requeues_one_dead_job_and_refuses_a_live_one() {
    let api = Api::start().await;
    let id = api.dead_job(NewJob::new("TEST", json!({}))).await.to_string();

    let requeued = api.run(&["dlq", "requeue", &id]).await.succeeded();

    assert_eq!(requeued.stdout, format!("requeued job {id} (PENDING, 0/3 attempts)\n"));
    assert_eq!(api.status(id.parse().expect("id")).await, Status::Pending);
    let again = api.run(&["dlq", "requeue", &id]).await.failed();
    assert!(again.stderr.contains("(HTTP 409"), "{}", again.stderr);
}

#[tokio::test]
async fn queues_ls_prints_a_table_of_every_queue() {
    let api = Api::start().await;
    api.env
        .create_job(NewJob::new("TEST", json!({})).queue("reports"))
        .await;
    api.dead_job(NewJob::new("TEST", json!({})).queue("reports")).await;
    api.completed_job(NewJob::new("TEST", json!({})).queue("thumbnails"))
        .await;

    let table = api.run(&["queues", "ls"]).await.succeeded();

    for expected in ["queue", "pending", "oldest pending", "dlq", "reports", "thumbnails"] {
        assert!(table.stdout.contains(expected), "{expected:?} in {}", table.stdout);
    }
    let reports = table
        .stdout
        .lines()
        .find(|line| line.contains("reports"))
        .expect("a row for reports");
    // pending, blocked, running, completed, dead, cancelled, ready, age, dlq depth,
    // completed/retried/dead.
    let cells: Vec<&str> = reports.split_whitespace().collect();
    assert_eq!(&cells[..7], ["reports", "1", "0", "0", "0", "1", "0"], "{reports}");
    let listed = api.run(&["queues", "ls", "--json"]).await.succeeded().json();
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|queue| queue["name"].as_str())
        .collect();
    assert_eq!(names, ["reports", "thumbnails"]);

    let shown = api.run(&["queues", "show", "thumbnails"]).await.succeeded();
    assert!(shown.stdout.contains("thumbnails"), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains("1 completed, 0 retried, 0 dead, 0 cancelled in the last 15 minutes"),
        "{}",
        shown.stdout
    );
}

#[tokio::test]
async fn queues_pause_resume_and_limit_change_the_queues_settings() {
    let api = Api::start().await;
    api.env
        .create_job(NewJob::new("TEST", json!({})).queue("reports"))
        .await;

    let limited = api.run(&["queues", "limit", "reports", "2"]).await.succeeded();
    assert!(
        limited.stdout.contains("queue reports runs at most 2 jobs at once"),
        "{}",
        limited.stdout
    );
    api.run(&["queues", "pause", "reports"]).await.succeeded();
    let table = api.run(&["queues", "ls"]).await.succeeded();
    assert!(table.stdout.contains("reports (paused) (max 2)"), "{}", table.stdout);
    let shown = api.run(&["queues", "show", "reports"]).await.succeeded();
    let concurrency = shown
        .stdout
        .lines()
        .find(|line| line.starts_with("concurrency"))
        .unwrap_or_default();
    assert!(concurrency.ends_with(" 2"), "{}", shown.stdout);

    api.run(&["queues", "resume", "reports"]).await.succeeded();
    let removed = api.run(&["queues", "limit", "reports", "none"]).await.succeeded();
    assert!(
        removed.stdout.contains("has no concurrency limit"),
        "{}",
        removed.stdout
    );
    let stored = api.env.store.queue_settings(Some("reports")).await.expect("settings");
    assert_eq!((stored["reports"].paused, stored["reports"].concurrency), (false, None));

    let refused = api.run(&["queues", "limit", "reports", "lots"]).await.failed();
    assert!(refused.stderr.contains("whole number or `none`"), "{}", refused.stderr);
    let refused = api.run(&["queues", "limit", "reports", "0"]).await.failed();
    assert!(refused.stderr.contains("concurrency"), "{}", refused.stderr);
}

#[tokio::test]
async fn queues_set_changes_the_settings_given_and_prints_the_queue_as_show_does() {
    let api = Api::start().await;

    let set = api
        .run(&[
            "queues",
            "set",
            "calls",
            "--paused",
            "true",
            "--concurrency",
            "3",
            "--rate",
            "5/1s",
            "--rate-key",
            "customer.id",
            "--retain-completed",
            "7d",
            "--retain-cancelled",
            "forever",
            "--retain-dead",
            "12h",
            "--actor",
            "ops@laptop",
        ])
        .await
        .succeeded();

    let shown = api.run(&["queues", "show", "calls"]).await.succeeded();
    assert_eq!(set.stdout, shown.stdout, "set prints the queue as show does");
    for (name, value) in [
        ("paused", "yes"),
        ("concurrency", "3"),
        ("rate limit", "5 starts per 1s, per value of customer.id"),
        ("retain completed", "7d"),
        ("retain cancelled", "forever"),
        ("retain dead", "12h"),
    ] {
        assert_eq!(field(&shown.stdout, name), value, "{}", shown.stdout);
    }
    let as_json = api.run(&["queues", "show", "calls", "--json"]).await.succeeded().json();
    assert_eq!(
        (as_json["paused"].clone(), as_json["concurrency"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(
        as_json["rateLimit"],
        json!({"limit": 5, "periodMs": 1000, "key": "customer.id"})
    );
    assert_eq!(
        as_json["retention"],
        json!({"completedMs": 604_800_000_i64, "cancelledMs": 0, "deadMs": 43_200_000})
    );
    let stored = api.env.store.queue_settings(Some("calls")).await.expect("settings");
    let stored = &stored["calls"];
    assert_eq!(stored.retention.completed_ms, Some(604_800_000));
    assert_eq!(stored.rate_limit.as_ref().map(|rate| rate.period_ms), Some(1000));
    let audit = api.run(&["audit", "ls", "--json"]).await.succeeded().json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|entry| entry["onBehalfOf"] == "ops@laptop")
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    for action in [
        "queue.pause",
        "queue.concurrency",
        "queue.rate_limit",
        "queue.retention",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }

    // A queue with jobs is listed, its limits beside its name.
    api.env
        .create_job(NewJob::new("TEST", json!({"customer": {"id": 7}})).queue("calls"))
        .await;
    let table = api.run(&["queues", "ls"]).await.succeeded();
    assert!(
        table.stdout.contains("calls (paused) (max 3) (rate 5/1s)"),
        "{}",
        table.stdout
    );

    // Only the settings given change; --json prints the API's answer.
    let changed = api
        .run(&[
            "queues",
            "set",
            "calls",
            "--paused",
            "false",
            "--rate",
            "100/m",
            "--retain-dead",
            "default",
            "--json",
        ])
        .await
        .succeeded()
        .json();
    assert_eq!(changed["name"], "calls");
    assert_eq!(
        (changed["paused"].clone(), changed["concurrency"].clone()),
        (json!(false), json!(3))
    );
    assert_eq!(
        changed["rateLimit"],
        json!({"limit": 100, "periodMs": 60_000, "key": null}),
        "a new rate replaces the whole limit, its key included"
    );
    assert_eq!(
        changed["retention"],
        json!({"completedMs": 604_800_000_i64, "cancelledMs": 0, "deadMs": null})
    );

    let removed = api
        .run(&[
            "queues",
            "set",
            "calls",
            "--concurrency",
            "none",
            "--rate",
            "none",
            "--retain-completed",
            "default",
            "--retain-cancelled",
            "default",
        ])
        .await
        .succeeded();
    for (name, value) in [
        ("paused", "no"),
        ("concurrency", "no limit"),
        ("rate limit", "no limit"),
        ("retain completed", "default"),
        ("retain cancelled", "default"),
        ("retain dead", "default"),
        ("pending", "1"),
    ] {
        assert_eq!(field(&removed.stdout, name), value, "{}", removed.stdout);
    }

    // The older commands set the same settings.
    api.run(&["queues", "pause", "calls"]).await.succeeded();
    api.run(&["queues", "limit", "calls", "2"]).await.succeeded();
    let shown = api.run(&["queues", "show", "calls"]).await.succeeded();
    assert_eq!(
        (field(&shown.stdout, "paused"), field(&shown.stdout, "concurrency")),
        ("yes", "2")
    );

    // A value the API refuses: its message, and nothing changed.
    let refused = api
        .run(&["queues", "set", "calls", "--paused", "false", "--rate", "5/2d"])
        .await
        .failed();
    assert!(
        refused.stderr.contains("rateLimit.periodMs") && refused.stderr.contains("(HTTP 400"),
        "{}",
        refused.stderr
    );
    let stored = api.env.store.queue_settings(Some("calls")).await.expect("settings");
    assert!(stored["calls"].paused);
}

#[tokio::test]
async fn queues_set_refuses_a_bad_value_before_any_request() {
    let api = Api::start().await;

    let bad_duration = api
        .run(&["queues", "set", "calls", "--paused", "true", "--retain-dead", "7x"])
        .await
        .refused();
    assert!(
        bad_duration
            .stderr
            .starts_with("error: invalid value '7x' for '--retain-dead <DURATION|forever|default>': "),
        "{}",
        bad_duration.stderr
    );
    assert!(
        bad_duration.stderr.contains(
            "a retention is a duration such as 7d, 12h or 1h30m (units: ms, s, m, h, d or w), `forever` or `default`"
        ),
        "{}",
        bad_duration.stderr
    );

    // Each with a good --paused beside it, which would pause the queue if anything were sent.
    for (args, expected) in [
        (
            &["--rate", "5/1y", "--paused", "true"][..],
            "the period after the / is \"y\" is not a unit of time",
        ),
        (
            &["--rate", "5", "--paused", "true"],
            "a rate is LIMIT/PERIOD, such as 5/1s",
        ),
        (
            &["--rate", "many/1s", "--paused", "true"],
            "the limit before the / is a whole number",
        ),
        (
            &["--retain-completed", "500", "--paused", "true"],
            "a retention is a duration",
        ),
        (
            &["--retain-completed", "0d", "--paused", "true"],
            "write `forever` to keep the jobs for ever",
        ),
        (
            &["--concurrency", "lots", "--paused", "true"],
            "the concurrency is a whole number or `none`",
        ),
        (&["--paused", "maybe"], "invalid value 'maybe' for '--paused"),
        (
            &["--rate", "none", "--rate-key", "customer.id", "--paused", "true"],
            "--rate-key names the payload field a rate limit is counted per",
        ),
        (
            &["--rate-key", "customer.id", "--paused", "true"],
            "--rate <LIMIT/PERIOD|none>",
        ),
        (&[], "nothing to change"),
    ] {
        let ran = api
            .run(&[&["queues", "set", "calls"][..], args].concat())
            .await
            .refused();
        assert!(
            ran.stderr.contains(expected),
            "{args:?}: {expected:?} in {}",
            ran.stderr
        );
    }

    // Nothing was sent: the queue was not paused, and nobody changed anything.
    let stored = api.env.store.queue_settings(Some("calls")).await.expect("settings");
    assert!(
        stored.get("calls").is_none_or(|settings| !settings.paused),
        "{stored:?}"
    );
    let audit = api.run(&["audit", "ls", "--json"]).await.succeeded().json();
    assert_eq!(audit["items"], json!([]));
    // Given alone, the same --paused is sent.
    api.run(&["queues", "set", "calls", "--paused", "true"])
        .await
        .succeeded();
    let stored = api.env.store.queue_settings(Some("calls")).await.expect("settings");
    assert!(stored["calls"].paused);
}

#[tokio::test]
async fn tail_prints_each_queues_new_outcomes_as_they_happen() {
    let api = Api::start().await;
    // A queue with an outcome before the tail starts: that one is not new.
    api.completed_job(NewJob::new("TEST", json!({})).queue("mail")).await;
    let mut child = Running(
        api.jobq(&["tail", "--interval", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobq tail"),
    );
    let mut stdout = lines_of(child.0.stdout.take().expect("stdout"));
    let mut stderr = lines_of(child.0.stderr.take().expect("stderr"));
    let started = wait_for_line(&mut stderr, Duration::from_secs(20)).await;
    assert!(started.starts_with("following 1 queue(s) every 1s"), "{started}");

    api.completed_job(NewJob::new("TEST", json!({})).queue("mail")).await;
    api.completed_job(NewJob::new("TEST", json!({})).queue("mail")).await;
    api.dead_job(NewJob::new("TEST", json!({})).queue("video")).await;

    // Outcomes may land in one poll or be split over two: add up the lines until all are seen.
    let wanted = BTreeMap::from([("mail".to_owned(), (2, 0)), ("video".to_owned(), (0, 1))]);
    let mut seen: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    while seen != wanted {
        let line = wait_for_line(&mut stdout, Duration::from_secs(20)).await;
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        let queue = event["queue"].as_str().unwrap_or_else(|| panic!("no queue: {line}"));
        assert!(
            wanted.contains_key(queue),
            "a line for a queue with no new outcomes: {line}"
        );
        assert!(event["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{line}");
        let totals = seen.entry(queue.to_owned()).or_default();
        totals.0 += event["completed"].as_i64().unwrap_or(0);
        totals.1 += event["dead"].as_i64().unwrap_or(0);
        assert!(
            totals.0 <= wanted[queue].0 && totals.1 <= wanted[queue].1,
            "{seen:?} after {line}"
        );
    }
}

/// Deployments sit behind API Gateway: jobq speaks HTTPS (rustls on aws-lc-rs), trusting the
/// system's roots, which `SSL_CERT_FILE` replaces, and refuses a certificate they did not issue.
#[tokio::test]
async fn https_is_spoken_and_the_servers_certificate_checked() {
    let api = Api::start().await;
    api.env.create_job(NewJob::new("TEST", json!({})).queue("secure")).await;
    let certs = Certs::make();
    let (url, proxy) = tls_proxy(&certs, &api.url).await;

    let mut trusted = jobq(&url, &["queues", "ls"]);
    trusted
        .env("SSL_CERT_FILE", certs.path("ca.pem"))
        .env_remove("SSL_CERT_DIR");
    let listed = run(trusted).await.succeeded();
    assert!(listed.stdout.contains("secure"), "{}", listed.stdout);

    let mut untrusted = jobq(&url, &["queues", "ls"]);
    untrusted
        .env("SSL_CERT_FILE", certs.path("other-ca.pem"))
        .env_remove("SSL_CERT_DIR");
    let refused = run(untrusted).await.failed();
    assert!(
        refused.stderr.starts_with(&format!("jobq: could not reach {url}: ")),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("certificate"), "{}", refused.stderr);
    proxy.abort();
}

#[tokio::test]
async fn a_wrong_token_fails_with_the_apis_message() {
    let api = Api::start_with(|deps| deps.with_api_token("s3cret")).await;
    api.env.create_job(NewJob::new("TEST", json!({}))).await;

    let wrong = api.run(&["jobs", "ls", "--token", "wrong"]).await.failed();
    assert!(wrong.stderr.starts_with("jobq: "), "{}", wrong.stderr);
    assert!(wrong.stderr.ends_with("(HTTP 401, unauthorized)\n"), "{}", wrong.stderr);
    let missing = api.run(&["queues", "ls"]).await.failed();
    assert_eq!(missing.stderr, wrong.stderr);

    let mut command = api.jobq(&["jobs", "ls", "--json"]);
    command.env("JOBQ_API_TOKEN", "s3cret");
    let listed = run(command).await.succeeded();
    assert_eq!(ids(&listed.json()).len(), 1);
}

#[tokio::test]
async fn an_unreachable_url_fails_saying_it_could_not_be_reached() {
    // A port nothing listens on: bound, then let go.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let url = format!("http://{address}");
    // The URL from the environment this time, as a deployment's shell sets it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobq"));
    command
        .args(["queues", "ls"])
        .env("JOBQ_URL", &url)
        .env_remove("JOBQ_API_TOKEN");

    let ran = run(command).await.failed();

    assert!(
        ran.stderr.starts_with(&format!("jobq: could not reach {url}: ")),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn an_answer_that_is_not_the_apis_is_reported_not_misread() {
    let api = Api::start().await;
    // A base URL with a path the API does not serve: API Gateway's own 404 for every route.
    let mut command = api.jobq(&["jobs", "ls"]);
    command.args(["--url", &format!("{}/no-such-stage", api.url)]);

    let ran = run(command).await.failed();

    assert_eq!(ran.stderr, "jobq: Not Found (HTTP 404)\n");
}

/// A CA, a certificate it issued for 127.0.0.1, and an unrelated CA; made with the openssl command
/// as the project's other TLS tests make theirs.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Certs {
        let made_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let dir = std::env::temp_dir().join(format!("jobq-cli-tls-{}-{made_at}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let certs = Certs { dir };
        for ca in ["ca", "other-ca"] {
            certs.openssl(&format!(
                "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {ca}.key -out {ca}.pem \
                 -days 2 -subj /CN=jobq-cli-test-{ca} -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ));
        }
        std::fs::write(
            certs.path("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        certs.openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
             -subj /CN=127.0.0.1",
        );
        certs.openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
             -extfile server.ext",
        );
        certs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `openssl` with `args`, split at whitespace (none of them holds any).
    fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Terminates TLS with the certificate of `certs` and passes each connection on to the plain
/// `upstream` URL, as API Gateway stands in front of the functions. Returns its HTTPS URL.
async fn tls_proxy(certs: &Certs, upstream: &str) -> (String, AbortHandle) {
    let chain = CertificateDer::pem_file_iter(certs.path("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    let proxy = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends its handshake: nothing to pass on.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (url, proxy.abort_handle())
}

/// Each line `reader` gives, as it comes, on a channel; read on a thread of its own, so that
/// waiting for a line leaves the runtime free to serve the requests that produce it.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

async fn wait_for_line(lines: &mut mpsc::UnboundedReceiver<String>, within: Duration) -> String {
    match tokio::time::timeout(within, lines.recv()).await {
        Ok(Some(line)) => line,
        Ok(None) => panic!("jobq closed its output"),
        Err(_) => panic!("no line from jobq within {within:?}"),
    }
}

/// A `jobq` that runs until it is interrupted (`jobq tail`): ended when the test ends, passed or
/// failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn schedules_are_put_listed_shown_paused_resumed_and_removed() {
    let api = Api::start().await;
    let created = api
        .run(&[
            "schedules",
            "put",
            "nightly",
            "--cron",
            "0 30 2 * * *",
            "--timezone",
            "Europe/Paris",
            "--job",
            r#"{"type":"report","queue":"reports"}"#,
            "--missed-fires",
            "coalesce",
        ])
        .await
        .succeeded();
    assert!(
        created.stdout.starts_with("created schedule nightly"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("0 30 2 * * * (Europe/Paris)"),
        "{}",
        created.stdout
    );

    let table = api.run(&["schedules", "ls"]).await.succeeded();
    let row = table
        .stdout
        .lines()
        .find(|line| line.starts_with("nightly"))
        .unwrap_or_else(|| panic!("a row for nightly in {}", table.stdout));
    for cell in ["Europe/Paris", "report", "reports"] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }

    api.run(&["schedules", "pause", "nightly"]).await.succeeded();
    let shown = api
        .run(&["schedules", "show", "nightly", "--json"])
        .await
        .succeeded()
        .json();
    assert_eq!(shown["paused"], true);
    assert_eq!(
        shown["missedFires"], "coalesce",
        "pausing keeps the rest of the schedule"
    );
    assert_eq!(shown["job"]["queue"], "reports");
    api.run(&["schedules", "resume", "nightly"]).await.succeeded();
    let stored = api
        .env
        .store
        .schedule("nightly")
        .await
        .expect("get")
        .expect("a schedule");
    assert!(!stored.paused);
    assert_eq!(stored.timezone, "Europe/Paris");

    let refused = api
        .run(&[
            "schedules",
            "put",
            "bad",
            "--cron",
            "61 * * * *",
            "--job",
            r#"{"type":"report"}"#,
        ])
        .await
        .failed();
    assert!(refused.stderr.contains("cron"), "{}", refused.stderr);

    let removed = api.run(&["schedules", "rm", "nightly"]).await.succeeded();
    assert!(
        removed.stdout.contains("deleted schedule nightly"),
        "{}",
        removed.stdout
    );
    api.run(&["schedules", "show", "nightly"]).await.failed();
    assert!(api.env.store.schedules(None, 10).await.expect("list").is_empty());
}

#[tokio::test]
async fn schedules_are_set_listed_shown_replaced_and_removed() {
    let api = Api::start().await;
    let created = api
        .run(&[
            "schedules",
            "set",
            "nightly-report",
            "--cron",
            "0 30 2 * * *",
            "--timezone",
            "Europe/Paris",
            "--type",
            "report",
            "--payload",
            r#"{"day":"yesterday"}"#,
            "--queue",
            "reports",
            "--missed-fires",
            "coalesce",
            "--overlap",
            "skip",
        ])
        .await
        .succeeded();
    assert!(
        created.stdout.starts_with("created schedule nightly-report\n"),
        "{}",
        created.stdout
    );
    let hourly = api
        .run(&[
            "schedules",
            "set",
            "hourly-sync",
            "--cron",
            "0 * * * *",
            "--job",
            r#"{"type":"sync","priority":90}"#,
            "--json",
        ])
        .await
        .succeeded()
        .json();
    assert_eq!(hourly["job"], json!({"type": "sync", "priority": 90}));
    assert_eq!(hourly["timezone"], "UTC");

    let listed = api.run(&["schedules", "ls", "--json"]).await.succeeded().json();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["name"].as_str())
        .collect();
    assert_eq!(names, ["hourly-sync", "nightly-report"]);
    let table = api.run(&["schedules", "ls"]).await.succeeded();
    for header in [
        "schedule",
        "cron",
        "zone",
        "type",
        "queue",
        "next tick",
        "last tick",
        "lag",
    ] {
        assert!(table.stdout.contains(header), "{header:?} in {}", table.stdout);
    }
    let row = table
        .stdout
        .lines()
        .find(|line| line.starts_with("nightly-report"))
        .unwrap_or_else(|| panic!("a row for nightly-report in {}", table.stdout));
    for cell in ["0 30 2 * * *", "Europe/Paris", "report", "reports"] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }
    let hourly_row = table
        .stdout
        .lines()
        .find(|line| line.starts_with("hourly-sync"))
        .unwrap_or_else(|| panic!("a row for hourly-sync in {}", table.stdout));
    assert!(
        hourly_row.contains(" default "),
        "no queue is the default queue: {hourly_row}"
    );

    let shown = api
        .run(&["schedules", "show", "nightly-report", "--json"])
        .await
        .succeeded()
        .json();
    assert_eq!(shown["cron"], "0 30 2 * * *");
    assert_eq!(shown["timezone"], "Europe/Paris");
    assert_eq!(
        shown["job"],
        json!({"type": "report", "payload": {"day": "yesterday"}, "queue": "reports"})
    );
    assert_eq!(
        (
            shown["paused"].clone(),
            shown["missedFires"].clone(),
            shown["overlap"].clone()
        ),
        (json!(false), json!("coalesce"), json!("skip"))
    );
    let next_tick = shown["nextTick"].as_str().expect("a next tick");
    let text = api.run(&["schedules", "show", "nightly-report"]).await.succeeded();
    for expected in [
        "0 30 2 * * * (Europe/Paris)",
        r#""day":"yesterday""#,
        "coalesce",
        &next_tick[..10],
    ] {
        assert!(text.stdout.contains(expected), "{expected:?} in {}", text.stdout);
    }

    // Set again, the whole schedule is replaced: what is left out goes back to the API's default.
    let replaced = api
        .run(&[
            "schedules",
            "set",
            "nightly-report",
            "--cron",
            "0 0 3 * * *",
            "--type",
            "report",
            "--paused",
        ])
        .await
        .succeeded();
    assert!(
        replaced.stdout.starts_with("replaced schedule nightly-report\n"),
        "{}",
        replaced.stdout
    );
    let shown = api
        .run(&["schedules", "show", "nightly-report", "--json"])
        .await
        .succeeded()
        .json();
    assert_eq!(shown["job"], json!({"type": "report"}));
    assert_eq!(
        (
            shown["paused"].clone(),
            shown["nextTick"].clone(),
            shown["timezone"].clone()
        ),
        (json!(true), Value::Null, json!("UTC"))
    );
    assert_eq!(shown["missedFires"], "skip");
    let table = api.run(&["schedules", "ls"]).await.succeeded();
    let row = table
        .stdout
        .lines()
        .find(|line| line.starts_with("nightly-report"))
        .unwrap_or_else(|| panic!("a row for nightly-report in {}", table.stdout));
    assert!(row.contains("paused"), "{row}");
    api.run(&[
        "schedules",
        "set",
        "nightly-report",
        "--cron",
        "0 0 3 * * *",
        "--type",
        "report",
        "--paused",
        "false",
    ])
    .await
    .succeeded();
    let stored = api
        .env
        .store
        .schedule("nightly-report")
        .await
        .expect("get")
        .expect("a schedule");
    assert!(!stored.paused);

    // A payload that is not JSON is refused before any request.
    let refused = api
        .run(&[
            "schedules",
            "set",
            "broken",
            "--cron",
            "0 * * * *",
            "--type",
            "report",
            "--payload",
            "{",
        ])
        .await
        .refused();
    assert!(
        refused
            .stderr
            .contains("invalid value '{' for '--payload <JSON>': not JSON"),
        "{}",
        refused.stderr
    );
    assert!(api.env.store.schedule("broken").await.expect("get").is_none());

    let removed = api.run(&["schedules", "rm", "nightly-report"]).await.succeeded();
    assert_eq!(
        removed.stdout,
        "deleted schedule nightly-report (the jobs it fired stay)\n"
    );
    let gone = api.run(&["schedules", "show", "nightly-report"]).await.failed();
    assert!(gone.stderr.contains("(HTTP 404"), "{}", gone.stderr);
    api.run(&["schedules", "rm", "nightly-report"]).await.failed();
    let listed = api.run(&["schedules", "ls", "--json"]).await.succeeded().json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
    api.run(&["schedules", "rm", "hourly-sync"]).await.succeeded();
    let none = api.run(&["schedules", "ls"]).await.succeeded();
    assert_eq!(none.stdout, "no schedules\n");
}
