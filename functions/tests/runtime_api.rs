//! The function binaries against a Runtime API that misbehaves the way local emulators do: a `next`
//! poll answered with an empty `408` (what `cargo lambda watch --timeout N` sends after N idle
//! seconds) or with the emulator's own `500`, neither carrying an invocation. A function must keep
//! serving afterwards; `lambda_runtime` alone panics on such an answer and the process exits.

mod common;

use std::process::Stdio;
use std::time::Duration;

use jobq_shared::testing::TestEnv;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the fake Runtime API answers to the successive `next` polls.
enum Next {
    Raw(&'static str),
    Invoke { request_id: &'static str, event: Value },
}

/// A minimal Runtime API: answers `next` polls from `script`, in order (then holds the poll open,
/// as AWS does), and forwards each posted response as (request id, body).
async fn fake_runtime_api(script: Vec<Next>) -> (String, mpsc::UnboundedReceiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let script = std::sync::Arc::new(tokio::sync::Mutex::new(script.into_iter()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, script.clone(), tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve_connection(
    stream: TcpStream,
    script: std::sync::Arc<tokio::sync::Mutex<std::vec::IntoIter<Next>>>,
    responses: mpsc::UnboundedSender<(String, Value)>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let reply = if path.ends_with("/runtime/invocation/next") {
            let next = script.lock().await.next();
            match next {
                Some(Next::Raw(raw)) => raw.to_owned(),
                Some(Next::Invoke { request_id, event }) => {
                    let body = event.to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: {request_id}\r\n\
                         lambda-runtime-deadline-ms: 4102444800000\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:f\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
                // Nothing more to send: hold the poll open, as AWS does.
                None => std::future::pending().await,
            }
        } else if let Some(rest) = path.strip_suffix("/response") {
            let request_id = rest.rsplit('/').next().unwrap_or_default().to_owned();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = responses.send((request_id, value));
            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned()
        } else {
            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned()
        };
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An API Gateway (HTTP API, payload 2.0) event for `GET /jobs/{id}`.
fn get_job_event(id: &str) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "GET /jobs/{id}",
        "rawPath": format!("/jobs/{id}"),
        "rawQueryString": "",
        "headers": {"accept": "application/json"},
        "pathParameters": {"id": id},
        "requestContext": {
            "accountId": "000000000000", "apiId": "api", "domainName": "localhost",
            "domainPrefix": "localhost", "http": {"method": "GET", "path": format!("/jobs/{id}"),
            "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r", "routeKey": "GET /jobs/{id}", "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0
        },
        "isBase64Encoded": false
    })
}

/// Stops the function process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

const EMPTY_408: &str = "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
const EMULATOR_500: &str = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/problem+json\r\n\
    content-length: 75\r\n\r\n{\"type\":\"https://httpstatuses.com/500\",\"status\":500,\"title\":\"Internal Error\"}";

#[tokio::test]
async fn a_function_keeps_serving_after_polls_answered_without_an_invocation() {
    let env = TestEnv::new().await;
    let unknown = "00000000-0000-4000-8000-000000000001";
    let (addr, mut responses) = fake_runtime_api(vec![
        Next::Raw(EMPTY_408),
        Next::Raw(EMULATOR_500),
        Next::Raw(EMPTY_408),
        Next::Invoke {
            request_id: "after-bad-polls",
            event: get_job_event(unknown),
        },
    ])
    .await;

    let mut function = std::process::Command::new(env!("CARGO_BIN_EXE_get-job"))
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "get-job")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("DATABASE_URL", &env.config.database_url)
        .env("REDIS_URL", &env.config.redis_url)
        .env("JOBQ_NAMESPACE", &env.config.namespace)
        .env("JOBQ_LOG_FORMAT", "text")
        .env_remove("DB_SECRET_ARN")
        .env_remove("JOBQ_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("start the get-job binary");

    let answered = tokio::time::timeout(Duration::from_secs(30), responses.recv()).await;
    let exited = function.0.try_wait().expect("try_wait");
    function.0.kill().ok();
    let mut log = String::new();
    if let Some(mut stderr) = function.0.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut log).ok();
    }

    let (request_id, response) = answered
        .unwrap_or_else(|_| panic!("no response within 30 s (exited: {exited:?}); function log:\n{log}"))
        .expect("a response");
    assert_eq!(request_id, "after-bad-polls");
    assert_eq!(response["statusCode"], 404, "{response}\n{log}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default()).expect("JSON body");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
