//! The add-on kinds: external auth (`admin.gloo.solo.io/v2` ExtAuthServer,
//! `security.policy.gloo.solo.io/v2` ExtAuthPolicy) and rate limiting (`admin.gloo.solo.io/v2`
//! RateLimitServerConfig and RateLimitServerSettings, `trafficcontrol.policy.gloo.solo.io/v2`
//! RateLimitClientConfig and RateLimitPolicy).
//!
//! The auth configuration itself (`glooAuth`, Gloo's AuthConfigSpec) stays JSON here: the
//! ext-auth engine owns its model, and the management server compiles it at apply time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{DestinationKind, ObjectReference, PortSelector};
use crate::policy::{DestinationSelector, RouteSelector};

/// Where an add-on server runs: a service of the workload cluster (`ref`) and its port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationServer {
    #[serde(default, rename = "ref")]
    pub reference: ObjectReference,
    /// Gloo's `DestinationReference.kind`; an add-on server is a `SERVICE` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DestinationKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthServerSpec {
    /// Defaults to the service `ext-auth-service` in namespace `gloo-mesh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_server: Option<DestinationServer>,
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    /// Let requests through when the server cannot be reached or errs (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure_mode_allow: bool,
    /// Status sent when the server cannot be reached and failure mode is deny (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BufferSettings>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_route_cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_service: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: ExtAuthConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthConfig {
    /// The ExtAuthServer to call.
    #[serde(default)]
    pub server: ObjectReference,
    /// Gloo's AuthConfigSpec: `configs[]` and an optional `booleanExpr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gloo_auth: Option<Value>,
    /// Call the server with these context extensions and no Trellis auth config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_auth: Option<CustomAuth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomAuth {
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RateLimitUnit {
    #[default]
    Second,
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitValue {
    pub unit: RateLimitUnit,
    pub requests_per_unit: u32,
}

/// A node of the descriptor tree (rate-limiter `Descriptor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitDescriptor {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_apply: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Matches a request descriptor that holds all its entries, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSetDescriptor {
    #[serde(default)]
    pub simple_descriptors: Vec<SimpleDescriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitValue>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_apply: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimpleDescriptor {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitServerConfigSpec {
    /// The rate limiters that enforce these limits (they receive the descriptors).
    #[serde(default)]
    pub destination_servers: Vec<DestinationServer>,
    #[serde(default)]
    pub raw: RawServerConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawServerConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_descriptors: Vec<RateLimitSetDescriptor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitServerSettingsSpec {
    /// Defaults to the service `rate-limiter` in namespace `gloo-mesh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_server: Option<DestinationServer>,
    /// Default 100ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    /// Refuse requests when the rate limiter cannot be reached (default false: let them through).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny_on_fail: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_x_ratelimit_headers: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitClientConfigSpec {
    #[serde(default)]
    pub raw: RawClientConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawClientConfig {
    #[serde(default)]
    pub rate_limits: Vec<RateLimitActions>,
}

/// One descriptor a request produces: from `actions` (matched against the descriptor tree) or
/// from `setActions` (matched against set descriptors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitActions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<RateLimitAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_actions: Vec<RateLimitAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Value>,
}

/// Envoy's rate-limit actions (`config.route.v3.RateLimit.Action`), one field set per action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_cluster: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<RequestHeadersAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_key: Option<GenericKeyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value_match: Option<HeaderValueMatchAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataAction>,
}

/// A descriptor entry from request metadata (Envoy's `MetaData` action): typically what the
/// ext-auth filter put in the dynamic metadata (`metadataKey.key: envoy.filters.http.ext_authz`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataAction {
    pub descriptor_key: String,
    pub metadata_key: MetadataKey,
    /// Used when the metadata is absent; without it the descriptor is not sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
    /// DYNAMIC (default) or ROUTE_ENTRY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_if_absent: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataKey {
    /// The filter namespace, e.g. `envoy.filters.http.ext_authz`.
    pub key: String,
    #[serde(default)]
    pub path: Vec<MetadataPathSegment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataPathSegment {
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeadersAction {
    pub header_name: String,
    pub descriptor_key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_if_absent: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericKeyAction {
    pub descriptor_value: String,
    /// Default `generic_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValueMatchAction {
    pub descriptor_value: String,
    /// Default `header_match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_key: Option<String>,
    /// Default true: the entry is added when the headers match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_match: Option<bool>,
    #[serde(default)]
    pub headers: Vec<ActionHeaderMatcher>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionHeaderMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: RateLimitPolicyConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicyConfig {
    #[serde(default)]
    pub server_settings: ObjectReference,
    #[serde(default)]
    pub ratelimit_server_config: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit_client_config: Option<ObjectReference>,
    /// Inline client config, instead of `ratelimitClientConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawClientConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Value>,
}

/// ExtAuthServer `requestBody`: the request body goes to the ext-auth server with the check
/// (Envoy's ext_authz `with_request_body`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BufferSettings {
    /// Bytes to buffer before the check; larger bodies are refused (413) unless
    /// `allowPartialMessage`. Envoy needs a limit: 4 KiB when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_partial_message: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pack_as_bytes: bool,
}
