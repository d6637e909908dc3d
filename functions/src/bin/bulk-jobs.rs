use jobq_functions::{Deps, bulk_jobs, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_http(move |req| bulk_jobs::handle(deps, req)).await
}
