//! The shared vocabulary of the management plane, all pure data:
//!
//! ```text
//!  agents ──ClusterDiscovery──▶ Snapshot (config + discovery) ──translate──▶ ClusterConfig (mesh IR) ──▶ agents
//! ```
//!
//! - [`discovery`]: what an agent reports about its cluster (workloads, their ports, its east-west gateway).
//! - [`snapshot`]: one immutable view of all accepted config and the latest discovery of every cluster.
//! - [`ir`]: the proxy-neutral, per-cluster output of translation that the relay carries to each agent.

pub mod access_log;
pub mod addons;
pub mod discovery;
pub mod discovery_patch;
pub mod ir;
pub mod policy;
pub mod snapshot;
pub mod transformation;

pub use discovery::{
    ClusterDiscovery, GatewayAddress, GatewayInstance, Locality, Protocol, ProxyState, Workload, WorkloadPort,
};
pub use discovery_patch::{DiscoveryPatch, WorkloadKey};
pub use ir::ClusterConfig;
pub use snapshot::Snapshot;

/// Trust domain of workload identities when the operator sets none.
pub const DEFAULT_TRUST_DOMAIN: &str = "trellis.local";

/// A workload's SPIFFE identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The identity of every cluster's east-west gateway: the service account Gloo installs it
/// with. A destination behind `clientMode: tlsTermination` sees this caller, not the client.
pub fn east_west_gateway_identity(trust_domain: &str) -> String {
    spiffe_id(trust_domain, "gloo-mesh-gateways", "istio-eastwestgateway")
}
