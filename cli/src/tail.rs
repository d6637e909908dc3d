//! `jobq tail`: the outcomes (completed, retried, dead, cancelled) of each queue as they happen.
//!
//! The API has no stream of events, so this polls `GET /queues` and prints, per queue and poll,
//! how many outcomes were added since the previous poll. These are per-queue counts, not jobs: a
//! line says "3 more completed in `emails`", not which 3.
//!
//! The totals the API gives cover a sliding window (the last 15 minutes), so subtracting two
//! totals would lose the outcomes of minutes that slid out between polls. The difference is taken
//! minute by minute instead: for each minute in the window, what it holds now less what it held
//! at the previous poll (a minute the previous poll did not have is new in full).

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::api::{Failure, parse};
use crate::commands::{Context, print};
use crate::model::{Outcomes, QueueList};
use crate::render;

/// Each queue's outcomes per minute, keyed by queue name, then by the minute as the API writes it.
type Seen = BTreeMap<String, BTreeMap<String, Outcomes>>;

/// Follows the queues until the process is interrupted (Ctrl-C). The first poll only sets the
/// starting point: a failure there (a wrong URL or token) ends the command; later failures are
/// reported and the next poll tries again, so that a long tail survives a network blip.
pub fn tail(ctx: &Context, interval: Duration) -> Result<(), Failure> {
    let mut seen = poll(ctx)?;
    eprintln!(
        "following {} queue(s) every {}s; Ctrl-C to stop",
        seen.len(),
        interval.as_secs_f64()
    );
    loop {
        thread::sleep(interval);
        let now = match poll(ctx) {
            Ok(now) => now,
            Err(failure) => {
                eprintln!("jobq: {failure}; trying again in {}s", interval.as_secs_f64());
                continue;
            }
        };
        let at = render::now_rfc3339();
        for (queue, minutes) in &now {
            let added = added_since(seen.get(queue), minutes);
            if added == Outcomes::default() {
                continue;
            }
            print(&line(ctx.json, &at, queue, added))?;
        }
        seen = now;
    }
}

fn poll(ctx: &Context) -> Result<Seen, Failure> {
    let body = ctx.api.get("/queues", &[])?;
    let list: QueueList = parse("GET /queues", body)?;
    Ok(list
        .queues
        .into_iter()
        .map(|queue| {
            let minutes = queue
                .throughput
                .per_minute
                .into_iter()
                .map(|minute| (minute.minute, minute.outcomes))
                .collect();
            (queue.name, minutes)
        })
        .collect())
}

/// The outcomes added to `now` since `before`, minute by minute. A minute's count only grows; one
/// that seems to shrink (the server's clock or data went back) adds nothing rather than a negative.
fn added_since(before: Option<&BTreeMap<String, Outcomes>>, now: &BTreeMap<String, Outcomes>) -> Outcomes {
    let mut added = Outcomes::default();
    for (minute, outcomes) in now {
        let earlier = before.and_then(|b| b.get(minute)).copied().unwrap_or_default();
        let grew = |now: i64, then: i64| now.saturating_sub(then).max(0);
        added.completed += grew(outcomes.completed, earlier.completed);
        added.retried += grew(outcomes.retried, earlier.retried);
        added.dead += grew(outcomes.dead, earlier.dead);
        added.cancelled += grew(outcomes.cancelled, earlier.cancelled);
    }
    added
}

/// One line for one queue and poll: for people, `12:00:03  emails  +12 completed ...`; with
/// `--json`, one object per line.
fn line(json: bool, at: &str, queue: &str, added: Outcomes) -> String {
    if json {
        let object = json!({
            "at": at,
            "queue": queue,
            "completed": added.completed,
            "retried": added.retried,
            "dead": added.dead,
            "cancelled": added.cancelled,
        });
        return format!("{object}\n");
    }
    let time = at.get(11..19).unwrap_or(at);
    format!(
        "{time}  {:<20}  +{} completed  +{} retried  +{} dead  +{} cancelled\n",
        render::clean_line(queue),
        added.completed,
        added.retried,
        added.dead,
        added.cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(completed: i64, retried: i64, dead: i64, cancelled: i64) -> Outcomes {
        Outcomes {
            completed,
            retried,
            dead,
            cancelled,
        }
    }

    fn minutes(entries: &[(&str, Outcomes)]) -> BTreeMap<String, Outcomes> {
        entries.iter().map(|(m, o)| ((*m).to_owned(), *o)).collect()
    }

    #[test]
    fn outcomes_are_added_minute_by_minute_as_the_window_slides() {
        let before = minutes(&[("11:00", outcomes(5, 1, 0, 0)), ("11:01", outcomes(2, 0, 0, 0))]);
        // 11:00 slid out of the window, 11:01 grew by 3, 11:02 is new.
        let now = minutes(&[("11:01", outcomes(5, 0, 1, 0)), ("11:02", outcomes(4, 0, 0, 2))]);
        assert_eq!(added_since(Some(&before), &now), outcomes(7, 0, 1, 2));
        // A sliding total would have said 9 - 8 = 1 completed.
    }

    #[test]
    fn a_queue_seen_for_the_first_time_is_new_in_full() {
        let now = minutes(&[("11:02", outcomes(1, 2, 3, 4))]);
        assert_eq!(added_since(None, &now), outcomes(1, 2, 3, 4));
    }

    #[test]
    fn a_count_that_shrinks_adds_nothing() {
        let before = minutes(&[("11:02", outcomes(9, 0, 0, 0))]);
        let now = minutes(&[("11:02", outcomes(4, 0, 0, 0))]);
        assert_eq!(added_since(Some(&before), &now), Outcomes::default());
    }

    #[test]
    fn a_line_is_text_for_people_and_an_object_for_scripts() {
        let added = outcomes(12, 1, 0, 3);
        assert_eq!(
            line(false, "2026-05-01T12:00:03Z", "emails", added),
            "12:00:03  emails                +12 completed  +1 retried  +0 dead  +3 cancelled\n"
        );
        let object: serde_json::Value =
            serde_json::from_str(&line(true, "2026-05-01T12:00:03Z", "emails", added)).expect("json");
        assert_eq!(
            object,
            json!({"at": "2026-05-01T12:00:03Z", "queue": "emails", "completed": 12, "retried": 1, "dead": 0, "cancelled": 3})
        );
    }
}
