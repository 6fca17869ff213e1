//! OpenTelemetry traces, opt-in through the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and the `OTEL_*` settings the OTLP/HTTP exporter
//! reads: protocol, headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_BSP_*`).
//!
//! An event's trace context (W3C `traceparent`) travels with it through the queue: ingestion
//! stores its own span's (a child of the client's `traceparent`, when the request had one), and
//! each delivery attempt is a child of that and sends its own `traceparent` to the endpoint, so
//! the receiver's trace continues ours. With tracing off, a client's `traceparent` is still
//! passed on unchanged.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";

static ON: OnceLock<bool> = OnceLock::new();

/// Whether spans are exported (decided once, at start).
pub fn on() -> bool {
    ON.get().copied().unwrap_or(false)
}

fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry: cannot build the OTLP exporter: {0}")]
pub struct TelemetryError(String);

/// The tracer provider when the environment asks for traces; `None` otherwise.
pub fn provider() -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let wanted = configured();
    let _ = ON.set(wanted);
    if !wanted {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("hookline");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("hookline"))
}

/// A `traceparent` that is well-formed (W3C Trace Context, version 00), or `None`.
pub fn valid_traceparent(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, span, flags]
            if hex(version, 2)
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && *trace != "0".repeat(32)
                && *span != "0".repeat(16) =>
        {
            Some(value.trim())
        }
        _ => None,
    }
}

struct Carrier<'a>(&'a HashMap<String, String>);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Sink(HashMap<String, String>);

impl Injector for Sink {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

/// Makes `span` a child of the trace `traceparent` names.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&Carrier(&carrier));
    let _ = span.set_parent(parent);
}

/// The `traceparent` naming `span`, to store with an event or send to an endpoint.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut sink = Sink(HashMap::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut sink);
    sink.0.remove(TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(valid_traceparent(good), Some(good));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
        ] {
            assert_eq!(valid_traceparent(bad), None, "{bad}");
        }
    }
}
