//! The JSON Schema of each kind's `spec`, derived from the same types the parser reads, so
//! that what the API server checks (the CRDs' schemas, `kubectl explain`) and what Trellis
//! accepts cannot drift apart. Consumers turn it into the form they need (trellis-kube: a
//! structural OpenAPI schema).

use schemars::JsonSchema;
use serde_json::Value;

use crate::kind::Kind;
use crate::*;

fn of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize")
}

/// The JSON Schema (draft 2020-12, with `$defs`) of `kind`'s spec.
pub fn spec_schema(kind: Kind) -> Value {
    match kind {
        Kind::KubernetesCluster => of::<KubernetesClusterSpec>(),
        Kind::Workspace => of::<WorkspaceSpec>(),
        Kind::WorkspaceSettings => of::<WorkspaceSettingsSpec>(),
        Kind::VirtualDestination => of::<VirtualDestinationSpec>(),
        Kind::RouteTable => of::<RouteTableSpec>(),
        Kind::AccessPolicy => of::<AccessPolicySpec>(),
        Kind::RetryTimeoutPolicy => of::<RetryTimeoutPolicySpec>(),
        Kind::FaultInjectionPolicy => of::<FaultInjectionPolicySpec>(),
        Kind::FailoverPolicy => of::<FailoverPolicySpec>(),
        Kind::OutlierDetectionPolicy => of::<OutlierDetectionPolicySpec>(),
        Kind::HeaderManipulationPolicy => of::<HeaderManipulationPolicySpec>(),
        Kind::ExternalService => of::<ExternalServiceSpec>(),
        Kind::ExternalEndpoint => of::<ExternalEndpointSpec>(),
        Kind::VirtualGateway => of::<VirtualGatewaySpec>(),
        Kind::ConfigMap => of::<ConfigMapSpec>(),
        Kind::Secret => of::<SecretSpec>(),
        Kind::ExtAuthServer => of::<ExtAuthServerSpec>(),
        Kind::ExtAuthPolicy => of::<ExtAuthPolicySpec>(),
        Kind::RateLimitServerConfig => of::<RateLimitServerConfigSpec>(),
        Kind::RateLimitServerSettings => of::<RateLimitServerSettingsSpec>(),
        Kind::RateLimitClientConfig => of::<RateLimitClientConfigSpec>(),
        Kind::RateLimitPolicy => of::<RateLimitPolicySpec>(),
        Kind::Role => of::<RoleSpec>(),
        Kind::ClusterRole => of::<RoleSpec>(),
        Kind::RoleBinding => of::<RoleBindingSpec>(),
        Kind::ClusterRoleBinding => of::<RoleBindingSpec>(),
        Kind::CorsPolicy => of::<CorsPolicySpec>(),
        Kind::JwtPolicy => of::<JwtPolicySpec>(),
        Kind::CsrfPolicy => of::<CsrfPolicySpec>(),
        Kind::ClientTlsPolicy => of::<ClientTlsPolicySpec>(),
        Kind::DlpPolicy => of::<DlpPolicySpec>(),
        Kind::WafPolicy => of::<WafPolicySpec>(),
        Kind::GraphQlAllowedQueryPolicy => of::<GraphQlAllowedQueryPolicySpec>(),
        Kind::MirrorPolicy => of::<MirrorPolicySpec>(),
        Kind::TransformationPolicy => of::<TransformationPolicySpec>(),
        Kind::LoadBalancerPolicy => of::<LoadBalancerPolicySpec>(),
        Kind::ProxyProtocolPolicy => of::<ProxyProtocolPolicySpec>(),
        Kind::HttpBufferPolicy => of::<HttpBufferPolicySpec>(),
        Kind::ConnectionPolicy => of::<ConnectionPolicySpec>(),
        Kind::ActiveHealthCheckPolicy => of::<ActiveHealthCheckPolicySpec>(),
        Kind::ListenerConnectionPolicy => of::<ListenerConnectionPolicySpec>(),
        Kind::TrimProxyConfigPolicy => of::<TrimProxyConfigPolicySpec>(),
        Kind::AdaptiveRequestConcurrencyPolicy => of::<AdaptiveRequestConcurrencyPolicySpec>(),
        Kind::GraphQlPersistedQueryCachePolicy => of::<GraphQlPersistedQueryCachePolicySpec>(),
        Kind::AccessLogPolicy => of::<AccessLogPolicySpec>(),
        Kind::WasmDeploymentPolicy => of::<WasmDeploymentPolicySpec>(),
        Kind::LuaPolicy => of::<LuaPolicySpec>(),
        Kind::RootTrustPolicy => of::<RootTrustPolicySpec>(),
        Kind::Dashboard => of::<DashboardSpec>(),
        Kind::IstioLifecycleManager => of::<LifecycleManagerSpec>(),
        Kind::GatewayLifecycleManager => of::<LifecycleManagerSpec>(),
        Kind::InsightsConfig => of::<InsightsConfigSpec>(),
        Kind::WaypointLifecycleManager => of::<WaypointLifecycleManagerSpec>(),
    }
}
