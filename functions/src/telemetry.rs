//! Logging for the functions: JSON lines in Lambda (for CloudWatch queries), readable text locally.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. JSON when `JOBQ_LOG_FORMAT=json` or when running in Lambda
/// (`AWS_LAMBDA_FUNCTION_NAME` set) unless `JOBQ_LOG_FORMAT=text`; the level from `RUST_LOG`
/// (default `info`).
pub fn init() {
    let format = std::env::var("JOBQ_LOG_FORMAT").unwrap_or_default();
    let json = match format.trim() {
        "json" => true,
        "text" => false,
        _ => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    if let Err(err) = installed {
        eprintln!("logging was already set up: {err}");
    }
}
