//! What the checks see: a plain description of the mesh, filled in by the management server.
//! Nothing here is computed; a field the mesh cannot know is an `Option` left `None`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSnapshot {
    /// Seconds since the Unix epoch, for certificate expiry.
    pub now: u64,
    pub settings: MgmtSettings,
    pub clusters: Vec<ClusterInfo>,
    pub certificates: Vec<CertificateInfo>,
    /// Config resources with what translation made of them.
    pub resources: Vec<ResourceInfo>,
    pub workloads: Vec<WorkloadInfo>,
    pub addons: Vec<AddonInfo>,
    pub proxies: Vec<ProxyInfo>,
    pub route_tables: Vec<RouteTableInfo>,
    pub workspaces: Vec<WorkspaceInfo>,
    pub external_services: Vec<ExternalServiceInfo>,
    /// Services (`cluster/namespace/name`) an AccessPolicy may apply to.
    pub services_with_access_policy: Vec<String>,
    /// Services (`cluster/namespace/name`) an active health check or outlier detection covers.
    pub services_with_health_checks: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Dev,
    Production,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MgmtSettings {
    pub profile: Profile,
    /// The relay is plaintext and believes any cluster name (`--insecure`).
    pub relay_insecure: bool,
    /// Self-signed CAs the management server generated itself, by name ("relay root CA").
    pub generated_cas: Vec<String>,
    /// The API is served over HTTPS.
    pub api_tls: bool,
    /// Every API request but health needs credentials.
    pub api_authenticated: bool,
    /// The API listens on a non-loopback address.
    pub api_exposed: bool,
    /// A web UI is served; `Some(false)` when it needs no sign-in.
    pub ui_authenticated: Option<bool>,
    /// A Redis the platform started itself (a demo convenience) backs the rate limiter.
    pub builtin_redis: bool,
    /// A Prometheus the platform started itself collects the metrics.
    pub builtin_prometheus: bool,
    /// The operator requires FIPS-validated cryptography.
    pub fips_required: bool,
    /// The running build uses a FIPS-validated cryptographic module.
    pub fips_in_use: bool,
    /// The workload cluster the management server runs in, when it shares one.
    pub colocated_cluster: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub name: String,
    pub registered: bool,
    pub connected: bool,
    /// The agent's release, when it said.
    pub agent_version: Option<String>,
    /// Why its relay stream last failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// What it is and whose: "relay server certificate", "mesh intermediate CA of c1".
    pub name: String,
    /// The insight's target: `mgmt/relay` or `cluster/c1`.
    pub target: String,
    pub not_before: u64,
    pub not_after: u64,
    /// Trellis renews it itself (at two thirds of its life).
    pub renewed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// ACCEPTED, WARNING, FAILED or INVALID; empty before translation saw it.
    pub state: String,
    pub message: String,
}

impl ResourceInfo {
    pub fn target(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInfo {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its workspace turns service isolation on: only what is imported may reach it.
    pub isolated: bool,
}

impl WorkloadInfo {
    /// `cluster/namespace/service`: the service this workload is a replica of.
    pub fn service_key(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.service)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonInfo {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// Proxies reach it over mesh mTLS.
    pub mtls: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    pub cluster: String,
    /// Node id: `sidecar~name.namespace`.
    pub id: String,
    /// Envoy's release (`1.31.2`), when its agent reported it.
    pub envoy_version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTableInfo {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    /// Where it applies: its workload selectors and virtual gateways, canonical JSON each;
    /// empty: every sidecar.
    pub applies_to: Vec<String>,
    /// Each HTTP route's request matchers, canonical JSON; an empty matcher list matches
    /// everything and is given as `"*"`.
    pub matches: Vec<String>,
}

impl RouteTableInfo {
    pub fn target(&self) -> String {
        format!("RouteTable/{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceInfo {
    pub name: String,
    /// Where its WorkspaceSettings is, `WorkspaceSettings/ns/name`; empty without one.
    pub settings: String,
    /// Workspaces named by `exportTo`; `"*"` for a selector that may match any.
    pub exports_to: Vec<String>,
    /// Workspaces named by `importFrom`; `"*"` for a selector that may match any.
    pub imports_from: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalServiceInfo {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    /// Some port is routed through an egress gateway.
    pub through_egress_gateway: bool,
}
