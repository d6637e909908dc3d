//! Whole requests in the text form of [`jobq_fuzz::text_request`], through every helper of
//! `functions/src/request.rs` and every route's parsing: content type and size, the
//! `Idempotency-Key` header, the path id, the `limit` and `cursor` query parameters, and both
//! create bodies. Each refusal is a bounded 4xx; each value that parses holds what it promises.
#![no_main]

use http::StatusCode;
use jobq_functions::api_error::MAX_BODY_BYTES;
use jobq_functions::list_dlq::MAX_LIMIT;
use jobq_functions::request::{header, json_body, path_job_id, query_param};
use jobq_functions::{create_job, create_jobs, list_dlq};
use jobq_fuzz::{assert_cursor_round_trips, assert_refusal, assert_valid_job, text_request};
use jobq_shared::JobId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some(req) = text_request(input) else {
        return;
    };

    match header(&req, "idempotency-key") {
        Ok(Some(key)) => assert_eq!(
            Some(key.as_bytes()),
            req.headers().get("idempotency-key").map(|v| v.as_bytes())
        ),
        Ok(None) => assert!(req.headers().get("idempotency-key").is_none()),
        Err(err) => assert_eq!(assert_refusal(err).0, 400),
    }

    let sent: &[u8] = req.body().as_ref();
    match json_body(&req) {
        Ok(body) => {
            assert_eq!(body, sent);
            assert!(body.len() <= MAX_BODY_BYTES);
        }
        Err(err) => {
            let (status, _) = assert_refusal(err);
            let expected = if sent.len() > MAX_BODY_BYTES {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            };
            assert_eq!(status, expected.as_u16());
            // Without a content type the body is read as JSON: only its size can refuse it.
            assert!(req.headers().get("content-type").is_some() || status == 413);
        }
    }

    match path_job_id(&req) {
        Ok(id) => assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id)),
        Err(err) => assert_eq!(assert_refusal(err).0, 400),
    }

    for name in ["limit", "cursor"] {
        if let Some(value) = query_param(&req, name) {
            // From API Gateway's parsed parameters, else the URI query's first value of that name,
            // decoded as a form would be (`%2B` is a plus sign, `+` a space).
            let in_uri = req.uri().query().is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(key, _)| key == name)
                    .is_some_and(|(_, first)| first == value.as_str())
            });
            let in_params = lambda_http::RequestExt::query_string_parameters_ref(&req)
                .and_then(|params| params.first(name))
                == Some(value.as_str());
            assert!(in_uri || in_params, "{name}={value:?}");
        }
    }
    match list_dlq::parse(&req) {
        Ok(query) => {
            assert!((1..=MAX_LIMIT).contains(&query.limit), "limit {}", query.limit);
            if let Some(cursor) = &query.cursor {
                assert_cursor_round_trips(cursor);
            }
        }
        Err(err) => assert_eq!(assert_refusal(err).0, 400),
    }

    match create_job::parse(&req) {
        Ok(job) => assert_valid_job(&job),
        Err(err) => {
            assert_refusal(err);
        }
    }
    match create_jobs::parse(&req) {
        Ok(jobs) => jobs.iter().for_each(assert_valid_job),
        Err(err) => {
            assert_refusal(err);
        }
    }
});
