use jobq_functions::{Deps, cancel_job, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_http(move |req| cancel_job::handle(deps, req)).await
}
