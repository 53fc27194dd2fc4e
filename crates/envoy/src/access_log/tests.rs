//! Access logs: which apply, filters as Envoy's, entries' JSON keys, each sink's config.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog as EnvoyAccessLog, access_log::ConfigType, access_log_filter::FilterSpecifier, comparison_filter::Op,
};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{grpc_service, substitution_format_string::Format};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{FileAccessLog, file_access_log};
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use envoy_types::pb::opentelemetry::proto::common::v1::any_value;
use trellis_model::access_log::{AccessLog, AccessLogSink, Comparison, LogFilter};
use trellis_model::ir::{HeaderMatch, ValueMatch};

use super::*;
use crate::testing::{hcm, mk_cluster_config, mk_workload, unpack};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn mk_log(name: &str, namespace: &str, selector: &[(&str, &str)]) -> AccessLog {
    AccessLog {
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels: labels(selector),
        filters: vec![LogFilter::Status {
            comparison: Comparison::Ge,
            value: 400,
        }],
        request_headers: vec!["x-tenant".to_string()],
        response_headers: vec!["x-server".to_string()],
        ..Default::default()
    }
}

fn file_config(log: &EnvoyAccessLog) -> FileAccessLog {
    assert_eq!(log.name, FILE_LOGGER);
    let Some(ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("no typed config")
    };
    unpack(any)
}

fn json_format(config: &FileAccessLog) -> Struct {
    let Some(file_access_log::AccessLogFormat::LogFormat(format)) = &config.access_log_format else {
        panic!("no log_format: {config:?}")
    };
    let Some(Format::JsonFormat(json)) = &format.format else {
        panic!("not json_format: {format:?}")
    };
    json.clone()
}

fn text(json: &Struct, key: &str) -> String {
    match &json.fields.get(key).and_then(|v| v.kind.clone()) {
        Some(Kind::StringValue(text)) => text.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn applies_by_namespace_and_labels_once_per_policy() {
    let logs = vec![
        mk_log("demo/reviews", "default", &[("app", "reviews")]),
        // The same policy again (a second selector that also selects the proxy).
        mk_log("demo/reviews", "", &[]),
        mk_log("demo/other-namespace", "prod", &[]),
        mk_log("demo/other-labels", "", &[("app", "ratings")]),
        mk_log("demo/everyone", "", &[]),
    ];
    let applying = applying(&logs, "default", &labels(&[("app", "reviews"), ("version", "v1")]));
    let names: Vec<&str> = applying.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["demo/reviews", "demo/everyone"]);
}

#[test]
fn filters_become_envoy_filters_and_several_are_alternatives() {
    assert_eq!(filter(&[]), None, "no filter logs every request");
    let status = filter(&[LogFilter::Status {
        comparison: Comparison::Ge,
        value: 400,
    }])
    .unwrap();
    let Some(FilterSpecifier::StatusCodeFilter(status)) = status.filter_specifier else {
        panic!("{status:?}")
    };
    let comparison = status.comparison.unwrap();
    assert_eq!(comparison.op, Op::Ge as i32);
    let value = comparison.value.unwrap();
    assert_eq!(
        (value.default_value, value.runtime_key.as_str()),
        (400, STATUS_RUNTIME_KEY)
    );

    let both = filter(&[
        LogFilter::Status {
            comparison: Comparison::Le,
            value: 299,
        },
        LogFilter::Header(HeaderMatch {
            name: "x-debug".into(),
            value: ValueMatch::Exact("1".into()),
            invert: true,
        }),
    ])
    .unwrap();
    let Some(FilterSpecifier::OrFilter(or)) = both.filter_specifier else {
        panic!("several filters are alternatives: {both:?}")
    };
    assert_eq!(or.filters.len(), 2);
    let Some(FilterSpecifier::HeaderFilter(header)) = &or.filters[1].filter_specifier else {
        panic!("{:?}", or.filters[1])
    };
    let matcher = header.header.as_ref().unwrap();
    assert_eq!((matcher.name.as_str(), matcher.invert_match), ("x-debug", true));
    assert!(matches!(
        matcher.header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(_))
    ));
}

#[test]
fn an_entry_is_json_with_the_usual_fields_and_the_included_headers_by_name() {
    let log = mk_log("demo/errors", "", &[]);
    let sink = AccessLogSink::File("/var/log/trellis/access.log".into());
    let entries = access_logs(&[&log], "inbound|9080", &sink);
    assert_eq!(entries.len(), 1);
    let config = file_config(&entries[0]);
    assert_eq!(config.path, "/var/log/trellis/access.log");
    let json = json_format(&config);
    for key in [
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_host",
        "upstream_cluster",
        "x_request_id",
        "authority",
        "user_agent",
        "downstream_remote_address",
        "downstream_peer_uri_san",
    ] {
        assert!(json.fields.contains_key(key), "no {key} in {:?}", json.fields.keys());
    }
    assert_eq!(text(&json, "policy"), "demo/errors");
    assert_eq!(text(&json, "listener"), "inbound|9080");
    assert_eq!(text(&json, "response_code"), "%RESPONSE_CODE%");
    let Some(Kind::StructValue(request)) = &json.fields["request_headers"].kind else {
        panic!("request_headers is not an object")
    };
    assert_eq!(text(request, "x-tenant"), "%REQ(x-tenant)%");
    let Some(Kind::StructValue(response)) = &json.fields["response_headers"].kind else {
        panic!("response_headers is not an object")
    };
    assert_eq!(text(response, "x-server"), "%RESP(x-server)%");
    // Lists the policy leaves empty add no key.
    assert!(!json.fields.contains_key("response_trailers"));
    assert!(!json.fields.contains_key("filter_state"));
    assert_eq!(entries[0].filter, filter(&log.filters));
}

#[test]
fn equal_logs_encode_to_equal_bytes() {
    // The JSON format is a protobuf map: written in key order, never in a HashMap's.
    let log = AccessLog {
        request_headers: (0..20).map(|i| format!("x-h{i}")).collect(),
        ..mk_log("demo/errors", "", &[])
    };
    let sink = AccessLogSink::Stdout;
    let once = access_logs(&[&log], "outbound", &sink);
    for _ in 0..5 {
        assert_eq!(access_logs(&[&log], "outbound", &sink), once);
    }
    let Some(ConfigType::TypedConfig(any)) = &once[0].config_type else {
        panic!()
    };
    assert_eq!(once[0].name, STDOUT_LOGGER);
    let stdout: StdoutAccessLog = unpack(any);
    assert!(stdout.access_log_format.is_some());
}

#[test]
fn otlp_sends_log_records_over_grpc_to_the_collector_cluster() {
    let log = mk_log("demo/errors", "", &[]);
    let sink = AccessLogSink::Otlp("otel-collector.observability:4317".into());
    let entries = access_logs(&[&log], "outbound", &sink);
    assert_eq!(entries[0].name, OTLP_LOGGER);
    let Some(ConfigType::TypedConfig(any)) = &entries[0].config_type else {
        panic!()
    };
    let config: OpenTelemetryAccessLogConfig = unpack(any);
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) =
        config.grpc_service.as_ref().and_then(|g| g.target_specifier.clone())
    else {
        panic!("no envoy_grpc: {config:?}")
    };
    assert_eq!(grpc.cluster_name, ACCESS_LOG_OTLP_CLUSTER);
    assert_eq!(config.log_name, "demo/errors");
    let attributes = config.attributes.unwrap().values;
    let code = attributes.iter().find(|kv| kv.key == "response_code").unwrap();
    assert_eq!(
        code.value.as_ref().and_then(|v| v.value.clone()),
        Some(any_value::Value::StringValue("%RESPONSE_CODE%".into()))
    );
    let headers = attributes.iter().find(|kv| kv.key == "request_headers").unwrap();
    let Some(any_value::Value::KvlistValue(list)) = headers.value.as_ref().and_then(|v| v.value.clone()) else {
        panic!("request_headers is not a key-value list")
    };
    assert_eq!(list.values[0].key, "x-tenant");

    let cluster = otlp_cluster(&sink, true).unwrap();
    assert_eq!(cluster.name, ACCESS_LOG_OTLP_CLUSTER);
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    assert!(
        cluster
            .typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        "gRPC needs HTTP/2"
    );
    let endpoint = &cluster.load_assignment.as_ref().unwrap().endpoints[0].lb_endpoints[0];
    let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(endpoint)) =
        &endpoint.host_identifier
    else {
        panic!()
    };
    assert_eq!(
        crate::testing::addr(&endpoint.address),
        ("otel-collector.observability".to_string(), 4317)
    );
    assert_eq!(otlp_cluster(&sink, false), None, "no log applies: no cluster");
    assert_eq!(otlp_cluster(&AccessLogSink::Stdout, true), None);
}

#[test]
fn a_selected_sidecar_logs_on_its_outbound_and_inbound_http_listeners_only() {
    let mut ir = mk_cluster_config();
    ir.access_logs = vec![mk_log("default/reviews", "default", &[])];
    let workload = mk_workload();
    let sink = AccessLogSink::File("/logs/access.log".into());
    let spec = crate::SidecarSpec {
        workload: &workload,
        outbound_address: "127.0.0.1",
        outbound_port: 15001,
        inbound_address: "10.0.0.1",
        access_log: &sink,
    };
    let resources = crate::sidecar(&ir, &spec);
    let outbound = hcm(&resources.listeners[0]);
    assert_eq!(outbound.access_log.len(), 1);
    assert_eq!(
        text(&json_format(&file_config(&outbound.access_log[0])), "listener"),
        "outbound"
    );
    let inbound = hcm(&resources.listeners[1]);
    assert_eq!(
        text(&json_format(&file_config(&inbound.access_log[0])), "listener"),
        "inbound|9080"
    );
    // The TCP port has no HTTP connection manager, so no access log.
    assert_ne!(
        resources.listeners[2].filter_chains[0].filters[0].name,
        crate::common::HCM_FILTER
    );

    // Another namespace's workloads are not selected.
    ir.access_logs[0].namespace = "prod".into();
    let resources = crate::sidecar(&ir, &spec);
    assert!(hcm(&resources.listeners[0]).access_log.is_empty());
    assert!(hcm(&resources.listeners[1]).access_log.is_empty());
}
