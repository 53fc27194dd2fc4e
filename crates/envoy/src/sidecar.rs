//! A workload's sidecar: outbound, it routes the app's requests by host over RDS to EDS clusters
//! (one per IR upstream) and wraps each connection in mTLS, with the upstream's key as SNI;
//! inbound, it terminates mTLS on each workload port (any mesh identity is let in) and hands the
//! traffic to the app on loopback.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
};
use envoy_types::util::pack_any;
use trellis_model::ir::Upstream;
use trellis_model::{ClusterConfig, Protocol, Workload, WorkloadPort};

use crate::ProxyResources;
use crate::common::{self, Routes};
use crate::{routes, tls};

/// Name of the sidecar's outbound listener and of the route configuration it fetches over RDS.
pub const OUTBOUND_LISTENER: &str = "outbound";
pub const OUTBOUND_ROUTE: &str = "outbound";

/// Where the app beside a sidecar listens: the sidecar forwards inbound traffic there.
const APP_ADDRESS: &str = "127.0.0.1";

/// The one proxy a sidecar config is for.
#[derive(Debug, Clone, Copy)]
pub struct SidecarSpec<'a> {
    pub workload: &'a Workload,
    /// Where the app sends its outbound requests (as to an HTTP proxy).
    pub outbound_address: &'a str,
    pub outbound_port: u16,
    /// Where the inbound listeners bind, each on its port's `inbound_port`.
    pub inbound_address: &'a str,
}

/// `inbound|<service port>`: the listener, route and cluster for one workload port.
pub fn inbound_name(port: &WorkloadPort) -> String {
    format!("inbound|{}", port.port)
}

pub fn sidecar(ir: &ClusterConfig, spec: &SidecarSpec) -> ProxyResources {
    let mut resources = ProxyResources {
        clusters: ir.upstreams.iter().map(outbound_cluster).collect(),
        endpoints: ir.upstreams.iter().map(common::load_assignment).collect(),
        listeners: vec![common::http_listener(
            OUTBOUND_LISTENER,
            spec.outbound_address,
            spec.outbound_port,
            Routes::Rds(OUTBOUND_ROUTE.to_string()),
        )],
        routes: vec![RouteConfiguration {
            name: OUTBOUND_ROUTE.to_string(),
            virtual_hosts: ir.virtual_hosts.iter().map(routes::virtual_host).collect(),
            ..Default::default()
        }],
        secrets: Vec::new(),
    };
    for port in &spec.workload.ports {
        resources.clusters.push(inbound_cluster(port));
        resources.listeners.push(inbound_listener(spec.inbound_address, port));
    }
    resources
}

/// An EDS cluster whose connections are mTLS to the upstream's identities; through a remote
/// gateway too, since the gateway passes TLS through by SNI.
fn outbound_cluster(upstream: &Upstream) -> Cluster {
    Cluster {
        transport_socket: Some(tls::upstream_socket(upstream)),
        ..common::eds_cluster(&upstream.name)
    }
}

/// A static cluster to the app; HTTP/2 and gRPC apps get HTTP/2 so their streams survive.
fn inbound_cluster(port: &WorkloadPort) -> Cluster {
    let cluster = common::static_cluster(&inbound_name(port), APP_ADDRESS, port.app_port);
    match port.protocol {
        Protocol::Http2 | Protocol::Grpc => common::with_http2(cluster),
        Protocol::Http | Protocol::Tcp => cluster,
    }
}

/// Every port terminates mTLS first. HTTP ports then get an HTTP connection manager with an
/// inline catch-all route that tells the app who called (`x-forwarded-client-cert` with the
/// caller's `URI=spiffe://...`, replacing whatever the client sent); TCP ports get a plain TCP
/// proxy, since an HTTP codec would break a non-HTTP byte stream.
fn inbound_listener(address: &str, port: &WorkloadPort) -> Listener {
    let name = inbound_name(port);
    let filter = if port.protocol == Protocol::Tcp {
        common::tcp_proxy_filter(&name, &name)
    } else {
        let hcm = inbound_hcm(&name);
        common::network_filter(common::HCM_FILTER, pack_any(hcm))
    };
    let mut listener = common::listener(&name, address, port.inbound_port, filter);
    listener.filter_chains[0].transport_socket = Some(tls::downstream_socket());
    listener
}

/// Everything to the app, with the caller's identity in `x-forwarded-client-cert`.
fn inbound_hcm(name: &str) -> HttpConnectionManager {
    let name = name.to_string();
    let route_config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: name.clone(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: name.clone(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(name.clone())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    HttpConnectionManager {
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        }),
        ..common::http_connection_manager(&name, Routes::Inline(Box::new(route_config)))
    }
}

#[cfg(test)]
mod tests;
