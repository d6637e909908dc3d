//! `jobq`: a command-line client for jobq's HTTP API. Tables for people, the API's JSON with
//! `--json` for scripts.
//!
//! A failed request prints the API's message (and the HTTP status) to stderr and exits with
//! status 1; a usage error exits with 2, as clap does.

mod api;
mod commands;
mod duration;
mod model;
mod render;
mod settings;
mod tail;

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::api::{Api, Failure};
use crate::commands::{Context, JobFilter, PageRequest};
use crate::settings::{Concurrency, Rate, Retain};

/// The heading of the options every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(name = "jobq", version, about = "A command-line client for jobq's HTTP API")]
struct Cli {
    /// The API's base URL (with its stage, behind API Gateway).
    #[arg(long, env = "JOBQ_URL", default_value = "http://127.0.0.1:9000", global = true, help_heading = GLOBAL)]
    url: String,
    /// The API token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "JOBQ_API_TOKEN", hide_env_values = true, global = true, help_heading = GLOBAL)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Whom the audit log records a cancel, a requeue or a queue's change was made for [default:
    /// $USER@<hostname>].
    #[arg(long, env = "JOBQ_ACTOR", global = true, help_heading = GLOBAL)]
    actor: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find, show and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The dead-letter queue: jobs that failed for good.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Each queue's health: jobs per status, waiting work, recent outcomes.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Who cancelled, requeued or acted in bulk.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Recurring jobs: a job fired at each tick of a cron expression.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Follow each queue's outcomes (completed, retried, dead, cancelled) as they happen, until
    /// Ctrl-C. Counts per queue, not jobs: polled from GET /queues.
    Tail(TailArgs),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first, matching every filter given.
    Ls(JobsLsArgs),
    /// A job's fields and its attempts.
    Show { id: String },
    /// Cancel a job: a pending one at once, a running one at its worker's next heartbeat.
    Cancel { id: String },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead jobs, newest first.
    Ls(PageArgs),
    /// Requeue one dead job, or with --all every dead job matching the filters.
    Requeue(RequeueArgs),
}

#[derive(Subcommand)]
enum QueuesCommand {
    /// Every queue that has jobs (or had outcomes in the last 15 minutes).
    Ls,
    /// One queue: its settings, its jobs per status, its outcomes minute by minute.
    Show { name: String },
    /// Change a queue's settings: only those given change. Prints the queue as it then is.
    Set(QueueSetArgs),
    /// Pause a queue: no job of it starts, fleet-wide; running ones finish.
    Pause { name: String },
    /// Resume a paused queue: its pending jobs start again at once.
    Resume { name: String },
    /// Limit how many jobs of a queue run at once, fleet-wide (`none` removes the limit).
    Limit {
        name: String,
        /// The most jobs running at once (1 to 1000000), or `none`.
        concurrency: String,
    },
}

/// `queues set`'s settings, each read here so that a bad value is refused before any request.
#[derive(Args)]
struct QueueSetArgs {
    name: String,
    /// `true`: no job of the queue starts, fleet-wide (running ones finish); `false` resumes it.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    paused: Option<bool>,
    /// The most jobs of the queue running at once, fleet-wide, or `none` for no limit.
    #[arg(long, value_name = "N|none", value_parser = Concurrency::parse)]
    concurrency: Option<Concurrency>,
    /// At most LIMIT job starts in any window of PERIOD, fleet-wide (`5/1s`, `100/1m`), or `none`.
    /// Replaces the whole rate limit, its key included.
    #[arg(long, value_name = "LIMIT/PERIOD|none", value_parser = Rate::parse)]
    rate: Option<Rate>,
    /// Count the rate limit per value of this payload field (names joined by dots:
    /// `customer.id`); jobs without it share one window.
    #[arg(long, value_name = "PATH", requires = "rate")]
    rate_key: Option<String>,
    /// How long completed jobs are kept: a duration (`7d`, `12h`), `forever` or `default` (the
    /// deployment's).
    #[arg(long, value_name = "DURATION|forever|default", value_parser = Retain::parse)]
    retain_completed: Option<Retain>,
    /// How long cancelled jobs are kept, as --retain-completed.
    #[arg(long, value_name = "DURATION|forever|default", value_parser = Retain::parse)]
    retain_cancelled: Option<Retain>,
    /// How long dead jobs are kept, as --retain-completed.
    #[arg(long, value_name = "DURATION|forever|default", value_parser = Retain::parse)]
    retain_dead: Option<Retain>,
}

impl QueueSetArgs {
    /// The `PUT /queues/{name}` body: the settings given, and only those.
    fn body(&self) -> Result<Value, String> {
        let mut body = Map::new();
        if let Some(paused) = self.paused {
            body.insert("paused".to_owned(), Value::Bool(paused));
        }
        if let Some(concurrency) = self.concurrency {
            body.insert("concurrency".to_owned(), concurrency.to_json());
        }
        if let Some(rate) = self.rate {
            body.insert("rateLimit".to_owned(), rate.to_json(self.rate_key.as_deref())?);
        }
        let mut retention = Map::new();
        for (field, retain) in [
            ("completedMs", self.retain_completed),
            ("cancelledMs", self.retain_cancelled),
            ("deadMs", self.retain_dead),
        ] {
            if let Some(retain) = retain {
                retention.insert(field.to_owned(), retain.to_json());
            }
        }
        if !retention.is_empty() {
            body.insert("retention".to_owned(), Value::Object(retention));
        }
        if body.is_empty() {
            return Err(
                "nothing to change: give one or more of --paused, --concurrency, --rate, \
                 --retain-completed, --retain-cancelled and --retain-dead"
                    .to_owned(),
            );
        }
        Ok(Value::Object(body))
    }
}

#[derive(Subcommand)]
enum SchedulesCommand {
    /// Every schedule, by name: its next tick, the last tick fired and how late.
    Ls(PageArgs),
    /// One schedule: its next tick, the last tick fired and how late, its counts.
    Show {
        name: String,
    },
    /// Create or replace a schedule: the whole of it (an option left out takes the API's default).
    #[command(alias = "put")]
    Set(Box<ScheduleSetArgs>),
    /// Stop firing; `resume` starts again from the next tick.
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Delete a schedule; the jobs it fired stay.
    Rm {
        name: String,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("the_job").required(true).args(["job_type", "job"])))]
struct ScheduleSetArgs {
    name: String,
    /// Five fields, or six with seconds first: "0 30 2 * * *".
    #[arg(long)]
    cron: String,
    /// An IANA time zone, such as Europe/Paris, whose wall clock the cron expression is read on
    /// [default: UTC].
    #[arg(long)]
    timezone: Option<String>,
    /// The type of the job each tick creates.
    #[arg(long = "type", value_name = "TYPE")]
    job_type: Option<String>,
    /// The job's payload: any JSON, such as '{"day":"yesterday"}'.
    #[arg(long, value_name = "JSON", value_parser = json_value, conflicts_with = "job")]
    payload: Option<Value>,
    /// The job's queue [default: default].
    #[arg(long, conflicts_with = "job")]
    queue: Option<String>,
    /// The whole job instead of --type, --payload and --queue: a create-job body without a run
    /// time, such as '{"type":"report","priority":90,"maxAttempts":5}'.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    job: Option<Value>,
    /// `true`: the schedule fires nothing until resumed [default: false].
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    paused: Option<bool>,
    /// Ticks fired over 60 s late: no job, one job for the last, or one job each [default: skip].
    #[arg(long, value_parser = ["skip", "coalesce", "catchUp"])]
    missed_fires: Option<String>,
    /// `skip`: no job for a tick while the previous tick's job is pending or running [default:
    /// allow].
    #[arg(long, value_parser = ["allow", "skip"])]
    overlap: Option<String>,
}

impl ScheduleSetArgs {
    /// The `PUT /schedules/{name}` body.
    fn body(&self) -> Value {
        let job = match (&self.job, &self.job_type) {
            (Some(job), _) => job.clone(),
            (None, job_type) => {
                let mut job = json!({ "type": job_type });
                if let Some(payload) = &self.payload {
                    job["payload"] = payload.clone();
                }
                if let Some(queue) = &self.queue {
                    job["queue"] = json!(queue);
                }
                job
            }
        };
        let mut body = json!({"cron": self.cron, "job": job});
        if let Some(paused) = self.paused {
            body["paused"] = Value::Bool(paused);
        }
        for (field, value) in [
            ("timezone", &self.timezone),
            ("missedFires", &self.missed_fires),
            ("overlap", &self.overlap),
        ] {
            if let Some(value) = value {
                body[field] = json!(value);
            }
        }
        body
    }
}

/// Any JSON.
fn json_value(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))
}

/// A JSON object.
fn json_object(text: &str) -> Result<Value, String> {
    match json_value(text)? {
        object @ Value::Object(_) => Ok(object),
        _ => Err("not a JSON object".to_owned()),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List the audit log, newest first.
    Ls(PageArgs),
}

#[derive(Args)]
struct JobsLsArgs {
    #[arg(long, value_enum, ignore_case = true)]
    status: Option<Status>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
struct RequeueArgs {
    /// The dead job to requeue.
    #[arg(conflicts_with_all = ["all", "FilterArgs"])]
    id: Option<String>,
    /// Requeue every dead job matching the filters (all of them without one), as one bulk
    /// operation.
    #[arg(long)]
    all: bool,
    /// Only count the jobs --all would requeue.
    #[arg(long, requires = "all")]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The filters of `GET /jobs` other than the status.
#[derive(Args)]
struct FilterArgs {
    /// The queue, exactly.
    #[arg(long)]
    queue: Option<String>,
    /// The job type, exactly.
    #[arg(long = "type")]
    job_type: Option<String>,
    /// A JSON object the payload contains, such as '{"userId":123}'.
    #[arg(long)]
    payload: Option<String>,
    /// Text the last error contains, in any case (3 to 200 characters).
    #[arg(long)]
    error: Option<String>,
    /// Created at or after this RFC 3339 time.
    #[arg(long)]
    created_after: Option<String>,
    /// Created before this RFC 3339 time.
    #[arg(long)]
    created_before: Option<String>,
}

#[derive(Args)]
struct PageArgs {
    /// How many items on the page (the API's default when absent).
    #[arg(long)]
    limit: Option<u32>,
    /// Where the page starts: the previous page's next cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args)]
struct TailArgs {
    /// Seconds between polls.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
}

/// A job's status, as the API names it.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn api_name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

impl FilterArgs {
    fn into_filter(self, status: Option<Status>) -> JobFilter {
        JobFilter {
            status: status.map(Status::api_name),
            queue: self.queue,
            job_type: self.job_type,
            payload: self.payload,
            error: self.error,
            created_after: self.created_after,
            created_before: self.created_before,
        }
    }
}

impl From<PageArgs> for PageRequest {
    fn from(args: PageArgs) -> Self {
        PageRequest {
            limit: args.limit,
            cursor: args.cursor,
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("jobq: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let actor = cli.actor.unwrap_or_else(default_actor);
    let ctx = Context {
        api: Api::new(&cli.url, cli.token, actor)?,
        json: cli.json,
    };
    match cli.command {
        Command::Jobs(JobsCommand::Ls(args)) => {
            commands::jobs_ls(&ctx, &args.filter.into_filter(args.status), &args.page.into())
        }
        Command::Jobs(JobsCommand::Show { id }) => commands::jobs_show(&ctx, &id),
        Command::Jobs(JobsCommand::Cancel { id }) => commands::jobs_cancel(&ctx, &id),
        Command::Dlq(DlqCommand::Ls(page)) => commands::dlq_ls(&ctx, &page.into()),
        Command::Dlq(DlqCommand::Requeue(args)) => match args.id {
            Some(id) => commands::dlq_requeue_one(&ctx, &id),
            None => commands::dlq_requeue_all(&ctx, &args.filter.into_filter(None), args.dry_run),
        },
        Command::Queues(QueuesCommand::Ls) => commands::queues_ls(&ctx),
        Command::Queues(QueuesCommand::Show { name }) => commands::queues_show(&ctx, &name),
        Command::Queues(QueuesCommand::Set(args)) => {
            let body = args.body().unwrap_or_else(|message| usage_error(&message));
            commands::queues_set(&ctx, &args.name, &body)
        }
        Command::Queues(QueuesCommand::Pause { name }) => commands::queues_set_paused(&ctx, &name, true),
        Command::Queues(QueuesCommand::Resume { name }) => commands::queues_set_paused(&ctx, &name, false),
        Command::Queues(QueuesCommand::Limit { name, concurrency }) => {
            commands::queues_set_concurrency(&ctx, &name, &concurrency)
        }
        Command::Audit(AuditCommand::Ls(page)) => commands::audit_ls(&ctx, &page.into()),
        Command::Schedules(SchedulesCommand::Ls(page)) => commands::schedules_ls(&ctx, &page.into()),
        Command::Schedules(SchedulesCommand::Show { name }) => commands::schedules_show(&ctx, &name),
        Command::Schedules(SchedulesCommand::Set(args)) => commands::schedules_set(&ctx, &args.name, &args.body()),
        Command::Schedules(SchedulesCommand::Pause { name }) => commands::schedules_set_paused(&ctx, &name, true),
        Command::Schedules(SchedulesCommand::Resume { name }) => commands::schedules_set_paused(&ctx, &name, false),
        Command::Schedules(SchedulesCommand::Rm { name }) => commands::schedules_rm(&ctx, &name),
        Command::Tail(args) => tail::tail(&ctx, Duration::from_secs(args.interval)),
    }
}

/// Ends jobq as clap ends it for a command line it cannot parse (exit status 2): for a combination
/// of values that clap's rules do not express.
fn usage_error(message: &str) -> ! {
    clap::Error::raw(ErrorKind::ArgumentConflict, format!("{message}\n")).exit()
}

/// `$USER@<hostname>`: the person at this terminal, as the audit log should name them.
fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{user}@{}", hostname())
}

/// The machine's name: from the kernel on Linux, else from the `hostname` program (macOS, BSDs and
/// Windows all have one), else `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            let output = std::process::Command::new("hostname").output().ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn statuses_are_sent_by_their_api_names() {
        assert_eq!(Status::InProgress.api_name(), "IN_PROGRESS");
        assert_eq!(Status::Failed.api_name(), "FAILED");
    }
}
