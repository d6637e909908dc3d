use jobq_functions::{Deps, find_jobs, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_http(move |req| find_jobs::handle(deps, req)).await
}
