//! What the fuzz targets assert of every input, beyond "does not crash":
//!
//! - a refused request gets what the API promises: a 4xx (never a 5xx: parsing touches no server),
//!   a JSON body `{"error": {"code", "message"}}` with the table's code, and a message cut to
//!   [`MAX_MESSAGE_CHARS`] however large the input;
//! - an accepted job is within every limit, and sent again as a request it parses to itself;
//! - a DLQ cursor that parses prints as a cursor that parses to the same page position.
//!
//! The `request` target reads its input as a small text form of an HTTP request (see
//! [`text_request`]), so that its corpus is readable and seeded with real requests.

use std::collections::HashMap;

use jobq_functions::ApiError;
use jobq_functions::api_error::MAX_MESSAGE_CHARS;
use jobq_shared::NewJob;
use jobq_shared::job::{Schedule, limits};
use jobq_shared::store::DeadCursor;
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Value, json};

/// The longest message an error response may carry: an excerpt of [`MAX_MESSAGE_CHARS`] and the
/// "… (N more characters)" that says what was cut.
pub const MAX_RESPONSE_MESSAGE_CHARS: usize = MAX_MESSAGE_CHARS + "… ( more characters)".len() + 20;

/// A `POST` of `body` with `Content-Type: application/json`, as API Gateway hands it over.
pub fn post_json(uri: &str, body: &[u8]) -> Request {
    let body = if body.is_empty() {
        Body::Empty
    } else {
        Body::from(body.to_vec())
    };
    http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(body)
        .expect("a fixed method, URI and header make a request")
}

/// Reads `input` as a request in a small text form: a line `METHOD TARGET`, header lines
/// `Name: value`, an empty line, then the body (the rest, bytes as they are). Two pseudo-headers
/// stand for what API Gateway parses out itself: `x-fuzz-path-id: <id>` (the `{id}` path
/// parameter) and `x-fuzz-query: name=value` (one query string parameter each). `None` when the
/// text cannot be an HTTP request at all (a method, URI or header name `http` refuses).
pub fn text_request(input: &[u8]) -> Option<Request> {
    let (head, body) = match find(input, b"\n\n") {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &[][..]),
    };
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let mut builder = http::Request::builder().method(method).uri(target);
    let mut path_params = HashMap::new();
    let mut query_params = HashMap::new();
    for line in lines {
        let at = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..at], &line[at + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"x-fuzz-path-id" => {
                path_params.insert("id".to_owned(), String::from_utf8_lossy(value).into_owned());
            }
            b"x-fuzz-query" => {
                let value = String::from_utf8_lossy(value);
                let (key, value) = value.split_once('=').unwrap_or((&value, ""));
                query_params.insert(key.to_owned(), value.to_owned());
            }
            // A header value `http` refuses (a control character) is one no server hands over.
            _ => match http::HeaderValue::from_bytes(value) {
                Ok(value) => builder = builder.header(name, value),
                Err(_) => continue,
            },
        }
    }
    let body = if body.is_empty() {
        Body::Empty
    } else {
        Body::from(body.to_vec())
    };
    let mut req = builder.body(body).ok()?;
    if !path_params.is_empty() {
        req = req.with_path_parameters(path_params);
    }
    if !query_params.is_empty() {
        req = req.with_query_string_parameters(query_params);
    }
    Some(req)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Asserts that `err` refuses a request as the API promises; returns its status and message.
pub fn assert_refusal(err: ApiError) -> (u16, String) {
    let (status, code) = err.status_and_code();
    let shown = err.to_string();
    assert!(
        status.is_client_error(),
        "parsing answered {status} ({code}): {}",
        excerpt(&shown)
    );
    let response = err.into_response();
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(response.body().as_ref()).expect("the error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("a message").to_owned();
    assert!(!message.is_empty(), "{body}");
    assert!(
        message.chars().count() <= MAX_RESPONSE_MESSAGE_CHARS,
        "a message of {} characters: {}",
        message.chars().count(),
        excerpt(&message)
    );
    (status.as_u16(), message)
}

/// Asserts that `job` is within every limit, and that sent again as a request it parses to itself.
pub fn assert_valid_job(job: &NewJob) {
    for (field, text, max) in [
        ("type", job.job_type.as_str(), limits::MAX_TYPE_LEN),
        ("queue", job.queue.as_str(), limits::MAX_QUEUE_LEN),
    ] {
        assert!(
            !text.is_empty() && text == text.trim() && text.chars().count() <= max && !text.contains('\0'),
            "{field} {text:?}"
        );
    }
    assert!((limits::MIN_PRIORITY..=limits::MAX_PRIORITY).contains(&i64::from(job.priority)));
    assert!((1..=limits::MAX_ATTEMPTS).contains(&i64::from(job.max_attempts)));
    if let Some(ms) = job.timeout_ms {
        assert!((1..=limits::MAX_TIMEOUT_MS).contains(&i64::from(ms)), "timeout {ms}");
    }
    if let Schedule::After(delay) = &job.schedule {
        assert!(delay.as_millis() <= limits::MAX_DELAY_MS as u128, "delay {delay:?}");
    }
    if let Some(key) = &job.idempotency_key {
        assert!(
            !key.is_empty() && key.len() <= limits::MAX_IDEMPOTENCY_KEY_LEN && !key.contains('\0'),
            "key {key:?}"
        );
    }
    assert!(!contains_nul(&job.payload), "a NUL in the payload");
    assert!(job.fingerprint().is_object(), "the fingerprint of {job:?}");

    let again = as_request(job);
    let reparsed = jobq_functions::create_job::parse(&post_json("/jobs", again.to_string().as_bytes()))
        .unwrap_or_else(|err| panic!("{job:?} sent again as {again} is refused: {err}"));
    assert_eq!(&reparsed, job, "sent again as {again}");
}

/// `job` as the body of a `POST /jobs` that asks for it.
pub fn as_request(job: &NewJob) -> Value {
    let mut body = json!({
        "type": job.job_type,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "maxAttempts": job.max_attempts,
    });
    if let Some(ms) = job.timeout_ms {
        body["timeoutMs"] = json!(ms);
    }
    match &job.schedule {
        Schedule::Now => {}
        Schedule::At(at) => body["runAt"] = json!(at),
        Schedule::After(delay) => body["delayMs"] = json!(delay.as_millis() as u64),
    }
    if let Some(key) = &job.idempotency_key {
        body["idempotencyKey"] = json!(key);
    }
    body
}

/// Asserts that a cursor the API accepted prints as one that parses back to it: the `nextCursor`
/// a page hands out is always accepted as that page's `cursor`.
pub fn assert_cursor_round_trips(cursor: &DeadCursor) {
    let shown = cursor.to_string();
    let again: DeadCursor = shown
        .parse()
        .unwrap_or_else(|err| panic!("{cursor:?} prints as {shown:?}, which is refused: {err}"));
    assert_eq!(&again, cursor, "{shown}");
    assert!(shown.len() <= 20 + 1 + 32, "{shown}");
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The start of `text`, for a failure message that must not be megabytes long itself.
fn excerpt(text: &str) -> String {
    text.chars().take(400).collect()
}
