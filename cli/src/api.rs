//! The HTTP side: one blocking client for the API, and what can go wrong with a request.
//!
//! Every answer is read as bytes and then as JSON, so an answer of any shape (an HTML page from a
//! proxy, API Gateway's own `{"message": ...}`, a truncated body) becomes a [`Failure`] to print,
//! never a panic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, RequestBuilder};

/// The header in which the API records whom a mutating request is made for (its audit log's
/// `onBehalfOf`).
const ACTOR_HEADER: &str = "X-Jobq-Actor";

/// The largest answer read: a page of 100 jobs whose payloads are each at the API's 256 KiB limit
/// is 25 MiB, over ureq's default limit of 10 MB.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// How much of an answer that is not the API's JSON is quoted in an error.
const QUOTED_ANSWER_CHARS: usize = 200;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error status.
    Api {
        status: u16,
        /// The API's `error.code`; `None` when the answer was not the API's error JSON (API
        /// Gateway's own answers, a proxy's page).
        code: Option<String>,
        message: String,
    },
    /// No answer: the connection, the TLS handshake or a timeout failed.
    Unreachable { url: String, cause: String },
    /// A success status with a body this client cannot read.
    BadAnswer { request: String, detail: String },
    /// A failure on this side, before or after any request: an argument that cannot be sent as it
    /// is, no root certificates for HTTPS, stdout that cannot be written.
    Local(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api {
                status,
                code: Some(code),
                message,
            } => write!(f, "{message} (HTTP {status}, {code})"),
            Failure::Api {
                status,
                code: None,
                message,
            } => write!(f, "{message} (HTTP {status})"),
            Failure::Unreachable { url, cause } => write!(f, "could not reach {url}: {cause}"),
            Failure::BadAnswer { request, detail } => write!(f, "unexpected answer to {request}: {detail}"),
            Failure::Local(message) => f.write_str(message),
        }
    }
}

/// An answer with a success status.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A client for one API: its base URL, the token every request carries and the actor every
/// mutating request names.
pub struct Api {
    agent: Agent,
    base_url: String,
    token: Option<String>,
    actor: String,
}

impl Api {
    /// `base_url` may carry a path (an API Gateway stage such as `https://host/prod`); routes are
    /// appended to it. An empty token is no token.
    pub fn new(base_url: &str, token: Option<String>, actor: String) -> Result<Api, Failure> {
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        let https = base_url.starts_with("https://");
        if !https && !base_url.starts_with("http://") {
            return Err(Failure::Local(format!(
                "--url must start with http:// or https://, got {base_url:?}"
            )));
        }
        let mut config = Agent::config_builder()
            // Error statuses are answers to read (the API's message), not transport errors.
            .http_status_as_error(false)
            .user_agent(concat!("jobq/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(60)));
        if https {
            config = config.tls_config(tls_config()?);
        }
        Ok(Api {
            agent: config.build().into(),
            base_url,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
            // A header cannot carry control characters (the API would drop them anyway).
            actor: actor.chars().filter(|c| !c.is_control()).collect(),
        })
    }

    /// `GET path?query`, skipping query parameters without a value.
    pub fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<Value, Failure> {
        let mut request = self.agent.get(format!("{}{path}", self.base_url));
        for (name, value) in query {
            if let Some(value) = value {
                request = request.query(*name, value);
            }
        }
        let answer = self.read(&format!("GET {path}"), self.authorize(request).call())?;
        Ok(answer.body)
    }

    /// `POST path` with a JSON body (or none), naming the actor.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        let request = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header(ACTOR_HEADER, self.actor.as_str());
        let request = self.authorize(request);
        let outcome = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        self.read(&format!("POST {path}"), outcome)
    }

    /// `PUT path` with a JSON body, naming the actor.
    pub fn put(&self, path: &str, body: &Value) -> Result<Answer, Failure> {
        let request = self
            .agent
            .put(format!("{}{path}", self.base_url))
            .header(ACTOR_HEADER, self.actor.as_str());
        let outcome = self.authorize(request).send_json(body);
        self.read(&format!("PUT {path}"), outcome)
    }

    /// `DELETE path`, naming the actor. A 204 answers `null`.
    pub fn delete(&self, path: &str) -> Result<Answer, Failure> {
        let request = self
            .agent
            .delete(format!("{}{path}", self.base_url))
            .header(ACTOR_HEADER, self.actor.as_str());
        let outcome = self.authorize(request).call();
        self.read(&format!("DELETE {path}"), outcome)
    }

    /// `request` with the bearer token, when there is one.
    fn authorize<B>(&self, request: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// The answer's status and JSON body; an error status, a transport failure or a body that is
    /// not JSON as a [`Failure`].
    fn read(
        &self,
        request: &str,
        outcome: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, Failure> {
        let mut response = outcome.map_err(|err| match err {
            // The request could not even be written: an argument, not the network, is at fault.
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                Failure::Local(format!("cannot make the request {request}: {err}"))
            }
            err => Failure::Unreachable {
                url: self.base_url.clone(),
                cause: err.to_string(),
            },
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|err| Failure::Unreachable {
                url: self.base_url.clone(),
                cause: format!("the answer to {request} broke off: {err}"),
            })?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes));
        }
        if status == 204 {
            return Ok(Answer {
                status,
                body: Value::Null,
            });
        }
        let body = serde_json::from_slice(&bytes).map_err(|err| Failure::BadAnswer {
            request: request.to_owned(),
            detail: format!("not JSON ({err}): {}", quote(&bytes)),
        })?;
        Ok(Answer { status, body })
    }
}

/// Reads `value` as `T`, the shape a table is drawn from.
pub fn parse<T: DeserializeOwned>(request: &str, value: Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|err| Failure::BadAnswer {
        request: request.to_owned(),
        detail: err.to_string(),
    })
}

/// `segment` percent-encoded for a URL path: ids and queue names are the user's text, and a `/`
/// or a space in one must not change the route.
pub fn path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The failure an error status stands for: the API's `{"error": {"code", "message"}}`, else API
/// Gateway's `{"message"}`, else the start of whatever the body was.
fn api_error(status: u16, bytes: &[u8]) -> Failure {
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let error = json.as_ref().and_then(|j| j.get("error"));
    let message = text(error.and_then(|e| e.get("message")))
        .or_else(|| text(json.as_ref().and_then(|j| j.get("message"))))
        .or_else(|| (!bytes.is_empty()).then(|| quote(bytes)))
        .unwrap_or_else(|| {
            ureq::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_owned()
        });
    Failure::Api {
        status,
        code: text(error.and_then(|e| e.get("code"))),
        message,
    }
}

/// The start of a body, as one line of text.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut quoted: String = text
        .chars()
        .take(QUOTED_ANSWER_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > QUOTED_ANSWER_CHARS {
        quoted.push('…');
    }
    quoted
}

/// rustls on aws-lc-rs, the crypto the rest of the workspace uses, trusting the system's root
/// certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` override where they are read from), so that a
/// private CA installed on the machine works as it does for curl.
fn tls_config() -> Result<TlsConfig, Failure> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Failure::Local(format!(
            "no root certificates found for HTTPS (set SSL_CERT_FILE to a PEM bundle){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        )));
    }
    let roots: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(RootCerts::from(roots))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_change_the_route() {
        assert_eq!(path_segment("0193-ab_c.d~"), "0193-ab_c.d~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn an_error_says_what_the_body_says_whatever_its_shape() {
        let api = api_error(
            409,
            br#"{"error":{"code":"invalid_transition","message":"job is COMPLETED"}}"#,
        );
        assert_eq!(api.to_string(), "job is COMPLETED (HTTP 409, invalid_transition)");
        let gateway = api_error(403, br#"{"message":"Forbidden"}"#);
        assert_eq!(gateway.to_string(), "Forbidden (HTTP 403)");
        let page = api_error(502, b"<html>\n<body>Bad Gateway</body></html>");
        assert_eq!(page.to_string(), "<html> <body>Bad Gateway</body></html> (HTTP 502)");
        let empty = api_error(504, b"");
        assert_eq!(empty.to_string(), "Gateway Timeout (HTTP 504)");
        let odd = api_error(500, br#"{"error":{"message":7}}"#);
        assert_eq!(odd.to_string(), r#"{"error":{"message":7}} (HTTP 500)"#);
    }

    #[test]
    fn long_bodies_are_quoted_in_part() {
        let long = "x".repeat(QUOTED_ANSWER_CHARS + 10);
        let quoted = quote(long.as_bytes());
        assert_eq!(quoted.chars().count(), QUOTED_ANSWER_CHARS + 1);
        assert!(quoted.ends_with('…'));
    }
}
