//! An ingress gateway: the door for traffic from outside the mesh. It serves the VirtualGateways
//! (`ir.ingress_gateways`) whose selector its labels satisfy: one HTTP listener per port, plain
//! or terminating TLS with certificate files on its host, routing by host over RDS exactly as a
//! sidecar's outbound listener does, and forwarding into the mesh over mTLS with its own SPIFFE
//! identity (SDS `default`, checked against `ROOTCA`) like a sidecar's outbound clusters.
//!
//! ```text
//!  client ──HTTP or TLS (files)──▶ ingress|<port> ──RDS ingress|<port>──▶ upstream cluster ──mTLS──▶ sidecar
//! ```
//!
//! An egress virtual host (an ExternalService routed through this gateway) carries the RBAC of
//! the AccessPolicies on that service, per virtual host as on a sidecar's inbound port: a mesh
//! client they do not allow gets 403.
//!
//! A byte-stream listener (`tcp`, or TLS PASSTHROUGH) has no HTTP: one filter chain per stream
//! route, matched by SNI when passing TLS through, each a TCP proxy to the route's upstreams.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use trellis_model::ClusterConfig;
use trellis_model::access_log::{AccessLog, AccessLogSink};
use trellis_model::addons::AddonServer;
use trellis_model::ir::{IngressGateway, IngressTls, RouteAction, StreamListener, StreamRoute, VirtualHost};
use trellis_model::policy::InboundPolicy;

use crate::ProxyResources;
use crate::common::{self, Routes};
use crate::{routes, sidecar, tls};

/// The ingress gateway proxy a config is for.
#[derive(Debug, Clone, Copy)]
pub struct IngressSpec<'a> {
    /// The proxy's labels: it serves every VirtualGateway whose selector they all satisfy.
    pub labels: &'a BTreeMap<String, String>,
    /// Its namespace: with the labels, what AccessLogPolicies select it by.
    pub namespace: &'a str,
    /// Where it writes the entries of the access logs that apply to it.
    pub access_log: &'a AccessLogSink,
    /// Where every listener binds, each on its VirtualGateway port unless `port_map` moves it.
    pub listen_address: &'a str,
    /// VirtualGateway port -> the port the listener binds, as a Kubernetes Service's `targetPort`
    /// does (Istio's ingress gateway serves port 80 on 8080): the gateway need not be root, and
    /// several gateways can share a host.
    pub port_map: &'a BTreeMap<u16, u16>,
}

impl IngressSpec<'_> {
    /// The local port a VirtualGateway port's listener binds.
    pub fn bind_port(&self, port: u16) -> u16 {
        self.port_map.get(&port).copied().unwrap_or(port)
    }
}

/// `ingress|<port>`: the listener on a port and the route configuration it fetches over RDS.
pub fn ingress_name(port: u16) -> String {
    format!("ingress|{port}")
}

/// One port's worth of what the selected VirtualGateways serve.
struct Port<'a> {
    tls: Option<&'a IngressTls>,
    https_redirect: bool,
    virtual_hosts: Vec<VirtualHost>,
    /// A byte-stream listener: its routes, no virtual hosts.
    stream: Option<&'a StreamListener>,
    /// AccessPolicies guarding virtual hosts, by virtual host name.
    access: BTreeMap<&'a str, Vec<&'a InboundPolicy>>,
}

/// Listeners and route configurations by port (ascending); clusters and endpoints for exactly
/// the upstreams those routes forward to, in the IR's order. Nothing selected: nothing at all.
pub fn ingress_gateway(ir: &ClusterConfig, spec: &IngressSpec) -> ProxyResources {
    let ports = merged_ports(ir.ingress_gateways.iter().filter(|g| selects(g, spec.labels)));
    let mirrors = ports
        .values()
        .flat_map(|port| &port.virtual_hosts)
        .flat_map(|host| &host.routes)
        .filter_map(|route| route.policies.mirror.as_deref())
        .map(|mirror| mirror.upstream.as_str());
    let referenced: BTreeSet<&str> = ports
        .values()
        .flat_map(|port| &port.virtual_hosts)
        .flat_map(|host| &host.routes)
        .filter_map(|route| match &route.action {
            RouteAction::Forward(forward) => Some(forward),
            _ => None,
        })
        .flat_map(|forward| &forward.destinations)
        .chain(
            ports
                .values()
                .flat_map(|port| port.stream.iter().flat_map(|s| &s.routes))
                .flat_map(|route| &route.destinations),
        )
        .map(|destination| destination.upstream.as_str())
        .chain(mirrors)
        .collect();
    let upstreams: Vec<_> = ir
        .upstreams
        .iter()
        .filter(|u| referenced.contains(u.name.as_str()))
        .collect();
    let logs = crate::access_log::applying(&ir.access_logs, spec.namespace, spec.labels);
    let http_ports = ports.values().any(|port| port.stream.is_none());
    ProxyResources {
        clusters: upstreams
            .iter()
            .map(|u| sidecar::outbound_cluster(u))
            .chain(crate::addons::clusters(&ir.addon_servers))
            .chain(crate::http_policies::jwks_clusters(
                ports.values().flat_map(|port| &port.virtual_hosts),
            ))
            .chain(crate::access_log::otlp_cluster(
                spec.access_log,
                http_ports && !logs.is_empty(),
            ))
            .collect(),
        endpoints: upstreams.iter().map(|u| common::load_assignment(u)).collect(),
        listeners: ports
            .iter()
            .map(|(port, served)| match served.stream {
                Some(stream) => stream_listener(spec.listen_address, spec.bind_port(*port), *port, served.tls, stream),
                None => listener(
                    spec.listen_address,
                    spec.bind_port(*port),
                    *port,
                    served,
                    &ir.addon_servers,
                    (&logs, spec.access_log),
                ),
            })
            .collect(),
        routes: ports
            .iter()
            .filter(|(_, served)| served.stream.is_none())
            .map(|(port, served)| RouteConfiguration {
                name: ingress_name(*port),
                virtual_hosts: served
                    .virtual_hosts
                    .iter()
                    .map(|virtual_host| {
                        let mut host = routes::virtual_host(virtual_host);
                        if let Some((filter, config)) = served
                            .access
                            .get(virtual_host.name.as_str())
                            .and_then(|policies| crate::authz::http_rbac_per_route(policies))
                        {
                            host.typed_per_filter_config.insert(filter, config);
                        }
                        if served.https_redirect {
                            // Envoy answers plaintext requests with a 301 to the https URL.
                            host.require_tls = TlsRequirementType::All as i32;
                        }
                        host
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        // Listeners sharing a Secret share its SDS secrets, once each; so do the client
        // certificates presented to servers outside the mesh (egress).
        secrets: ports
            .values()
            .filter_map(|port| port.tls.and_then(|tls| tls.credential.as_ref()))
            .flat_map(tls::ingress_secrets)
            .chain(sidecar::external_client_secrets(upstreams.iter().map(|u| &***u)))
            .map(|secret| (secret.name.clone(), secret))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect(),
    }
}

/// Every selector label present with the same value (an empty selector selects every proxy).
fn selects(gateway: &IngressGateway, labels: &BTreeMap<String, String>) -> bool {
    gateway
        .selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Listeners of several VirtualGateways on one port become one: the first gateway's TLS wins,
/// and virtual hosts follow in gateway then listener order. Envoy rejects a whole route
/// configuration that names a virtual host or a domain twice, so the first claim wins there too:
/// a later virtual host loses the domains already served and is dropped with none left.
fn merged_ports<'a>(gateways: impl Iterator<Item = &'a IngressGateway>) -> BTreeMap<u16, Port<'a>> {
    let mut ports: BTreeMap<u16, Port<'a>> = BTreeMap::new();
    let mut claimed: BTreeMap<u16, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for listener in gateways.flat_map(|g| &g.listeners) {
        let port = ports.entry(listener.port).or_insert_with(|| Port {
            tls: listener.tls.as_ref(),
            https_redirect: listener.https_redirect,
            virtual_hosts: Vec::new(),
            stream: listener.stream.as_ref(),
            access: BTreeMap::new(),
        });
        if port.stream.is_some() {
            continue;
        }
        let (names, domains) = claimed.entry(listener.port).or_default();
        for host in &listener.virtual_hosts {
            if names.contains(&host.name) {
                continue;
            }
            let free: Vec<String> = host.domains.iter().filter(|d| !domains.contains(*d)).cloned().collect();
            if free.is_empty() && !host.domains.is_empty() {
                continue;
            }
            names.insert(host.name.clone());
            domains.extend(free.iter().cloned());
            if let Some(access) = listener.host_access.iter().find(|a| a.host == host.name) {
                port.access
                    .insert(access.host.as_str(), access.policies.iter().collect());
            }
            port.virtual_hosts.push(VirtualHost {
                domains: free,
                ..host.clone()
            });
        }
    }
    ports
}

/// An HTTP connection manager fetching `ingress|<port>` over RDS, with the fault filter the
/// routes' fault policies configure (as on a sidecar's outbound listener). The gateway is the
/// edge: the client's address is the remote address, not whatever `x-forwarded-for` claims.
fn listener(
    address: &str,
    bind: u16,
    port: u16,
    served: &Port,
    addons: &[AddonServer],
    (logs, sink): (&[&AccessLog], &AccessLogSink),
) -> Listener {
    let tls = served.tls;
    let name = ingress_name(port);
    let mut hcm = common::http_connection_manager(&format!("ingress_{port}"), Routes::Rds(name.clone()));
    hcm.access_log = crate::access_log::access_logs(logs, &name, sink);
    hcm.http_filters.insert(0, routes::fault_filter());
    let router = hcm.http_filters.len() - 1;
    hcm.http_filters.splice(router..router, crate::addons::filters(addons));
    // CORS first (it answers preflights itself), then CSRF, then the token check and its claim
    // rules, as on a sidecar.
    if crate::jwt_claims::any_route_checks_claims(&served.virtual_hosts) {
        hcm.http_filters.insert(0, crate::authz::http_rbac_filter());
    }
    if let Some(jwt) = crate::http_policies::jwt_filter(&served.virtual_hosts) {
        hcm.http_filters.insert(0, jwt);
    }
    hcm.http_filters.insert(0, crate::http_policies::csrf_filter());
    let router = hcm.http_filters.len() - 1;
    hcm.http_filters.insert(router, crate::http_policies::buffer_filter());
    // Transformations run last before the router, after every authentication and authorization.
    if let Some(lua) = crate::transformation::lua_filter(&served.virtual_hosts) {
        let router = hcm.http_filters.len() - 1;
        hcm.http_filters.insert(router, lua);
    }
    hcm.http_filters.insert(0, crate::http_policies::cors_filter());
    if !served.access.is_empty() {
        // Rule-less: it enforces what each guarded virtual host gives it, before anything else.
        hcm.http_filters.insert(0, crate::authz::http_rbac_filter());
    }
    hcm.use_remote_address = Some(BoolValue { value: true });
    let mut listener = common::listener(
        &name,
        address,
        bind,
        common::network_filter(common::HCM_FILTER, pack_any(hcm)),
    );
    listener.filter_chains[0].transport_socket = tls.map(|tls| tls::ingress_socket(tls, true));
    listener
}

/// A listener without HTTP. Passing TLS through, a TLS inspector reads the SNI and each route
/// gets a chain for its server names (the first route to claim a name, or to claim every
/// name, wins: Envoy rejects a listener whose chains match alike). Otherwise the first route
/// takes every connection. Connections no chain matches are closed.
fn stream_listener(address: &str, bind: u16, port: u16, tls: Option<&IngressTls>, stream: &StreamListener) -> Listener {
    let name = ingress_name(port);
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut catch_all = false;
    let mut chains = Vec::new();
    for route in &stream.routes {
        if !stream.passthrough {
            chains.push(stream_chain(route, Vec::new(), tls));
            break;
        }
        if route.server_names.is_empty() {
            if !catch_all {
                catch_all = true;
                chains.push(stream_chain(route, Vec::new(), tls));
            }
            continue;
        }
        let free: Vec<String> = route
            .server_names
            .iter()
            .filter(|n| claimed.insert(n.as_str()))
            .cloned()
            .collect();
        if !free.is_empty() {
            chains.push(stream_chain(route, free, tls));
        }
    }
    if chains.is_empty() {
        // Envoy rejects a listener without chains; one without filters closes every connection.
        chains.push(FilterChain {
            name: "closed".to_string(),
            ..Default::default()
        });
    }
    Listener {
        name,
        address: Some(common::socket_address(address, bind)),
        listener_filters: if stream.passthrough {
            vec![common::tls_inspector()]
        } else {
            Vec::new()
        },
        filter_chains: chains,
        ..Default::default()
    }
}

/// A TCP proxy to the route's upstreams, split by weight when there are several.
fn stream_chain(route: &StreamRoute, server_names: Vec<String>, tls: Option<&IngressTls>) -> FilterChain {
    let cluster_specifier = match route.destinations.as_slice() {
        [only] => tcp_proxy::ClusterSpecifier::Cluster(only.upstream.clone()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: d.upstream.clone(),
                    weight: d.weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix: format!("ingress_{}", route.name),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    FilterChain {
        name: route.name.clone(),
        filter_chain_match: (!server_names.is_empty()).then(|| FilterChainMatch {
            server_names,
            ..Default::default()
        }),
        filters: vec![common::network_filter(common::TCP_PROXY_FILTER, pack_any(proxy))],
        transport_socket: tls.map(|tls| tls::ingress_socket(tls, false)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
