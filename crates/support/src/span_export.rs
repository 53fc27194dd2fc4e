//! Exports this process's `tracing` spans over OTLP/gRPC, for `trellis mgmt` and `trellis agent`.
//!
//! Spans go through a batch processor with a bounded queue on a thread of its own: a collector
//! that is down or slow costs dropped spans and a warning, never a stalled or crashed daemon.
//! [`SpanExportGuard::shutdown`] flushes what is queued, within a bounded time.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

/// Spans queued for export at most; past that new spans are dropped (the SDK counts and warns).
const MAX_QUEUED_SPANS: usize = 4096;
/// How long one export may take before it is abandoned, and the flush at shutdown with it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The resource attribute naming the Trellis cluster a process serves.
pub const CLUSTER_ATTRIBUTE: &str = "trellis.cluster.name";

/// An OTLP collector's gRPC address, `host:port` (an `http://` prefix is accepted and dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    pub host: String,
    pub port: u16,
}

impl OtlpEndpoint {
    /// The URL the gRPC client dials.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for OtlpEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if bare.contains("://") {
            return Err(format!(
                "{s:?}: expected host:port of an OTLP/gRPC collector (plaintext; TLS is not supported)"
            ));
        }
        let (host, port) = bare
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected host:port, e.g. 127.0.0.1:4317"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
        if host.is_empty() {
            return Err(format!("{s:?}: the host is missing"));
        }
        Ok(OtlpEndpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where and as whom a process exports its spans.
#[derive(Debug, Clone)]
pub struct SpanExport {
    pub endpoint: OtlpEndpoint,
    /// `service.name`, e.g. `trellis-mgmt`.
    pub service: &'static str,
    /// The cluster the process serves, as the resource attribute [`CLUSTER_ATTRIBUTE`].
    pub cluster: Option<String>,
}

/// Keeps the exporter; [`shutdown`](Self::shutdown) flushes it.
#[derive(Default)]
pub struct SpanExportGuard {
    provider: Option<SdkTracerProvider>,
}

impl SpanExportGuard {
    /// Sends what is queued (within the export timeout) and stops the exporter's thread.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("warning: spans not flushed to the OTLP collector at shutdown: {error}");
        }
    }
}

/// The tracer that feeds the batch exporter, and the guard that flushes it. Must be called
/// within a Tokio runtime: the gRPC channel runs on it.
pub(crate) fn tracer(export: &SpanExport) -> anyhow::Result<(opentelemetry_sdk::trace::SdkTracer, SpanExportGuard)> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_timeout(EXPORT_TIMEOUT)
        .with_channel(
            // Connected lazily: the daemon starts whether or not the collector is up.
            tonic::transport::Endpoint::from_shared(export.endpoint.url())?
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy(),
        )
        .build()?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .with_scheduled_delay(Duration::from_millis(500))
        .build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    let mut resource = Resource::builder()
        .with_service_name(export.service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(cluster) = &export.cluster {
        resource = resource.with_attribute(KeyValue::new(CLUSTER_ATTRIBUTE, cluster.clone()));
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("trellis");
    Ok((
        tracer,
        SpanExportGuard {
            provider: Some(provider),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tracing_subscriber::layer::SubscriberExt;

    /// More spans than the queue holds, to a port nobody listens on: making them never waits
    /// on the collector, and the flush at shutdown gives up within its timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_collector_that_is_down_costs_spans_not_a_stalled_process() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let export = SpanExport {
            endpoint: format!("127.0.0.1:{port}").parse().unwrap(),
            service: "trellis-test",
            cluster: Some("cluster-1".into()),
        };
        let (tracer, guard) = tracer(&export).unwrap();
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        let started = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..(MAX_QUEUED_SPANS * 3) {
                let _span = tracing::info_span!("work", i).entered();
            }
        });
        let making = started.elapsed();
        assert!(making < Duration::from_secs(10), "{making:?} to make the spans");
        let started = Instant::now();
        tokio::task::spawn_blocking(move || guard.shutdown()).await.unwrap();
        let flushing = started.elapsed();
        assert!(
            flushing < EXPORT_TIMEOUT + Duration::from_secs(2),
            "{flushing:?} to shut down"
        );
    }

    #[test]
    fn endpoints_parse_from_host_port_with_or_without_scheme() {
        let cases = [
            ("127.0.0.1:4317", Some(("127.0.0.1", 4317, "http://127.0.0.1:4317"))),
            (
                "http://collector.obs:4317/",
                Some(("collector.obs", 4317, "http://collector.obs:4317")),
            ),
            ("[::1]:4317", Some(("::1", 4317, "http://[::1]:4317"))),
            ("https://collector:4317", None),
            ("collector", None),
            (":4317", None),
            ("collector:http", None),
        ];
        for (input, expected) in cases {
            let parsed = input.parse::<OtlpEndpoint>();
            match expected {
                Some((host, port, url)) => {
                    let endpoint = parsed.unwrap_or_else(|e| panic!("{input}: {e}"));
                    assert_eq!((endpoint.host.as_str(), endpoint.port), (host, port), "{input}");
                    assert_eq!(endpoint.url(), url, "{input}");
                    assert_eq!(endpoint.to_string().parse::<OtlpEndpoint>().unwrap(), endpoint);
                }
                None => assert!(parsed.is_err(), "{input} parsed"),
            }
        }
    }
}
