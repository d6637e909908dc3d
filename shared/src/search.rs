//! Finding jobs: the filter a search takes, the cursor of its pages, and a page of results.
//! [`crate::store::Store::find`] runs it, newest first, on indexes of `migrations/V3__search.sql`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::{Job, JobId, Status, limits};

/// The longest text an error search takes, in characters.
pub const MAX_ERROR_SEARCH_LEN: usize = 200;
/// The shortest: the trigram index finds nothing shorter than three characters without reading
/// every error it holds.
pub const MIN_ERROR_SEARCH_LEN: usize = 3;
/// The largest payload filter, in bytes of its JSON text.
pub const MAX_PAYLOAD_FILTER_BYTES: usize = 4096;

/// What a search looks for: jobs that match every filter set. Built with the methods below, each of
/// which refuses a value no job could be stored with, so that nothing reaches Postgres that it would
/// reject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub(crate) status: Option<Status>,
    pub(crate) queue: Option<String>,
    pub(crate) job_type: Option<String>,
    pub(crate) payload: Option<serde_json::Value>,
    pub(crate) error: Option<String>,
    pub(crate) created_after: Option<DateTime<Utc>>,
    pub(crate) created_before: Option<DateTime<Utc>>,
}

/// A filter value that cannot be searched for, and which parameter it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {problem}")]
pub struct InvalidFilter {
    pub parameter: &'static str,
    pub problem: String,
}

fn invalid(parameter: &'static str, problem: impl Into<String>) -> InvalidFilter {
    InvalidFilter {
        parameter,
        problem: problem.into(),
    }
}

/// Text as a create request stores it (trimmed, 1 to `max` characters, no NUL), or why not.
fn stored_text(parameter: &'static str, text: &str, max: usize) -> Result<String, InvalidFilter> {
    let text = text.trim();
    if text.contains('\0') {
        return Err(invalid(parameter, "must not contain the NUL character"));
    }
    if text.is_empty() || text.chars().count() > max {
        return Err(invalid(parameter, format!("must be 1 to {max} characters")));
    }
    Ok(text.to_owned())
}

impl JobFilter {
    /// Jobs in `status`.
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Jobs of `queue` (exactly, after trimming, as a create request stores it).
    pub fn queue(mut self, queue: &str) -> Result<Self, InvalidFilter> {
        self.queue = Some(stored_text("queue", queue, limits::MAX_QUEUE_LEN)?);
        Ok(self)
    }

    /// Jobs of `job_type` (exactly, after trimming).
    pub fn job_type(mut self, job_type: &str) -> Result<Self, InvalidFilter> {
        self.job_type = Some(stored_text("type", job_type, limits::MAX_TYPE_LEN)?);
        Ok(self)
    }

    /// Jobs whose payload contains `payload` (Postgres's jsonb `@>`: every key of the object with
    /// a value that contains the given one; arrays contain the elements given, in any order).
    pub fn payload(mut self, payload: serde_json::Value) -> Result<Self, InvalidFilter> {
        if !payload.is_object() {
            return Err(invalid("payload", "must be a JSON object, such as {\"userId\":123}"));
        }
        if contains_nul(&payload) {
            return Err(invalid("payload", "must not contain the NUL character (\\u0000)"));
        }
        self.payload = Some(payload);
        Ok(self)
    }

    /// Jobs whose last error contains `text`, in any case.
    pub fn error(mut self, text: &str) -> Result<Self, InvalidFilter> {
        if text.contains('\0') {
            return Err(invalid("error", "must not contain the NUL character"));
        }
        let length = text.chars().count();
        if !(MIN_ERROR_SEARCH_LEN..=MAX_ERROR_SEARCH_LEN).contains(&length) {
            return Err(invalid(
                "error",
                format!("must be {MIN_ERROR_SEARCH_LEN} to {MAX_ERROR_SEARCH_LEN} characters"),
            ));
        }
        self.error = Some(text.to_owned());
        Ok(self)
    }

    /// Jobs created at or after `at`.
    pub fn created_after(mut self, at: DateTime<Utc>) -> Self {
        self.created_after = Some(at);
        self
    }

    /// Jobs created before `at`.
    pub fn created_before(mut self, at: DateTime<Utc>) -> Self {
        self.created_before = Some(at);
        self
    }

    /// The error filter as a LIKE pattern: its text anywhere, with `%`, `_` and `\` taken literally.
    pub(crate) fn error_pattern(&self) -> Option<String> {
        self.error.as_ref().map(|text| {
            let mut pattern = String::with_capacity(text.len() + 2);
            pattern.push('%');
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }
}

impl JobFilter {
    /// The status filter, if any.
    pub fn status_filter(&self) -> Option<Status> {
        self.status
    }

    /// The filter as a JSON object with `GET /jobs`'s parameter names, only those set (the form a
    /// bulk operation stores and shows).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(status) = self.status {
            map.insert("status".into(), status.as_str().into());
        }
        if let Some(queue) = &self.queue {
            map.insert("queue".into(), queue.as_str().into());
        }
        if let Some(job_type) = &self.job_type {
            map.insert("type".into(), job_type.as_str().into());
        }
        if let Some(payload) = &self.payload {
            map.insert("payload".into(), payload.clone());
        }
        if let Some(error) = &self.error {
            map.insert("error".into(), error.as_str().into());
        }
        let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if let Some(at) = &self.created_after {
            map.insert("createdAfter".into(), time(at).into());
        }
        if let Some(at) = &self.created_before {
            map.insert("createdBefore".into(), time(at).into());
        }
        serde_json::Value::Object(map)
    }

    /// A filter from a JSON object with `GET /jobs`'s parameter names (`status`, `queue`, `type`,
    /// `payload` as a JSON object, `error`, `createdAfter`, `createdBefore` as RFC 3339 strings),
    /// each checked as the query parameters are. `null` is a filter not given; any other name is
    /// refused.
    pub fn from_json(value: &serde_json::Value) -> Result<JobFilter, InvalidFilter> {
        let object = value
            .as_object()
            .ok_or_else(|| invalid("filter", "must be a JSON object, such as {\"status\":\"FAILED\"}"))?;
        let mut filter = JobFilter::default();
        for (name, value) in object {
            if value.is_null() {
                continue;
            }
            let text = |parameter: &'static str| value.as_str().ok_or_else(|| invalid(parameter, "must be a string"));
            let date = |parameter: &'static str| -> Result<DateTime<Utc>, InvalidFilter> {
                DateTime::parse_from_rfc3339(text(parameter)?.trim())
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| invalid(parameter, "must be an RFC 3339 date-time, such as 2025-10-24T18:00:00Z"))
            };
            filter = match name.as_str() {
                "status" => filter.status(text("status")?.trim().to_ascii_uppercase().parse().map_err(|_| {
                    invalid(
                        "status",
                        "must be one of PENDING, BLOCKED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED",
                    )
                })?),
                "queue" => filter.queue(text("queue")?)?,
                "type" => filter.job_type(text("type")?)?,
                "payload" => {
                    if value.to_string().len() > MAX_PAYLOAD_FILTER_BYTES {
                        return Err(invalid(
                            "payload",
                            format!("is longer than {MAX_PAYLOAD_FILTER_BYTES} bytes"),
                        ));
                    }
                    filter.payload(value.clone())?
                }
                "error" => filter.error(text("error")?)?,
                "createdAfter" => filter.created_after(date("createdAfter")?),
                "createdBefore" => filter.created_before(date("createdBefore")?),
                _ => {
                    return Err(invalid(
                        "filter",
                        format!(
                            "has no field {:?}; known: status, queue, type, payload, error, createdAfter, createdBefore",
                            name.chars().take(40).collect::<String>()
                        ),
                    ));
                }
            };
        }
        Ok(filter)
    }
}

/// True when any string or object key in `value` holds a NUL character (jsonb cannot store one).
fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// A position in a search's results (newest first): the last job of the previous page. Shown as
/// `<created_at in µs>.<id without hyphens>`; clients pass it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at.timestamp_micros(), self.id.0.simple())
    }
}

impl FromStr for JobCursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (micros, id) = s.split_once('.').ok_or(Error::InvalidCursor)?;
        if micros.is_empty() || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidCursor);
        }
        let micros: i64 = micros.parse().map_err(|_| Error::InvalidCursor)?;
        // A cursor holds a creation time: anything outside 1970 to 9999 is forged.
        if !(0..=253_402_300_799_999_999).contains(&micros) {
            return Err(Error::InvalidCursor);
        }
        let created_at = DateTime::from_timestamp_micros(micros).ok_or(Error::InvalidCursor)?;
        if id.len() != 32 {
            return Err(Error::InvalidCursor);
        }
        let id = Uuid::try_parse(id).map_err(|_| Error::InvalidCursor)?;
        Ok(JobCursor {
            created_at,
            id: JobId(id),
        })
    }
}

/// A page of a search: its jobs, newest first, each with its attempt history, and where the next
/// page starts (`None` on the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub items: Vec<Job>,
    pub next: Option<JobCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused() {
        let cursor = JobCursor {
            created_at: DateTime::from_timestamp_micros(1_732_390_000_123_456).expect("time"),
            id: JobId::new(),
        };
        assert_eq!(cursor.to_string().parse::<JobCursor>().expect("parses"), cursor);
        for forged in [
            "",
            ".",
            "abc",
            "1.",
            "-1.0192f5a41c3b7cde8f000123456789ab",
            "+1.0192f5a41c3b7cde8f000123456789ab",
            "99999999999999999999.0192f5a41c3b7cde8f000123456789ab",
            "253402300800000000.0192f5a41c3b7cde8f000123456789ab",
            "1.0192f5a4-1c3b-7cde-8f00-0123456789ab",
            "1.0192f5a41c3b7cde8f000123456789a",
            "1.0192f5a41c3b7cde8f000123456789ag",
            "1.2.3",
        ] {
            assert!(forged.parse::<JobCursor>().is_err(), "{forged:?}");
        }
    }

    #[test]
    fn filters_refuse_what_no_job_could_hold() {
        assert_eq!(
            JobFilter::default().payload(json!([1])).expect_err("array").parameter,
            "payload"
        );
        assert!(JobFilter::default().payload(json!("x")).is_err());
        assert!(JobFilter::default().payload(json!({"a": "\u{0}"})).is_err());
        assert!(JobFilter::default().payload(json!({"a": {"b": [1]}})).is_ok());
        assert!(JobFilter::default().queue(" ").is_err());
        assert!(JobFilter::default().queue(&"q".repeat(201)).is_err());
        assert_eq!(
            JobFilter::default().queue(" emails ").expect("ok").queue.as_deref(),
            Some("emails")
        );
        assert!(JobFilter::default().job_type("a\u{0}").is_err());
        assert!(JobFilter::default().error("ab").is_err());
        assert!(JobFilter::default().error(&"e".repeat(201)).is_err());
    }

    #[test]
    fn filters_round_trip_through_json_and_unknown_fields_are_refused() {
        let filter = JobFilter::from_json(&json!({
            "status": "failed",
            "queue": " emails ",
            "type": "send",
            "payload": {"userId": 7},
            "error": "timeout",
            "createdAfter": "2025-10-24T18:00:00+02:00",
            "createdBefore": null
        }))
        .expect("valid");
        assert_eq!(filter.status, Some(Status::Failed));
        assert_eq!(filter.queue.as_deref(), Some("emails"));
        assert_eq!(JobFilter::from_json(&filter.to_json()).expect("round trip"), filter);
        assert_eq!(JobFilter::from_json(&json!({})).expect("empty"), JobFilter::default());
        for (bad, parameter) in [
            (json!([]), "filter"),
            (json!({"state": "FAILED"}), "filter"),
            (json!({"status": "DONE"}), "status"),
            (json!({"status": 3}), "status"),
            (json!({"payload": "{}"}), "payload"),
            (json!({"createdAfter": "yesterday"}), "createdAfter"),
            (json!({"error": "ab"}), "error"),
        ] {
            assert_eq!(
                JobFilter::from_json(&bad).expect_err("refused").parameter,
                parameter,
                "{bad}"
            );
        }
    }

    #[test]
    fn an_error_search_matches_its_text_literally() {
        let filter = JobFilter::default().error(r"50%_off\now").expect("valid");
        assert_eq!(filter.error_pattern().as_deref(), Some(r"%50\%\_off\\now%"));
    }
}
