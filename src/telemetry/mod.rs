//! Logging setup, metrics, price estimates and the request log.

pub mod metrics;
pub mod prices;
pub mod requestlog;

/// Installs the global tracing subscriber: `SWITCHYARD_LOG` filter, JSON with `SWITCHYARD_LOG_FORMAT=json`.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) finds a subscriber already set; that is fine.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
