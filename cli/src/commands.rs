//! What each command asks the API, and what it prints: the API's JSON with `--json`, tables
//! otherwise.

use std::io::{self, Write as _};
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::api::{Answer, Api, Failure, parse, path_segment};
use crate::model::{AuditEntry, DryRun, Job, Operation, Page, Queue, QueueList, Schedule};
use crate::render;
use crate::settings::Concurrency;

/// How often a bulk operation's progress is asked for.
const OPERATION_POLL: Duration = Duration::from_millis(500);

/// The client and the output form every command shares.
pub struct Context {
    pub api: Api,
    pub json: bool,
}

/// `GET /jobs`'s filters, by their API names; a bulk filter takes the same ones.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub status: Option<String>,
    pub queue: Option<String>,
    pub job_type: Option<String>,
    pub payload: Option<String>,
    pub error: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
}

impl JobFilter {
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("status", self.status.clone()),
            ("queue", self.queue.clone()),
            ("type", self.job_type.clone()),
            ("payload", self.payload.clone()),
            ("error", self.error.clone()),
            ("createdAfter", self.created_after.clone()),
            ("createdBefore", self.created_before.clone()),
        ]
    }

    /// The filter as `POST /jobs/bulk` takes it: `payload` is a JSON object there, not text, so
    /// it is parsed here; whether it is an object is the API's to say.
    fn to_json(&self) -> Result<Value, Failure> {
        let mut filter = Map::new();
        for (name, value) in self.query() {
            let Some(value) = value else { continue };
            let value = if name == "payload" {
                serde_json::from_str(&value)
                    .map_err(|err| Failure::Local(format!("--payload is not JSON ({err}): {value}")))?
            } else {
                Value::String(value)
            };
            filter.insert(name.to_owned(), value);
        }
        Ok(Value::Object(filter))
    }
}

/// A page's position: how many items, and the cursor a previous page gave.
#[derive(Debug)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageRequest {
    fn query(&self) -> [(&'static str, Option<String>); 2] {
        [
            ("limit", self.limit.map(|n| n.to_string())),
            ("cursor", self.cursor.clone()),
        ]
    }
}

pub fn jobs_ls(ctx: &Context, filter: &JobFilter, page: &PageRequest) -> Result<(), Failure> {
    let mut query = filter.query();
    query.extend(page.query());
    let body = ctx.api.get("/jobs", &query)?;
    if ctx.json {
        return print_json(&body);
    }
    let page: Page<Job> = parse("GET /jobs", body)?;
    print(&render::jobs(&page.items, page.next_cursor.as_deref()))
}

pub fn jobs_show(ctx: &Context, id: &str) -> Result<(), Failure> {
    let body = ctx.api.get(&format!("/jobs/{}", path_segment(id)), &[])?;
    if ctx.json {
        return print_json(&body);
    }
    let job: Job = parse("GET /jobs/{id}", body)?;
    print(&render::job(&job))
}

/// A pending job is cancelled at once (200); a running one is asked to stop (202), which its
/// worker sees at its next heartbeat.
pub fn jobs_cancel(ctx: &Context, id: &str) -> Result<(), Failure> {
    let answer = ctx.api.post(&format!("/jobs/{}/cancel", path_segment(id)), None)?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let job: Job = parse("POST /jobs/{id}/cancel", answer.body)?;
    let id = render::clean_line(&job.job_id);
    if answer.status == 202 {
        print(&format!(
            "job {id} is running: its worker was asked to stop it, and does at its next heartbeat\n"
        ))
    } else {
        print(&format!("cancelled job {id} ({})\n", render::clean_line(&job.status)))
    }
}

pub fn dlq_ls(ctx: &Context, page: &PageRequest) -> Result<(), Failure> {
    let body = ctx.api.get("/dlq", &page.query())?;
    if ctx.json {
        return print_json(&body);
    }
    let page: Page<Job> = parse("GET /dlq", body)?;
    print(&render::jobs(&page.items, page.next_cursor.as_deref()))
}

pub fn dlq_requeue_one(ctx: &Context, id: &str) -> Result<(), Failure> {
    let answer = ctx.api.post(&format!("/dlq/{}/requeue", path_segment(id)), None)?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let job: Job = parse("POST /dlq/{id}/requeue", answer.body)?;
    print(&format!(
        "requeued job {} ({}, {}/{} attempts)\n",
        render::clean_line(&job.job_id),
        render::clean_line(&job.status),
        job.attempts,
        job.max_attempts
    ))
}

/// Every dead job matching `filter` back to `PENDING`, through one bulk operation, or with
/// `dry_run` only how many that would be.
pub fn dlq_requeue_all(ctx: &Context, filter: &JobFilter, dry_run: bool) -> Result<(), Failure> {
    let dead = JobFilter {
        status: Some("FAILED".to_owned()),
        ..filter.clone()
    };
    let request = json!({"filter": dead.to_json()?, "action": "requeue", "dryRun": dry_run});
    let answer = ctx.api.post("/jobs/bulk", Some(&request))?;
    if dry_run {
        if ctx.json {
            return print_json(&answer.body);
        }
        let count = parse::<DryRun>("POST /jobs/bulk", answer.body)?.count;
        return print(&format!(
            "{count} dead jobs would be requeued (dry run: nothing changed)\n"
        ));
    }
    let started: Operation = parse("POST /jobs/bulk", answer.body.clone())?;
    let (done, body) = follow(ctx, started, answer.body)?;
    if ctx.json {
        return print_json(&body);
    }
    print(&format!(
        "requeued {} dead jobs ({} skipped: no longer dead when their turn came); operation {}\n",
        done.processed,
        done.skipped,
        render::clean_line(&done.id)
    ))
}

/// Polls `GET /operations/{id}` until the operation is done, with a progress bar on stderr (drawn
/// only when stderr is a terminal). Returns the operation as it ended, and as the API gave it.
fn follow(ctx: &Context, mut operation: Operation, mut body: Value) -> Result<(Operation, Value), Failure> {
    let bar = ProgressBar::new(u64::try_from(operation.total).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{spinner} requeueing [{bar:40}] {pos}/{len} ({elapsed}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("operation {}", render::clean_line(&operation.id)));
    bar.enable_steady_tick(Duration::from_millis(120));
    let path = format!("/operations/{}", path_segment(&operation.id));
    while !operation.is_done() {
        bar.set_position(u64::try_from(operation.processed + operation.skipped).unwrap_or(0));
        thread::sleep(OPERATION_POLL);
        body = match ctx.api.get(&path, &[]) {
            Ok(body) => body,
            Err(failure) => {
                bar.abandon();
                eprintln!(
                    "jobq: operation {} goes on without jobq watching it (GET {path} shows its progress)",
                    render::clean_line(&operation.id)
                );
                return Err(failure);
            }
        };
        operation = parse("GET /operations/{id}", body.clone())?;
    }
    bar.set_position(u64::try_from(operation.processed + operation.skipped).unwrap_or(0));
    bar.finish_and_clear();
    Ok((operation, body))
}

pub fn queues_ls(ctx: &Context) -> Result<(), Failure> {
    let body = ctx.api.get("/queues", &[])?;
    if ctx.json {
        return print_json(&body);
    }
    let list: QueueList = parse("GET /queues", body)?;
    print(&render::queues(&list))
}

pub fn queues_show(ctx: &Context, name: &str) -> Result<(), Failure> {
    let body = ctx.api.get(&format!("/queues/{}", path_segment(name)), &[])?;
    if ctx.json {
        return print_json(&body);
    }
    let queue: Queue = parse("GET /queues/{name}", body)?;
    print(&render::queue(&queue))
}

/// Changes the settings in `settings` (a `PUT /queues/{name}` body: only the ones to change), then
/// prints the queue as it now is, as `queues show` does.
pub fn queues_set(ctx: &Context, name: &str, settings: &Value) -> Result<(), Failure> {
    let answer = put_queue(ctx, name, settings)?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let queue: Queue = parse("PUT /queues/{name}", answer.body)?;
    print(&render::queue(&queue))
}

pub fn queues_set_paused(ctx: &Context, name: &str, paused: bool) -> Result<(), Failure> {
    let answer = put_queue(ctx, name, &json!({ "paused": paused }))?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let verb = if paused {
        "paused (no job of it starts; running ones finish)"
    } else {
        "resumed"
    };
    print(&format!("queue {} {verb}\n", clean(name)))
}

/// Sets or removes a queue's concurrency limit: `concurrency` is a whole number or `none`.
pub fn queues_set_concurrency(ctx: &Context, name: &str, concurrency: &str) -> Result<(), Failure> {
    let limit = Concurrency::parse(concurrency)
        .map_err(|err| Failure::Local(format!("{err}, not {:?}", clean(concurrency))))?;
    let answer = put_queue(ctx, name, &json!({ "concurrency": limit.to_json() }))?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let what = match limit {
        Concurrency::AtMost(n) => format!("runs at most {n} jobs at once, fleet-wide"),
        Concurrency::NoLimit => "has no concurrency limit".to_owned(),
    };
    print(&format!("queue {} {what}\n", clean(name)))
}

/// `PUT /queues/{name}`: the settings given change, the others stay.
fn put_queue(ctx: &Context, name: &str, settings: &Value) -> Result<Answer, Failure> {
    ctx.api.put(&format!("/queues/{}", path_segment(name)), settings)
}

pub fn audit_ls(ctx: &Context, page: &PageRequest) -> Result<(), Failure> {
    let body = ctx.api.get("/audit", &page.query())?;
    if ctx.json {
        return print_json(&body);
    }
    let page: Page<AuditEntry> = parse("GET /audit", body)?;
    print(&render::audit(&page.items, page.next_cursor.as_deref()))
}

pub fn schedules_ls(ctx: &Context, page: &PageRequest) -> Result<(), Failure> {
    let body = ctx.api.get("/schedules", &page.query())?;
    if ctx.json {
        return print_json(&body);
    }
    let page: Page<Schedule> = parse("GET /schedules", body)?;
    print(&render::schedules(&page.items, page.next_cursor.as_deref()))
}

pub fn schedules_show(ctx: &Context, name: &str) -> Result<(), Failure> {
    let body = ctx.api.get(&format!("/schedules/{}", path_segment(name)), &[])?;
    if ctx.json {
        return print_json(&body);
    }
    let schedule: Schedule = parse("GET /schedules/{name}", body)?;
    print(&render::schedule(&schedule))
}

/// `PUT /schedules/{name}` with `body`: the whole schedule, created or replaced.
pub fn schedules_set(ctx: &Context, name: &str, body: &Value) -> Result<(), Failure> {
    let answer = ctx.api.put(&format!("/schedules/{}", path_segment(name)), body)?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let schedule: Schedule = parse("PUT /schedules/{name}", answer.body)?;
    let what = if answer.status == 201 { "created" } else { "replaced" };
    print(&format!(
        "{what} schedule {}\n{}",
        clean(&schedule.name),
        render::schedule(&schedule)
    ))
}

/// Pauses or resumes a schedule: its current definition, put back with `paused` set.
pub fn schedules_set_paused(ctx: &Context, name: &str, paused: bool) -> Result<(), Failure> {
    let path = format!("/schedules/{}", path_segment(name));
    let current = ctx.api.get(&path, &[])?;
    let mut body = Map::new();
    for field in ["cron", "timezone", "job", "missedFires", "overlap"] {
        if let Some(value) = current.get(field) {
            body.insert(field.to_owned(), value.clone());
        }
    }
    body.insert("paused".to_owned(), Value::Bool(paused));
    let answer = ctx.api.put(&path, &Value::Object(body))?;
    if ctx.json {
        return print_json(&answer.body);
    }
    let verb = if paused { "paused" } else { "resumed" };
    print(&format!("{verb} schedule {}\n", clean(name)))
}

pub fn schedules_rm(ctx: &Context, name: &str) -> Result<(), Failure> {
    ctx.api.delete(&format!("/schedules/{}", path_segment(name)))?;
    if ctx.json {
        return print_json(&json!({"deleted": name}));
    }
    print(&format!("deleted schedule {} (the jobs it fired stay)\n", clean(name)))
}

fn clean(text: &str) -> String {
    render::clean_line(text)
}

pub fn print_json(body: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(body).unwrap_or_default();
    print(&format!("{text}\n"))
}

/// Writes `text` to stdout. When the reader went away (`jobq jobs ls | head`, `jobq tail | grep
/// -m1 ...`) there is nobody left to answer: jobq ends there, successfully, as a program killed by
/// SIGPIPE would; any other write failure is an error.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(err) => Err(Failure::Local(format!("cannot write to stdout: {err}"))),
    }
}
