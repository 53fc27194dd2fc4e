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

use crate::common::ObjectReference;

/// The mesh's root of trust
/// (<https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/root_trust_policy/>): the
/// management server's root that signs each cluster's intermediate CA, the roots trusted beside
/// it while one is rotated out, and the intermediates' lifetime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootTrustPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_meshes: Vec<Value>,
    #[serde(default)]
    pub config: RootTrustConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootTrustConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgmt_server_ca: Option<MgmtServerCa>,
    /// `{vault: {...}}`: an external intermediate CA; not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ca: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_cert_options: Option<CommonCertOptions>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_restart_pods: bool,
    /// Roots trusted for validation but never signing: a root being rotated out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passive_certificate_authorities: Vec<MgmtServerCa>,
}

/// Where the root comes from: one of `generated` or `secretRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MgmtServerCa {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<CommonCertOptions>,
    /// A Secret of the management server, in the policy's namespace, holding the root's
    /// certificate and key (see [`ROOT_SECRET_CERT_KEYS`], [`ROOT_SECRET_KEY_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectReference>,
}

/// Gloo's `CommonCertOptions`, for a generated root and for the cluster intermediates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommonCertOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_key_size_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotation_grace_period_ratio: Option<f64>,
}

/// Keys of a root Secret holding the CA certificate, in the order they are looked for: Istio's
/// `cacerts` layout that Gloo documents for a managed root (`ca-cert.pem`), then a TLS Secret's.
/// See <https://docs.solo.io/gloo-mesh-enterprise/latest/setup/prod/certs/istio/managed/setup-options/>.
pub const ROOT_SECRET_CERT_KEYS: [&str; 2] = ["ca-cert.pem", "tls.crt"];
/// Keys of a root Secret holding the CA's private key, as [`ROOT_SECRET_CERT_KEYS`].
pub const ROOT_SECRET_KEY_KEYS: [&str; 2] = ["ca-key.pem", "tls.key"];

impl MgmtServerCa {
    /// Problems with `(field path, message)`, `field` being this value's own path.
    pub(crate) fn validate(&self, field: &str, namespace: &str, problems: &mut Vec<(String, String)>) {
        // Gloo reads the Secret from the policy's own namespace; naming another would let whoever
        // writes policies in one namespace sign the mesh with another namespace's key.
        if let Some(secret) = &self.secret_ref
            && !secret.namespace.is_empty()
            && secret.namespace != namespace
        {
            problems.push((
                format!("{field}.secretRef.namespace"),
                format!(
                    "{:?} is not the policy's namespace {namespace:?}: the Secret must be in the same namespace",
                    secret.namespace
                ),
            ));
        }
        match (&self.generated, &self.secret_ref) {
            (Some(_), Some(_)) => problems.push((
                field.to_string(),
                "set one of generated or secretRef, not both".to_string(),
            )),
            (Some(generated), None) => generated.validate(&format!("{field}.generated"), problems),
            (None, Some(secret)) if secret.name.is_empty() => problems.push((
                format!("{field}.secretRef.name"),
                "is required: the Secret holding the root CA".to_string(),
            )),
            _ => {}
        }
    }
}

impl CommonCertOptions {
    pub(crate) fn validate(&self, field: &str, problems: &mut Vec<(String, String)>) {
        if self.ttl_days == Some(0) {
            problems.push((format!("{field}.ttlDays"), "must be at least 1".to_string()));
        }
        if let Some(ratio) = self.secret_rotation_grace_period_ratio
            && !(ratio > 0.0 && ratio < 1.0)
        {
            problems.push((
                format!("{field}.secretRotationGracePeriodRatio"),
                format!("{ratio} is out of range: it must be between 0 and 1 (exclusive)"),
            ));
        }
    }
}

impl RootTrustPolicySpec {
    pub(crate) fn validate(&self, namespace: &str, problems: &mut Vec<(String, String)>) {
        let config = &self.config;
        if config.mgmt_server_ca.is_some() && config.agent_ca.is_some() {
            problems.push((
                "spec.config".to_string(),
                "set one of mgmtServerCa or agentCa, not both".to_string(),
            ));
        }
        if let Some(ca) = &config.mgmt_server_ca {
            ca.validate("spec.config.mgmtServerCa", namespace, problems);
        }
        if let Some(options) = &config.intermediate_cert_options {
            options.validate("spec.config.intermediateCertOptions", problems);
        }
        for (i, ca) in config.passive_certificate_authorities.iter().enumerate() {
            ca.validate(
                &format!("spec.config.passiveCertificateAuthorities[{i}]"),
                namespace,
                problems,
            );
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DashboardSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<Value>,
}

/// IstioLifecycleManager and GatewayLifecycleManager share this shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleManagerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installations: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_global: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InsightsConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_insights: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointLifecycleManagerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_service_account: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_spec: Option<Value>,
}
