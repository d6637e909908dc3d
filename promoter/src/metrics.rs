//! `/metrics` over HTTP: the process's metrics and the queues' state as OpenMetrics text
//! ([`jobq_shared::metrics`]), on `JOBQ_METRICS_ADDR` (default `127.0.0.1:9464`; `off` serves
//! nothing). Any other path is a 404; a failed read of the queues' state a 503.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jobq_shared::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Where to serve, from `JOBQ_METRICS_ADDR`: `None` for `off`.
pub fn addr_from_env() -> anyhow::Result<Option<SocketAddr>> {
    parse_addr(std::env::var("JOBQ_METRICS_ADDR").ok().as_deref())
}

/// `JOBQ_METRICS_ADDR`'s value (`None` when unset): the address, or `None` for `off`.
fn parse_addr(value: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
    let raw = value.unwrap_or(DEFAULT_ADDR);
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    raw.trim()
        .parse()
        .map(Some)
        .with_context(|| format!("JOBQ_METRICS_ADDR: {raw:?} is not host:port (an IP address and a port) or off"))
}

/// Binds `addr` and serves until `shutdown`. The bound address is logged (port 0 picks one).
pub async fn serve(addr: SocketAddr, store: Store, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for /metrics on {addr} (JOBQ_METRICS_ADDR)"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(answer(&store, req).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "metrics connection ended");
            }
        });
    }
}

async fn answer(store: &Store, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found; metrics are on /metrics\n".into(),
        );
    }
    match jobq_shared::metrics::render(store).await {
        Ok(text) => reply(http::StatusCode::OK, jobq_shared::metrics::CONTENT_TYPE, text),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the queues' state for /metrics");
            reply(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("cannot read the queues' state: {err}\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_defaults_to_loopback_and_off_serves_nothing() {
        let default = parse_addr(None).expect("the default");
        assert_eq!(default, Some(DEFAULT_ADDR.parse().expect("an address")));
        assert_eq!(parse_addr(Some(" OFF ")).expect("off"), None);
        assert_eq!(
            parse_addr(Some("0.0.0.0:9100")).expect("an address"),
            Some("0.0.0.0:9100".parse().expect("an address"))
        );
        let err = parse_addr(Some("localhost")).expect_err("not an address").to_string();
        assert!(err.contains("JOBQ_METRICS_ADDR") && err.contains("off"), "{err}");
    }
}
