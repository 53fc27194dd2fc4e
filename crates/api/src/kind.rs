//! The kinds Trellis understands, their apiVersions and the names the CLI accepts for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    KubernetesCluster,
    Workspace,
    WorkspaceSettings,
    VirtualDestination,
    RouteTable,
    AccessPolicy,
    RetryTimeoutPolicy,
    FaultInjectionPolicy,
    FailoverPolicy,
    OutlierDetectionPolicy,
    HeaderManipulationPolicy,
    ExternalService,
    ExternalEndpoint,
    VirtualGateway,
    ConfigMap,
    Secret,
    ExtAuthServer,
    ExtAuthPolicy,
    RateLimitServerConfig,
    RateLimitServerSettings,
    RateLimitClientConfig,
    RateLimitPolicy,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    CorsPolicy,
    JwtPolicy,
    CsrfPolicy,
    ClientTlsPolicy,
    DlpPolicy,
    WafPolicy,
    GraphQlAllowedQueryPolicy,
    MirrorPolicy,
    TransformationPolicy,
    LoadBalancerPolicy,
    ProxyProtocolPolicy,
    HttpBufferPolicy,
    ConnectionPolicy,
    ActiveHealthCheckPolicy,
    ListenerConnectionPolicy,
    TrimProxyConfigPolicy,
    AdaptiveRequestConcurrencyPolicy,
    GraphQlPersistedQueryCachePolicy,
    AccessLogPolicy,
    WasmDeploymentPolicy,
    LuaPolicy,
    RootTrustPolicy,
    Dashboard,
    IstioLifecycleManager,
    GatewayLifecycleManager,
    InsightsConfig,
    WaypointLifecycleManager,
}

const ADMIN: &str = "admin.gloo.solo.io/v2";
const NETWORKING: &str = "networking.gloo.solo.io/v2";
const SECURITY: &str = "security.policy.gloo.solo.io/v2";
const RESILIENCE: &str = "resilience.policy.gloo.solo.io/v2";
const TRAFFIC: &str = "trafficcontrol.policy.gloo.solo.io/v2";
const OBSERVABILITY: &str = "observability.policy.gloo.solo.io/v2";
const EXTENSIONS: &str = "extensions.policy.gloo.solo.io/v2";
const ADMIN_V2ALPHA1: &str = "admin.gloo.solo.io/v2alpha1";
const CORE: &str = "v1";
const RBAC: &str = "rbac.authorization.k8s.io/v1";

/// (kind, name, apiVersion, plural, short name)
const TABLE: [(Kind, &str, &str, &str, &str); 53] = [
    (
        Kind::KubernetesCluster,
        "KubernetesCluster",
        ADMIN,
        "kubernetesclusters",
        "kc",
    ),
    (Kind::Workspace, "Workspace", ADMIN, "workspaces", "ws"),
    (
        Kind::WorkspaceSettings,
        "WorkspaceSettings",
        ADMIN,
        "workspacesettings",
        "wss",
    ),
    (
        Kind::VirtualDestination,
        "VirtualDestination",
        NETWORKING,
        "virtualdestinations",
        "vd",
    ),
    (Kind::RouteTable, "RouteTable", NETWORKING, "routetables", "rt"),
    (Kind::AccessPolicy, "AccessPolicy", SECURITY, "accesspolicies", "ap"),
    (
        Kind::RetryTimeoutPolicy,
        "RetryTimeoutPolicy",
        RESILIENCE,
        "retrytimeoutpolicies",
        "rtp",
    ),
    (
        Kind::FaultInjectionPolicy,
        "FaultInjectionPolicy",
        RESILIENCE,
        "faultinjectionpolicies",
        "fip",
    ),
    (
        Kind::FailoverPolicy,
        "FailoverPolicy",
        RESILIENCE,
        "failoverpolicies",
        "fp",
    ),
    (
        Kind::OutlierDetectionPolicy,
        "OutlierDetectionPolicy",
        RESILIENCE,
        "outlierdetectionpolicies",
        "odp",
    ),
    (
        Kind::HeaderManipulationPolicy,
        "HeaderManipulationPolicy",
        TRAFFIC,
        "headermanipulationpolicies",
        "hmp",
    ),
    (
        Kind::ExternalService,
        "ExternalService",
        NETWORKING,
        "externalservices",
        "es",
    ),
    (
        Kind::ExternalEndpoint,
        "ExternalEndpoint",
        NETWORKING,
        "externalendpoints",
        "ee",
    ),
    (
        Kind::VirtualGateway,
        "VirtualGateway",
        NETWORKING,
        "virtualgateways",
        "vg",
    ),
    (Kind::ConfigMap, "ConfigMap", CORE, "configmaps", "cm"),
    (Kind::Secret, "Secret", CORE, "secrets", "secret"),
    (Kind::ExtAuthServer, "ExtAuthServer", ADMIN, "extauthservers", "eas"),
    (Kind::ExtAuthPolicy, "ExtAuthPolicy", SECURITY, "extauthpolicies", "eap"),
    (
        Kind::RateLimitServerConfig,
        "RateLimitServerConfig",
        ADMIN,
        "ratelimitserverconfigs",
        "rlsc",
    ),
    (
        Kind::RateLimitServerSettings,
        "RateLimitServerSettings",
        ADMIN,
        "ratelimitserversettings",
        "rlss",
    ),
    (
        Kind::RateLimitClientConfig,
        "RateLimitClientConfig",
        TRAFFIC,
        "ratelimitclientconfigs",
        "rlcc",
    ),
    (
        Kind::RateLimitPolicy,
        "RateLimitPolicy",
        TRAFFIC,
        "ratelimitpolicies",
        "rlp",
    ),
    (Kind::Role, "Role", RBAC, "roles", "role"),
    (Kind::ClusterRole, "ClusterRole", RBAC, "clusterroles", "clusterrole"),
    (Kind::RoleBinding, "RoleBinding", RBAC, "rolebindings", "rolebinding"),
    (
        Kind::ClusterRoleBinding,
        "ClusterRoleBinding",
        RBAC,
        "clusterrolebindings",
        "clusterrolebinding",
    ),
    (Kind::CorsPolicy, "CORSPolicy", SECURITY, "corspolicies", "corsp"),
    (Kind::JwtPolicy, "JWTPolicy", SECURITY, "jwtpolicies", "jwtp"),
    (Kind::CsrfPolicy, "CSRFPolicy", SECURITY, "csrfpolicies", "csrfp"),
    (
        Kind::ClientTlsPolicy,
        "ClientTLSPolicy",
        SECURITY,
        "clienttlspolicies",
        "ctlsp",
    ),
    (Kind::DlpPolicy, "DLPPolicy", SECURITY, "dlppolicies", "dlpp"),
    (Kind::WafPolicy, "WAFPolicy", SECURITY, "wafpolicies", "wafp"),
    (
        Kind::GraphQlAllowedQueryPolicy,
        "GraphQLAllowedQueryPolicy",
        SECURITY,
        "graphqlallowedquerypolicies",
        "gqaqp",
    ),
    (Kind::MirrorPolicy, "MirrorPolicy", TRAFFIC, "mirrorpolicies", "mirp"),
    (
        Kind::TransformationPolicy,
        "TransformationPolicy",
        TRAFFIC,
        "transformationpolicies",
        "tfp",
    ),
    (
        Kind::LoadBalancerPolicy,
        "LoadBalancerPolicy",
        TRAFFIC,
        "loadbalancerpolicies",
        "lbp",
    ),
    (
        Kind::ProxyProtocolPolicy,
        "ProxyProtocolPolicy",
        TRAFFIC,
        "proxyprotocolpolicies",
        "ppp",
    ),
    (
        Kind::HttpBufferPolicy,
        "HTTPBufferPolicy",
        TRAFFIC,
        "httpbufferpolicies",
        "hbp",
    ),
    (
        Kind::ConnectionPolicy,
        "ConnectionPolicy",
        RESILIENCE,
        "connectionpolicies",
        "cnp",
    ),
    (
        Kind::ActiveHealthCheckPolicy,
        "ActiveHealthCheckPolicy",
        RESILIENCE,
        "activehealthcheckpolicies",
        "ahcp",
    ),
    (
        Kind::ListenerConnectionPolicy,
        "ListenerConnectionPolicy",
        RESILIENCE,
        "listenerconnectionpolicies",
        "lcp",
    ),
    (
        Kind::TrimProxyConfigPolicy,
        "TrimProxyConfigPolicy",
        RESILIENCE,
        "trimproxyconfigpolicies",
        "tpcp",
    ),
    (
        Kind::AdaptiveRequestConcurrencyPolicy,
        "AdaptiveRequestConcurrencyPolicy",
        RESILIENCE,
        "adaptiverequestconcurrencypolicies",
        "arcp",
    ),
    (
        Kind::GraphQlPersistedQueryCachePolicy,
        "GraphQLPersistedQueryCachePolicy",
        RESILIENCE,
        "graphqlpersistedquerycachepolicies",
        "gqpqcp",
    ),
    (
        Kind::AccessLogPolicy,
        "AccessLogPolicy",
        OBSERVABILITY,
        "accesslogpolicies",
        "alp",
    ),
    (
        Kind::WasmDeploymentPolicy,
        "WasmDeploymentPolicy",
        EXTENSIONS,
        "wasmdeploymentpolicies",
        "wdp",
    ),
    (Kind::LuaPolicy, "LuaPolicy", EXTENSIONS, "luapolicies", "luap"),
    (
        Kind::RootTrustPolicy,
        "RootTrustPolicy",
        ADMIN,
        "roottrustpolicies",
        "rtrustp",
    ),
    (Kind::Dashboard, "Dashboard", ADMIN, "dashboards", "dash"),
    (
        Kind::IstioLifecycleManager,
        "IstioLifecycleManager",
        ADMIN,
        "istiolifecyclemanagers",
        "ilm",
    ),
    (
        Kind::GatewayLifecycleManager,
        "GatewayLifecycleManager",
        ADMIN,
        "gatewaylifecyclemanagers",
        "glm",
    ),
    (
        Kind::InsightsConfig,
        "InsightsConfig",
        ADMIN_V2ALPHA1,
        "insightsconfigs",
        "ic",
    ),
    (
        Kind::WaypointLifecycleManager,
        "WaypointLifecycleManager",
        ADMIN_V2ALPHA1,
        "waypointlifecyclemanagers",
        "wlm",
    ),
];

impl Kind {
    pub const ALL: [Kind; 53] = [
        Kind::KubernetesCluster,
        Kind::Workspace,
        Kind::WorkspaceSettings,
        Kind::VirtualDestination,
        Kind::RouteTable,
        Kind::AccessPolicy,
        Kind::RetryTimeoutPolicy,
        Kind::FaultInjectionPolicy,
        Kind::FailoverPolicy,
        Kind::OutlierDetectionPolicy,
        Kind::HeaderManipulationPolicy,
        Kind::ExternalService,
        Kind::ExternalEndpoint,
        Kind::VirtualGateway,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::ExtAuthServer,
        Kind::ExtAuthPolicy,
        Kind::RateLimitServerConfig,
        Kind::RateLimitServerSettings,
        Kind::RateLimitClientConfig,
        Kind::RateLimitPolicy,
        Kind::Role,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
        Kind::CorsPolicy,
        Kind::JwtPolicy,
        Kind::CsrfPolicy,
        Kind::ClientTlsPolicy,
        Kind::DlpPolicy,
        Kind::WafPolicy,
        Kind::GraphQlAllowedQueryPolicy,
        Kind::MirrorPolicy,
        Kind::TransformationPolicy,
        Kind::LoadBalancerPolicy,
        Kind::ProxyProtocolPolicy,
        Kind::HttpBufferPolicy,
        Kind::ConnectionPolicy,
        Kind::ActiveHealthCheckPolicy,
        Kind::ListenerConnectionPolicy,
        Kind::TrimProxyConfigPolicy,
        Kind::AdaptiveRequestConcurrencyPolicy,
        Kind::GraphQlPersistedQueryCachePolicy,
        Kind::AccessLogPolicy,
        Kind::WasmDeploymentPolicy,
        Kind::LuaPolicy,
        Kind::RootTrustPolicy,
        Kind::Dashboard,
        Kind::IstioLifecycleManager,
        Kind::GatewayLifecycleManager,
        Kind::InsightsConfig,
        Kind::WaypointLifecycleManager,
    ];

    fn row(self) -> &'static (Kind, &'static str, &'static str, &'static str, &'static str) {
        TABLE.iter().find(|row| row.0 == self).expect("every kind has a row")
    }

    pub fn api_version(self) -> &'static str {
        self.row().2
    }

    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    /// The API group, as RBAC rules name it: `networking.gloo.solo.io`, `""` for core `v1`.
    pub fn group(self) -> &'static str {
        self.api_version()
            .rsplit_once('/')
            .map(|(group, _)| group)
            .unwrap_or("")
    }

    /// Kinds whose content sits at the top level of a document, as in Kubernetes, instead of
    /// under `spec`.
    pub fn content_at_top_level(self) -> bool {
        matches!(
            self,
            Kind::ConfigMap
                | Kind::Secret
                | Kind::Role
                | Kind::ClusterRole
                | Kind::RoleBinding
                | Kind::ClusterRoleBinding
        )
    }

    /// Cluster-scoped kinds are kept in the admin namespace, whatever a document says.
    pub fn cluster_scoped(self) -> bool {
        matches!(self, Kind::ClusterRole | Kind::ClusterRoleBinding)
    }

    /// The short name `trellis get` (and kubectl, for the CRDs) accepts; may be empty.
    pub fn short_name(self) -> &'static str {
        self.row().4
    }

    /// Lower-case plural, as used in API paths and `trellis get`.
    pub fn plural(self) -> &'static str {
        self.row().3
    }

    /// Accepts the kind name, its plural, its singular lower case and its short name, any case.
    pub fn parse_loose(input: &str) -> Option<Kind> {
        let wanted = input.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|(_, name, _, plural, short)| {
                wanted == name.to_ascii_lowercase() || wanted == *plural || wanted == *short
            })
            .map(|row| row.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse_loose(s).ok_or_else(|| {
            let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown kind {s:?} (known kinds: {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_of_a_kind() {
        for input in ["RouteTable", "routetable", "routetables", "rt", "ROUTETABLES"] {
            assert_eq!(Kind::parse_loose(input), Some(Kind::RouteTable), "{input}");
        }
        assert_eq!(Kind::parse_loose("accesspolicies"), Some(Kind::AccessPolicy));
        assert_eq!(Kind::parse_loose("Gateway"), None);
    }

    #[test]
    fn every_kind_has_exactly_one_row() {
        for kind in Kind::ALL {
            assert_eq!(TABLE.iter().filter(|row| row.0 == kind).count(), 1, "{kind:?}");
        }
    }
}
