//! The typed resource envelope: `apiVersion`, `kind`, `metadata`, `spec`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addons::{
    ExtAuthPolicySpec, ExtAuthServerSpec, RateLimitClientConfigSpec, RateLimitPolicySpec, RateLimitServerConfigSpec,
    RateLimitServerSettingsSpec,
};
use crate::admin_kinds::*;
use crate::core::{ConfigMapSpec, SecretSpec};
use crate::external::{ExternalEndpointSpec, ExternalServiceSpec};
use crate::gateway::VirtualGatewaySpec;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::networking::{RouteTableSpec, VirtualDestinationSpec};
use crate::policy::{
    AccessPolicySpec, FailoverPolicySpec, FaultInjectionPolicySpec, HeaderManipulationPolicySpec,
    OutlierDetectionPolicySpec, RetryTimeoutPolicySpec,
};
use crate::rbac::{RoleBindingSpec, RoleSpec};
use crate::resilience_policies::*;
use crate::security_policies::*;
use crate::traffic_policies::*;
use crate::workspace::{KubernetesClusterSpec, WorkspaceSettingsSpec, WorkspaceSpec};

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    KubernetesCluster(KubernetesClusterSpec),
    Workspace(WorkspaceSpec),
    WorkspaceSettings(WorkspaceSettingsSpec),
    VirtualDestination(VirtualDestinationSpec),
    RouteTable(RouteTableSpec),
    AccessPolicy(AccessPolicySpec),
    RetryTimeoutPolicy(RetryTimeoutPolicySpec),
    FaultInjectionPolicy(FaultInjectionPolicySpec),
    FailoverPolicy(FailoverPolicySpec),
    OutlierDetectionPolicy(OutlierDetectionPolicySpec),
    HeaderManipulationPolicy(HeaderManipulationPolicySpec),
    ExternalService(ExternalServiceSpec),
    ExternalEndpoint(ExternalEndpointSpec),
    VirtualGateway(VirtualGatewaySpec),
    ConfigMap(ConfigMapSpec),
    Secret(SecretSpec),
    ExtAuthServer(ExtAuthServerSpec),
    ExtAuthPolicy(ExtAuthPolicySpec),
    RateLimitServerConfig(RateLimitServerConfigSpec),
    RateLimitServerSettings(RateLimitServerSettingsSpec),
    RateLimitClientConfig(RateLimitClientConfigSpec),
    RateLimitPolicy(RateLimitPolicySpec),
    Role(RoleSpec),
    ClusterRole(RoleSpec),
    RoleBinding(RoleBindingSpec),
    ClusterRoleBinding(RoleBindingSpec),
    CorsPolicy(CorsPolicySpec),
    JwtPolicy(JwtPolicySpec),
    CsrfPolicy(CsrfPolicySpec),
    ClientTlsPolicy(ClientTlsPolicySpec),
    DlpPolicy(DlpPolicySpec),
    WafPolicy(WafPolicySpec),
    GraphQlAllowedQueryPolicy(GraphQlAllowedQueryPolicySpec),
    MirrorPolicy(MirrorPolicySpec),
    TransformationPolicy(TransformationPolicySpec),
    LoadBalancerPolicy(LoadBalancerPolicySpec),
    ProxyProtocolPolicy(ProxyProtocolPolicySpec),
    HttpBufferPolicy(HttpBufferPolicySpec),
    ConnectionPolicy(ConnectionPolicySpec),
    ActiveHealthCheckPolicy(ActiveHealthCheckPolicySpec),
    ListenerConnectionPolicy(ListenerConnectionPolicySpec),
    TrimProxyConfigPolicy(TrimProxyConfigPolicySpec),
    AdaptiveRequestConcurrencyPolicy(AdaptiveRequestConcurrencyPolicySpec),
    GraphQlPersistedQueryCachePolicy(GraphQlPersistedQueryCachePolicySpec),
    AccessLogPolicy(AccessLogPolicySpec),
    WasmDeploymentPolicy(WasmDeploymentPolicySpec),
    LuaPolicy(LuaPolicySpec),
    RootTrustPolicy(RootTrustPolicySpec),
    Dashboard(DashboardSpec),
    IstioLifecycleManager(LifecycleManagerSpec),
    GatewayLifecycleManager(LifecycleManagerSpec),
    InsightsConfig(InsightsConfigSpec),
    WaypointLifecycleManager(WaypointLifecycleManagerSpec),
}

/// One accepted resource. Serializes to the same shape it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub metadata: ObjectMeta,
    pub spec: Spec,
}

/// `Kind/namespace/name`: how errors, logs and the store name a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::KubernetesCluster(_) => Kind::KubernetesCluster,
            Spec::Workspace(_) => Kind::Workspace,
            Spec::WorkspaceSettings(_) => Kind::WorkspaceSettings,
            Spec::VirtualDestination(_) => Kind::VirtualDestination,
            Spec::RouteTable(_) => Kind::RouteTable,
            Spec::AccessPolicy(_) => Kind::AccessPolicy,
            Spec::RetryTimeoutPolicy(_) => Kind::RetryTimeoutPolicy,
            Spec::FaultInjectionPolicy(_) => Kind::FaultInjectionPolicy,
            Spec::FailoverPolicy(_) => Kind::FailoverPolicy,
            Spec::OutlierDetectionPolicy(_) => Kind::OutlierDetectionPolicy,
            Spec::HeaderManipulationPolicy(_) => Kind::HeaderManipulationPolicy,
            Spec::ExternalService(_) => Kind::ExternalService,
            Spec::ExternalEndpoint(_) => Kind::ExternalEndpoint,
            Spec::VirtualGateway(_) => Kind::VirtualGateway,
            Spec::ConfigMap(_) => Kind::ConfigMap,
            Spec::Secret(_) => Kind::Secret,
            Spec::ExtAuthServer(_) => Kind::ExtAuthServer,
            Spec::ExtAuthPolicy(_) => Kind::ExtAuthPolicy,
            Spec::RateLimitServerConfig(_) => Kind::RateLimitServerConfig,
            Spec::RateLimitServerSettings(_) => Kind::RateLimitServerSettings,
            Spec::RateLimitClientConfig(_) => Kind::RateLimitClientConfig,
            Spec::RateLimitPolicy(_) => Kind::RateLimitPolicy,
            Spec::Role(_) => Kind::Role,
            Spec::ClusterRole(_) => Kind::ClusterRole,
            Spec::RoleBinding(_) => Kind::RoleBinding,
            Spec::ClusterRoleBinding(_) => Kind::ClusterRoleBinding,
            Spec::CorsPolicy(_) => Kind::CorsPolicy,
            Spec::JwtPolicy(_) => Kind::JwtPolicy,
            Spec::CsrfPolicy(_) => Kind::CsrfPolicy,
            Spec::ClientTlsPolicy(_) => Kind::ClientTlsPolicy,
            Spec::DlpPolicy(_) => Kind::DlpPolicy,
            Spec::WafPolicy(_) => Kind::WafPolicy,
            Spec::GraphQlAllowedQueryPolicy(_) => Kind::GraphQlAllowedQueryPolicy,
            Spec::MirrorPolicy(_) => Kind::MirrorPolicy,
            Spec::TransformationPolicy(_) => Kind::TransformationPolicy,
            Spec::LoadBalancerPolicy(_) => Kind::LoadBalancerPolicy,
            Spec::ProxyProtocolPolicy(_) => Kind::ProxyProtocolPolicy,
            Spec::HttpBufferPolicy(_) => Kind::HttpBufferPolicy,
            Spec::ConnectionPolicy(_) => Kind::ConnectionPolicy,
            Spec::ActiveHealthCheckPolicy(_) => Kind::ActiveHealthCheckPolicy,
            Spec::ListenerConnectionPolicy(_) => Kind::ListenerConnectionPolicy,
            Spec::TrimProxyConfigPolicy(_) => Kind::TrimProxyConfigPolicy,
            Spec::AdaptiveRequestConcurrencyPolicy(_) => Kind::AdaptiveRequestConcurrencyPolicy,
            Spec::GraphQlPersistedQueryCachePolicy(_) => Kind::GraphQlPersistedQueryCachePolicy,
            Spec::AccessLogPolicy(_) => Kind::AccessLogPolicy,
            Spec::WasmDeploymentPolicy(_) => Kind::WasmDeploymentPolicy,
            Spec::LuaPolicy(_) => Kind::LuaPolicy,
            Spec::RootTrustPolicy(_) => Kind::RootTrustPolicy,
            Spec::Dashboard(_) => Kind::Dashboard,
            Spec::IstioLifecycleManager(_) => Kind::IstioLifecycleManager,
            Spec::GatewayLifecycleManager(_) => Kind::GatewayLifecycleManager,
            Spec::InsightsConfig(_) => Kind::InsightsConfig,
            Spec::WaypointLifecycleManager(_) => Kind::WaypointLifecycleManager,
        }
    }

    fn to_value(&self) -> serde_json::Value {
        let value = match self {
            Spec::KubernetesCluster(s) => serde_json::to_value(s),
            Spec::Workspace(s) => serde_json::to_value(s),
            Spec::WorkspaceSettings(s) => serde_json::to_value(s),
            Spec::VirtualDestination(s) => serde_json::to_value(s),
            Spec::RouteTable(s) => serde_json::to_value(s),
            Spec::AccessPolicy(s) => serde_json::to_value(s),
            Spec::RetryTimeoutPolicy(s) => serde_json::to_value(s),
            Spec::FaultInjectionPolicy(s) => serde_json::to_value(s),
            Spec::FailoverPolicy(s) => serde_json::to_value(s),
            Spec::OutlierDetectionPolicy(s) => serde_json::to_value(s),
            Spec::HeaderManipulationPolicy(s) => serde_json::to_value(s),
            Spec::ExternalService(s) => serde_json::to_value(s),
            Spec::ExternalEndpoint(s) => serde_json::to_value(s),
            Spec::VirtualGateway(s) => serde_json::to_value(s),
            Spec::ConfigMap(s) => serde_json::to_value(s),
            Spec::Secret(s) => serde_json::to_value(s),
            Spec::ExtAuthServer(s) => serde_json::to_value(s),
            Spec::ExtAuthPolicy(s) => serde_json::to_value(s),
            Spec::RateLimitServerConfig(s) => serde_json::to_value(s),
            Spec::RateLimitServerSettings(s) => serde_json::to_value(s),
            Spec::RateLimitClientConfig(s) => serde_json::to_value(s),
            Spec::RateLimitPolicy(s) => serde_json::to_value(s),
            Spec::Role(s) | Spec::ClusterRole(s) => serde_json::to_value(s),
            Spec::RoleBinding(s) | Spec::ClusterRoleBinding(s) => serde_json::to_value(s),
            Spec::CorsPolicy(s) => serde_json::to_value(s),
            Spec::JwtPolicy(s) => serde_json::to_value(s),
            Spec::CsrfPolicy(s) => serde_json::to_value(s),
            Spec::ClientTlsPolicy(s) => serde_json::to_value(s),
            Spec::DlpPolicy(s) => serde_json::to_value(s),
            Spec::WafPolicy(s) => serde_json::to_value(s),
            Spec::GraphQlAllowedQueryPolicy(s) => serde_json::to_value(s),
            Spec::MirrorPolicy(s) => serde_json::to_value(s),
            Spec::TransformationPolicy(s) => serde_json::to_value(s),
            Spec::LoadBalancerPolicy(s) => serde_json::to_value(s),
            Spec::ProxyProtocolPolicy(s) => serde_json::to_value(s),
            Spec::HttpBufferPolicy(s) => serde_json::to_value(s),
            Spec::ConnectionPolicy(s) => serde_json::to_value(s),
            Spec::ActiveHealthCheckPolicy(s) => serde_json::to_value(s),
            Spec::ListenerConnectionPolicy(s) => serde_json::to_value(s),
            Spec::TrimProxyConfigPolicy(s) => serde_json::to_value(s),
            Spec::AdaptiveRequestConcurrencyPolicy(s) => serde_json::to_value(s),
            Spec::GraphQlPersistedQueryCachePolicy(s) => serde_json::to_value(s),
            Spec::AccessLogPolicy(s) => serde_json::to_value(s),
            Spec::WasmDeploymentPolicy(s) => serde_json::to_value(s),
            Spec::LuaPolicy(s) => serde_json::to_value(s),
            Spec::RootTrustPolicy(s) => serde_json::to_value(s),
            Spec::Dashboard(s) => serde_json::to_value(s),
            Spec::IstioLifecycleManager(s) => serde_json::to_value(s),
            Spec::GatewayLifecycleManager(s) => serde_json::to_value(s),
            Spec::InsightsConfig(s) => serde_json::to_value(s),
            Spec::WaypointLifecycleManager(s) => serde_json::to_value(s),
        };
        value.expect("specs serialize to JSON")
    }
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.kind(), &self.metadata.namespace, &self.metadata.name)
    }

    /// True when the user-owned parts (spec, labels, annotations) are equal.
    pub fn same_content(&self, other: &Resource) -> bool {
        self.spec == other.spec
            && self.metadata.labels == other.metadata.labels
            && self.metadata.annotations == other.metadata.annotations
    }

    pub fn to_value(&self) -> serde_json::Value {
        if self.kind().content_at_top_level() {
            // Core and RBAC kinds keep their content at the top level.
            let mut value = serde_json::json!({
                "apiVersion": self.kind().api_version(),
                "kind": self.kind().as_str(),
                "metadata": serde_json::to_value(&self.metadata).expect("metadata serializes"),
            });
            if let (serde_json::Value::Object(map), serde_json::Value::Object(content)) =
                (&mut value, self.spec.to_value())
            {
                map.extend(content);
            }
            return value;
        }
        serde_json::json!({
            "apiVersion": self.kind().api_version(),
            "kind": self.kind().as_str(),
            "metadata": serde_json::to_value(&self.metadata).expect("metadata serializes"),
            "spec": self.spec.to_value(),
        })
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Resource {
    /// Trusted input only (the store): user input goes through [`crate::parse_documents`] for
    /// errors with field paths.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        crate::parse::typed("stored", 1, value).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            serde::de::Error::custom(messages.join("; "))
        })
    }
}
