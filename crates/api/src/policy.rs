//! Policy kinds: `security.policy.gloo.solo.io/v2` AccessPolicy; `resilience.policy.gloo.solo.io/v2`
//! RetryTimeoutPolicy, FaultInjectionPolicy, FailoverPolicy, OutlierDetectionPolicy;
//! `trafficcontrol.policy.gloo.solo.io/v2` HeaderManipulationPolicy.
//!
//! Durations are strings in protobuf JSON form (`"1.5s"`) or with a unit (`"500ms"`, `"2m"`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::ObjectSelector;

/// `applyToRoutes[]`: routes selected by the labels of RouteTable `http[]` entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_destinations: Option<Value>,
}

/// `applyToDestinations[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<crate::common::PortSelector>,
}

/// `applyToWorkloads[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<crate::common::PortSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_workloads: Vec<WorkloadSelector>,
    #[serde(default)]
    pub config: AccessPolicyConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Authn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_list: Option<Vec<Authz>>,
    /// Deprecated single-entry form of `authzList`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<Authz>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_layers: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authn {
    /// DISABLE, PERMISSIVE or STRICT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authz {
    /// Allowed callers; one empty selector allows every mesh identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_clients: Vec<IdentitySelector>,
    /// Exact (`/a`), prefix (`/a*`) or suffix (`*.png`) paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_remote_ip_blocks: Vec<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<AuthzMatch>,
    /// Evaluate and count would-be denials; deny nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_workload_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_identity_matcher: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// Header name ─▶ values (any of them) it must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValues>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValues {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryTimeoutPolicySpec {
    #[serde(default)]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: RetryTimeoutConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryTimeoutConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Envoy retry conditions; default `5xx,connect-failure,reset`. Gloo (like Istio) writes
    /// them as one comma-separated string; a YAML list is read too.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "comma_list::serialize",
        deserialize_with = "comma_list::deserialize"
    )]
    #[schemars(with = "serde_json::Value")]
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionPolicySpec {
    #[serde(default)]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: FaultConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay: String,
    /// 0-100; all requests when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    pub http_status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderManipulationPolicySpec {
    #[serde(default)]
    pub apply_to_routes: Vec<RouteSelector>,
    #[serde(default)]
    pub config: HeaderManipulationConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderManipulationConfig {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub append_request_headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_request_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub append_response_headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_response_headers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionPolicySpec {
    #[serde(default)]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: OutlierDetectionConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<u32>,
    /// Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverPolicySpec {
    #[serde(default)]
    pub apply_to_destinations: Vec<DestinationSelector>,
    #[serde(default)]
    pub config: FailoverConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locality_mappings: Vec<LocalityMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_labels: Option<Value>,
}

/// A locality is where a cluster runs, as its agent reports it (`--region`, `--zone`,
/// `--sub-zone`); a cluster reporting none is a region of its own name: `from: {region: cluster-1}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityMapping {
    pub from: Locality,
    #[serde(default)]
    pub to: Vec<Locality>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Locality {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A list written as `"a,b"` (Gloo's form) or as a YAML list.
mod comma_list {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    enum Written {
        Joined(String),
        List(Vec<String>),
    }

    pub fn serialize<S: Serializer>(items: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&items.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        Ok(match Written::deserialize(deserializer)? {
            Written::Joined(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            Written::List(list) => list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Retries;

    #[test]
    fn retry_on_reads_gloos_joined_string_and_a_list() {
        for written in [
            "{attempts: 2, retryOn: 'connect-failure, 5xx'}",
            "{attempts: 2, retryOn: [connect-failure, 5xx]}",
        ] {
            let retries: Retries = yaml_serde::from_str(written).unwrap();
            assert_eq!(retries.retry_on, ["connect-failure", "5xx"], "{written}");
        }
        let back =
            serde_json::to_value(yaml_serde::from_str::<Retries>("{attempts: 1, retryOn: 5xx}").unwrap()).unwrap();
        assert_eq!(back["retryOn"], "5xx");
    }
}
