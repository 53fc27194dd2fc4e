//! A Target: one place a route can send traffic, independent of which cluster sends it.

use std::collections::BTreeMap;

/// Where a weighted destination resolves to: a host and port clients address, an optional label
/// subset, and the concrete service ports (in any cluster) that back it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The VirtualDestination host, or `<service>.<namespace>.svc.<cluster|mesh>` for a service.
    pub host: String,
    pub port: u16,
    pub subset: BTreeMap<String, String>,
    /// Sorted (cluster, namespace, service, service port).
    pub backends: Vec<Backend>,
    /// The VirtualDestination this target belongs to, for destination-level policies.
    pub virtual_destination: Option<VdRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VdRef {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `clientMode: tlsTermination`: east-west gateways end the client's mTLS.
    pub tls_termination: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub cluster: String,
    pub namespace: String,
    pub service: String,
    pub port: u16,
}

impl Target {
    fn subset_label(&self) -> String {
        self.subset
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect::<Vec<_>>()
            .join("_")
    }

    /// The Envoy cluster name, Istio style: `outbound|80|version-v1|backend.mesh.internal`.
    pub fn upstream_name(&self) -> String {
        format!("outbound|{}|{}|{}", self.port, self.subset_label(), self.host)
    }

    /// The routing key a remote east-west gateway matches, shaped to become a TLS SNI later:
    /// `outbound_.80_.version-v1_.backend.mesh.internal`.
    pub fn key(&self) -> String {
        // A different key for the gateway to end TLS on: it routes by SNI before any handshake.
        let kind = if self.terminates_at_gateway() {
            "terminate"
        } else {
            "outbound"
        };
        format!("{kind}_.{}_.{}_.{}", self.port, self.subset_label(), self.host)
    }

    /// Whether east-west gateways end the client's mTLS for this target (`clientMode:
    /// tlsTermination` on its VirtualDestination) instead of passing it through by SNI.
    pub fn terminates_at_gateway(&self) -> bool {
        self.virtual_destination.as_ref().is_some_and(|vd| vd.tls_termination)
    }

    /// Name of the gateway-side cluster that serves this target from local endpoints.
    pub fn gateway_upstream_name(&self) -> String {
        format!("gateway|{}|{}|{}", self.port, self.subset_label(), self.host)
    }
}
