//! `security.policy.gloo.solo.io/v2` kinds beyond AccessPolicy and ExtAuthPolicy: CORSPolicy,
//! JWTPolicy, CSRFPolicy, ClientTLSPolicy, DLPPolicy, WAFPolicy and GraphQLAllowedQueryPolicy.
//!
//! Field names follow Gloo Mesh 2.x (`solo-io/solo-apis`, `api/gloo.solo.io/policy/v2/security/`,
//! <https://github.com/solo-io/solo-apis/tree/gloo-mesh-v2.6.x/api/gloo.solo.io/policy/v2/security>).
//! Sub-objects Trellis does not apply are kept as JSON, so they load but are not checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{DestinationSelector, RouteSelector};

/// `common.gloo.solo.io.StringMatch`: one of exact, prefix, regex (RE2) or suffix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: CorsConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight answer (`access-control-max-age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: JwtConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// A request passes with a valid token from any one provider.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, JwtProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Value>,
    /// Deprecated form of `validationPolicy: ALLOW_MISSING_OR_FAILED`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_missing_or_failed: bool,
    /// AUTO, FALSE or TRUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_route_cache: Option<String>,
    /// Every matcher must hold for the token's payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<JwtClaimMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// REQUIRE_VALID (default), ALLOW_MISSING or ALLOW_MISSING_OR_FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_policy: Option<String>,
}

/// A claim the token must carry (`values`, any of them) or must not (`notValues`). A value may
/// start or end with `*`: `*@solo.io`, `admin-*`, or `*` for any value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtClaimMatcher {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
    /// Splits `key` into a path into nested objects (`realm_access.roles` with `.`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nested_claim_delimiter: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_source: Option<JwtTokenSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalJwks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteJwks>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_to_headers: Vec<ClaimToHeader>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
}

/// Where the token is read; `Authorization: Bearer <token>` when left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtTokenSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<JwtHeaderSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeaderSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalJwks {
    /// The key set (JWKS JSON, or one PEM public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// `{objectRef: {name, namespace, cluster}, key}`: the key set in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_async_fetch: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsrfPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: CsrfConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsrfConfig {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filter_enabled: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_origins: Vec<StringMatch>,
}

/// The TLS mode is one of `disable`, `simple`, `mutual` or `istioMutual`, at the top of the spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<Value>,
    /// `{config: {sni, credentialName}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio_mutual: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlpPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: DlpConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlpConfig {
    /// `[{predefinedAction | customAction | keyValueAction, shadow}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Value>,
    /// ALL, ACCESS_LOGS or RESPONSE_BODY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitize: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WafPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: WafConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WafConfig {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_core_rule_set: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_rule_set_settings_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_rule_set_settings_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_rule_sets: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_intervention_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_logging: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_headers_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub response_headers_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphQlAllowedQueryPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_routes: Vec<RouteSelector>,
    /// `{allowedQueryHashes[]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}
