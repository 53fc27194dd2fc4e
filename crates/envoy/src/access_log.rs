//! AccessLogPolicies on a proxy's HTTP connection managers: which logs apply to the proxy, and
//! each as an Envoy `access_log` entry, written where the proxy was told (its sink).
//!
//! ```text
//!  ir.access_logs ──applying(namespace, labels)──▶ [&AccessLog] ──access_logs(listener, sink)──▶ HCM.access_log[]
//!                                                                 filters: one ─▶ itself; several ─▶ or_filter
//!  sink: File(path) ─▶ envoy.access_loggers.file     JSON lines (json_format)
//!        Stdout     ─▶ envoy.access_loggers.stdout   JSON lines (json_format)
//!        Otlp(addr) ─▶ envoy.access_loggers.open_telemetry, gRPC to the cluster otlp_cluster() makes
//! ```
//!
//! Each entry has the usual fields (below) plus the policy's `request_headers`,
//! `response_headers`, `response_trailers` and `filter_state` objects, keyed by name (an absent
//! one is written as Envoy writes any missing value). The entry's `policy` names the
//! AccessLogPolicy and `listener` the listener that wrote it (`outbound`, `inbound|<port>`,
//! `ingress|<port>`).
//!
//! The log lives in the listener, so a policy change replaces the listener: new connections
//! follow it at once, connections open before it keep the old log while Envoy drains them.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog as EnvoyAccessLog, AccessLogFilter, ComparisonFilter, HeaderFilter, OrFilter, StatusCodeFilter,
    access_log::ConfigType, access_log_filter::FilterSpecifier, comparison_filter::Op,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{GrpcService, RuntimeUInt32, grpc_service};
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::opentelemetry::proto::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use envoy_types::util::pack_any;
use prost::Name;
use trellis_model::access_log::{AccessLog, AccessLogSink, Comparison, LogFilter};

use crate::common;

/// The cluster that leads to the OpenTelemetry collector of an `Otlp` sink.
pub const ACCESS_LOG_OTLP_CLUSTER: &str = "trellis_access_log_otlp";

const FILE_LOGGER: &str = "envoy.access_loggers.file";
const STDOUT_LOGGER: &str = "envoy.access_loggers.stdout";
const OTLP_LOGGER: &str = "envoy.access_loggers.open_telemetry";

/// Envoy wants a runtime key beside every status code it compares; nothing sets it, so the
/// policy's value holds.
const STATUS_RUNTIME_KEY: &str = "trellis.access_log.status_code";

/// The fields of every entry, in the order people read them.
const FIELDS: [(&str, &str); 17] = [
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("x_request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("downstream_peer_uri_san", "%DOWNSTREAM_PEER_URI_SAN%"),
    ("upstream_peer_uri_san", "%UPSTREAM_PEER_URI_SAN%"),
];

/// The logs that apply to a proxy in `namespace` with `labels`, once per policy (a policy whose
/// several selectors select the proxy logs each request once), oldest policy first.
pub(crate) fn applying<'a>(
    logs: &'a [AccessLog],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a AccessLog> {
    let mut seen = BTreeSet::new();
    logs.iter()
        .filter(|log| log.selects(namespace, labels))
        .filter(|log| seen.insert(log.name.as_str()))
        .collect()
}

/// The `access_log` entries of the connection manager of `listener`.
pub(crate) fn access_logs(logs: &[&AccessLog], listener: &str, sink: &AccessLogSink) -> Vec<EnvoyAccessLog> {
    logs.iter()
        .map(|log| EnvoyAccessLog {
            name: logger_name(sink).to_string(),
            filter: filter(&log.filters),
            config_type: Some(ConfigType::TypedConfig(typed_config(log, listener, sink))),
        })
        .collect()
}

/// The cluster an `Otlp` sink sends to, when the proxy logs anything at all: HTTP/2 (gRPC) to
/// the collector, its address resolved by DNS (an IP address resolves to itself).
pub(crate) fn otlp_cluster(sink: &AccessLogSink, any_log: bool) -> Option<Cluster> {
    let AccessLogSink::Otlp(address) = sink else {
        return None;
    };
    if !any_log {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut cluster = common::with_http2(common::static_cluster(ACCESS_LOG_OTLP_CLUSTER, host, port));
    cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    Some(cluster)
}

fn logger_name(sink: &AccessLogSink) -> &'static str {
    match sink {
        AccessLogSink::File(_) => FILE_LOGGER,
        AccessLogSink::Stdout => STDOUT_LOGGER,
        AccessLogSink::Otlp(_) => OTLP_LOGGER,
    }
}

/// No filter logs every request; one is itself; several are alternatives (Gloo: "a request is
/// logged if it matches any filter"), and Envoy's `or_filter` wants at least two.
fn filter(filters: &[LogFilter]) -> Option<AccessLogFilter> {
    let mut each: Vec<AccessLogFilter> = filters.iter().map(one_filter).collect();
    match each.len() {
        0 => None,
        1 => each.pop(),
        _ => Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::OrFilter(OrFilter { filters: each })),
        }),
    }
}

fn one_filter(filter: &LogFilter) -> AccessLogFilter {
    let specifier = match filter {
        LogFilter::Status { comparison, value } => FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
            comparison: Some(ComparisonFilter {
                op: match comparison {
                    Comparison::Eq => Op::Eq,
                    Comparison::Ge => Op::Ge,
                    Comparison::Le => Op::Le,
                } as i32,
                value: Some(RuntimeUInt32 {
                    default_value: *value,
                    runtime_key: STATUS_RUNTIME_KEY.to_string(),
                }),
            }),
        }),
        LogFilter::Header(header) => FilterSpecifier::HeaderFilter(HeaderFilter {
            header: Some(crate::routes::header_matcher(header)),
        }),
    };
    AccessLogFilter {
        filter_specifier: Some(specifier),
    }
}

/// An entry's fields as (key, format string or nested fields).
enum Field {
    Text(String),
    Nested(Vec<(String, String)>),
}

fn fields(log: &AccessLog, listener: &str) -> Vec<(String, Field)> {
    let mut out: Vec<(String, Field)> = vec![
        ("policy".to_string(), Field::Text(log.name.clone())),
        ("listener".to_string(), Field::Text(listener.to_string())),
    ];
    out.extend(FIELDS.iter().map(|(k, v)| (k.to_string(), Field::Text(v.to_string()))));
    let nested = |names: &[String], command: &str| -> Vec<(String, String)> {
        names.iter().map(|n| (n.clone(), format!("%{command}({n})%"))).collect()
    };
    for (key, names, command) in [
        ("request_headers", &log.request_headers, "REQ"),
        ("response_headers", &log.response_headers, "RESP"),
        ("response_trailers", &log.response_trailers, "TRAILER"),
        ("filter_state", &log.filter_state_objects, "FILTER_STATE"),
    ] {
        if !names.is_empty() {
            out.push((key.to_string(), Field::Nested(nested(names, command))));
        }
    }
    out
}

fn typed_config(log: &AccessLog, listener: &str, sink: &AccessLogSink) -> Any {
    let fields = fields(log, listener);
    match sink {
        AccessLogSink::File(path) => sorted::file(path, &fields),
        AccessLogSink::Stdout => sorted::stdout(&fields),
        AccessLogSink::Otlp(_) => pack_any(otlp_config(log, &fields)),
    }
}

/// Log records to the collector: the entry's fields as attributes (the nested ones as key-value
/// lists), a one-line summary as the body, the policy as the log name.
fn otlp_config(log: &AccessLog, fields: &[(String, Field)]) -> OpenTelemetryAccessLogConfig {
    let text = |value: &str| AnyValue {
        value: Some(any_value::Value::StringValue(value.to_string())),
    };
    let attributes = fields
        .iter()
        .map(|(key, field)| KeyValue {
            key: key.clone(),
            value: Some(match field {
                Field::Text(value) => text(value),
                Field::Nested(inner) => AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: inner
                            .iter()
                            .map(|(k, v)| KeyValue {
                                key: k.clone(),
                                value: Some(text(v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                },
            }),
            ..Default::default()
        })
        .collect();
    OpenTelemetryAccessLogConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                cluster_name: ACCESS_LOG_OTLP_CLUSTER.to_string(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        log_name: log.name.clone(),
        body: Some(text(
            "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS%",
        )),
        attributes: Some(KeyValueList { values: attributes }),
        ..Default::default()
    }
}

/// Type URLs of the loggers whose config `sorted` writes.
fn type_url<T: Name>() -> String {
    T::type_url()
}

// === deterministic encoding ===
//
// A `json_format` is a `google.protobuf.Struct`, a protobuf map that prost holds in a `HashMap`
// and writes in random order: equal logs would encode differently and every recompute would
// push the listener again. These mirror the messages we set, tag for tag, with the map as a
// `BTreeMap`; the bytes decode as the real messages (as `authz` does for RBAC policies).
mod sorted {
    use std::collections::BTreeMap;

    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use super::Field;

    /// `google.protobuf.Value` with `string_value` (3) or `struct_value` (5).
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Value {
        #[prost(oneof = "Kind", tags = "3, 5")]
        pub kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(string, tag = "3")]
        Text(String),
        #[prost(message, tag = "5")]
        Nested(Struct),
    }

    /// `google.protobuf.Struct`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Struct {
        #[prost(btree_map = "string, message", tag = "1")]
        pub fields: BTreeMap<String, Value>,
    }

    /// `envoy.config.core.v3.SubstitutionFormatString` with `json_format` (2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct JsonFormat {
        #[prost(message, optional, tag = "2")]
        pub json_format: Option<Struct>,
    }

    /// `envoy.extensions.access_loggers.file.v3.FileAccessLog`: `path` (1), `log_format` (5).
    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, tag = "1")]
        path: String,
        #[prost(message, optional, tag = "5")]
        log_format: Option<JsonFormat>,
    }

    /// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`: `log_format` (1).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Stdout {
        #[prost(message, optional, tag = "1")]
        log_format: Option<JsonFormat>,
    }

    fn text(value: &str) -> Value {
        Value {
            kind: Some(Kind::Text(value.to_string())),
        }
    }

    pub(super) fn json(fields: &[(String, Field)]) -> JsonFormat {
        let fields = fields
            .iter()
            .map(|(key, field)| {
                let value = match field {
                    Field::Text(value) => text(value),
                    Field::Nested(inner) => Value {
                        kind: Some(Kind::Nested(Struct {
                            fields: inner.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
                        })),
                    },
                };
                (key.clone(), value)
            })
            .collect();
        JsonFormat {
            json_format: Some(Struct { fields }),
        }
    }

    pub(super) fn file(path: &str, fields: &[(String, Field)]) -> Any {
        let config = File {
            path: path.to_string(),
            log_format: Some(json(fields)),
        };
        Any {
            type_url: super::type_url::<FileAccessLog>(),
            value: config.encode_to_vec(),
        }
    }

    pub(super) fn stdout(fields: &[(String, Field)]) -> Any {
        let config = Stdout {
            log_format: Some(json(fields)),
        };
        Any {
            type_url: super::type_url::<StdoutAccessLog>(),
            value: config.encode_to_vec(),
        }
    }
}

#[cfg(test)]
mod tests;
