//! The long-running jobq service: applies migrations, then every second promotes due jobs, reaps
//! expired leases, repairs Redis from Postgres, fires the schedules' due ticks (every 250 ms), and
//! runs `JOBQ_WORKER_CONCURRENCY` job slots. It serves its metrics on `/metrics` (`JOBQ_METRICS_ADDR`, see [`metrics`]). SIGTERM or Ctrl-C
//! stops it gracefully.

use std::time::Duration;

use anyhow::Context;
use jobq_shared::bulk::Operations;
use jobq_shared::maintenance::{
    promoter::Promoter, pruner::Pruner, reaper::Reaper, repairer::Repairer, scheduler, scheduler::Scheduler,
};
use jobq_shared::{Config, Queue, Registry, Store, Worker};
use tokio_util::sync::CancellationToken;

mod metrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let mut config = Config::from_env().context("invalid configuration")?;
    let metrics_addr = metrics::addr_from_env()?;
    // On AWS the URL comes from the database secret (DB_SECRET_ARN); locally from DATABASE_URL.
    config.database_url = jobq_shared::secrets::resolve_database_url(&config)
        .await
        .context("cannot read the database secret")?;
    config.redis_url = jobq_shared::secrets::resolve_redis_url(&config)
        .await
        .context("cannot read the Redis secret")?;
    config.http.signing_secret = jobq_shared::secrets::resolve_http_signing_secret(&config)
        .await
        .context("cannot read the http job's signing secret")?;
    let store = Store::connect(&config.database_url, config.pg_pool_size, config.pg_timeout)?;
    let queue = Queue::from_config(&config)?;
    // Migrations may run as the schema owner while everything else runs as a role that can only
    // read and write rows (docs/sql/roles.sql).
    let owner_url = jobq_shared::secrets::resolve_migration_database_url(&config)
        .await
        .context("cannot read the schema owner's database secret")?;
    let migrator = match &owner_url {
        Some(url) => Store::connect(url, 1, config.pg_timeout)?,
        None => store.clone(),
    };
    migrate_when_reachable(&migrator).await?;
    drop(migrator);
    tracing::info!(
        namespace = %config.namespace,
        concurrency = config.worker.concurrency,
        worker_id = %config.worker.worker_id,
        "jobq promoter started"
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));

    let m = &config.maintenance;
    let mut services = tokio::task::JoinSet::new();
    if let Some(addr) = metrics_addr {
        // Metrics are for watching: a port that cannot be had is reported, and the work goes on.
        let (store, shutdown) = (store.clone(), shutdown.clone());
        services.spawn(async move {
            if let Err(err) = metrics::serve(addr, store, shutdown).await {
                tracing::error!(error = format!("{err:#}"), "metrics not served");
            }
        });
    }
    services.spawn(Promoter::new(store.clone(), queue.clone()).run(m.promote_interval, shutdown.clone()));
    services.spawn(
        Reaper::new(store.clone(), queue.clone())
            .with_retry(config.worker.retry)
            .run(m.reap_interval, shutdown.clone()),
    );
    services
        .spawn(Repairer::new(store.clone(), queue.clone(), m.repair_after).run(m.repair_interval, shutdown.clone()));
    services.spawn(Pruner::new(store.clone(), queue.clone(), m.retention).run(m.prune_interval, shutdown.clone()));
    services.spawn(
        Scheduler::new(store.clone(), queue.clone(), config.worker.default_timeout)
            .run(scheduler::INTERVAL, shutdown.clone()),
    );
    services.spawn(Operations::new(store.clone(), queue.clone()).run(
        Duration::from_secs(1),
        Duration::from_secs(10),
        shutdown.clone(),
    ));
    if !m.emf_interval.is_zero() {
        services.spawn(jobq_shared::metrics::log_emf_every(
            store.clone(),
            config.namespace.clone(),
            m.emf_interval,
            shutdown.clone(),
        ));
    }

    if config.worker.concurrency > 0 {
        let worker = Worker::new(
            store.clone(),
            queue.clone(),
            Registry::builtins(&config.http),
            config.worker.clone(),
        );
        let summary = worker.run(shutdown.clone()).await?;
        tracing::info!(?summary, "worker stopped");
    }
    shutdown.cancelled().await;
    while services.join_next().await.is_some() {}
    tracing::info!("jobq promoter stopped");
    Ok(())
}

/// Postgres may still be starting (compose, a restart): wait for it rather than crash-loop.
async fn migrate_when_reachable(store: &Store) -> anyhow::Result<()> {
    let mut pause = Duration::from_millis(200);
    for _ in 0..30 {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(err) if err.is_database_unavailable() => {
                tracing::warn!(error = %err, "postgres not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("migrations failed"),
        }
    }
    anyhow::bail!("postgres did not become reachable; migrations not applied")
}

async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing running jobs");
    shutdown.cancel();
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("JOBQ_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
