//! A span's trace context as a W3C `traceparent` string, so work handed on (to the translator
//! thread, over the relay to an agent) continues the trace it came from. A plain string keeps
//! OpenTelemetry out of the crates that carry it; without span export there is none to carry.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// `span`'s `traceparent`; `None` when spans are not exported (the span has no trace id).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    use opentelemetry::trace::TraceContextExt;
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the span `traceparent` names. An empty or malformed one is ignored:
/// the span then starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    use opentelemetry::trace::TraceContextExt;
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}
