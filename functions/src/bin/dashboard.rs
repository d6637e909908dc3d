use jobq_functions::{Deps, dashboard, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::for_dashboard().await?));
    runtime::serve_http(move |req| dashboard::handle(deps, req)).await
}
