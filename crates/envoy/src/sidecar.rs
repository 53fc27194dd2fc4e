//! A workload's sidecar: outbound, it routes the app's requests by host over RDS to EDS clusters
//! (one per IR upstream) and wraps each connection in mTLS, with the upstream's key as SNI;
//! inbound, it terminates mTLS on each workload port (or, as AccessPolicies say, also or only
//! accepts plaintext), authorizes the caller against the policies' rules, and hands the
//! traffic to the app on loopback.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection, cluster};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use trellis_model::ir::{Upstream, visible};
use trellis_model::policy::{self, InboundPolicy, TlsMode};
use trellis_model::{ClusterConfig, Protocol, Workload, WorkloadPort};

use crate::ProxyResources;
use crate::common::{self, Routes};
use crate::{authz, routes, tls};

/// Name of the sidecar's outbound listener and of the route configuration it fetches over RDS.
pub const OUTBOUND_LISTENER: &str = "outbound";
pub const OUTBOUND_ROUTE: &str = "outbound";

/// Names of an inbound listener's filter chains, by transport.
const MTLS_CHAIN: &str = "mtls";
const PLAINTEXT_CHAIN: &str = "plaintext";

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
    let mut outbound = common::http_connection_manager(OUTBOUND_LISTENER, Routes::Rds(OUTBOUND_ROUTE.to_string()));
    outbound.http_filters.insert(0, routes::fault_filter());
    let router = outbound.http_filters.len() - 1;
    outbound
        .http_filters
        .splice(router..router, crate::addons::filters(&ir.addon_servers));
    // Trimmed to what the workload's workspace may see (everything when Workspaces are unused).
    let workspace = ir
        .namespace_workspaces
        .get(&spec.workload.namespace)
        .map(String::as_str);
    let upstreams: Vec<&Upstream> = ir
        .upstreams
        .iter()
        .filter(|u| visible(&u.workspaces, workspace))
        .collect();
    let virtual_hosts = ir.virtual_hosts.iter().filter(|h| visible(&h.workspaces, workspace));
    let mut resources = ProxyResources {
        clusters: upstreams
            .iter()
            .map(|u| outbound_cluster(u))
            .chain(crate::addons::clusters(&ir.addon_servers))
            .collect(),
        endpoints: upstreams.iter().map(|u| common::load_assignment(u)).collect(),
        listeners: vec![common::listener(
            OUTBOUND_LISTENER,
            spec.outbound_address,
            spec.outbound_port,
            common::network_filter(common::HCM_FILTER, pack_any(outbound)),
        )],
        routes: vec![RouteConfiguration {
            name: OUTBOUND_ROUTE.to_string(),
            virtual_hosts: virtual_hosts.map(routes::virtual_host).collect(),
            ..Default::default()
        }],
        secrets: Vec::new(),
    };
    let policies = authz::applying(&ir.inbound_policies, spec.workload);
    for port in &spec.workload.ports {
        resources.clusters.push(inbound_cluster(port));
        resources
            .listeners
            .push(inbound_listener(spec.inbound_address, port, &policies));
    }
    resources
}

/// An EDS cluster whose connections are mTLS to the upstream's identities; through a remote
/// gateway too, since the gateway passes TLS through by SNI. Outlier detection ejects endpoints
/// that keep failing, which is also what moves traffic to the next priority on failover.
pub(crate) fn outbound_cluster(upstream: &Upstream) -> Cluster {
    let Some(external) = &upstream.external else {
        return Cluster {
            transport_socket: Some(tls::upstream_socket(upstream)),
            outlier_detection: upstream.outlier_detection.as_ref().map(outlier_detection),
            ..common::eds_cluster(&upstream.name)
        };
    };
    // Outside the mesh: no mesh identity to present or expect. Host names are resolved by DNS
    // (STRICT_DNS, endpoints inline); IP endpoints arrive over EDS like any other.
    let base = if external.dns {
        Cluster {
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            )),
            eds_cluster_config: None,
            load_assignment: Some(common::load_assignment(upstream)),
            ..common::eds_cluster(&upstream.name)
        }
    } else {
        common::eds_cluster(&upstream.name)
    };
    Cluster {
        transport_socket: external.tls_sni.as_deref().map(tls::originate_socket),
        outlier_detection: upstream.outlier_detection.as_ref().map(outlier_detection),
        ..base
    }
}

/// Both 5xx responses and gateway failures (502/503/504, connect errors) count, and both are
/// always enforced: Envoy enforces gateway failures 0% of the time unless told otherwise.
fn outlier_detection(policy: &policy::OutlierDetection) -> OutlierDetection {
    let value = |value| Some(UInt32Value { value });
    OutlierDetection {
        consecutive_5xx: value(policy.consecutive_errors),
        enforcing_consecutive_5xx: value(100),
        consecutive_gateway_failure: value(policy.consecutive_errors),
        enforcing_consecutive_gateway_failure: value(100),
        interval: Some(common::duration_ms(policy.interval_ms)),
        base_ejection_time: Some(common::duration_ms(policy.base_ejection_time_ms)),
        max_ejection_percent: value(policy.max_ejection_percent),
        ..Default::default()
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

/// HTTP ports get an HTTP connection manager with an inline catch-all route that tells the app
/// who called (`x-forwarded-client-cert` with the caller's `URI=spiffe://...`, replacing
/// whatever the client sent); TCP ports get a plain TCP proxy, since an HTTP codec would break a
/// non-HTTP byte stream. Either is preceded by an RBAC filter when AccessPolicies with rules
/// apply (see [`authz`]).
///
/// The TLS mode decides the chains: STRICT terminates mTLS (a client certificate chained to the
/// mesh root is required); DISABLE takes plaintext only; PERMISSIVE has a TLS inspector tell
/// the two apart and keeps one chain of each, with the same filters.
fn inbound_listener(address: &str, port: &WorkloadPort, policies: &[&InboundPolicy]) -> Listener {
    let name = inbound_name(port);
    let filters = if port.protocol == Protocol::Tcp {
        let rbac = authz::network_rbac(policies, &name);
        rbac.into_iter()
            .chain([common::tcp_proxy_filter(&name, &name)])
            .collect()
    } else {
        let mut hcm = inbound_hcm(&name);
        if let Some(rbac) = authz::http_rbac(policies) {
            hcm.http_filters.insert(0, rbac);
        }
        vec![common::network_filter(common::HCM_FILTER, pack_any(hcm))]
    };
    let chain = |tls: bool, transport_protocol: Option<&str>| FilterChain {
        name: if tls { MTLS_CHAIN } else { PLAINTEXT_CHAIN }.to_string(),
        filter_chain_match: transport_protocol.map(|protocol| FilterChainMatch {
            transport_protocol: protocol.to_string(),
            ..Default::default()
        }),
        filters: filters.clone(),
        transport_socket: tls.then(tls::downstream_socket),
        ..Default::default()
    };
    let (listener_filters, filter_chains) = match authz::tls_mode(policies) {
        TlsMode::Strict => (Vec::new(), vec![chain(true, None)]),
        TlsMode::Disable => (Vec::new(), vec![chain(false, None)]),
        TlsMode::Permissive => (
            vec![common::tls_inspector()],
            vec![chain(true, Some("tls")), chain(false, Some("raw_buffer"))],
        ),
    };
    Listener {
        name: name.clone(),
        address: Some(common::socket_address(address, port.inbound_port)),
        listener_filters,
        filter_chains,
        ..Default::default()
    }
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
