//! The background services that keep jobs moving, one file each. Each has a `run_once(now)` that
//! tests call directly and a `run` loop for the promoter binary.

pub mod promoter;
pub mod pruner;
pub mod reaper;
pub mod repairer;
pub mod scheduler;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Calls `pass` every `interval` until `shutdown`; a failed pass is logged and the loop goes on.
pub(crate) async fn every<F, Fut, T>(name: &'static str, interval: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<T>>,
    T: std::fmt::Debug,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        match pass().await {
            Ok(outcome) => tracing::trace!(service = name, ?outcome, "pass done"),
            Err(err) => {
                tracing::warn!(service = name, error = %err, source = ?std::error::Error::source(&err), "pass failed")
            }
        }
    }
    tracing::info!(service = name, "stopped");
}
