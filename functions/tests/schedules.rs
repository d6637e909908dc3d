//! `PUT`, `GET`, `DELETE /schedules/{name}` and `GET /schedules` through their handler: created
//! then replaced, shown with its ticks, listed by pages, deleted; bad input is a 4xx that names
//! what is wrong and stores nothing.

mod common;

use std::collections::HashMap;

use common::{assert_error, get_uri, json, setup};
use jobq_functions::schedules;
use jobq_shared::maintenance::scheduler::Scheduler;
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Value, json};

fn named(method: &str, name: &str, body: Option<&Value>) -> Request {
    http::Request::builder()
        .method(method)
        // The path parameter is what counts: API Gateway decoded it from the path.
        .uri("/schedules/name")
        .header("content-type", "application/json")
        .body(body.map_or(Body::Empty, |b| Body::from(b.to_string())))
        .expect("request")
        .with_path_parameters(HashMap::from([("name".to_owned(), name.to_owned())]))
}

#[tokio::test]
async fn a_schedule_is_created_replaced_shown_listed_and_deleted() {
    let (env, deps) = setup().await;
    let body = json!({
        "cron": "*/10 * * * * *",
        "timezone": "Europe/Paris",
        "job": {"type": "TEST", "queue": "reports", "payload": {"report": "daily"}},
        "missedFires": "coalesce",
        "overlap": "skip"
    });
    let created = schedules::handle(&deps, named("PUT", "reports.daily", Some(&body))).await;
    let shown = json(&created);
    assert_eq!(created.status(), 201, "{shown}");
    assert_eq!(
        created.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/schedules/reports.daily")
    );
    assert_eq!(shown["name"], "reports.daily");
    assert_eq!(shown["timezone"], "Europe/Paris");
    assert_eq!(shown["missedFires"], "coalesce");
    assert_eq!(shown["overlap"], "skip");
    assert_eq!(shown["job"]["payload"], json!({"report": "daily"}));
    assert!(shown["nextTick"].is_string(), "{shown}");
    assert_eq!(
        (shown["lastTick"].clone(), shown["lagMs"].clone()),
        (Value::Null, Value::Null)
    );

    // The promoter fires the tick; the schedule then shows it.
    let next: chrono::DateTime<chrono::Utc> = serde_json::from_value(shown["nextTick"].clone()).expect("a time");
    Scheduler::new(env.store.clone(), env.queue.clone(), std::time::Duration::from_secs(30))
        .run_once(next + chrono::Duration::milliseconds(40))
        .await
        .expect("pass");
    let got = schedules::handle(&deps, named("GET", "reports.daily", None)).await;
    let got = json(&got);
    assert_eq!(got["lastTick"], shown["nextTick"], "{got}");
    assert_eq!(got["lagMs"], 40);
    assert_eq!(got["fired"], 1);
    let job = env
        .store
        .get(jobq_shared::JobId(
            got["lastJobId"].as_str().expect("an id").parse().expect("a uuid"),
        ))
        .await
        .expect("the job");
    assert_eq!(job.queue, "reports");
    assert_eq!(job.schedule.as_ref().map(|s| s.name.as_str()), Some("reports.daily"));

    // Replaced: 200, and paused shows no next tick.
    let mut paused = body.clone();
    paused["paused"] = json!(true);
    let replaced = schedules::handle(&deps, named("PUT", "reports.daily", Some(&paused))).await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(json(&replaced)["nextTick"], Value::Null);

    for name in ["b", "c"] {
        let body = json!({"cron": "0 0 * * *", "job": {"type": "TEST"}});
        assert_eq!(
            schedules::handle(&deps, named("PUT", name, Some(&body))).await.status(),
            201
        );
    }
    let page = json(&schedules::handle(&deps, get_uri("/schedules?limit=2")).await);
    let names: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(page["nextCursor"], "c");
    // A cursor no schedule name can be (here with a NUL, which Postgres text cannot hold) is a 400.
    assert_error(
        &schedules::handle(&deps, get_uri("/schedules?limit=2&cursor=%2A%18%00%0E")).await,
        400,
        "invalid_cursor",
        "cursor",
    );
    let rest = json(&schedules::handle(&deps, get_uri("/schedules?limit=2&cursor=c")).await);
    assert_eq!(rest["items"][0]["name"], "reports.daily");
    assert_eq!(rest["nextCursor"], Value::Null);

    let deleted = schedules::handle(&deps, named("DELETE", "b", None)).await;
    assert_eq!(deleted.status(), 204);
    // Every change is in the audit log, newest first, with what it set.
    let (audit, _) = env.store.audit_log(None, 10).await.expect("audit");
    let changes: Vec<(&str, &Value)> = audit
        .iter()
        .map(|entry| {
            (
                entry.action.as_str(),
                &entry.filter.as_ref().expect("a filter")["schedule"],
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("schedule.delete", &json!("b")),
            ("schedule.put", &json!("c")),
            ("schedule.put", &json!("b")),
            ("schedule.put", &json!("reports.daily")),
            ("schedule.put", &json!("reports.daily")),
        ]
    );
    let replaced = audit[3].filter.as_ref().expect("a filter");
    assert_eq!(
        (
            replaced["created"].clone(),
            replaced["paused"].clone(),
            replaced["job"]["queue"].clone()
        ),
        (json!(false), json!(true), json!("reports"))
    );
    assert_eq!(audit[4].filter.as_ref().expect("a filter")["created"], true);
    assert_error(
        &schedules::handle(&deps, named("DELETE", "b", None)).await,
        404,
        "not_found",
        "\"b\"",
    );
    assert_error(
        &schedules::handle(&deps, named("GET", "b", None)).await,
        404,
        "not_found",
        "\"b\"",
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_with_the_field_named_and_nothing_stored() {
    let (env, deps) = setup().await;
    let cases = [
        (json!({"job": {"type": "TEST"}}), "missing_field", "cron"),
        (json!({"cron": "* * * * *"}), "missing_field", "job"),
        (
            json!({"cron": "nope", "job": {"type": "TEST"}}),
            "invalid_field",
            "cron",
        ),
        (
            json!({"cron": "0 0 31 2 *", "job": {"type": "TEST"}}),
            "invalid_field",
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "timezone": "Paris", "job": {"type": "TEST"}}),
            "invalid_field",
            "timezone",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST", "runAt": "2030-01-01T00:00:00Z"}}),
            "invalid_field",
            "job.runAt",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST", "dependsOn": ["01a2395f-792e-73ff-a9c9-40e147490044"]}}),
            "invalid_field",
            "job.dependsOn",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST", "maxAttempts": 0}}),
            "invalid_field",
            "job.maxAttempts",
        ),
        (
            json!({"cron": "* * * * *", "job": {"payload": {}}}),
            "missing_field",
            "job.type",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST"}, "missedFires": "never"}),
            "invalid_field",
            "missedFires",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST"}, "overlap": true}),
            "wrong_type",
            "overlap",
        ),
        (
            json!({"cron": "* * * * *", "job": {"type": "TEST"}, "every": 5}),
            "unknown_field",
            "every",
        ),
    ];
    for (body, code, mentions) in cases {
        let response = schedules::handle(&deps, named("PUT", "bad", Some(&body))).await;
        assert_error(&response, 400, code, mentions);
    }
    let good = json!({"cron": "* * * * *", "job": {"type": "TEST"}});
    assert_error(
        &schedules::handle(&deps, named("PUT", "has space", Some(&good))).await,
        400,
        "invalid_schedule_name",
        "schedule name",
    );
    assert_error(
        &schedules::handle(&deps, named("POST", "bad", Some(&good))).await,
        405,
        "method_not_allowed",
        "GET, PUT, DELETE",
    );
    assert_error(
        &schedules::handle(&deps, get_uri("/schedules?colour=red")).await,
        400,
        "unknown_parameter",
        "colour",
    );
    assert!(
        env.store.schedules(None, 10).await.expect("list").is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn the_read_only_token_reads_schedules_but_cannot_change_them() {
    let (_env, deps) = setup().await;
    let deps = deps.with_api_token("write-token").with_readonly_token("read-token");
    let body = json!({"cron": "* * * * *", "job": {"type": "TEST"}});
    let with_token = |mut req: Request, token: &str| {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
        req
    };
    let refused = schedules::handle(&deps, with_token(named("PUT", "s", Some(&body)), "read-token")).await;
    assert_error(&refused, 403, "forbidden", "read");
    let put = schedules::handle(&deps, with_token(named("PUT", "s", Some(&body)), "write-token")).await;
    assert_eq!(put.status(), 201);
    let read = schedules::handle(&deps, with_token(named("GET", "s", None), "read-token")).await;
    assert_eq!(read.status(), 200);
    let delete = schedules::handle(&deps, with_token(named("DELETE", "s", None), "read-token")).await;
    assert_error(&delete, 403, "forbidden", "read");
    assert_error(
        &schedules::handle(&deps, named("GET", "s", None)).await,
        401,
        "unauthorized",
        "bearer",
    );
}
