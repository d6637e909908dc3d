//! Tables and field lists for people. Each function returns the text to print, so that printing
//! (and a closed pipe) is dealt with in one place.
//!
//! Text that comes from jobs (errors, payloads, worker ids, queue names) is printed with its
//! control characters replaced, so that a job's error cannot move the cursor or recolour the
//! terminal of whoever lists it.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{CellAlignment, Table};

use crate::duration::format_ms;
use crate::model::{AuditEntry, Job, Outcomes, Queue, QueueList, RateLimit, Schedule};

/// How much of a last error a row of `jobs ls` shows.
const ERROR_IN_ROW_CHARS: usize = 48;
/// How much of an attempt's error the timeline of `jobs show` shows (the last error is above it
/// in full).
const ERROR_IN_TIMELINE_CHARS: usize = 80;
/// How much of a bulk operation's filter a row of `audit ls` shows.
const FILTER_IN_ROW_CHARS: usize = 60;

/// comfy-table's preset of a table with only the line under its header (its components, in
/// `TableComponent` order: a space draws nothing).
const HEADER_LINE_ONLY: &str = "     ──            ";

/// The statuses in a job's life order, with the column each has in `queues ls`.
const STATUS_COLUMNS: [(&str, &str); 6] = [
    ("PENDING", "pending"),
    ("BLOCKED", "blocked"),
    ("IN_PROGRESS", "running"),
    ("COMPLETED", "completed"),
    ("FAILED", "dead"),
    ("CANCELLED", "cancelled"),
];

pub fn jobs(jobs: &[Job], next_cursor: Option<&str>) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let mut table = table(&["id", "type", "queue", "status", "attempts", "created", "last error"]);
    for job in jobs {
        table.add_row(vec![
            clean_line(&job.job_id),
            clean_line(&job.job_type),
            clean_line(&job.queue),
            clean_line(&job.status),
            format!("{}/{}", job.attempts, job.max_attempts),
            timestamp(job.created_at.as_deref()),
            shorten(job.last_error.as_deref().unwrap_or(""), ERROR_IN_ROW_CHARS),
        ]);
    }
    right_align(&mut table, &[4]);
    with_cursor(table, next_cursor)
}

/// A job's fields, then its attempts one per row.
pub fn job(job: &Job) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", clean_line(&job.job_id)),
        ("type", clean_line(&job.job_type)),
        ("queue", clean_line(&job.queue)),
        ("status", clean_line(&job.status)),
        ("attempts", format!("{} of {}", job.attempts, job.max_attempts)),
        ("priority", job.priority.to_string()),
        ("run at", timestamp(job.run_at.as_deref())),
        ("created", timestamp(job.created_at.as_deref())),
        ("updated", timestamp(job.updated_at.as_deref())),
        ("started", timestamp(job.started_at.as_deref())),
        ("completed", timestamp(job.completed_at.as_deref())),
    ];
    if let Some(at) = &job.cancel_requested_at {
        fields.push(("cancel asked", timestamp(Some(at))));
    }
    if let Some(error) = &job.last_error {
        fields.push(("last error", clean_text(error)));
    }
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    fields.push(("payload", clean_text(&payload)));
    let mut text = field_list(&fields);
    text.push('\n');
    if job.history.is_empty() {
        text.push_str("no attempts yet\n");
        return text;
    }
    let mut timeline = table(&["attempt", "worker", "started", "finished", "took", "outcome", "error"]);
    for attempt in &job.history {
        timeline.add_row(vec![
            attempt.attempt.to_string(),
            clean_line(&attempt.worker_id),
            timestamp(attempt.started_at.as_deref()),
            timestamp(attempt.finished_at.as_deref()),
            took(attempt.started_at.as_deref(), attempt.finished_at.as_deref()),
            clean_line(attempt.outcome.as_deref().unwrap_or("running")),
            shorten(attempt.error.as_deref().unwrap_or(""), ERROR_IN_TIMELINE_CHARS),
        ]);
    }
    right_align(&mut timeline, &[0, 4]);
    let _ = writeln!(text, "{}", timeline.trim_fmt());
    text
}

/// Every queue on one row: jobs per status, how much is waiting, and the last minutes' outcomes.
pub fn queues(list: &QueueList) -> String {
    if list.queues.is_empty() {
        return "no queues (no jobs, and no outcomes in the last 15 minutes)\n".to_owned();
    }
    let mut headers: Vec<&str> = STATUS_COLUMNS.iter().map(|(_, column)| *column).collect();
    headers.splice(0..0, ["queue"]);
    let minutes = list.queues.first().map_or(15, |q| q.throughput.minutes);
    let completed_in = format!("completed {minutes}m");
    let retried_in = format!("retried {minutes}m");
    let dead_in = format!("dead {minutes}m");
    headers.extend(["ready", "oldest pending", "dlq", &completed_in, &retried_in, &dead_in]);
    let mut table = table(&headers);
    let mut any_estimate = false;
    for queue in &list.queues {
        let mut name = clean_line(&queue.name);
        if queue.paused {
            name.push_str(" (paused)");
        }
        if let Some(limit) = queue.concurrency {
            let _ = write!(name, " (max {limit})");
        }
        if let Some(rate) = &queue.rate_limit {
            let _ = write!(name, " (rate {}/{})", rate.limit, duration(rate.period_ms));
        }
        let mut row = vec![name];
        for (status, _) in STATUS_COLUMNS {
            let estimated = queue.estimated_counts.iter().any(|s| s == status);
            any_estimate |= estimated;
            row.push(count(queue, status, estimated));
        }
        row.extend([
            queue.ready.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            queue.oldest_pending_age_seconds.map_or_else(|| "-".to_owned(), age),
            queue.dlq_depth.to_string(),
            queue.throughput.completed.to_string(),
            queue.throughput.retried.to_string(),
            queue.throughput.dead.to_string(),
        ]);
        table.add_row(row);
    }
    right_align(&mut table, &(1..headers.len()).collect::<Vec<_>>());
    let mut text = format!("{}\n", table.trim_fmt());
    if any_estimate {
        let bound = list
            .count_bound
            .map_or_else(String::new, |bound| format!(" (over {bound} jobs in all queues)"));
        let _ = writeln!(text, "~ estimated from the table's statistics{bound}");
    }
    text
}

/// One queue's settings and counts, then its outcomes minute by minute.
pub fn queue(queue: &Queue) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("queue", clean_line(&queue.name)),
        ("paused", if queue.paused { "yes" } else { "no" }.to_owned()),
        (
            "concurrency",
            queue
                .concurrency
                .map_or_else(|| "no limit".to_owned(), |n| n.to_string()),
        ),
        ("rate limit", rate_limit(queue.rate_limit.as_ref())),
    ];
    // Absent from a server that has no retention per queue.
    if let Some(kept) = &queue.retention {
        fields.extend([
            ("retain completed", retention(kept.completed_ms)),
            ("retain cancelled", retention(kept.cancelled_ms)),
            ("retain dead", retention(kept.dead_ms)),
        ]);
    }
    for (status, column) in STATUS_COLUMNS {
        let estimated = queue.estimated_counts.iter().any(|s| s == status);
        let mut value = count(queue, status, estimated);
        if estimated {
            value.push_str(" (estimated)");
        }
        fields.push((column, value));
    }
    fields.extend([
        (
            "ready",
            queue.ready.map_or_else(|| "not counted".to_owned(), |n| n.to_string()),
        ),
        (
            "oldest pending",
            queue.oldest_pending_age_seconds.map_or_else(|| "-".to_owned(), age),
        ),
        ("dlq depth", queue.dlq_depth.to_string()),
    ]);
    let throughput = &queue.throughput;
    fields.push((
        "outcomes",
        format!(
            "{} completed, {} retried, {} dead, {} cancelled in the last {} minutes",
            throughput.completed, throughput.retried, throughput.dead, throughput.cancelled, throughput.minutes
        ),
    ));
    let mut text = field_list(&fields);
    // The minutes with an outcome only: a quiet queue's fifteen rows of zeros say nothing that the
    // totals above do not (`--json` has every minute).
    let busy: Vec<_> = throughput
        .per_minute
        .iter()
        .filter(|minute| minute.outcomes != Outcomes::default())
        .collect();
    if busy.is_empty() {
        return text;
    }
    text.push('\n');
    let mut table = table(&["minute", "completed", "retried", "dead", "cancelled"]);
    for minute in busy {
        table.add_row(vec![
            timestamp(Some(&minute.minute)),
            minute.outcomes.completed.to_string(),
            minute.outcomes.retried.to_string(),
            minute.outcomes.dead.to_string(),
            minute.outcomes.cancelled.to_string(),
        ]);
    }
    right_align(&mut table, &[1, 2, 3, 4]);
    let _ = writeln!(text, "{}", table.trim_fmt());
    text
}

pub fn audit(entries: &[AuditEntry], next_cursor: Option<&str>) -> String {
    if entries.is_empty() {
        return "no audit entries\n".to_owned();
    }
    let mut table = table(&[
        "at",
        "actor",
        "on behalf of",
        "action",
        "job / operation",
        "count",
        "filter",
    ]);
    for entry in entries {
        let target = entry.job_id.as_deref().or(entry.operation_id.as_deref()).unwrap_or("");
        let filter = entry.filter.as_ref().map(ToString::to_string).unwrap_or_default();
        table.add_row(vec![
            timestamp(entry.at.as_deref()),
            clean_line(&entry.actor),
            clean_line(entry.on_behalf_of.as_deref().unwrap_or("")),
            clean_line(&entry.action),
            clean_line(target),
            entry.count.to_string(),
            shorten(&filter, FILTER_IN_ROW_CHARS),
        ]);
    }
    right_align(&mut table, &[5]);
    with_cursor(table, next_cursor)
}

pub fn schedules(schedules: &[Schedule], next_cursor: Option<&str>) -> String {
    if schedules.is_empty() {
        return "no schedules\n".to_owned();
    }
    let mut table = table(&[
        "schedule",
        "cron",
        "zone",
        "type",
        "queue",
        "next tick",
        "last tick",
        "lag",
        "fired",
        "skipped",
    ]);
    for s in schedules {
        let next = if s.paused {
            "paused".to_owned()
        } else {
            timestamp(s.next_tick.as_deref())
        };
        table.add_row(vec![
            clean_line(&s.name),
            clean_line(&s.cron),
            clean_line(&s.timezone),
            clean_line(s.job["type"].as_str().unwrap_or("")),
            clean_line(s.job["queue"].as_str().unwrap_or("default")),
            next,
            timestamp(s.last_tick.as_deref()),
            s.lag_ms.map(lag).unwrap_or_default(),
            s.fired.to_string(),
            s.skipped.to_string(),
        ]);
    }
    right_align(&mut table, &[7, 8, 9]);
    with_cursor(table, next_cursor)
}

/// A schedule's fields: its definition, then its ticks.
pub fn schedule(s: &Schedule) -> String {
    let next = if s.paused {
        "paused".to_owned()
    } else {
        timestamp(s.next_tick.as_deref())
    };
    let rows = [
        ("schedule", clean_line(&s.name)),
        ("cron", format!("{} ({})", clean_line(&s.cron), clean_line(&s.timezone))),
        ("job", shorten(&s.job.to_string(), 200)),
        ("missed fires", clean_line(&s.missed_fires)),
        ("overlap", clean_line(&s.overlap)),
        ("next tick", next),
        ("last tick", timestamp(s.last_tick.as_deref())),
        ("fired at", timestamp(s.last_fired_at.as_deref())),
        ("lag", s.lag_ms.map(lag).unwrap_or_default()),
        ("last job", clean_line(s.last_job_id.as_deref().unwrap_or(""))),
        ("ticks", format!("{} fired, {} skipped", s.fired, s.skipped)),
        ("last error", clean_line(s.last_error.as_deref().unwrap_or(""))),
    ];
    field_list(&rows)
}

/// An RFC 3339 time from the API as `2026-05-01 12:00:03` (UTC); blank when absent, as given when
/// it is not a time.
pub fn timestamp(value: Option<&str>) -> String {
    match value.map(DateTime::parse_from_rfc3339) {
        None => String::new(),
        Some(Ok(at)) => at.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S").to_string(),
        Some(Err(_)) => clean_line(value.unwrap_or_default()),
    }
}

/// Now, as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration in seconds, to the unit that matters: `12ms`, `3.2s`, `4m10s`, `2h05m`, `3d04h`.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 1.0 {
        return format!("{:.0}ms", seconds * 1000.0);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    // Whole seconds from here: the float is finite and non-negative, and any age fits in u64.
    let whole = seconds as u64;
    let (minutes, hours, days) = (whole / 60, whole / 3600, whole / 86_400);
    if hours == 0 {
        format!("{minutes}m{:02}s", whole % 60)
    } else if days == 0 {
        format!("{hours}h{:02}m", minutes % 60)
    } else {
        format!("{days}d{:02}h", hours % 24)
    }
}

/// A rate limit as `5 starts per 1s`, with the payload field it is counted per.
fn rate_limit(rate: Option<&RateLimit>) -> String {
    let Some(rate) = rate else {
        return "no limit".to_owned();
    };
    let mut text = format!("{} starts per {}", rate.limit, duration(rate.period_ms));
    if let Some(key) = &rate.key {
        let _ = write!(text, ", per value of {}", clean_line(key));
    }
    text
}

/// A retention as `queues set` takes it: a duration, `forever` (the API's 0) or `default` (its
/// `null`: the deployment's).
fn retention(ms: Option<i64>) -> String {
    match ms {
        None => "default".to_owned(),
        Some(0) => "forever".to_owned(),
        Some(ms) => duration(ms),
    }
}

/// Milliseconds from the API as `queues set` takes them: `500ms`, `1m`, `7d`.
fn duration(ms: i64) -> String {
    u64::try_from(ms).map_or_else(|_| format!("{ms}ms"), format_ms)
}

/// How late a schedule's tick fired: `240ms`, `1.2s`, `3m05s`.
fn lag(ms: i64) -> String {
    // Lags in ms are far inside f64's exact range.
    age(ms as f64 / 1000.0)
}

/// `text` on one line, at most `max` characters (an ellipsis marks a cut).
pub fn shorten(text: &str, max: usize) -> String {
    let line = clean_line(text);
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` with every control character (newlines and tabs included) as a space.
pub fn clean_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `text` keeping its lines, every other control character as a space.
fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// How long an attempt took, from its start and end.
fn took(started: Option<&str>, finished: Option<&str>) -> String {
    let parse = |value: Option<&str>| value.and_then(|v| DateTime::parse_from_rfc3339(v).ok());
    match (parse(started), parse(finished)) {
        (Some(start), Some(end)) => {
            let millis = (end - start).num_milliseconds();
            // Millisecond counts of an attempt are far inside f64's exact range.
            age(millis as f64 / 1000.0)
        }
        _ => String::new(),
    }
}

/// A queue's count of `status`, `~` before it when it is an estimate.
fn count(queue: &Queue, status: &str, estimated: bool) -> String {
    let n = queue.counts.get(status).copied().unwrap_or(0);
    if estimated { format!("~{n}") } else { n.to_string() }
}

/// Names in a column, values beside them; a value's later lines are indented under its first.
fn field_list(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, value) in fields {
        let indent = " ".repeat(width + 2);
        let value = value.replace('\n', &format!("\n{indent}"));
        let _ = writeln!(text, "{name:<width$}  {value}");
    }
    text
}

/// A table drawn with a line under its header and nothing else: rows stay one line each, easy to
/// scan and to `grep`.
fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(HEADER_LINE_ONLY).set_header(headers.to_vec());
    for column in table.column_iter_mut() {
        // Columns two spaces apart, the first at the margin.
        column.set_padding((0, 1));
    }
    table
}

fn right_align(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The table, then the cursor of the next page when there is one.
fn with_cursor(table: Table, next_cursor: Option<&str>) -> String {
    let mut text = format!("{}\n", table.trim_fmt());
    if let Some(cursor) = next_cursor {
        let _ = writeln!(text, "next page: --cursor {}", clean_line(cursor));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_given_in_the_unit_that_matters() {
        assert_eq!(age(0.0123), "12ms");
        assert_eq!(age(3.24), "3.2s");
        assert_eq!(age(250.0), "4m10s");
        assert_eq!(age(2.0 * 3600.0 + 5.0 * 60.0 + 9.0), "2h05m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(age(f64::NAN), "-");
        assert_eq!(age(-1.0), "-");
    }

    #[test]
    fn text_from_jobs_cannot_drive_the_terminal() {
        assert_eq!(clean_line("a\x1b[31mred\nnext\tcol"), "a [31mred next col");
        assert_eq!(clean_text("line one\nline\x07 two"), "line one\nline  two");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abcd", 4), "abcd");
    }

    #[test]
    fn a_queues_settings_are_shown_as_queues_set_takes_them() {
        let limited: Queue = serde_json::from_value(serde_json::json!({
            "name": "calls",
            "paused": true,
            "concurrency": 3,
            "rateLimit": {"limit": 5, "periodMs": 1000, "key": "customer.id"},
            "retention": {"completedMs": 604_800_000, "cancelledMs": 0, "deadMs": null},
        }))
        .expect("a queue");
        let text = queue(&limited);
        for line in [
            "paused            yes\n",
            "concurrency       3\n",
            "rate limit        5 starts per 1s, per value of customer.id\n",
            "retain completed  7d\n",
            "retain cancelled  forever\n",
            "retain dead       default\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        let list = QueueList {
            queues: vec![limited],
            count_bound: None,
        };
        assert!(queues(&list).contains("calls (paused) (max 3) (rate 5/1s)"));

        // An older server's answer, without these settings.
        let plain: Queue = serde_json::from_value(serde_json::json!({"name": "mail"})).expect("a queue");
        let text = queue(&plain);
        assert!(text.contains("rate limit      no limit\n"), "{text}");
        assert!(!text.contains("retain"), "{text}");
    }

    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        assert_eq!(timestamp(Some("2026-05-01T12:00:03.123456Z")), "2026-05-01 12:00:03");
        assert_eq!(timestamp(Some("2026-05-01T14:00:03+02:00")), "2026-05-01 12:00:03");
        assert_eq!(timestamp(Some("soon")), "soon");
        assert_eq!(timestamp(None), "");
    }
}
