//! Access logs (AccessLogPolicy) as one cluster's proxies apply them: which proxies, which
//! requests, which extra fields. Where the entries go is the proxy's own choice (its
//! `--access-log` sink), not part of the mesh config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ir::HeaderMatch;

/// One AccessLogPolicy's log on the proxies it selects: a sidecar (its inbound and outbound
/// HTTP listeners) or an ingress gateway (its HTTP listeners).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLog {
    /// The AccessLogPolicy, `namespace/name`; every entry names it.
    pub name: String,
    /// Proxies it applies to: in this namespace (empty: any), carrying all of these labels.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A request is logged when any filter matches; none: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<LogFilter>,
    /// Extra fields of each entry, by header name (or filter-state key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_trailers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_state_objects: Vec<String>,
}

impl AccessLog {
    /// Whether a proxy in `namespace` with `labels` takes this log.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespace.is_empty() || self.namespace == namespace)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogFilter {
    /// The response status compared with `value`.
    Status { comparison: Comparison, value: u32 },
    /// A request header (present or matching, or with `invert` neither).
    Header(HeaderMatch),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Comparison {
    Eq,
    Ge,
    Le,
}

/// Where a proxy writes the entries of the logs that apply to it; set on the proxy's command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLogSink {
    /// JSON lines appended to this file (an absolute path).
    File(String),
    /// JSON lines on Envoy's standard output.
    Stdout,
    /// OpenTelemetry log records over OTLP/gRPC to this collector, `host:port`.
    Otlp(String),
}
