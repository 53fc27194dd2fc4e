//! What an agent discovers in its cluster and reports to the management server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one agent knows about its cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDiscovery {
    pub cluster: String,
    /// Where other clusters reach this cluster's east-west gateway, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub east_west_gateway: Option<GatewayAddress>,
    /// Sorted by (namespace, name).
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Add-on servers (ext-auth, rate limiter) registered in this cluster, sorted by
    /// (namespace, name, address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<AddonInstance>,
    /// Ingress and egress gateway proxies (`trellis gateway ingress`) registered in this cluster,
    /// sorted: egress routes reach them at their listen address on a VirtualGateway port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayInstance>,
    /// Where the cluster's workloads run (their nodes' topology region, zone and sub-zone), as
    /// its agent was told; absent: the region is the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

/// A workload's place for locality load balancing, as Kubernetes' node topology labels name it
/// (`topology.kubernetes.io/region`, `.../zone`, Istio's `topology.istio.io/subzone`). Empty
/// zone and sub-zone: not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Locality {
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_zone: String,
}

/// A gateway proxy as its registration announces it: the labels VirtualGateway `workloads`
/// select, where its listeners bind, and its mesh identity (namespace, service account).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInstance {
    pub namespace: String,
    pub service_account: String,
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// VirtualGateway port -> the local port the gateway serves it on (absent: the same port).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_map: BTreeMap<u16, u16>,
}

impl GatewayInstance {
    /// Where this gateway serves a VirtualGateway port.
    pub fn port(&self, port: u16) -> u16 {
        self.port_map.get(&port).copied().unwrap_or(port)
    }
}

/// An add-on server as its registration announces it: a service name the policies reference and
/// the gRPC address its cluster's proxies call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonInstance {
    pub namespace: String,
    pub name: String,
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GatewayAddress {
    pub host: String,
    pub port: u16,
}

/// One workload instance with a sidecar: the unit that receives traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    /// The service this workload backs (a Kubernetes Service in Kubernetes mode).
    pub service: String,
    /// Labels of the workload; a service's labels are those all its workloads share.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Address where the workload's sidecar accepts inbound mesh traffic.
    pub address: String,
    #[serde(default)]
    pub ports: Vec<WorkloadPort>,
}

fn default_service_account() -> String {
    "default".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPort {
    /// Port name, as on a Kubernetes Service port (`http`).
    pub name: String,
    /// The service port clients address (`80`).
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// The sidecar's inbound listener for this port, on `Workload::address`.
    pub inbound_port: u16,
    /// Where the application itself listens, on loopback beside its sidecar.
    pub app_port: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Workload {
    /// Identity of a workload inside its cluster: `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl ClusterDiscovery {
    /// Puts workloads in their canonical order so equal discoveries compare and hash equal.
    pub fn normalize(&mut self) {
        self.workloads
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        self.addons.sort();
        self.gateways.sort();
        self.gateways.dedup();
    }
}

/// Delivery state of one proxy, as its agent sees it from Envoy's ACKs and NACKs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyState {
    /// The proxy's node id (`sidecar~name.namespace`, `east-west~...`).
    pub id: String,
    /// Version of the cluster config its resources were built from.
    pub config_version: String,
    /// Envoy acknowledged every resource type it was sent.
    pub in_sync: bool,
    /// The last rejection Envoy reported, if the latest push was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack: Option<String>,
    /// Envoy's release, as the proxy announced it (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_version: Option<String>,
}
