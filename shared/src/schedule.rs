//! Recurring jobs: a schedule fires one job per tick of a cron expression read on a time zone's
//! wall clock (`PUT /schedules/{name}`; migrations/V11__schedules.sql).
//!
//! **Each tick fires once**, whatever the number of processes firing and whoever dies mid-tick. A
//! schedule's row holds its next tick; firing moves it on by compare-and-set *in the statement that
//! inserts the tick's job* (sql/schedule_fire.sql), so the job exists exactly when the tick has
//! moved on. Two processes firing the same tick: the second finds the tick moved and inserts
//! nothing. A process that dies before its statement commits leaves the tick for the next one; one
//! that dies after it committed has fired the tick (the job is in Postgres, and the repairer pushes
//! it to Redis if it never got there). Each tick's job also carries the idempotency key
//! `schedule:<name>:<tick>`, so not even a schedule deleted and made again fires a tick twice.
//!
//! **Missed ticks.** A tick is *missed* when it is fired more than [`MISSED_AFTER`] after it was
//! due (every process that fires was down, say). After an outage, per the schedule's `missedFires`:
//! - `skip` (the default): missed ticks make no job; the last tick due fires if it is not missed;
//! - `coalesce`: one job, for the last tick due, stands for all of them;
//! - `catchUp`: every tick makes its own job, oldest first ([`CATCH_UP_BATCH`] per statement).
//!
//! **Overlap.** With `overlap: "skip"`, a tick whose previous job is still `PENDING` or
//! `IN_PROGRESS` makes no job (it is counted in `skipped`); `allow` (the default) always fires.
//!
//! **Daylight saving time** (from the `croner` crate, per the Open Cron Pattern Specification):
//! in the hour the clocks skip, a tick at a fixed time (`0 30 2 * * *`) fires at the first time
//! after the gap that day, and the ticks of an interval or wildcard expression (`*/15 * * * *`)
//! that fall in the gap do not happen; in the hour the clocks repeat, a fixed-time tick fires
//! once, at its first occurrence, and interval ticks fire in both passes. Ticks are instants, so a
//! job's `schedule.tick` is always in UTC.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::{CreateRequest, JobId, NewJob};
use crate::store::Store;

/// A tick fired later than this after it was due is missed (see the module doc).
pub const MISSED_AFTER: Duration = Duration::from_secs(60);
/// Ticks of a `catchUp` schedule fired in one statement.
pub const CATCH_UP_BATCH: usize = 100;
/// Missed ticks counted one by one; beyond this many the count is a lower bound.
pub const COUNT_BOUND: i64 = 10_000;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_CRON_LEN: usize = 200;

/// The next tick of a schedule that never fires again (its expression has no tick left).
pub fn never() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What happens to ticks missed while nothing fired them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MissedFires {
    #[default]
    Skip,
    Coalesce,
    CatchUp,
}

impl MissedFires {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedFires::Skip => "skip",
            MissedFires::Coalesce => "coalesce",
            MissedFires::CatchUp => "catchUp",
        }
    }

    fn parse(text: &str) -> Result<MissedFires> {
        match text {
            "skip" => Ok(MissedFires::Skip),
            "coalesce" => Ok(MissedFires::Coalesce),
            "catchUp" => Ok(MissedFires::CatchUp),
            other => Err(Error::CorruptRow(format!("unknown missed_fires {other:?}"))),
        }
    }
}

/// Whether a tick fires while the previous tick's job is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Overlap {
    #[default]
    Allow,
    Skip,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
        }
    }

    fn parse(text: &str) -> Result<Overlap> {
        match text {
            "allow" => Ok(Overlap::Allow),
            "skip" => Ok(Overlap::Skip),
            other => Err(Error::CorruptRow(format!("unknown overlap {other:?}"))),
        }
    }
}

/// What is wrong with a schedule request; `field` is its JSON path (`job.priority`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSchedule {
    pub field: String,
    pub problem: String,
    pub missing: bool,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidSchedule {
    InvalidSchedule {
        field: field.into(),
        problem: problem.into(),
        missing: false,
    }
}

/// A cron expression on a time zone's wall clock: five fields, or six with seconds first.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Cron {
    pub fn parse(expression: &str, timezone: &str) -> std::result::Result<Cron, InvalidSchedule> {
        if expression.len() > MAX_CRON_LEN {
            return Err(invalid("cron", format!("is longer than {MAX_CRON_LEN} characters")));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|err| invalid("cron", format!("{expression:?} is not a cron expression: {err}")))?;
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            invalid(
                "timezone",
                format!("{timezone:?} is not an IANA time zone name (such as \"Europe/Paris\")"),
            )
        })?;
        Ok(Cron { cron, tz })
    }

    /// The first tick strictly after `t`, if there is one.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

/// The body of `PUT /schedules/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleRequest {
    pub cron: String,
    #[serde(default)]
    pub timezone: Option<String>,
    /// A create-job body, without `runAt`, a delay or an idempotency key (each tick sets them).
    pub job: serde_json::Value,
    #[serde(default)]
    pub paused: Option<bool>,
    #[serde(default)]
    pub missed_fires: Option<MissedFires>,
    #[serde(default)]
    pub overlap: Option<Overlap>,
}

/// A validated schedule, ready to store.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: serde_json::Value,
    pub paused: bool,
    pub missed_fires: MissedFires,
    pub overlap: Overlap,
    parsed: Cron,
}

/// Checks a schedule's name: 1 to 200 letters, digits, `.`, `_`, `-` or `:`.
pub fn check_name(name: &str) -> std::result::Result<(), InvalidSchedule> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(fine) {
        return Err(invalid(
            "name",
            format!("{name:?} is not a schedule name: 1 to {MAX_NAME_LEN} letters, digits, '.', '_', '-' or ':'"),
        ));
    }
    Ok(())
}

/// Reads a schedule's job body into the job each tick creates, at `tick`.
pub fn job_for(body: &serde_json::Value) -> std::result::Result<NewJob, InvalidSchedule> {
    let request: CreateRequest = serde_json::from_value(body.clone()).map_err(|err| invalid("job", err.to_string()))?;
    let set_by_tick = [
        ("runAt", request.run_at.is_some()),
        ("delayMs", request.delay_ms.is_some()),
        ("delaySeconds", request.delay_seconds.is_some()),
        ("idempotencyKey", request.idempotency_key.is_some()),
    ];
    if let Some((field, _)) = set_by_tick.iter().find(|(_, set)| *set) {
        return Err(invalid(
            format!("job.{field}"),
            "is set by each tick: a tick's job runs at its tick, under the key schedule:<name>:<tick>",
        ));
    }
    if request.depends_on.is_some() {
        return Err(invalid(
            "job.dependsOn",
            "is not allowed in a schedule: each tick's job would wait on the same parents, which complete once",
        ));
    }
    NewJob::parse(request, None).map_err(|err| InvalidSchedule {
        field: format!("job.{}", err.field),
        problem: err.problem,
        missing: err.missing,
    })
}

impl ScheduleSpec {
    pub fn parse(name: &str, request: ScheduleRequest) -> std::result::Result<ScheduleSpec, InvalidSchedule> {
        check_name(name)?;
        let timezone = request.timezone.unwrap_or_else(|| "UTC".to_owned());
        let parsed = Cron::parse(&request.cron, &timezone)?;
        job_for(&request.job)?;
        Ok(ScheduleSpec {
            name: name.to_owned(),
            cron: request.cron,
            timezone,
            job: request.job,
            paused: request.paused.unwrap_or(false),
            missed_fires: request.missed_fires.unwrap_or_default(),
            overlap: request.overlap.unwrap_or_default(),
            parsed,
        })
    }

    /// The first tick after `now`; an expression that never ticks again is refused.
    pub fn first_tick(&self, now: DateTime<Utc>) -> std::result::Result<DateTime<Utc>, InvalidSchedule> {
        self.parsed
            .next_after(now)
            .ok_or_else(|| invalid("cron", format!("{:?} has no tick after {now}", self.cron)))
    }
}

/// A stored schedule and how its firing goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: serde_json::Value,
    pub paused: bool,
    pub missed_fires: MissedFires,
    pub overlap: Overlap,
    pub next_fire_at: DateTime<Utc>,
    pub last_tick: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<JobId>,
    pub fired: i64,
    pub skipped: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// How late the last tick fired.
    pub fn lag(&self) -> Option<chrono::Duration> {
        Some(self.last_fired_at? - self.last_tick?)
    }

    /// The key of the job of `tick`.
    pub fn tick_key(&self, tick: DateTime<Utc>) -> String {
        tick_key(&self.name, tick)
    }
}

pub fn tick_key(name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// Which ticks one firing makes jobs for, and where the schedule goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Oldest first.
    pub ticks: Vec<DateTime<Utc>>,
    /// Due ticks that make no job (missed).
    pub missed: i64,
    pub next: DateTime<Utc>,
}

/// The firing of a schedule whose next tick `due` is due at `now` (`due <= now`): pure, so every
/// policy is tested without a clock.
pub fn plan(cron: &Cron, due: DateTime<Utc>, now: DateTime<Utc>, missed_fires: MissedFires) -> Plan {
    let missed_after = chrono::Duration::from_std(MISSED_AFTER).unwrap_or(chrono::Duration::MAX);
    if missed_fires == MissedFires::CatchUp {
        let mut ticks = vec![due];
        let mut next = cron.next_after(due).unwrap_or_else(never);
        while next <= now && ticks.len() < CATCH_UP_BATCH {
            ticks.push(next);
            next = cron.next_after(next).unwrap_or_else(never);
        }
        return Plan { ticks, missed: 0, next };
    }
    // The last tick due, and how many were due.
    let (mut last, mut due_count) = (due, 1i64);
    while due_count < COUNT_BOUND {
        match cron.next_after(last) {
            Some(tick) if tick <= now => {
                last = tick;
                due_count += 1;
            }
            _ => break,
        }
    }
    if due_count == COUNT_BOUND {
        // Too many to count: jump to the last tick at or before `now`.
        if let Ok(previous) = cron.cron.find_previous_occurrence(&now.with_timezone(&cron.tz), true) {
            last = last.max(previous.with_timezone(&Utc));
        }
    }
    let next = cron.next_after(last).unwrap_or_else(never);
    let on_time = now - last <= missed_after;
    match missed_fires {
        MissedFires::Skip if !on_time => Plan {
            ticks: Vec::new(),
            missed: due_count,
            next,
        },
        _ => Plan {
            ticks: vec![last],
            missed: due_count - 1,
            next,
        },
    }
}

/// What a firing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firing {
    /// False when another process had fired the tick (or the schedule changed) first.
    pub moved: bool,
    /// The previous job was unfinished and the schedule skips overlaps: no job.
    pub overlapped: bool,
    /// The jobs made, to push to Redis.
    pub jobs: Vec<crate::store::Ready>,
}

impl Store {
    /// Creates or replaces the schedule; true when it was created. Its next tick is recomputed
    /// (from `now`) when its expression or zone changed or it was paused, and kept otherwise.
    pub async fn put_schedule(&self, spec: &ScheduleSpec, now: DateTime<Utc>) -> Result<(Schedule, bool)> {
        let first = spec.first_tick(now).map_err(Error::InvalidSchedule)?;
        let row = self
            .query_opt(
                include_str!("sql/schedule_put.sql"),
                &[
                    &spec.name,
                    &spec.cron,
                    &spec.timezone,
                    &spec.job,
                    &spec.paused,
                    &spec.missed_fires.as_str(),
                    &spec.overlap.as_str(),
                    &first,
                    &now,
                ],
            )
            .await?
            .ok_or_else(|| Error::CorruptRow("schedule upsert returned no row".into()))?;
        Ok((schedule_from_row(&row)?, row.try_get("created")?))
    }

    pub async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        self.query_opt(include_str!("sql/schedule_get.sql"), &[&name])
            .await?
            .map(|row| schedule_from_row(&row))
            .transpose()
    }

    /// Up to `limit` schedules by name, after `after`.
    pub async fn schedules(&self, after: Option<&str>, limit: usize) -> Result<Vec<Schedule>> {
        let limit = limit as i64;
        self.query(include_str!("sql/schedule_list.sql"), &[&after, &limit])
            .await?
            .iter()
            .map(schedule_from_row)
            .collect()
    }

    /// Deletes the schedule; false when there was none. Its jobs stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        Ok(!self
            .query(include_str!("sql/schedule_delete.sql"), &[&name])
            .await?
            .is_empty())
    }

    /// Up to `limit` unpaused schedules whose next tick is due at `now`, soonest first.
    pub async fn due_schedules(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Schedule>> {
        let limit = limit as i64;
        self.query(include_str!("sql/schedule_due.sql"), &[&now, &limit])
            .await?
            .iter()
            .map(schedule_from_row)
            .collect()
    }

    /// Fires `plan` for `schedule`: moves its next tick from the one it was read with to
    /// `plan.next` and inserts a job per tick of `plan`, in one statement (see the module doc).
    pub async fn fire_schedule(
        &self,
        schedule: &Schedule,
        job: &NewJob,
        plan: &Plan,
        default_timeout_ms: i32,
        now: DateTime<Utc>,
    ) -> Result<Firing> {
        let ids: Vec<Uuid> = plan.ticks.iter().map(|_| JobId::new().0).collect();
        let keys: Vec<String> = plan.ticks.iter().map(|t| schedule.tick_key(*t)).collect();
        let rows = self
            .query(
                include_str!("sql/schedule_fire.sql"),
                &[
                    &schedule.name,
                    &schedule.next_fire_at,
                    &plan.next,
                    &ids,
                    &plan.ticks,
                    &keys,
                    &job.job_type,
                    &job.queue,
                    &job.payload,
                    &job.priority,
                    &job.max_attempts,
                    &job.timeout_ms.unwrap_or(default_timeout_ms),
                    &job.fingerprint(),
                    &now,
                    &plan.missed,
                ],
            )
            .await?;
        let mut firing = Firing::default();
        for row in &rows {
            firing.moved = true;
            firing.overlapped = row.try_get("overlapped")?;
            if let Some(id) = row.try_get::<_, Option<Uuid>>("id")? {
                firing.jobs.push(crate::store::Ready {
                    id: JobId(id),
                    queue: row.try_get("queue")?,
                    priority: row.try_get("priority")?,
                    run_at: row.try_get("run_at")?,
                });
            }
        }
        Ok(firing)
    }

    /// Records why firing the schedule failed (shown until a firing succeeds).
    pub async fn schedule_failed(&self, name: &str, error: &str) -> Result<()> {
        let error: String = error.replace('\0', "").chars().take(1000).collect();
        self.query(include_str!("sql/schedule_failed.sql"), &[&name, &error])
            .await?;
        Ok(())
    }
}

fn schedule_from_row(row: &Row) -> Result<Schedule> {
    Ok(Schedule {
        name: row.try_get("name")?,
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        job: row.try_get("job")?,
        paused: row.try_get("paused")?,
        missed_fires: MissedFires::parse(row.try_get("missed_fires")?)?,
        overlap: Overlap::parse(row.try_get("overlap")?)?,
        next_fire_at: row.try_get("next_fire_at")?,
        last_tick: row.try_get("last_tick")?,
        last_fired_at: row.try_get("last_fired_at")?,
        last_job_id: row.try_get::<_, Option<Uuid>>("last_job_id")?.map(JobId),
        fired: row.try_get("fired")?,
        skipped: row.try_get("skipped")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
    }

    fn cron(expression: &str, tz: &str) -> Cron {
        Cron::parse(expression, tz).expect("a valid expression")
    }

    #[test]
    fn a_seconds_field_is_allowed_and_five_fields_mean_minutes() {
        let every_second = cron("* * * * * *", "UTC");
        assert_eq!(
            every_second.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:01Z"))
        );
        let every_minute = cron("* * * * *", "UTC");
        assert_eq!(
            every_minute.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        assert_eq!(Cron::parse("61 * * * *", "UTC").expect_err("refused").field, "cron");
        assert_eq!(
            Cron::parse("* * * * * * 2026", "UTC").expect_err("refused").field,
            "cron"
        );
        assert_eq!(
            Cron::parse("* * * * *", "Mars/Olympus").expect_err("refused").field,
            "timezone"
        );
    }

    #[test]
    fn a_fixed_time_in_the_skipped_hour_fires_after_the_gap_that_day() {
        // Europe/Paris skips from 02:00 to 03:00 on 2026-03-29 (01:00 UTC).
        let daily = cron("30 2 * * *", "Europe/Paris");
        let fire = daily.next_after(at("2026-03-28T12:00:00Z")).expect("a tick");
        assert_eq!(
            fire,
            at("2026-03-29T01:00:00Z"),
            "03:00 Paris time, the first minute after the gap"
        );
        assert_eq!(daily.next_after(fire), Some(at("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn a_fixed_time_in_the_repeated_hour_fires_once() {
        // Europe/Paris goes back from 03:00 to 02:00 on 2026-10-25 (01:00 UTC).
        let daily = cron("30 2 * * *", "Europe/Paris");
        let first = daily.next_after(at("2026-10-24T12:00:00Z")).expect("a tick");
        assert_eq!(first, at("2026-10-25T00:30:00Z"), "the first 02:30");
        assert_eq!(
            daily.next_after(first),
            Some(at("2026-10-26T01:30:00Z")),
            "not the second 02:30"
        );
    }

    #[test]
    fn interval_ticks_fire_in_both_passes_of_the_repeated_hour() {
        let half_hourly = cron("0,30 * * * *", "Europe/Paris");
        let mut ticks = Vec::new();
        let mut t = at("2026-10-25T00:00:00Z");
        while t < at("2026-10-25T02:00:00Z") {
            t = half_hourly.next_after(t).expect("a tick");
            ticks.push(t);
        }
        // 02:30 CEST, 02:00 CET, 02:30 CET, 03:00 CET: one every 30 minutes of real time.
        assert_eq!(
            ticks,
            vec![
                at("2026-10-25T00:30:00Z"),
                at("2026-10-25T01:00:00Z"),
                at("2026-10-25T01:30:00Z"),
                at("2026-10-25T02:00:00Z")
            ]
        );
    }

    #[test]
    fn a_tick_on_time_fires_under_every_policy() {
        let every_second = cron("* * * * * *", "UTC");
        for policy in [MissedFires::Skip, MissedFires::Coalesce, MissedFires::CatchUp] {
            let plan = plan(
                &every_second,
                at("2026-01-01T00:00:05Z"),
                at("2026-01-01T00:00:05.300Z"),
                policy,
            );
            assert_eq!(plan.ticks, vec![at("2026-01-01T00:00:05Z")], "{policy:?}");
            assert_eq!(plan.missed, 0);
            assert_eq!(plan.next, at("2026-01-01T00:00:06Z"));
        }
    }

    #[test]
    fn after_an_outage_skip_fires_only_a_tick_still_on_time() {
        let minutely = cron("0 * * * * *", "UTC");
        // Down from 10:00:30 to 10:05:20: ticks 10:01..10:05 are due; 10:05 is 20 s late.
        let skip = plan(
            &minutely,
            at("2026-01-01T10:01:00Z"),
            at("2026-01-01T10:05:20Z"),
            MissedFires::Skip,
        );
        assert_eq!(skip.ticks, vec![at("2026-01-01T10:05:00Z")]);
        assert_eq!(skip.missed, 4);
        assert_eq!(skip.next, at("2026-01-01T10:06:00Z"));
        // Three hourly ticks due, the last one 20 minutes late: all missed.
        let hourly = cron("0 0 * * * *", "UTC");
        let late = plan(
            &hourly,
            at("2026-01-01T08:00:00Z"),
            at("2026-01-01T10:20:00Z"),
            MissedFires::Skip,
        );
        assert_eq!(late.ticks, Vec::<DateTime<Utc>>::new());
        assert_eq!(late.missed, 3);
        assert_eq!(late.next, at("2026-01-01T11:00:00Z"));
    }

    #[test]
    fn after_an_outage_coalesce_fires_one_job_for_the_last_tick() {
        let hourly = cron("0 0 * * * *", "UTC");
        let plan = plan(
            &hourly,
            at("2026-01-01T08:00:00Z"),
            at("2026-01-01T10:20:00Z"),
            MissedFires::Coalesce,
        );
        assert_eq!(plan.ticks, vec![at("2026-01-01T10:00:00Z")]);
        assert_eq!(plan.missed, 2);
        assert_eq!(plan.next, at("2026-01-01T11:00:00Z"));
    }

    #[test]
    fn after_an_outage_catch_up_fires_every_tick_in_batches() {
        let hourly = cron("0 0 * * * *", "UTC");
        let plan1 = plan(
            &hourly,
            at("2026-01-01T08:00:00Z"),
            at("2026-01-01T10:20:00Z"),
            MissedFires::CatchUp,
        );
        assert_eq!(
            plan1.ticks,
            vec![
                at("2026-01-01T08:00:00Z"),
                at("2026-01-01T09:00:00Z"),
                at("2026-01-01T10:00:00Z")
            ]
        );
        assert_eq!(plan1.next, at("2026-01-01T11:00:00Z"));
        let every_second = cron("* * * * * *", "UTC");
        let long = plan(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T01:00:00Z"),
            MissedFires::CatchUp,
        );
        assert_eq!(long.ticks.len(), CATCH_UP_BATCH);
        assert_eq!(
            long.next,
            at("2026-01-01T00:01:40Z"),
            "the next batch starts where this one ended"
        );
    }

    #[test]
    fn a_very_long_outage_is_counted_up_to_the_bound_and_lands_on_the_last_tick() {
        let every_second = cron("* * * * * *", "UTC");
        let plan = plan(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:00.500Z"),
            MissedFires::Coalesce,
        );
        assert_eq!(plan.ticks, vec![at("2026-01-02T00:00:00Z")]);
        assert!(plan.missed >= COUNT_BOUND - 1);
        assert_eq!(plan.next, at("2026-01-02T00:00:01Z"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("nightly-report.v2:eu").is_ok());
        for bad in ["", "with space", "slash/", "é", &"x".repeat(201)] {
            assert_eq!(check_name(bad).expect_err("refused").field, "name", "{bad:?}");
        }
    }

    #[test]
    fn a_job_body_may_not_set_what_each_tick_sets() {
        for (body, field) in [
            (
                serde_json::json!({"type": "TEST", "runAt": "2030-01-01T00:00:00Z"}),
                "job.runAt",
            ),
            (serde_json::json!({"type": "TEST", "delayMs": 5}), "job.delayMs"),
            (
                serde_json::json!({"type": "TEST", "idempotencyKey": "k"}),
                "job.idempotencyKey",
            ),
            (serde_json::json!({"type": "TEST", "priority": 101}), "job.priority"),
            (serde_json::json!({"payload": {}}), "job.type"),
            (serde_json::json!({"type": "TEST", "colour": 1}), "job"),
        ] {
            assert_eq!(job_for(&body).expect_err("refused").field, field, "{body}");
        }
        assert!(job_for(&serde_json::json!({"type": "TEST", "queue": "reports", "payload": {"a": 1}})).is_ok());
    }
}
