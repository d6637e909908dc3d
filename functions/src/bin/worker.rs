use jobq_functions::{Deps, telemetry, worker};
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let deps = &Deps::from_env().await?;
    lambda_runtime::run(service_fn(move |event| worker::handle(deps, event))).await
}
