//! OpenTelemetry traces over OTLP/gRPC (`[telemetry]`, off by default). The gateway's spans are
//! ordinary `tracing` spans; tracing-opentelemetry turns them into OpenTelemetry spans with the
//! GenAI semantic conventions' attribute names (`gen_ai.operation.name`, `gen_ai.request.model`,
//! `gen_ai.provider.name`, `gen_ai.usage.input_tokens`, `gen_ai.tool.name`, ...):
//!
//! ```text
//! chat <model>            (server; one per client request, continued from `traceparent`)
//!   cache.lookup          (the cache's outcome and similarity)
//!   chat <upstream model> (client; one per upstream attempt, to the first chunk for streams)
//!   execute_tool <tool>   (one per MCP tool call the gateway runs)
//! ```

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::http::HeaderMap;
use futures_util::Stream;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::config::TelemetryConfig;

/// The trace pipeline (nothing when export is off).
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

/// A boxed layer for any registry-like subscriber.
type BoxLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

impl Traces {
    /// Builds the exporter and the layer that feeds it; an unusable setting is reported and
    /// export stays off (the gateway still serves).
    pub fn start<S>(cfg: &TelemetryConfig) -> (Self, Option<BoxLayer<S>>, Option<String>)
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return (Self { provider: None }, None, None);
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &cfg.otlp_headers {
            let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.expose().parse(),
            ) else {
                let problem = format!(
                    "telemetry.otlp_headers.{k}: not a valid gRPC header; traces are not exported"
                );
                return (Self { provider: None }, None, Some(problem));
            };
            metadata.insert(key, value);
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_metadata(metadata)
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                let problem = format!(
                    "telemetry.otlp_endpoint: cannot export to {endpoint}: {e}; traces are not exported"
                );
                return (Self { provider: None }, None, Some(problem));
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("switchyard");
        // The gateway's own spans, whatever SWITCHYARD_LOG says (it filters logs, not traces).
        let targets = Targets::new().with_target("switchyard", LevelFilter::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(targets)
            .boxed();
        (
            Self {
                provider: Some(provider),
            },
            Some(layer),
            None,
        )
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops (blocking: call from a blocking thread).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "traces not flushed at shutdown");
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one client request (`chat <model>`, `embeddings <model>`), continuing the
/// caller's trace when it sent a valid `traceparent`. Fields are filled in as the request goes.
pub fn request_span(operation: &'static str, request_id: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: "switchyard::request",
        "request",
        otel.name = operation,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = operation,
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.provider.name = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        switchyard.request_id = request_id,
        switchyard.cache = tracing::field::Empty,
        switchyard.attempts = tracing::field::Empty,
        switchyard.mcp.tool_calls = tracing::field::Empty,
    );
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(cx);
    }
    span
}

/// Renames a span already started (`otel.name` recorded later is not applied by the layer).
pub fn rename(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    span.context().span().update_name(name);
}

/// A stream polled inside `span` (streams outlive the handler that made them).
pub fn in_span<S: Stream + Unpin>(stream: S, span: Span) -> InSpan<S> {
    InSpan { stream, span }
}

/// See [`in_span`].
pub struct InSpan<S> {
    stream: S,
    span: Span,
}

impl<S: Stream + Unpin> Stream for InSpan<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Pin::new(&mut this.stream).poll_next(cx)
    }
}
