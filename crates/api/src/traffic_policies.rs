//! `trafficcontrol.policy.gloo.solo.io/v2` kinds beyond headers and rate limits: MirrorPolicy,
//! TransformationPolicy, LoadBalancerPolicy, ProxyProtocolPolicy, HTTPBufferPolicy; and the
//! `extensions.policy.gloo.solo.io/v2` kinds WasmDeploymentPolicy and LuaPolicy.
//!
//! Field names follow Gloo Mesh 2.x (`solo-io/solo-apis`, `api/gloo.solo.io/policy/v2/`,
//! <https://github.com/solo-io/solo-apis/tree/gloo-mesh-v2.6.x/api/gloo.solo.io/policy/v2>).
//! Sub-objects Trellis does not apply are kept as JSON, so they load but are not checked.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{DestinationReference, ObjectSelector, PortSelector};
use crate::policy::{DestinationSelector, RouteSelector, WorkloadSelector};

/// `applyToListeners[]`: a VirtualGateway's listeners, by gateway and port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_gateway: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: MirrorConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorConfig {
    /// Where copies go: a Service (the default kind), VirtualDestination or ExternalService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<DestinationReference>,
    /// Share of requests copied, 0-100; all when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformationPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: TransformationConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<crate::transformation::RequestTransformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<crate::transformation::ResponseTransformation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: LoadBalancerConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// UNSPECIFIED, RANDOM, PASSTHROUGH, ROUND_ROBIN or LEAST_REQUEST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_merge_window: Option<String>,
}

/// One hash key: a header, a cookie, the source IP or a query parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// `{name, path, ttl}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_source_ip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocolPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_listeners: Vec<ListenerSelector>,
    #[serde(default)]
    pub config: ProxyProtocolConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    #[serde(default)]
    pub enable_proxy_protocol: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBufferPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: HttpBufferConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBufferConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmDeploymentPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_workloads: Vec<WorkloadSelector>,
    /// `{filters[], weight}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LuaPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    /// `{sourceCode: {inlineString}, phase}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}
