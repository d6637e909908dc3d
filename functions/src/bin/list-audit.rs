use jobq_functions::{Deps, list_audit, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_http(move |req| list_audit::handle(deps, req)).await
}
