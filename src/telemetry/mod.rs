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

/// The log filter for a `SWITCHYARD_LOG` value: the default when it is unset or blank; otherwise
/// the value, with the embedded vector store kept at error unless the value names it (`warn`
/// would otherwise show its start-up warnings, which are not the user's to act on).
fn filter_spec(asked: Option<&str>) -> std::borrow::Cow<'_, str> {
    match asked.map(str::trim) {
        None | Some("") => DEFAULT_FILTER.into(),
        Some(v) if v.contains("qdrant") => v.into(),
        Some(v) => format!("{v},qdrant_edge=error").into(),
    }
}

/// Installs the global subscriber: logs to stderr (`SWITCHYARD_LOG` filter, JSON with
/// `SWITCHYARD_LOG_FORMAT=json`) and, when `[telemetry] otlp_endpoint` is set, OpenTelemetry
/// spans over OTLP (their own filter: the gateway's spans whatever the log level).
/// Call inside the Tokio runtime (the OTLP exporter needs it). Returns the trace pipeline, to be
/// flushed at shutdown.
pub fn init(telemetry: &TelemetryConfig) -> otel::Traces {
    let asked = std::env::var("SWITCHYARD_LOG").ok();
    let (filter, bad_filter) = match EnvFilter::try_new(filter_spec(asked.as_deref()).as_ref()) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
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
    if let Some(e) = bad_filter {
        tracing::error!(
            "SWITCHYARD_LOG is not a log filter ({e}); logging at the default, {DEFAULT_FILTER:?}"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_keeps_the_vector_store_quiet_unless_asked() {
        assert_eq!(filter_spec(None), DEFAULT_FILTER);
        assert_eq!(filter_spec(Some("  ")), DEFAULT_FILTER);
        assert_eq!(filter_spec(Some("warn")), "warn,qdrant_edge=error");
        assert_eq!(
            filter_spec(Some("switchyard=debug")),
            "switchyard=debug,qdrant_edge=error"
        );
        assert_eq!(
            filter_spec(Some("info,qdrant_edge=warn")),
            "info,qdrant_edge=warn"
        );
        assert_eq!(filter_spec(Some("qdrant=debug")), "qdrant=debug");
        // What is built from a value parses when the value does, and a bad value stays bad.
        for v in ["warn", "switchyard=debug,info", "error"] {
            assert!(
                EnvFilter::try_new(filter_spec(Some(v)).as_ref()).is_ok(),
                "{v}"
            );
        }
        assert!(EnvFilter::try_new(filter_spec(Some("info,=[")).as_ref()).is_err());
    }
}
