//! A workload's sidecar: outbound, it routes the app's requests by host over RDS to EDS clusters
//! (one per IR upstream; per domain, the RouteTable that selects the workload wins over the
//! default, see `outbound_view`) and wraps each connection in mTLS, with the upstream's key as SNI;
//! inbound, it terminates mTLS on each workload port (or, as AccessPolicies say, also or only
//! accepts plaintext), authorizes the caller against the policies' rules, and hands the
//! traffic to the app on loopback. On a port that ext-auth or rate-limit policies protect, the
//! inbound listener routes like the mesh routes that reach it and runs their add-on checks, so
//! calling the sidecar directly does not skip them.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection, cluster};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use std::collections::BTreeMap;

use trellis_model::access_log::{AccessLog, AccessLogSink};
use trellis_model::addons::{AddonServer, InboundRoute, InboundRoutes};
use trellis_model::ir::{ClientCredential, Upstream, visible};
use trellis_model::policy::{self, InboundPolicy, RoutePolicies, TlsMode};
use trellis_model::{ClusterConfig, Protocol, Workload, WorkloadPort};

pub use outbound_view::{OutboundView, outbound_view, overriding_hosts};

use crate::ProxyResources;
use crate::common::{self, Routes};
use crate::{authz, routes, tls};
use outbound_view::outbound_hosts;

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
    /// Where the proxy writes the entries of the access logs (AccessLogPolicies) that apply to it.
    pub access_log: &'a AccessLogSink,
}

/// `inbound|<service port>`: the listener, route and cluster for one workload port.
pub fn inbound_name(port: &WorkloadPort) -> String {
    format!("inbound|{}", port.port)
}

pub fn sidecar(ir: &ClusterConfig, spec: &SidecarSpec) -> ProxyResources {
    let view = outbound_view(ir, spec.workload, &overriding_hosts(ir));
    let mut resources = sidecar_outbound(ir, &view);
    let local = sidecar_local(ir, spec);
    resources.clusters.extend(local.clusters);
    resources.listeners = local.listeners;
    resources.routes.extend(local.routes);
    resources
}

/// The workspace whose view a workload's sidecar gets (`None`: in no workspace, or Workspaces
/// unused).
pub fn sidecar_workspace<'a>(ir: &'a ClusterConfig, workload: &Workload) -> Option<&'a str> {
    ir.namespace_workspaces.get(&workload.namespace).map(String::as_str)
}

/// What every sidecar with `view` gets alike: the outbound clusters (add-on servers'
/// included), their endpoints and the outbound route. Built once per view and shared by
/// those sidecars.
pub fn sidecar_outbound(ir: &ClusterConfig, view: &OutboundView) -> ProxyResources {
    let workspace = view.workspace.as_deref();
    // Trimmed to what the workload's workspace may see (everything when Workspaces are unused).
    let upstreams: Vec<&Upstream> = ir
        .upstreams
        .iter()
        .filter(|u| visible(&u.workspaces, workspace))
        .map(|u| &**u)
        .collect();
    let virtual_hosts = outbound_hosts(ir, view);
    let jwks = crate::http_policies::jwks_clusters(virtual_hosts.iter().map(|h| &**h));
    ProxyResources {
        clusters: upstreams
            .iter()
            .map(|u| outbound_cluster(u))
            .chain(crate::addons::clusters(&ir.addon_servers))
            .chain(jwks)
            .collect(),
        endpoints: upstreams.iter().map(|u| common::load_assignment(u)).collect(),
        listeners: Vec::new(),
        routes: vec![RouteConfiguration {
            name: OUTBOUND_ROUTE.to_string(),
            virtual_hosts: virtual_hosts.iter().map(|h| routes::virtual_host(h)).collect(),
            ..Default::default()
        }],
        secrets: external_client_secrets(upstreams.iter().copied()),
    }
}

/// The Secrets (`credentialName`) presented to servers outside the mesh, once each.
pub(crate) fn external_client_secrets<'a>(upstreams: impl IntoIterator<Item = &'a Upstream>) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = upstreams
        .into_iter()
        .filter_map(|u| match u.external.as_deref()?.tls_client.as_ref()? {
            ClientCredential::Secret(credential) => Some(tls::ingress_secrets(credential)),
            ClientCredential::Files { .. } => None,
        })
        .flatten()
        .collect();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    secrets.dedup_by(|a, b| a.name == b.name);
    secrets
}

/// What is one sidecar's own: its outbound listener, and an inbound listener and cluster per port
/// of its workload.
pub fn sidecar_local(ir: &ClusterConfig, spec: &SidecarSpec) -> ProxyResources {
    let mut outbound = common::http_connection_manager(OUTBOUND_LISTENER, Routes::Rds(OUTBOUND_ROUTE.to_string()));
    outbound.http_filters.insert(0, routes::fault_filter());
    let router = outbound.http_filters.len() - 1;
    outbound
        .http_filters
        .splice(router..router, crate::addons::filters(&ir.addon_servers));
    // CORS first (it answers preflights itself), then CSRF, then the token check and its claim
    // rules, then everything else.
    let workspace = sidecar_workspace(ir, spec.workload);
    let hosts = ir.virtual_hosts.iter().filter(|h| visible(&h.workspaces, workspace));
    if crate::jwt_claims::any_route_checks_claims(hosts.clone().map(|h| &**h)) {
        outbound.http_filters.insert(0, crate::authz::http_rbac_filter());
    }
    if let Some(jwt) = crate::http_policies::jwt_filter(hosts.map(|h| &**h)) {
        outbound.http_filters.insert(0, jwt);
    }
    outbound.http_filters.insert(0, crate::http_policies::csrf_filter());
    let router = outbound.http_filters.len() - 1;
    outbound
        .http_filters
        .insert(router, crate::http_policies::buffer_filter());
    // Transformations run last before the router, after every authentication and authorization.
    let hosts = ir.virtual_hosts.iter().filter(|h| visible(&h.workspaces, workspace));
    if let Some(lua) = crate::transformation::lua_filter(hosts.map(|h| &**h)) {
        let router = outbound.http_filters.len() - 1;
        outbound.http_filters.insert(router, lua);
    }
    outbound.http_filters.insert(0, crate::http_policies::cors_filter());
    let logs = crate::access_log::applying(&ir.access_logs, &spec.workload.namespace, &spec.workload.labels);
    outbound.access_log = crate::access_log::access_logs(&logs, OUTBOUND_LISTENER, spec.access_log);
    let mut resources = ProxyResources {
        listeners: vec![common::listener(
            OUTBOUND_LISTENER,
            spec.outbound_address,
            spec.outbound_port,
            common::network_filter(common::HCM_FILTER, pack_any(outbound)),
        )],
        ..Default::default()
    };
    let policies = authz::applying(&ir.inbound_policies, spec.workload);
    for port in &spec.workload.ports {
        resources.clusters.push(inbound_cluster(port));
        let mirror = ir.inbound_routes.iter().find(|r| {
            (r.namespace.as_str(), r.service.as_str(), r.port)
                == (
                    spec.workload.namespace.as_str(),
                    spec.workload.service.as_str(),
                    port.port,
                )
        });
        let addons = mirror.map(|routes| InboundAddons {
            routes,
            labels: &spec.workload.labels,
            servers: &ir.addon_servers,
        });
        let logged = Logged {
            logs: &logs,
            sink: spec.access_log,
        };
        let (listener, routes) = inbound_listener(spec.inbound_address, port, &policies, addons, logged);
        resources.listeners.push(listener);
        resources.routes.extend(routes);
    }
    resources
        .clusters
        .extend(crate::access_log::otlp_cluster(spec.access_log, !logs.is_empty()));
    resources
}

/// An EDS cluster whose connections are mTLS to the upstream's identities; through a remote
/// gateway too, since the gateway passes TLS through by SNI. Outlier detection ejects endpoints
/// that keep failing, which is also what moves traffic to the next priority on failover.
pub(crate) fn outbound_cluster(upstream: &Upstream) -> Cluster {
    let mut cluster = outbound_cluster_base(upstream);
    if let Some(traffic) = &upstream.traffic {
        crate::upstream_traffic::apply(&mut cluster, traffic);
    }
    cluster
}

/// A mesh cluster's name as its stats carry it: dots become `_`. Envoy's Prometheus output takes
/// a cluster's name up to its first dot as the `envoy_cluster_name` label, so
/// `outbound|9080||reviews.bookinfo` would be cut to `outbound|9080||reviews` and the rest
/// would land in the metric's name; dashboards and the UI's service graph group by that label.
pub fn stat_name(cluster: &str) -> String {
    cluster.replace('.', "_")
}

fn outbound_cluster_base(upstream: &Upstream) -> Cluster {
    let Some(external) = &upstream.external else {
        return Cluster {
            alt_stat_name: stat_name(&upstream.name),
            transport_socket: Some(tls::upstream_socket(upstream)),
            outlier_detection: upstream.outlier_detection.as_deref().map(outlier_detection),
            common_lb_config: (!upstream.locality_weights.is_empty()).then(locality_weighted),
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
        transport_socket: external
            .tls_sni
            .as_deref()
            .map(|sni| tls::originate_socket(sni, external.tls_verify.as_ref(), external.tls_client.as_ref())),
        outlier_detection: upstream.outlier_detection.as_deref().map(outlier_detection),
        ..base
    }
}

/// Traffic split between localities by their `load_balancing_weight` (FailoverPolicy weights).
fn locality_weighted() -> cluster::CommonLbConfig {
    cluster::CommonLbConfig {
        locality_config_specifier: Some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                cluster::common_lb_config::LocalityWeightedLbConfig::default(),
            ),
        ),
        ..Default::default()
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

/// HTTP ports get an HTTP connection manager whose routes (a catch-all that tells the app who
/// called: `x-forwarded-client-cert` with the caller's `URI=spiffe://...`, replacing whatever
/// the client sent) come over RDS, one route configuration per filter chain; TCP ports get a
/// plain TCP proxy, since an HTTP codec would break a non-HTTP byte stream, preceded by an RBAC
/// filter when AccessPolicies with rules apply (see [`authz`]).
///
/// On HTTP ports the AccessPolicy rules live in the route configuration, as per-route RBAC
/// config on every virtual host, and the listener only carries an RBAC filter without rules.
/// So a policy change is an RDS update that the next request sees, also on connections opened
/// before it; were the rules in the listener, a change would replace the listener and leave
/// open connections on the old rules while they drain (600 s by default).
///
/// The TLS mode decides the chains: STRICT terminates mTLS (a client certificate chained to the
/// mesh root is required); DISABLE takes plaintext only; PERMISSIVE has a TLS inspector tell
/// the two apart and keeps one chain of each, with the same filters.
fn inbound_listener(
    address: &str,
    port: &WorkloadPort,
    policies: &[&InboundPolicy],
    addons: Option<InboundAddons>,
    logged: Logged,
) -> (Listener, Vec<RouteConfiguration>) {
    let name = inbound_name(port);
    let rbac = authz::http_rbac_per_route(policies);
    let mut routes = Vec::new();
    // The chains differ only in what the add-on routes count: over mTLS the caller is a mesh
    // proxy that counted the request's rate limit already; in plaintext it is not.
    let mut filters = |tls: bool| -> Vec<_> {
        if port.protocol == Protocol::Tcp {
            let rbac = authz::network_rbac(policies, &name);
            return rbac
                .into_iter()
                .chain([common::tcp_proxy_filter(&name, &name)])
                .collect();
        }
        let route_name = inbound_route_name(port, tls);
        let mut route_config = match &addons {
            Some(addons) => inbound_routes_with_addons(&name, addons, !tls),
            None => inbound_routes(&name),
        };
        route_config.name = route_name.clone();
        if let Some((filter, config)) = &rbac {
            for host in &mut route_config.virtual_hosts {
                host.typed_per_filter_config.insert(filter.clone(), config.clone());
            }
        }
        routes.push(route_config);
        let mut hcm = inbound_hcm(&name, &route_name);
        hcm.access_log = crate::access_log::access_logs(logged.logs, &name, logged.sink);
        hcm.http_filters.insert(0, authz::http_rbac_filter());
        if let Some(addons) = &addons {
            let router = hcm.http_filters.len() - 1;
            hcm.http_filters
                .splice(router..router, crate::addons::filters(addons.servers));
        }
        vec![common::network_filter(common::HCM_FILTER, pack_any(hcm))]
    };
    let mut chain = |tls: bool, transport_protocol: Option<&str>| FilterChain {
        name: if tls { MTLS_CHAIN } else { PLAINTEXT_CHAIN }.to_string(),
        filter_chain_match: transport_protocol.map(|protocol| FilterChainMatch {
            transport_protocol: protocol.to_string(),
            ..Default::default()
        }),
        filters: filters(tls),
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
    let listener = Listener {
        name: name.clone(),
        address: Some(common::socket_address(address, port.inbound_port)),
        listener_filters,
        filter_chains,
        ..Default::default()
    };
    (listener, routes)
}

/// `inbound|<port>/mtls` or `inbound|<port>/plaintext`: the RDS name of one chain's routes.
pub fn inbound_route_name(port: &WorkloadPort, tls: bool) -> String {
    let chain = if tls { MTLS_CHAIN } else { PLAINTEXT_CHAIN };
    format!("{}/{chain}", inbound_name(port))
}

/// The connection manager of an inbound HTTP chain, counted under `name`, fetching its routes
/// as `route_name`.
fn inbound_hcm(name: &str, route_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        }),
        ..common::http_connection_manager(name, Routes::Rds(route_name.to_string()))
    }
}

/// The access logs of a sidecar's HTTP listeners, and where they go.
#[derive(Clone, Copy)]
struct Logged<'a> {
    logs: &'a [&'a AccessLog],
    sink: &'a AccessLogSink,
}

/// What a protected port's inbound listener needs: the mesh routes that reach it, the
/// workload's labels (which subsets it serves) and the add-on servers its cluster registered.
struct InboundAddons<'a> {
    routes: &'a InboundRoutes,
    labels: &'a BTreeMap<String, String>,
    servers: &'a [AddonServer],
}

/// Status of a request to a protected port whose host or route no mesh route would have sent
/// there: it came from somewhere that is not a mesh route, and must not reach the app unchecked.
const NO_MESH_ROUTE_STATUS: u32 = 404;

/// Like [`inbound_routes`], but routed as the mesh routes that reach this port are, each with
/// the add-on checks of its route: ext-auth filters (off unless a route turns them on) and
/// rate-limit filters (idle on routes without actions) run after RBAC, before the router. Rate
/// limits are counted only with `count_rate_limits` (the plaintext chain). What no mirrored
/// route matches gets a 404 instead of the app.
fn inbound_routes_with_addons(name: &str, addons: &InboundAddons, count_rate_limits: bool) -> RouteConfiguration {
    let to_app = |route: &InboundRoute| Route {
        name: route.name.clone(),
        r#match: Some(routes::route_match(&route.matcher)),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(name.to_string())),
            ..Default::default()
        })),
        typed_per_filter_config: crate::addons::route_configs(&RoutePolicies {
            ext_auth: route.ext_auth.clone(),
            rate_limit: route.rate_limit.clone().filter(|_| count_rate_limits),
            ..Default::default()
        })
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let refuse = |route_name: &str| Route {
        name: route_name.to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: NO_MESH_ROUTE_STATUS,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    "no mesh route to this workload matches the request\n".to_string(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut virtual_hosts: Vec<VirtualHost> = addons
        .routes
        .virtual_hosts
        .iter()
        .map(|host| {
            let mut routes: Vec<Route> = host
                .routes
                .iter()
                .filter(|r| r.subset.iter().all(|(k, v)| addons.labels.get(k) == Some(v)))
                .map(to_app)
                .collect();
            routes.push(refuse(&format!("{}/unmatched", host.name)));
            VirtualHost {
                name: host.name.clone(),
                domains: host.domains.clone(),
                routes,
                ..Default::default()
            }
        })
        .collect();
    if !virtual_hosts.iter().any(|h| h.domains.iter().any(|d| d == "*")) {
        virtual_hosts.push(VirtualHost {
            name: format!("{name}/unmatched"),
            domains: vec!["*".to_string()],
            routes: vec![refuse(&format!("{name}/unmatched"))],
            ..Default::default()
        });
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// Everything to the app (the HCM puts the caller's identity in `x-forwarded-client-cert`).
fn inbound_routes(name: &str) -> RouteConfiguration {
    let name = name.to_string();
    RouteConfiguration {
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
    }
}

mod outbound_view;
#[cfg(test)]
mod tests;
