//! `jobq-local-api`: the HTTP functions in one process (see the crate docs).
//!
//! Usage: `jobq-local-api [ADDR]` (default `127.0.0.1:9001`, or `JOBQ_LOCAL_API_ADDR`). Reads the
//! same environment as the functions (`DATABASE_URL`, `REDIS_URL`, `JOBQ_NAMESPACE`,
//! `JOBQ_API_TOKEN`, `JOBQ_DASHBOARD_TOKEN`, ...). Prints `listening on http://ADDR` once it accepts connections.

use anyhow::Context as _;
use jobq_functions::{Deps, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("JOBQ_LOCAL_API_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await.context("starting the functions")?));
    let dashboard: &'static Deps = Box::leak(Box::new(
        Deps::for_dashboard()
            .await
            .context("starting the dashboard's function")?,
    ));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    tokio::select! {
        served = jobq_local_api::serve_with_dashboard(listener, deps, dashboard) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
