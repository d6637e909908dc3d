use jobq_functions::{Deps, runtime, telemetry, worker};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    telemetry::init();
    let deps: &'static Deps = Box::leak(Box::new(Deps::from_env().await?));
    runtime::serve_events(move |event| worker::handle(deps, event)).await
}
