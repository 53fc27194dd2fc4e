//! Logging set-up shared by every role, and span export for the roles that have it.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::span_export::{SpanExport, SpanExportGuard};

/// How log lines are written: `text` for people, `json` (one object a line: timestamp, level,
/// message, fields and the spans around them) for log pipelines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: expected text or json")),
        }
    }
}

/// The crates whose spans are never exported: the exporter's own gRPC client is made of them,
/// and a span of each export would be exported in turn.
const NOT_EXPORTED: [&str; 6] = ["h2", "hyper", "tonic", "tower", "opentelemetry", "reqwest"];

/// Logs to stderr in `format`; `RUST_LOG` overrides the default of `info`. With `export`, spans
/// also go to an OTLP collector (see `span_export`): the guard flushes them at shutdown.
pub fn init(role: &str, format: LogFormat, export: Option<&SpanExport>) -> SpanExportGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let fmt = match format {
        // Colour codes only on a terminal: log files stay greppable.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).boxed(),
    };
    let (otel, guard, failure) = match export.map(crate::span_export::tracer) {
        None => (None, SpanExportGuard::default(), None),
        Some(Ok((tracer, guard))) => {
            let layer =
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                        !NOT_EXPORTED.iter().any(|c| meta.target().starts_with(c))
                    }));
            (Some(layer), guard, None)
        }
        Some(Err(error)) => (None, SpanExportGuard::default(), Some(error)),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    match (export, failure) {
        (Some(export), None) => {
            tracing::info!(role, endpoint = %export.endpoint, service = export.service, "exporting spans over OTLP")
        }
        // Logged, not fatal: a daemon runs without its traces rather than not at all.
        (Some(export), Some(error)) => {
            tracing::warn!(role, endpoint = %export.endpoint, error = %format!("{error:#}"), "cannot export spans")
        }
        (None, _) => tracing::debug!(role, "logging ready"),
    }
    guard
}
