//! Logging and trace setup, metrics, price estimates and the request log.

pub mod metrics;
pub mod otel;
pub mod prices;
pub mod requestlog;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// The log filter without `SWITCHYARD_LOG`: the gateway at info; the embedded vector store only
/// at error (it warns about start-up steps of the Qdrant server that do not apply when embedded:
/// "Feature flags not initialized!", "MULTI_MMAP_SUPPORT_CHECK_RESULT should be initialized").
pub const DEFAULT_FILTER: &str = "info,qdrant_edge=error";

/// Installs the global subscriber: logs to stderr (`SWITCHYARD_LOG` filter, JSON with
/// `SWITCHYARD_LOG_FORMAT=json`) and, when `[telemetry] otlp_endpoint` is set, OpenTelemetry
/// spans over OTLP (their own filter: the gateway's spans whatever the log level).
/// Call inside the Tokio runtime (the OTLP exporter needs it). Returns the trace pipeline, to be
/// flushed at shutdown.
pub fn init(telemetry: &TelemetryConfig) -> otel::Traces {
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (traces, layer, problem) = otel::Traces::start(telemetry);
    // A second call (tests) finds a subscriber already set; that is fine.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(layer)
        .try_init();
    if let Some(p) = problem {
        tracing::error!("{p}");
    }
    if let Some(endpoint) = &telemetry.otlp_endpoint
        && traces.enabled()
    {
        tracing::info!(%endpoint, "exporting OpenTelemetry traces over OTLP/gRPC");
    }
    traces
}
