//! Input that `cargo lambda watch` cannot carry reaches the handlers through the local server, as
//! it would through API Gateway, and gets the handlers' own answers.

use jobq_functions::Deps;
use jobq_shared::testing::TestEnv;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(env: &TestEnv) -> String {
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_config(env.config.clone()).expect("deps")));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(jobq_local_api::serve(listener, deps));
    addr
}

/// Sends raw bytes (one request, `Connection: close`) and returns (status, body as JSON or Null).
async fn send(addr: &str, head: &[u8], body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = head.to_vec();
    request.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_body_that_is_not_utf8_gets_the_handlers_400_and_stores_nothing() {
    let env = TestEnv::new().await;
    let addr = start(&env).await;
    let (status, body) = send(
        &addr,
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        b"\xff\xfe{\"type\":\"TEST\"}",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(env.count_jobs(None).await, 0);
}

#[tokio::test]
async fn a_header_that_is_not_utf8_does_not_stop_a_valid_request() {
    let env = TestEnv::new().await;
    let addr = start(&env).await;
    let (status, body) = send(
        &addr,
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nUser-Agent: Beno\xeet\r\nContent-Type: application/json\r\n",
        br#"{"type":"TEST","payload":"hello"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["jobId"].as_str().expect("jobId").to_owned();
    let (status, body) = send(&addr, format!("GET /jobs/{id} HTTP/1.1\r\nHost: x\r\n").as_bytes(), b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"], "hello");
}

#[tokio::test]
async fn unknown_routes_get_api_gateways_404() {
    let env = TestEnv::new().await;
    let addr = start(&env).await;
    let (status, body) = send(&addr, b"DELETE /jobs HTTP/1.1\r\nHost: x\r\n", b"").await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Not Found");
}
