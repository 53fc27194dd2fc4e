//! The mesh IR: what one cluster's proxies must do, independent of Envoy.
//!
//! Produced by `trellis-translate`, carried by the relay as JSON, turned into Envoy resources per
//! proxy by `trellis-envoy`. Every collection is sorted so equal configs serialize identically.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The translated configuration for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub cluster: String,
    /// Trust domain of the mesh's SPIFFE identities.
    #[serde(default)]
    pub trust_domain: String,
    /// Everything this cluster's sidecars may send to, sorted by name. Shared (`Arc`) with the
    /// other clusters' configs where equal: most of a mesh's upstreams look the same from every
    /// cluster but the one that hosts them.
    #[serde(default)]
    pub upstreams: Vec<Arc<Upstream>>,
    /// Outbound HTTP virtual hosts for this cluster's sidecars, sorted by name; the same for
    /// every cluster, so shared.
    #[serde(default)]
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
    /// What this cluster's east-west gateway serves to other clusters: each upstream's `key`
    /// is matched against the TLS SNI, its endpoints are local. Sorted by name.
    #[serde(default)]
    pub gateway_upstreams: Vec<Upstream>,
    /// AccessPolicies for this cluster's workloads' inbound listeners, in precedence order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_policies: Vec<crate::policy::InboundPolicy>,
    /// Ingress gateways (VirtualGateways) for this cluster's ingress gateway proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_gateways: Vec<IngressGateway>,
    /// Workspace of each namespace of this cluster (only when Workspaces are defined).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespace_workspaces: std::collections::BTreeMap<String, String>,
    /// Ext-auth and rate-limit servers this cluster's proxies call, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addon_servers: Vec<crate::addons::AddonServer>,
    /// Routes mirrored on destination sidecars' inbound listeners so that add-on policies hold
    /// there too; one entry per local service port that some add-on policy protects. Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_routes: Vec<crate::addons::InboundRoutes>,
    /// What this cluster's add-ons load from their agent.
    #[serde(default, skip_serializing_if = "crate::addons::AddonConfig::is_empty")]
    pub addons: crate::addons::AddonConfig,
}

/// Which workspaces may see a virtual host or upstream: `None` is everyone (no Workspaces are
/// defined), `Some(list)` only those (possibly none).
pub type Visibility = Option<Vec<String>>;

/// True when a proxy in `workspace` (none: its namespace is in no workspace) may see it.
pub fn visible(visibility: &Visibility, workspace: Option<&str>) -> bool {
    match visibility {
        None => true,
        Some(list) => workspace.is_some_and(|ws| list.iter().any(|w| w == ws)),
    }
}

/// A set of endpoints that receives traffic as one Envoy cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Unique within a cluster's config; becomes the Envoy cluster name.
    pub name: String,
    /// The TLS SNI a client sidecar sends and a remote east-west gateway routes on, without
    /// terminating TLS: `outbound_.<port>_.<subset>_.<host>`.
    pub key: String,
    /// Sorted by (address, port).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// SPIFFE identities the endpoints may present, sorted; a client sidecar accepts no other.
    #[serde(default)]
    pub identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::policy::OutlierDetection>,
    /// Load balancing and connection limits (LoadBalancerPolicy, ConnectionPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::policy::UpstreamTraffic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Visibility,
    /// Set for a destination outside the mesh (ExternalService): no mesh mTLS to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalUpstream>,
}

/// How to reach a destination outside the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalUpstream {
    /// Endpoint addresses are host names to resolve by DNS (no ExternalEndpoints selected).
    #[serde(default)]
    pub dns: bool,
    /// Originate TLS with this SNI (ExternalService `clientsideTls`); plaintext when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    /// Relative load-balancing weight: a remote gateway counts as many as the endpoints behind it.
    pub weight: u32,
    /// The cluster the traffic ends up in.
    pub cluster: String,
    /// True when this endpoint is another cluster's east-west gateway.
    #[serde(default)]
    pub via_gateway: bool,
    /// Load-balancing priority: 0 is used first; higher ones take over when it fails
    /// (FailoverPolicy). Without failover every endpoint is 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    pub name: String,
    /// Host names (and `host:port` forms) this virtual host answers for.
    pub domains: Vec<String>,
    /// In match order: the first route that matches wins.
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Visibility,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `<routetable namespace>/<routetable name>/<route name or index>`, or `default` for a
    /// VirtualDestination's implicit route.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "crate::policy::RoutePolicies::is_empty")]
    pub policies: crate::policy::RoutePolicies,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    pub path: PathMatch,
    #[serde(default)]
    pub ignore_case: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch {
            path: PathMatch::Prefix("/".to_string()),
            ignore_case: false,
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// RE2 syntax, matched against the whole path.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    Exact(String),
    /// RE2 syntax, matched against the whole value.
    Regex(String),
    /// The header or parameter is there, whatever its value.
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
    /// Match when the header does *not* match.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    Forward(Forward),
    DirectResponse {
        status: u32,
        body: String,
    },
    Redirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        status: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Never empty; weights are relative and at least one is non-zero.
    pub destinations: Vec<WeightedUpstream>,
    /// Replaces the matched path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedUpstream {
    /// Name of an entry of `ClusterConfig::upstreams`.
    pub upstream: String,
    pub weight: u32,
}

impl ClusterConfig {
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name).map(|u| &**u)
    }

    /// A content version: equal configs get equal versions in every process.
    pub fn content_hash(&self) -> u64 {
        let bytes = serde_json::to_vec(self).expect("IR serializes");
        trellis_base::stable_hash(&bytes)
    }
}

/// A VirtualGateway: what the ingress gateway proxies it selects serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressGateway {
    /// `namespace/name` of the VirtualGateway.
    pub name: String,
    /// Ingress gateway proxies registered with all of these labels serve it.
    #[serde(default)]
    pub selector: std::collections::BTreeMap<String, String>,
    pub listeners: Vec<IngressListener>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressListener {
    pub port: u16,
    /// TLS termination; plaintext HTTP when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Routes bound to this gateway by RouteTables, by host; sorted by name. Forward actions
    /// name entries of `ClusterConfig::upstreams`.
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Certificate files on the gateway's host (read by Envoy itself, never sent over the relay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    pub cert_chain_file: String,
    pub private_key_file: String,
    /// MUTUAL: clients must present a certificate that chains to this CA file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}
