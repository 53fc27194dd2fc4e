//! A cluster's east-west gateway: the door other clusters' sidecars use. It reads the SNI of the
//! client sidecar's mTLS handshake and passes the connection, still encrypted, to the local
//! endpoints of the one `ir.gateway_upstreams` entry whose key is that SNI; the server sidecar
//! behind it terminates TLS and checks the client. A connection with any other SNI (or none)
//! matches no filter chain and is closed.
//!
//! The exception is a VirtualDestination with `clientMode: tlsTermination` (its key starts with
//! `terminate_`): the gateway ends the client's mTLS with its own mesh certificate, requiring the
//! client's, and opens new mTLS to the endpoints, so they see the gateway's identity.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use trellis_model::ClusterConfig;
use trellis_model::ir::Upstream;

use crate::ProxyResources;
use crate::common;

/// Name of the gateway's listener.
pub const GATEWAY_LISTENER: &str = "east-west";

/// The chain of a gateway that serves nothing.
const CLOSED_CHAIN: &str = "closed";

/// The gateway a config is for.
#[derive(Debug, Clone, Copy)]
pub struct GatewaySpec<'a> {
    pub listen_address: &'a str,
    pub port: u16,
}

/// Plain TCP EDS clusters (TLS passes through) and one SNI-matched listener; no routes.
pub fn east_west_gateway(ir: &ClusterConfig, spec: &GatewaySpec) -> ProxyResources {
    let upstreams = &ir.gateway_upstreams;
    ProxyResources {
        clusters: upstreams.iter().map(gateway_cluster).collect(),
        endpoints: upstreams.iter().map(common::load_assignment).collect(),
        listeners: vec![Listener {
            name: GATEWAY_LISTENER.to_string(),
            address: Some(common::socket_address(spec.listen_address, spec.port)),
            listener_filters: vec![common::tls_inspector()],
            filter_chains: sni_chains(upstreams),
            ..Default::default()
        }],
        routes: Vec::new(),
        secrets: Vec::new(),
    }
}

/// One chain per distinct key, the first upstream with a key winning: Envoy rejects a whole
/// listener whose chains match the same SNI, which would leave the gateway with none.
///
/// With nothing to serve, one chain without filters, which Envoy closes every connection on:
/// Envoy rejects a listener with no chains, and keeping the listener spares a rebind later.
fn sni_chains(upstreams: &[Upstream]) -> Vec<FilterChain> {
    let mut seen = std::collections::BTreeSet::new();
    let chains: Vec<_> = upstreams
        .iter()
        .filter(|u| seen.insert(u.key.as_str()))
        .map(sni_chain)
        .collect();
    if chains.is_empty() {
        return vec![FilterChain {
            name: CLOSED_CHAIN.to_string(),
            ..Default::default()
        }];
    }
    chains
}

/// Connections whose SNI is the upstream's key go, untouched, to its cluster. For an upstream
/// whose TLS ends here (`clientMode: tlsTermination`), the gateway first completes the mTLS
/// handshake itself: the client must present a certificate of the mesh.
fn sni_chain(upstream: &Upstream) -> FilterChain {
    FilterChain {
        name: upstream.name.clone(),
        filter_chain_match: Some(FilterChainMatch {
            server_names: vec![upstream.key.clone()],
            ..Default::default()
        }),
        filters: vec![common::tcp_proxy_filter(&upstream.name, &upstream.name)],
        transport_socket: upstream.terminate_tls.then(crate::tls::downstream_socket),
        ..Default::default()
    }
}

/// The local endpoints of an upstream; where TLS ended at the gateway, reached over the
/// gateway's own mTLS (the destination sees the gateway's identity, as Gloo documents).
fn gateway_cluster(upstream: &Upstream) -> Cluster {
    let mut cluster = common::eds_cluster(&upstream.name);
    if upstream.terminate_tls {
        cluster.transport_socket = Some(crate::tls::upstream_socket(upstream));
    }
    cluster
}

#[cfg(test)]
mod tests;
