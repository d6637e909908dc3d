//! Reading a request into domain types: its method, body, path id and query parameters. Each
//! failure is an [`ApiError`] that says what is wrong (a 4xx), never a panic.

use http::Method;
use http::header::CONTENT_TYPE;
use jobq_shared::JobId;
use jobq_shared::trace::TraceParent;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::{Request, RequestExt};
use serde::de::DeserializeOwned;

use crate::api_error::{ApiError, MAX_BODY_BYTES};

/// Refuses a request whose method is not `allowed` (a function URL reaches a function with any method).
pub fn expect_method(req: &Request, allowed: Method) -> Result<(), ApiError> {
    if req.method() == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed { allowed })
    }
}

/// The body of a JSON request, within the size limit.
///
/// A missing `Content-Type` is read as JSON: API clients that forget the header (and API Gateway
/// test consoles) still work, and the body must parse as JSON anyway. Any other media type than
/// `application/json` or `application/*+json` is refused with 415.
pub fn json_body(req: &Request) -> Result<&[u8], ApiError> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge { size: body.len() });
    }
    if let Some(value) = req.headers().get(CONTENT_TYPE) {
        let raw = String::from_utf8_lossy(value.as_bytes());
        let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let is_json =
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !is_json {
            // What `curl -d` sends unless told otherwise: say how to tell it.
            let hint = if essence == "application/x-www-form-urlencoded" {
                " (curl -d sends a form type unless given -H 'Content-Type: application/json')"
            } else {
                ""
            };
            return Err(ApiError::UnsupportedMediaType {
                content_type: shorten(&raw),
                hint,
            });
        }
    }
    Ok(body)
}

/// Parses a JSON object into `T`, naming the offending field when the shape is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::EmptyBody);
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| ApiError::InvalidJson {
        detail: err.to_string(),
    })?;
    from_value(&value)
}

/// Reads a JSON object already parsed into `T`, naming the offending field when the shape is wrong.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    let Some(fields) = value.as_object() else {
        return Err(ApiError::NotAnObject);
    };
    match T::deserialize(value) {
        Ok(parsed) => Ok(parsed),
        Err(whole) => {
            // serde's error names no field: try the fields one at a time to find the culprit.
            for (name, field) in fields {
                let single = serde_json::Value::Object([(name.clone(), field.clone())].into_iter().collect());
                match T::deserialize(&single) {
                    Err(err) if !err.to_string().starts_with("missing field") => return Err(shape_error(name, err)),
                    _ => {}
                }
            }
            let detail = whole.to_string();
            match detail
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
            {
                Some((field, _)) => Err(ApiError::MissingField {
                    field: field.to_owned(),
                }),
                None => Err(ApiError::InvalidJson { detail }),
            }
        }
    }
}

fn shape_error(field: &str, err: serde_json::Error) -> ApiError {
    let detail = err.to_string();
    let field = shorten(field);
    if let Some(rest) = detail.strip_prefix("unknown field `") {
        // Within an object field (`retention`): name the unknown one inside it.
        let field = match rest.split_once('`') {
            Some((inner, _)) if inner != field => format!("{field}.{}", shorten(inner)),
            _ => field,
        };
        ApiError::UnknownField { field }
    } else if detail.starts_with("invalid type") {
        ApiError::WrongType { field, detail }
    } else {
        ApiError::InvalidValue { field, detail }
    }
}

/// An optional header as text.
pub fn header<'r>(req: &'r Request, name: &'static str) -> Result<Option<&'r str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| ApiError::InvalidHeader { name }),
    }
}

/// The request's W3C `traceparent` header, if it holds a valid one. An invalid one is ignored, as
/// the Trace Context specification asks (the job is then created outside any trace), never a 400.
pub fn trace_parent(req: &Request) -> Option<TraceParent> {
    req.headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
}

/// The job id of a route like `/jobs/{id}`, `/jobs/{id}/cancel` or `/dlq/{id}/requeue`: the `id` path parameter (API
/// Gateway, or `cargo lambda watch` with its router), else the last path segment other than
/// `requeue` or `cancel` (a function URL, such as `/lambda-url/get-job/{id}`).
pub fn path_job_id(req: &Request) -> Result<JobId, ApiError> {
    let from_params = req
        .path_parameters_ref()
        .and_then(|params| params.first("id"))
        .map(str::to_owned);
    let raw = from_params.unwrap_or_else(|| {
        let path = req.uri().path();
        let mut segments = path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>();
        if matches!(segments.last(), Some(&"requeue") | Some(&"cancel")) {
            segments.pop();
        }
        segments.last().copied().unwrap_or_default().to_owned()
    });
    raw.trim()
        .parse::<JobId>()
        .map_err(|_| ApiError::InvalidUuid { value: shorten(&raw) })
}

/// A query string parameter: from the event's parsed parameters, else from the URI, decoded as
/// API Gateway decodes it (`%xx` escapes, and `+` as a space).
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    if let Some(value) = req.query_string_parameters_ref().and_then(|params| params.first(name)) {
        return Some(value.to_owned());
    }
    uri_query(req).and_then(|params| params.first(name).map(str::to_owned))
}

/// The `limit` query parameter: `default` when absent, else a whole number from 1 to `max`.
pub fn limit_param(req: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    match query_param(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::InvalidLimit {
                value: raw.chars().take(40).collect(),
                max,
            }),
        },
    }
}

/// Refuses a request to a route that takes no query parameters but was given one.
pub fn no_query(req: &Request) -> Result<(), ApiError> {
    match unknown_query_param(req, &[]) {
        Some(name) => Err(ApiError::UnknownParameter {
            name,
            known: "no query parameters",
        }),
        None => Ok(()),
    }
}

/// The first query parameter in the URI whose name is not in `known`, cut short. The URI carries
/// the query string of every API Gateway event. (The event's own parsed map is not read here: one
/// deserialized with a name but no value would make its iterator panic.)
pub fn unknown_query_param(req: &Request, known: &[&str]) -> Option<String> {
    uri_query(req)?
        .iter()
        .map(|(name, _)| name)
        .find(|name| !known.contains(name))
        .map(shorten)
}

fn uri_query(req: &Request) -> Option<QueryMap> {
    req.uri()
        .query()
        .filter(|query| !query.is_empty())
        .and_then(|query| query.parse().ok())
}

/// Echoed input is cut short, so that an error body never grows with a hostile request.
pub(crate) fn shorten(raw: &str) -> String {
    const MAX_CHARS: usize = 80;
    if raw.chars().count() <= MAX_CHARS {
        raw.to_owned()
    } else {
        let mut cut: String = raw.chars().take(MAX_CHARS).collect();
        cut.push('…');
        cut
    }
}
