//! The built-in `http` job: one HTTP request per attempt, so that jobq can call a webhook or an API
//! without a handler of its own. The payload:
//!
//! ```json
//! {"url": "https://example.com/hook", "method": "POST", "headers": {"X-Env": "prod"},
//!  "body": {"any": "JSON"}, "timeoutMs": 10000}
//! ```
//!
//! - A 2xx answer is success. 408, 429, 5xx and network errors (DNS, connect, TLS, timeout) are
//!   retried, after the answer's `Retry-After` when it has one ([`HandlerError::RetryAfter`]).
//!   Every other answer, 3xx included (redirects are not followed), is permanent: the DLQ.
//! - A failed attempt's error, kept in the job's history, names the status and holds the first
//!   [`EXCERPT_BYTES`] of the answer's body. A success is logged with its status.
//! - With a signing secret, each request carries `Jobq-Signature: t=<unix seconds>,v1=<hex
//!   HMAC-SHA256 of "<t>.<body>">` (docs/http-jobs.md shows how a receiver checks it).
//! - The host is resolved here, every address it resolves to is checked ([`classify`]), and the
//!   connection goes to one of those addresses: a name that resolves to a private address is
//!   refused, and cannot be made to by a second lookup (DNS rebinding). Private targets are
//!   allowed with `JOBQ_HTTP_ALLOW_PRIVATE=true`; the cloud metadata addresses never are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::handler::{HandlerError, JobContext, JobHandler};

/// The job type.
pub const JOB_TYPE: &str = "http";
/// A request's timeout when the payload gives no `timeoutMs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `timeoutMs` a payload may ask for (a Lambda invocation's limit). The job's own
/// timeout bounds it too: the request gives up a little before the engine would stop the attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(900);
/// How much of an answer's body a failed attempt keeps in its error.
pub const EXCERPT_BYTES: usize = 512;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "jobq-signature";
/// The job's id, on every request: a receiver can make its work idempotent with it.
pub const JOB_ID_HEADER: &str = "jobq-job-id";
/// The attempt's number (1 for the first), on every request.
pub const ATTEMPT_HEADER: &str = "jobq-attempt";

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// How the `http` job runs: read from the environment by [`crate::config::Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpJobConfig {
    /// `JOBQ_HTTP_ALLOW_PRIVATE`: loopback, private, CGNAT and link-local targets allowed (the
    /// metadata addresses stay refused).
    pub allow_private: bool,
    /// `JOBQ_HTTP_SIGNING_SECRET` (or the secret of `JOBQ_HTTP_SIGNING_SECRET_ARN`); without one,
    /// requests are sent unsigned.
    pub signing_secret: Option<SigningSecret>,
}

/// The key requests are signed with. Its `Debug` does not show it, so configuration can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// `None` for an empty secret.
    pub fn new(secret: impl Into<String>) -> Option<SigningSecret> {
        let secret = secret.into();
        (!secret.is_empty()).then_some(SigningSecret(secret))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// The `Jobq-Signature` value for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<lowercase hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn signature(secret: &SigningSecret, timestamp: u64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.bytes());
    let mut mac = aws_lc_rs::hmac::Context::with_key(&key);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// A payload that can never make a request: the attempt fails for good, and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid http job payload: {field}: {problem}")]
pub struct InvalidPayload {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidPayload {
    InvalidPayload {
        field,
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPayload {
    url: Option<String>,
    method: Option<String>,
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    body: Option<serde_json::Value>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A payload, parsed: everything checked that can be checked before the request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    /// The URL as given, for messages.
    pub url: String,
    scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// `host[:port]` as the URL wrote it: the `Host` header.
    authority: String,
    path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

impl HttpRequest {
    pub fn parse(payload: &serde_json::Value) -> Result<HttpRequest, InvalidPayload> {
        if !payload.is_object() {
            return Err(invalid(
                "payload",
                "must be an object such as {\"url\": \"https://example.com/hook\"}",
            ));
        }
        let raw: RawPayload =
            serde_json::from_value(payload.clone()).map_err(|err| invalid("payload", err.to_string()))?;
        let url = raw.url.ok_or_else(|| invalid("url", "is required"))?;
        let uri: Uri = url
            .parse()
            .map_err(|err| invalid("url", format!("{url:?} is not a URL: {err}")))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) => return Err(invalid("url", format!("scheme {s:?} is not http or https"))),
            None => {
                return Err(invalid(
                    "url",
                    format!("{url:?} is not absolute (http://... or https://...)"),
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("url", format!("{url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "url",
                "credentials in the URL are not supported; send an Authorization header",
            ));
        }
        let host = match authority.host() {
            "" => return Err(invalid("url", format!("{url:?} has no host"))),
            bracketed if bracketed.starts_with('[') => bracketed
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| invalid("url", format!("{bracketed} is not an IPv6 address")))?,
            name => match name.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) => Host::Name(name.to_ascii_lowercase()),
            },
        };
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let method = match raw.method {
            None => Method::POST,
            Some(m) => METHODS
                .iter()
                .find(|known| known.as_str().eq_ignore_ascii_case(m.trim()))
                .cloned()
                .ok_or_else(|| {
                    invalid(
                        "method",
                        format!("{m:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                    )
                })?,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in raw.headers.unwrap_or_default() {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("headers", format!("{name:?} is not a header name")))?;
            if is_reserved(&header) {
                return Err(invalid(
                    "headers",
                    format!("{name:?} is set by jobq, not by the payload"),
                ));
            }
            let value = value
                .as_str()
                .ok_or_else(|| invalid("headers", format!("{name:?} must be a string")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid("headers", format!("the value of {name:?} is not a valid header value")))?;
            headers.append(header, value);
        }
        let body = match raw.body {
            None | Some(serde_json::Value::Null) => Bytes::new(),
            Some(serde_json::Value::String(text)) => Bytes::from(text),
            Some(json) => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Bytes::from(json.to_string())
            }
        };
        let timeout = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if ms >= 1 && ms <= MAX_TIMEOUT.as_millis() as u64 => Duration::from_millis(ms),
            Some(ms) => {
                return Err(invalid(
                    "timeoutMs",
                    format!("{ms} is not between 1 and {}", MAX_TIMEOUT.as_millis()),
                ));
            }
        };
        Ok(HttpRequest {
            method,
            scheme,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query: match uri.path_and_query().map_or("", |p| p.as_str()) {
                "" => "/".to_owned(),
                query if query.starts_with('?') => format!("/{query}"),
                path => path.to_owned(),
            },
            headers,
            body,
            timeout,
            url,
        })
    }

    /// The request's timeout within `job_timeout`: it gives up a little before the engine would
    /// stop the attempt, so that the attempt's error says what the request was doing.
    pub fn timeout_within(&self, job_timeout: Duration) -> Duration {
        let margin = (job_timeout / 10).min(Duration::from_secs(1));
        self.timeout
            .min(job_timeout.saturating_sub(margin))
            .max(Duration::from_millis(1))
    }
}

/// Headers jobq writes itself: framing, the target, and its own `Jobq-*` headers (a payload must
/// not be able to forge a signature header).
fn is_reserved(name: &HeaderName) -> bool {
    const FRAMING: [&str; 7] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "keep-alive",
    ];
    FRAMING.contains(&name.as_str()) || name.as_str().starts_with("jobq-")
}

/// What may be connected to. `Private` names the kind of address, `Never` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Allowed only with `JOBQ_HTTP_ALLOW_PRIVATE=true`; names the kind.
    Private(&'static str),
    /// Never connected to; names the kind.
    Never(&'static str),
}

const METADATA: &str = "a cloud metadata or credentials endpoint";

/// Sorts an address into public, private (loopback, RFC 1918, CGNAT, link-local, unique-local and
/// other special-purpose ranges) and never (the instance and container metadata/credentials
/// endpoints, unspecified, multicast, broadcast, reserved). An IPv6 address that embeds an IPv4
/// one (IPv4-mapped, NAT64, 6to4) is judged by the IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    // EC2/Lambda instance metadata, the ECS task credentials and EKS pod identity endpoints.
    const NEVER_HOSTS: [[u8; 4]; 3] = [[169, 254, 169, 254], [169, 254, 170, 2], [169, 254, 170, 23]];
    if NEVER_HOSTS.iter().any(|h| ip.octets() == *h) {
        return Never(METADATA);
    }
    let ranges: [([u8; 4], u32, AddressClass); 14] = [
        ([0, 0, 0, 0], 8, Never("an unspecified (\"this network\") address")),
        ([255, 255, 255, 255], 32, Never("the broadcast address")),
        ([224, 0, 0, 0], 4, Never("a multicast address")),
        ([240, 0, 0, 0], 4, Never("a reserved address")),
        ([127, 0, 0, 0], 8, Private("loopback")),
        ([10, 0, 0, 0], 8, Private("private (RFC 1918)")),
        ([172, 16, 0, 0], 12, Private("private (RFC 1918)")),
        ([192, 168, 0, 0], 16, Private("private (RFC 1918)")),
        ([100, 64, 0, 0], 10, Private("shared (CGNAT, RFC 6598)")),
        ([169, 254, 0, 0], 16, Private("link-local")),
        (
            [192, 0, 0, 0],
            24,
            Private("special-purpose (IETF protocol assignments)"),
        ),
        ([198, 18, 0, 0], 15, Private("benchmarking")),
        ([192, 0, 2, 0], 24, Private("documentation")),
        ([198, 51, 100, 0], 24, Private("documentation")),
    ];
    ranges
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map_or(Public, |(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    // EC2 instance metadata and EKS pod identity over IPv6.
    const NEVER_HOSTS: [Ipv6Addr; 2] = [
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
    ];
    if NEVER_HOSTS.contains(&ip) {
        return Never(METADATA);
    }
    let seg = ip.segments();
    let o = ip.octets();
    let embedded = |at: usize| Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(12));
    }
    if seg[0] == 0x2002 {
        return classify_v4(embedded(2));
    }
    if ip.is_unspecified() {
        return Never("the unspecified address");
    }
    if ip.is_loopback() {
        return Private("loopback");
    }
    if seg[..6] == [0; 6] {
        return Never("an IPv4-compatible address (deprecated)");
    }
    match seg[0] {
        s if s & 0xff00 == 0xff00 => Never("a multicast address"),
        s if s & 0xffc0 == 0xfe80 => Private("link-local"),
        s if s & 0xffc0 == 0xfec0 => Private("site-local (deprecated)"),
        s if s & 0xfe00 == 0xfc00 => Private("unique local"),
        0x2001 if seg[1] == 0x0db8 => Private("documentation"),
        _ => Public,
    }
}

/// Why an attempt could not get an answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// `target` is the address, or the name and the address it resolved to.
    #[error("{target} is {kind}: never a target")]
    Never { target: String, kind: &'static str },
    #[error("{target} is a {kind} address: refused (set JOBQ_HTTP_ALLOW_PRIVATE=true to allow private targets)")]
    Private { target: String, kind: &'static str },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

impl SendError {
    fn into_handler_error(self, request: &HttpRequest) -> HandlerError {
        let message = format!("{} {}: {}", request.method, request.url, self);
        match self {
            SendError::Never { .. } | SendError::Private { .. } | SendError::Request(_) => {
                HandlerError::permanent(message)
            }
            _ => HandlerError::retryable(message),
        }
    }
}

/// The handler of `http` jobs.
pub struct HttpHandler {
    config: HttpJobConfig,
    /// Built at the first HTTPS request: reading the system's roots costs a few milliseconds.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl HttpHandler {
    pub fn new(config: HttpJobConfig) -> Self {
        HttpHandler {
            config,
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, SendError> {
        self.tls
            .get_or_init(|| {
                crate::tls::https_client_config()
                    .map(Arc::new)
                    .map_err(|err| err.to_string())
            })
            .clone()
            .map_err(SendError::TlsSetup)
    }

    /// The addresses of `request`'s host, every one of them allowed; the only ones connected to.
    async fn resolve(&self, request: &HttpRequest) -> Result<Vec<SocketAddr>, SendError> {
        let (name, addrs) = match &request.host {
            Host::Ip(ip) => (ip.to_string(), vec![SocketAddr::new(*ip, request.port)]),
            Host::Name(name) => {
                let found = tokio::net::lookup_host((name.as_str(), request.port))
                    .await
                    .map_err(|source| SendError::Resolve {
                        host: name.clone(),
                        source,
                    })?;
                (name.clone(), found.collect())
            }
        };
        if addrs.is_empty() {
            return Err(SendError::NoAddress { host: name });
        }
        let target = |ip: IpAddr| match &request.host {
            Host::Ip(_) => ip.to_string(),
            Host::Name(name) => format!("{name} (resolved to {ip})"),
        };
        for addr in &addrs {
            match classify(addr.ip()) {
                AddressClass::Public => {}
                AddressClass::Private(_) if self.config.allow_private => {}
                AddressClass::Private(kind) => {
                    return Err(SendError::Private {
                        target: target(addr.ip()),
                        kind,
                    });
                }
                AddressClass::Never(kind) => {
                    return Err(SendError::Never {
                        target: target(addr.ip()),
                        kind,
                    });
                }
            }
        }
        Ok(addrs)
    }

    fn build(&self, request: &HttpRequest, job: &JobContext) -> Result<Request<Full<Bytes>>, SendError> {
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.path_and_query.as_str())
            .header(HOST, request.authority.as_str())
            .header(USER_AGENT, concat!("jobq/", env!("CARGO_PKG_VERSION")))
            .header(JOB_ID_HEADER, job.id.to_string())
            .header(ATTEMPT_HEADER, job.attempt.to_string());
        if let Some(traceparent) = &job.traceparent
            && !request.headers.contains_key("traceparent")
        {
            builder = builder.header("traceparent", traceparent.as_str());
        }
        if let Some(secret) = &self.config.signing_secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            builder = builder.header(SIGNATURE_HEADER, signature(secret, now, &request.body));
        }
        let mut built = builder.body(Full::new(request.body.clone()))?;
        // The payload's headers replace jobq's defaults of the same name (`User-Agent`, say).
        let headers = built.headers_mut();
        for name in request.headers.keys() {
            headers.remove(name);
        }
        for (name, value) in &request.headers {
            headers.append(name, value.clone());
        }
        Ok(built)
    }

    /// One request: resolved and checked, connected to a checked address, sent, and its answer's
    /// head read. The connection lives as long as the returned guard.
    async fn send(
        &self,
        request: &HttpRequest,
        job: &JobContext,
    ) -> Result<(Response<Incoming>, AbortOnDrop), SendError> {
        let addrs = self.resolve(request).await?;
        let outgoing = self.build(request, job)?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(source) => last = Some(SendError::Connect { addr, source }),
            }
        }
        let stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(err)) => return Err(err),
            (None, None) => {
                return Err(SendError::NoAddress {
                    host: request.authority.clone(),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        match request.scheme {
            Scheme::Http => exchange(stream, outgoing).await,
            Scheme::Https => {
                let server_name = match &request.host {
                    Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
                    Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|err| SendError::TlsSetup(format!("{name:?}: {err}")))?,
                };
                let tls = tokio_rustls::TlsConnector::from(self.tls()?)
                    .connect(server_name, stream)
                    .await
                    .map_err(|source| SendError::Tls {
                        host: request.authority.clone(),
                        source,
                    })?;
                exchange(tls, outgoing).await
            }
        }
    }

    /// One attempt, to its outcome.
    async fn attempt(&self, request: &HttpRequest, job: &JobContext) -> Result<(), HandlerError> {
        let (response, _connection) = self
            .send(request, job)
            .await
            .map_err(|err| err.into_handler_error(request))?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(status = status.as_u16(), url = %request.url, "http job answered");
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let excerpt = excerpt(response.into_body()).await;
        Err(failure(request, status, retry_after, location.as_deref(), &excerpt))
    }
}

/// Aborts the task that drives a connection when the attempt is done with it (or is itself
/// stopped): nothing of an attempt outlives it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<(Response<Incoming>, AbortOnDrop), SendError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "http job connection ended");
        }
    }));
    let response = sender.send_request(request).await?;
    Ok((response, driver))
}

/// The first [`EXCERPT_BYTES`] of `body`, as text; nothing more is read.
async fn excerpt(mut body: Incoming) -> String {
    let mut kept = Vec::with_capacity(EXCERPT_BYTES);
    let mut cut = false;
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        let room = EXCERPT_BYTES - kept.len();
        kept.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() >= room {
            cut = data.len() > room || !body.is_end_stream();
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if cut {
        text.push('…');
    }
    text
}

/// The outcome of a non-2xx answer.
fn failure(
    request: &HttpRequest,
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<&str>,
    excerpt: &str,
) -> HandlerError {
    let mut message = format!("{} {} answered {status}", request.method, request.url);
    if let Some(location) = location.filter(|_| status.is_redirection()) {
        message.push_str(&format!(
            " (redirects are not followed; Location: {location}; point the job at the final URL)"
        ));
    }
    if let Some(after) = retry_after {
        message.push_str(&format!(" (Retry-After: {} s)", after.as_secs()));
    }
    message.push_str(&format!("; body: {excerpt:?}"));
    let retryable =
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    match (retryable, retry_after) {
        (true, Some(after)) => HandlerError::retry_after(message, after),
        (true, None) => HandlerError::retryable(message),
        (false, _) => HandlerError::permanent(message),
    }
}

/// A `Retry-After` value as a delay from `now`: delta-seconds or an HTTP date (a date past is no
/// delay). `None` for a value that is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[async_trait]
impl JobHandler for HttpHandler {
    async fn handle(&self, job: JobContext) -> Result<(), HandlerError> {
        let request = HttpRequest::parse(&job.payload).map_err(|err| HandlerError::permanent(err.to_string()))?;
        let timeout = request.timeout_within(job.timeout);
        match tokio::time::timeout(timeout, self.attempt(&request, &job)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HandlerError::retryable(format!(
                "{} {}: no complete answer within {} ms",
                request.method,
                request.url,
                timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(payload: serde_json::Value) -> Result<HttpRequest, InvalidPayload> {
        HttpRequest::parse(&payload)
    }

    #[test]
    fn a_full_payload_parses() {
        let req = parse(json!({
            "url": "https://Example.com:8443/hook?x=1", "method": "put",
            "headers": {"X-Env": "prod"}, "body": {"a": 1}, "timeoutMs": 5000
        }))
        .expect("valid");
        assert_eq!(req.method, Method::PUT);
        assert_eq!(req.host, Host::Name("example.com".into()));
        assert_eq!(req.port, 8443);
        assert_eq!(req.path_and_query, "/hook?x=1");
        assert_eq!(req.authority, "Example.com:8443");
        assert_eq!(req.headers["x-env"], "prod");
        assert_eq!(req.headers[CONTENT_TYPE], "application/json");
        assert_eq!(&req.body[..], br#"{"a":1}"#);
        assert_eq!(req.timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_are_post_no_body_and_thirty_seconds() {
        let req = parse(json!({"url": "http://[::1]/"})).expect("valid");
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.host, Host::Ip("::1".parse().expect("ip")));
        assert_eq!(req.port, 80);
        assert!(req.body.is_empty());
        assert_eq!(req.timeout, DEFAULT_TIMEOUT);
        let text = parse(json!({"url": "http://a.example", "body": "plain"})).expect("valid");
        assert_eq!(&text.body[..], b"plain");
        assert!(!text.headers.contains_key(CONTENT_TYPE));
        assert_eq!(text.path_and_query, "/");
        let query_only = parse(json!({"url": "http://a.example?x=1"})).expect("valid");
        assert_eq!(query_only.path_and_query, "/?x=1");
    }

    #[test]
    fn bad_payloads_name_the_field() {
        for (payload, field) in [
            (json!("http://a.example"), "payload"),
            (json!({}), "url"),
            (json!({"url": "not a url"}), "url"),
            (json!({"url": "/relative"}), "url"),
            (json!({"url": "ftp://a.example/f"}), "url"),
            (json!({"url": "http://user:pw@a.example/"}), "url"),
            (json!({"url": "http://a.example", "method": "BREW"}), "method"),
            (json!({"url": "http://a.example", "method": "CONNECT"}), "method"),
            (
                json!({"url": "http://a.example", "headers": {"bad name": "x"}}),
                "headers",
            ),
            (json!({"url": "http://a.example", "headers": {"X": 1}}), "headers"),
            (
                json!({"url": "http://a.example", "headers": {"Jobq-Signature": "forged"}}),
                "headers",
            ),
            (
                json!({"url": "http://a.example", "headers": {"Host": "other"}}),
                "headers",
            ),
            (json!({"url": "http://a.example", "timeoutMs": 0}), "timeoutMs"),
            (json!({"url": "http://a.example", "timeoutMs": 900_001}), "timeoutMs"),
            (json!({"url": "http://a.example", "urls": "typo"}), "payload"),
        ] {
            let err = parse(payload.clone()).expect_err("invalid");
            assert_eq!(err.field, field, "{payload}: {err}");
        }
    }

    #[test]
    fn the_request_gives_up_before_the_job_does() {
        let req = parse(json!({"url": "http://a.example", "timeoutMs": 60_000})).expect("valid");
        assert_eq!(req.timeout_within(Duration::from_secs(300)), Duration::from_secs(60));
        assert_eq!(req.timeout_within(Duration::from_secs(20)), Duration::from_secs(19));
        assert_eq!(req.timeout_within(Duration::from_secs(5)), Duration::from_millis(4500));
    }

    #[test]
    fn addresses_are_sorted_into_public_private_and_never() {
        use AddressClass::*;
        let class = |ip: &str| classify(ip.parse().expect("ip"));
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(public), Public, "{public}");
        }
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(matches!(class(private), Private(_)), "{private}: {:?}", class(private));
        }
        for never in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(matches!(class(never), Never(_)), "{never}: {:?}", class(never));
        }
        assert_eq!(class("169.254.169.254"), Never(METADATA));
        assert_eq!(class("172.32.0.1"), Public);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn answers_are_sorted_into_success_retry_and_permanent() {
        let req = parse(json!({"url": "http://a.example/hook"})).expect("valid");
        let outcome = |code: u16, after: Option<Duration>| {
            failure(&req, StatusCode::from_u16(code).expect("status"), after, None, "oops")
        };
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(outcome(code, None).is_retryable(), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 410, 422] {
            assert!(!outcome(code, None).is_retryable(), "{code}");
        }
        let later = outcome(429, Some(Duration::from_secs(7)));
        assert_eq!(later.retry_delay(), Some(Duration::from_secs(7)));
        assert!(later.message().contains("429 Too Many Requests"), "{later}");
        assert!(later.message().contains("\"oops\""), "{later}");
        let redirect = failure(&req, StatusCode::FOUND, None, Some("https://b.example/"), "");
        assert!(redirect.message().contains("https://b.example/"), "{redirect}");
    }

    #[test]
    fn the_payload_headers_replace_the_defaults_and_jobq_adds_its_own() {
        let handler = HttpHandler::new(HttpJobConfig {
            allow_private: false,
            signing_secret: SigningSecret::new("whsec_test"),
        });
        let req = parse(json!({"url": "http://a.example:8080/x", "headers": {"User-Agent": "mine/1"}, "body": "hi"}))
            .expect("valid");
        let job = JobContext {
            id: crate::job::JobId::new(),
            job_type: JOB_TYPE.into(),
            payload: json!({}),
            attempt: 2,
            max_attempts: 3,
            timeout: Duration::from_secs(300),
            cancel: Default::default(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let built = handler.build(&req, &job).expect("request");
        let headers = built.headers();
        assert_eq!(headers.get_all(USER_AGENT).iter().collect::<Vec<_>>(), vec!["mine/1"]);
        assert_eq!(headers[HOST], "a.example:8080");
        assert_eq!(headers[JOB_ID_HEADER], job.id.to_string().as_str());
        assert_eq!(headers[ATTEMPT_HEADER], "2");
        assert!(headers["traceparent"].to_str().expect("ascii").starts_with("00-0af7"));
        let signed = headers[SIGNATURE_HEADER].to_str().expect("ascii");
        let t: u64 = signed
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        assert_eq!(
            signed,
            signature(&SigningSecret::new("whsec_test").expect("secret"), t, b"hi")
        );
        let unsigned = HttpHandler::new(HttpJobConfig::default())
            .build(&req, &job)
            .expect("request");
        assert!(!unsigned.headers().contains_key(SIGNATURE_HEADER));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        //   print(hmac.new(b"whsec_test", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        let secret = SigningSecret::new("whsec_test").expect("secret");
        assert_eq!(
            signature(&secret, 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert!(SigningSecret::new("").is_none());
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
    }
}
