//! The shared vocabulary of the management plane, all pure data:
//!
//! ```text
//!  agents ──ClusterDiscovery──▶ Snapshot (config + discovery) ──translate──▶ ClusterConfig (mesh IR) ──▶ agents
//! ```
//!
//! - [`discovery`]: what an agent reports about its cluster (workloads, their ports, its east-west gateway).
//! - [`snapshot`]: one immutable view of all accepted config and the latest discovery of every cluster.
//! - [`ir`]: the proxy-neutral, per-cluster output of translation that the relay carries to each agent.

pub mod addons;
pub mod discovery;
pub mod ir;
pub mod policy;
pub mod ratelimit;
pub mod snapshot;

pub use discovery::{ClusterDiscovery, GatewayAddress, Protocol, ProxyState, Workload, WorkloadPort};
pub use ir::ClusterConfig;
pub use snapshot::Snapshot;

/// Trust domain of workload identities when the operator sets none.
pub const DEFAULT_TRUST_DOMAIN: &str = "trellis.local";

/// A workload's SPIFFE identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A stable 64-bit FNV-1a hash, used for content versions that must not change between builds
/// or processes (std's `DefaultHasher` makes no such promise).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
