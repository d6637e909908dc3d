use jobq_functions::{Deps, requeue_dlq, telemetry};
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let deps = &Deps::from_env().await?;
    lambda_http::run(service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(requeue_dlq::handle(deps, req).await)
    }))
    .await
}
