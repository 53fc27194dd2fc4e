//! A real Jaeger (v2: the OpenTelemetry Collector with Jaeger's storage and query) for tests: an
//! OTLP/gRPC receiver and the query HTTP API on loopback ephemeral ports, traces kept in memory,
//! its config written to the test's directory. Killed on drop.
//!
//! scripts/setup builds the binary once, from its Go module, into
//! `${XDG_CACHE_HOME:-$HOME/.cache}/trellis-peers/bin/jaeger`; `$JAEGER_BIN` names another.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_support::process::free_port;

/// One trace as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// One span, with the service and resource tags of the process that sent it.
#[derive(Debug, Clone)]
pub struct Span {
    pub span_id: String,
    pub trace_id: String,
    pub operation: String,
    pub service: String,
    /// The span ids this span is a child of.
    pub parents: Vec<String>,
    pub process_tags: Vec<(String, String)>,
}

impl Trace {
    pub fn services(&self) -> std::collections::BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }

    pub fn has(&self, service: &str, operation: &str) -> bool {
        self.spans
            .iter()
            .any(|s| s.service == service && s.operation == operation)
    }

    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }
}

pub struct Jaeger {
    _child: tokio::process::Child,
    /// host:port of the OTLP/gRPC receiver.
    pub otlp: String,
    pub query_port: u16,
}

/// The Jaeger binary: `$JAEGER_BIN`, or where scripts/setup builds it.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("JAEGER_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("trellis-peers").join("bin").join("jaeger")
}

fn config(otlp: u16, query_http: u16, query_grpc: u16) -> String {
    format!(
        "\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 20000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
    )
}

impl Jaeger {
    /// Starts Jaeger with its config and log in `dir`; returns once its query API answers.
    pub async fn start(dir: &Path) -> Jaeger {
        let bin = binary();
        assert!(
            bin.exists(),
            "no Jaeger at {}: scripts/setup builds it (or set JAEGER_BIN)",
            bin.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let (otlp, query_port, query_grpc) = (free_port(), free_port(), free_port());
        let config_path = dir.join("jaeger.yaml");
        std::fs::write(&config_path, config(otlp, query_port, query_grpc)).unwrap();
        let child = crate::spawn_program(
            &bin.display().to_string(),
            &["--config".to_string(), config_path.display().to_string()],
            &dir.join("jaeger.log"),
        );
        let jaeger = Jaeger {
            _child: child,
            otlp: format!("127.0.0.1:{otlp}"),
            query_port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while jaeger.get("/api/services").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "Jaeger's query API did not answer in 30 s; see {}",
                dir.join("jaeger.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        jaeger
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.query_port);
        let response = trellis_support::httpc::get(&url, Duration::from_secs(5)).await.ok()?;
        (response.status == 200).then(|| serde_json::from_str(&response.body).ok())?
    }

    /// The services Jaeger has spans of.
    pub async fn services(&self) -> Vec<String> {
        let Some(body) = self.get("/api/services").await else {
            return Vec::new();
        };
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    }

    /// The latest traces (up to `limit`) with a span of `service`, each whole (every service's
    /// spans in it).
    pub async fn traces(&self, service: &str, limit: usize) -> Vec<Trace> {
        let Some(body) = self
            .get(&format!("/api/traces?service={service}&limit={limit}&lookback=1h"))
            .await
        else {
            return Vec::new();
        };
        body["data"].as_array().into_iter().flatten().map(parse_trace).collect()
    }

    /// The trace of `trace_id` (32 hex digits), once Jaeger has any span of it.
    pub async fn trace(&self, trace_id: &str) -> Option<Trace> {
        let body = self.get(&format!("/api/traces/{trace_id}")).await?;
        body["data"].as_array()?.first().map(parse_trace)
    }

    /// Polls [`traces`](Self::traces) of `service` until one satisfies `wanted`; fails after
    /// `limit` saying `what`, with the operations seen.
    pub async fn wait_for_trace(
        &self,
        service: &str,
        what: &str,
        limit: Duration,
        wanted: impl Fn(&Trace) -> bool,
    ) -> Trace {
        let deadline = Instant::now() + limit;
        loop {
            let traces = self.traces(service, 200).await;
            if let Some(trace) = traces.iter().find(|t| wanted(t)) {
                return trace.clone();
            }
            if Instant::now() > deadline {
                let seen: std::collections::BTreeSet<String> = traces
                    .iter()
                    .flat_map(|t| t.spans.iter().map(|s| format!("{}:{}", s.service, s.operation)))
                    .collect();
                panic!(
                    "{what}: no such trace of {service} in {limit:?} ({} traces; spans seen: {seen:?})",
                    traces.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn parse_trace(trace: &Value) -> Trace {
    let processes = &trace["processes"];
    let spans = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let process = &processes[span["processID"].as_str().unwrap_or_default()];
            Span {
                span_id: text(&span["spanID"]),
                trace_id: text(&span["traceID"]),
                operation: text(&span["operationName"]),
                service: text(&process["serviceName"]),
                parents: span["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["refType"] == "CHILD_OF")
                    .map(|r| text(&r["spanID"]))
                    .collect(),
                process_tags: process["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| (text(&t["key"]), t["value"].to_string().trim_matches('"').to_string()))
                    .collect(),
            }
        })
        .collect();
    Trace {
        trace_id: text(&trace["traceID"]),
        spans,
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}
