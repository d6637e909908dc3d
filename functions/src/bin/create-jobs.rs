use jobq_functions::{Deps, create_jobs, telemetry};
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let deps = &Deps::from_env().await?;
    lambda_http::run(service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(create_jobs::handle(deps, req).await)
    }))
    .await
}
