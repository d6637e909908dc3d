//! The built-in `http` job end to end: real Postgres and Redis, a worker, and a small HTTP server
//! on 127.0.0.1 written here (so the client is checked against a server that is not its own
//! library), with answers scripted per test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Running, wait_for};
use hmac::{KeyInit, Mac};
use jobq_shared::http_job::{HttpJobConfig, SigningSecret};
use jobq_shared::job::Outcome;
use jobq_shared::testing::TestEnv;
use jobq_shared::{JobId, NewJob, Registry, Status};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SOON: Duration = Duration::from_secs(10);
const SECRET: &str = "whsec_test_secret";

/// A request as the test server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: tokio::time::Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An answer: status, extra headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

/// An HTTP/1.1 server on 127.0.0.1 that answers the n-th request with `replies[n]` (the last one
/// again once they run out), one request per connection, and records what it received.
struct TestServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(replies: Vec<Reply>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let Some(request) = read_request(&mut socket).await else {
                    continue;
                };
                let n = {
                    let mut log = log.lock().expect("lock");
                    log.push(request);
                    log.len() - 1
                };
                let (status, headers, body) = &replies[n.min(replies.len() - 1)];
                let mut answer = format!(
                    "HTTP/1.1 {status} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    answer.push_str(&format!("{name}: {value}\r\n"));
                }
                answer.push_str("\r\n");
                answer.push_str(body);
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        TestServer { addr, received, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request: the head up to its blank line, then `content-length` bytes of body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (request_line.next()?.to_owned(), request_line.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        method,
        target,
        headers,
        body,
        at: tokio::time::Instant::now(),
    })
}

/// The built-ins as a deployment that allows private targets (the test server is on loopback)
/// and signs requests configures them.
fn allowing_private() -> Registry {
    Registry::builtins(&HttpJobConfig {
        allow_private: true,
        signing_secret: SigningSecret::new(SECRET),
    })
}

async fn create_http(env: &TestEnv, payload: serde_json::Value) -> JobId {
    env.create_job(NewJob::new("http", payload)).await
}

fn error_of(job: &jobq_shared::Job, attempt: usize) -> String {
    job.history[attempt].error.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_2xx_answer_completes_the_job_and_the_request_is_sent_as_the_payload_says() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![(200, vec![], "ok".into())]).await;
    let running = Running::start(&env, allowing_private());

    let id = create_http(
        &env,
        json!({"url": server.url("/hook?x=1"), "method": "PUT", "headers": {"X-Env": "test"}, "body": {"order": 42}}),
    )
    .await;

    let job = wait_for(&env, id, Status::Completed, SOON).await;
    assert_eq!(job.attempts, 1);
    assert_eq!(job.history[0].outcome, Outcome::Succeeded);
    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!((request.method.as_str(), request.target.as_str()), ("PUT", "/hook?x=1"));
    assert_eq!(request.body, br#"{"order":42}"#);
    assert_eq!(request.header("x-env"), Some("test"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("jobq-job-id"), Some(id.to_string().as_str()));
    assert_eq!(request.header("jobq-attempt"), Some("1"));
    running.stop().await;
}

#[tokio::test]
async fn a_503_is_retried_and_the_next_attempt_succeeds_with_the_failure_in_history() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![(503, vec![], "upstream busy".into()), (200, vec![], "ok".into())]).await;
    let running = Running::start(&env, allowing_private());

    let id = create_http(&env, json!({"url": server.url("/flaky")})).await;

    let job = wait_for(&env, id, Status::Completed, SOON).await;
    assert_eq!(job.attempts, 2);
    let outcomes: Vec<Outcome> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Failed, Outcome::Succeeded]);
    let error = error_of(&job, 0);
    assert!(error.contains("503 Service Unavailable"), "{error}");
    assert!(error.contains("upstream busy"), "the body's excerpt is kept: {error}");
    assert_eq!(server.received().len(), 2);
    assert_eq!(server.received()[1].header("jobq-attempt"), Some("2"));
    running.stop().await;
}

#[tokio::test]
async fn retry_after_sets_when_the_retry_runs() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![
        (429, vec![("Retry-After", "2".to_owned())], "slow down".into()),
        (200, vec![], "ok".into()),
    ])
    .await;
    let running = Running::start(&env, allowing_private());

    let id = create_http(&env, json!({"url": server.url("/limited")})).await;

    // Between the attempts: the retry is due Retry-After (2 s) after the failure, not after the
    // test configuration's backoff (10-100 ms).
    let until = tokio::time::Instant::now() + SOON;
    let waiting = loop {
        let job = env.jobs.get(id).await.expect("get");
        // The job and its history are two reads: a claim can come between them.
        if job.status == Status::Pending && job.history.len() == 1 && job.history[0].finished_at.is_some() {
            break job;
        }
        assert!(tokio::time::Instant::now() < until, "no failed first attempt: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failed_at = waiting.history[0].finished_at.expect("finished");
    let delay = (waiting.run_at - failed_at).num_milliseconds();
    assert!((1900..=2200).contains(&delay), "retry due {delay} ms after the failure");
    assert!(
        error_of(&waiting, 0).contains("Retry-After: 2 s"),
        "{}",
        error_of(&waiting, 0)
    );

    let job = wait_for(&env, id, Status::Completed, SOON).await;
    assert_eq!(job.attempts, 2);
    let received = server.received();
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "second request {gap:?} after the first"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_404_is_permanent_and_goes_to_the_dlq_after_one_attempt() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![(404, vec![], "no such hook".into())]).await;
    let running = Running::start(&env, allowing_private());

    let id = env
        .create_job(NewJob::new("http", json!({"url": server.url("/gone")})).max_attempts(5))
        .await;

    let job = wait_for(&env, id, Status::Failed, SOON).await;
    assert_eq!(job.attempts, 1);
    let error = error_of(&job, 0);
    assert!(
        error.contains("404 Not Found") && error.contains("no such hook"),
        "{error}"
    );
    assert_eq!(env.queue.dead_ids().await.expect("dlq"), vec![id.to_string()]);
    assert_eq!(server.received().len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_long_answer_is_kept_as_its_first_512_bytes_only() {
    let env = TestEnv::new().await;
    let body = format!("{}{}", "a".repeat(512), "b".repeat(100_000));
    let server = TestServer::start(vec![(500, vec![], body)]).await;
    let running = Running::start(&env, allowing_private());

    let id = env
        .create_job(NewJob::new("http", json!({"url": server.url("/big")})).max_attempts(1))
        .await;

    let job = wait_for(&env, id, Status::Failed, SOON).await;
    let error = error_of(&job, 0);
    assert!(error.contains(&format!("\"{}…\"", "a".repeat(512))), "{error}");
    assert!(!error.contains('b'.to_string().repeat(2).as_str()), "{error}");
    running.stop().await;
}

#[tokio::test]
async fn the_signature_verifies_with_an_independent_hmac() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![(204, vec![], String::new())]).await;
    let running = Running::start(&env, allowing_private());

    let id = create_http(&env, json!({"url": server.url("/signed"), "body": "raw text body"})).await;

    wait_for(&env, id, Status::Completed, SOON).await;
    let request = &server.received()[0];
    let header = request.header("jobq-signature").expect("signed");
    // The documented scheme: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t"), v1.expect("v1"));
    let sent: i64 = t.parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - sent).abs() < 60, "t={t}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected);
    assert_eq!(request.body, b"raw text body");
    running.stop().await;
}

#[tokio::test]
async fn a_private_target_is_refused_by_default_and_no_request_is_sent() {
    let env = TestEnv::new().await;
    let server = TestServer::start(vec![(200, vec![], "ok".into())]).await;
    let running = Running::start(&env, Registry::with_builtins());

    let by_ip = create_http(&env, json!({"url": server.url("/internal")})).await;
    let by_name = create_http(
        &env,
        json!({"url": format!("http://localhost:{}/internal", server.addr.port())}),
    )
    .await;

    for id in [by_ip, by_name] {
        let job = wait_for(&env, id, Status::Failed, SOON).await;
        assert_eq!(job.attempts, 1, "refused for good, not retried");
        let error = error_of(&job, 0);
        assert!(error.contains("loopback"), "{error}");
        assert!(error.contains("JOBQ_HTTP_ALLOW_PRIVATE=true"), "{error}");
    }
    assert!(server.received().is_empty(), "no request reached the server");
    running.stop().await;
}

#[tokio::test]
async fn the_metadata_address_is_refused_even_when_private_targets_are_allowed() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, allowing_private());

    let ids = [
        create_http(
            &env,
            json!({"url": "http://169.254.169.254/latest/meta-data/", "method": "GET"}),
        )
        .await,
        create_http(
            &env,
            json!({"url": "http://[fd00:ec2::254]/latest/meta-data/", "method": "GET"}),
        )
        .await,
        create_http(
            &env,
            json!({"url": "http://[::ffff:169.254.169.254]/latest/api/token", "method": "PUT"}),
        )
        .await,
    ];

    for id in ids {
        let job = wait_for(&env, id, Status::Failed, SOON).await;
        assert_eq!(job.attempts, 1);
        let error = error_of(&job, 0);
        assert!(
            error.contains("metadata") && error.contains("never a target"),
            "{error}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn a_bad_payload_fails_for_good_with_a_message_naming_the_field() {
    let env = TestEnv::new().await;
    let running = Running::start(&env, allowing_private());

    let cases = [
        (json!({"url": "not a url"}), "url:"),
        (
            json!({"url": "ftp://example.com/file"}),
            "scheme \"ftp\" is not http or https",
        ),
        (
            json!({"url": "https://example.com", "method": "BREW"}),
            "method: \"BREW\" is not one of",
        ),
        (json!({"method": "GET"}), "url: is required"),
        (json!("https://example.com"), "payload: must be an object"),
    ];
    let mut ids = Vec::new();
    for (payload, _) in &cases {
        ids.push(create_http(&env, payload.clone()).await);
    }

    for (id, (payload, expected)) in ids.into_iter().zip(&cases) {
        let job = wait_for(&env, id, Status::Failed, SOON).await;
        assert_eq!(job.attempts, 1, "{payload}");
        let error = error_of(&job, 0);
        assert!(error.starts_with("invalid http job payload"), "{payload}: {error}");
        assert!(error.contains(expected), "{payload}: {error}");
    }
    running.stop().await;
}
