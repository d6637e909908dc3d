use jobq_functions::{Deps, requeue_dlq, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_http(move |req| requeue_dlq::handle(deps, req)).await
}
