//! `admin.gloo.solo.io` kinds that configure Gloo's own installation and trust: RootTrustPolicy,
//! Dashboard, IstioLifecycleManager, GatewayLifecycleManager (v2) and InsightsConfig,
//! WaypointLifecycleManager (v2alpha1).
//!
//! Field names follow Gloo Mesh 2.x (`solo-io/solo-apis`, `api/gloo.solo.io/admin/`,
//! <https://github.com/solo-io/solo-apis/tree/gloo-mesh-v2.6.x/api/gloo.solo.io/admin>).
//! Trellis installs no Istio and serves no Gloo dashboard: those load so that a Gloo
//! configuration applies whole, and their status says they are not applied.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootTrustPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_meshes: Vec<Value>,
    #[serde(default)]
    pub config: RootTrustConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootTrustConfig {
    /// `{generated: {ttlDays, rsaKeySizeBytes, orgName, ...} | secretRef: {name, namespace}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgmt_server_ca: Option<Value>,
    /// `{vault: {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ca: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_cert_options: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_restart_pods: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passive_certificate_authorities: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DashboardSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<Value>,
}

/// IstioLifecycleManager and GatewayLifecycleManager share this shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleManagerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installations: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_global: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InsightsConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_insights: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointLifecycleManagerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_service_account: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_spec: Option<Value>,
}
