//! A span's trace context as a W3C `traceparent` string, so work handed on (to the translator
//! thread, over the relay to an agent) continues the trace it came from. A plain string keeps
//! OpenTelemetry out of the crates that carry it; without span export there is none to carry.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

use opentelemetry::trace::TraceContextExt;

/// `span`'s `traceparent`; `None` when spans are not exported (the span has no trace id).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the span `traceparent` names. An empty or malformed one is ignored:
/// the span then starts a trace of its own. Call it before the span is first entered: a span
/// that has started keeps the parent it started with.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    fn trace_id(span: &tracing::Span) -> String {
        span.context().span().span_context().trace_id().to_string()
    }

    #[test]
    fn a_span_continued_from_a_traceparent_joins_its_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let apply = tracing::info_span!("apply");
            let carried = traceparent(&apply).expect("an exported span has a traceparent");
            assert!(carried.starts_with("00-") && carried.ends_with("-01"), "{carried}");
            let receive = tracing::info_span!(parent: None, "receive_config");
            continue_trace(&receive, &carried);
            assert_eq!(trace_id(&receive), trace_id(&apply));
            let own = tracing::info_span!(parent: None, "other");
            continue_trace(&own, "not a traceparent");
            continue_trace(&own, "");
            assert_ne!(trace_id(&own), trace_id(&apply));
        });
    }

    #[test]
    fn without_span_export_there_is_nothing_to_carry() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(traceparent(&tracing::info_span!("apply")), None);
        });
    }
}
