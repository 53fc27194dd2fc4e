//! `resilience.policy.gloo.solo.io/v2` kinds beyond retries, faults, failover and outlier
//! detection, and the `observability.policy.gloo.solo.io/v2` AccessLogPolicy.
//!
//! Field names follow Gloo Mesh 2.x (`solo-io/solo-apis`, `api/gloo.solo.io/policy/v2/`,
//! <https://github.com/solo-io/solo-apis/tree/gloo-mesh-v2.6.x/api/gloo.solo.io/policy/v2/resilience>).
//! Sub-objects Trellis does not apply are kept as JSON, so they load but are not checked.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::ObjectReference;
use crate::networking::HeaderMatcher;
use crate::policy::{DestinationSelector, RouteSelector, WorkloadSelector};
use crate::traffic_policies::ListenerSelector;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: ConnectionConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpConnectionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnectionConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpConnectionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
}

/// `common.gloo.solo.io.TCPKeepalive`: TCP keepalive probes on connections to the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConnectionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveHealthCheckPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: ActiveHealthCheckConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveHealthCheckConfig {
    /// An Envoy `config.core.v3.HealthCheck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_gateways: Vec<ObjectReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConnectionPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_listeners: Vec<ListenerSelector>,
    #[serde(default)]
    pub config: ListenerConnectionConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConnectionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_connection_buffer_limit_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrimProxyConfigPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_workloads: Vec<WorkloadSelector>,
    #[serde(default)]
    pub config: TrimProxyConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrimProxyConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_destinations: Vec<DestinationSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveRequestConcurrencyPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphQlPersistedQueryCachePolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    /// `{cacheSize}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_workloads: Vec<WorkloadSelector>,
    #[serde(default)]
    pub config: AccessLogConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A request is logged when it matches any of these (none: every request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<AccessLogFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_request_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_response_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_response_trailers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_filter_state_objects: Vec<String>,
}

/// `AccessLogPolicySpec.Config.Filter`: a oneof of one matcher; neither matches every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code_matcher: Option<StatusCodeMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_matcher: Option<HeaderMatcher>,
}

/// `common.gloo.solo.io.StatusCodeMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusCodeMatcher {
    #[serde(default)]
    pub value: u32,
    #[serde(default)]
    pub comparator: Comparator,
}

/// `StatusCodeMatcher.Comparator`; proto3's default is `EQ`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Comparator {
    #[default]
    #[serde(rename = "EQ")]
    Eq,
    #[serde(rename = "GE")]
    Ge,
    #[serde(rename = "LE")]
    Le,
}
