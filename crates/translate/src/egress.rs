//! ExternalService `egressGatewayRoutes` ─▶ egress through gateway proxies, as Gloo Mesh 2.x
//! documents it (https://docs.solo.io/gloo-mesh-enterprise/2.6.x/traffic_management/forward-requests/external-service/egress-gateway/,
//! solo-apis `networking/v2/external_service.proto` and `virtual_gateway.proto`):
//!
//! ```text
//!  app ─http://host[:portMatch]─▶ sidecar ─mesh mTLS─▶ egress gateway ─plain or TLS─▶ host:number
//!         (virtual host host:portMatch,      (VirtualGateway ISTIO_MUTUAL listener exposing the
//!          upstream egress|portMatch||host:   service; AccessPolicies on the EXTERNAL_SERVICE
//!          the gateway proxies' addresses)    checked on the client's identity; 403 otherwise)
//! ```
//!
//! The management server learns where gateway proxies run from discovery: each agent
//! announces its registered gateways (labels, listen address, identity) as it does workloads. A
//! sidecar reaches the gateways of its own cluster only, checks that they present a gateway's
//! identity, and has no route of its own to the destination: the external upstream is visible
//! to no sidecar, so egress that bypasses the gateway is not routed.

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::{ExternalServiceFilter, GatewayListener, ObjectReference, Resource, Spec, VirtualGatewaySpec};
use trellis_model::Snapshot;
use trellis_model::ir::{
    Endpoint, Forward, HostAccess, Route, RouteAction, RouteMatch, Upstream, VirtualHost, Visibility, WeightedUpstream,
};
use trellis_model::policy::InboundPolicy;

use crate::Warnings;

/// One ExternalService host and port routed through egress gateways.
#[derive(Debug, Clone)]
pub(crate) struct EgressRoute {
    /// `ExternalService/<namespace>/<name>`: where its warnings go.
    pub key: String,
    /// `spec.ports[i].egressGatewayRoutes`.
    pub field: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    /// The port clients address.
    pub port_match: u16,
    /// The external upstream the gateway forwards to.
    pub upstream: String,
    pub refs: Vec<ObjectReference>,
    /// Who may see the client-side host and upstream.
    pub workspaces: Visibility,
    /// AccessPolicies that select the ExternalService, enforced at the gateway.
    pub policies: Vec<InboundPolicy>,
}

impl EgressRoute {
    /// The upstream a client sidecar sends to: the egress gateway proxies.
    pub(crate) fn sidecar_upstream(&self) -> String {
        format!("egress|{}||{}", self.port_match, self.host)
    }

    /// The gateway's virtual host for it.
    fn gateway_host(&self) -> String {
        format!("egress|{}:{}", self.host, self.port_match)
    }

    fn domains(&self) -> Vec<String> {
        if self.port_match == 80 {
            vec![self.host.clone(), format!("{}:80", self.host)]
        } else {
            vec![format!("{}:{}", self.host, self.port_match)]
        }
    }

    /// The VirtualGateways it names, with their `namespace/name`.
    fn gateways<'s>(&self, snapshot: &'s Snapshot) -> Vec<(String, Option<(&'s Resource, &'s VirtualGatewaySpec)>)> {
        self.refs
            .iter()
            .map(|r| {
                let namespace = if r.namespace.is_empty() {
                    &self.namespace
                } else {
                    &r.namespace
                };
                let found = snapshot.resources.iter().find_map(|g| match &g.spec {
                    Spec::VirtualGateway(spec) if g.metadata.namespace == *namespace && g.metadata.name == r.name => {
                        Some((g, spec))
                    }
                    _ => None,
                });
                (format!("{namespace}/{}", r.name), found)
            })
            .collect()
    }
}

/// An egress listener: HTTP, terminating the mesh's own mTLS (only mesh clients get in, and the
/// gateway sees who they are), and exposing the route's service.
fn serves(gateway: &Resource, listener: &GatewayListener, route: &EgressRoute) -> bool {
    let mesh_mutual = listener
        .tls
        .as_ref()
        .is_some_and(|t| t.effective_mode() == "ISTIO_MUTUAL");
    mesh_mutual
        && listener.tcp.is_none()
        && (listener.exposed_external_services.is_empty()
            || listener
                .exposed_external_services
                .iter()
                .any(|f| exposes(f, &gateway.metadata.namespace, route)))
}

/// `[namespace/]host` with `*` (any namespace, the default) or `.` (the gateway's), a host that
/// is `*`, `*.suffix` or exact; then the selector, if any, on the service's metadata.
fn exposes(filter: &ExternalServiceFilter, gateway_namespace: &str, route: &EgressRoute) -> bool {
    let (namespace, host) = filter.host.rsplit_once('/').unwrap_or(("*", filter.host.as_str()));
    let namespace_ok = match namespace {
        "*" | "" => true,
        "." => route.namespace == gateway_namespace,
        other => route.namespace == other,
    };
    let host_ok = host == "*"
        || host == route.host
        || host
            .strip_prefix("*.")
            .is_some_and(|suffix| route.host.ends_with(&format!(".{suffix}")));
    let selector_ok = filter.selector.as_ref().is_none_or(|s| {
        (s.name.is_empty() || s.name == route.name)
            && (s.namespace.is_empty() || s.namespace == route.namespace)
            && s.labels.iter().all(|(k, v)| route.labels.get(k) == Some(v))
    });
    namespace_ok && host_ok && selector_ok
}

/// Says, once per route, which named gateways cannot carry it: traffic to it then fails
/// (no gateway endpoint) rather than leaving from the sidecar.
pub(crate) fn check(snapshot: &Snapshot, routes: &[EgressRoute], warnings: &mut Warnings) {
    for route in routes {
        for (j, (name, found)) in route.gateways(snapshot).into_iter().enumerate() {
            let field = format!("{}.virtualGatewayRefs[{j}]", route.field);
            match found {
                None => warnings.add(
                    &route.key,
                    format!(
                        "{field}: VirtualGateway {name} does not exist; requests to {}:{} are not served",
                        route.host, route.port_match
                    ),
                ),
                Some((gateway, spec)) if !spec.listeners.iter().any(|l| serves(gateway, l, route)) => warnings.add(
                    &route.key,
                    format!(
                        "{field}: VirtualGateway {name} has no http listener with tls.mode ISTIO_MUTUAL that \
                         exposes {}; requests to {}:{} are not served",
                        route.host, route.host, route.port_match
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

/// The upstreams `cluster`'s sidecars send egress traffic to: the gateway proxies registered
/// in that cluster that the named VirtualGateways select, on their first listener serving the
/// route; with none, an upstream without endpoints (503), never a direct path.
pub(crate) fn sidecar_upstreams(snapshot: &Snapshot, routes: &[EgressRoute], cluster: &str) -> Vec<Upstream> {
    let gateways = snapshot
        .discovery
        .get(cluster)
        .map(|d| d.gateways.as_slice())
        .unwrap_or_default();
    let mut out: Vec<Upstream> = Vec::new();
    for route in routes {
        let mut endpoints = BTreeSet::new();
        let mut identities = BTreeSet::new();
        for (reference, (_, found)) in route.refs.iter().zip(route.gateways(snapshot)) {
            let Some((gateway, spec)) = found else { continue };
            if !reference.cluster.is_empty() && reference.cluster != cluster {
                continue;
            }
            let selector = spec.workloads.first().map(|w| w.selector.clone()).unwrap_or_default();
            if !selector.cluster.is_empty() && selector.cluster != cluster {
                continue;
            }
            let Some(port) = spec
                .listeners
                .iter()
                .find(|l| serves(gateway, l, route))
                .and_then(|l| u16::try_from(l.port.number).ok())
            else {
                continue;
            };
            for instance in gateways
                .iter()
                .filter(|g| selector.labels.iter().all(|(k, v)| g.labels.get(k) == Some(v)))
            {
                endpoints.insert((instance.address.clone(), instance.port(port)));
                identities.insert(trellis_model::spiffe_id(
                    &snapshot.trust_domain,
                    &instance.namespace,
                    &instance.service_account,
                ));
            }
        }
        out.push(Upstream {
            name: route.sidecar_upstream(),
            key: format!("outbound_.{}_._.{}", route.port_match, route.host),
            endpoints: endpoints
                .into_iter()
                .map(|(address, port)| Endpoint {
                    address,
                    port,
                    weight: 1,
                    cluster: cluster.to_string(),
                    via_gateway: false,
                    priority: 0,
                })
                .collect(),
            identities: identities.into_iter().collect(),
            outlier_detection: None,
            traffic: None,
            workspaces: route.workspaces.clone(),
            external: None,
            locality_weights: Default::default(),
            terminate_tls: false,
        });
    }
    out
}

/// What one listener of a VirtualGateway serves for egress: a virtual host per route through it,
/// forwarding to the destination, and the AccessPolicies guarding each.
pub(crate) fn gateway_hosts(
    gateway: &Resource,
    listener: &GatewayListener,
    routes: &[EgressRoute],
    snapshot: &Snapshot,
) -> Vec<(VirtualHost, HostAccess)> {
    let name = format!("{}/{}", gateway.metadata.namespace, gateway.metadata.name);
    routes
        .iter()
        .filter(|route| {
            route
                .gateways(snapshot)
                .iter()
                .any(|(n, found)| *n == name && found.is_some())
        })
        .filter(|route| serves(gateway, listener, route))
        .map(|route| {
            let host = VirtualHost {
                name: route.gateway_host(),
                domains: route.domains(),
                routes: vec![Route {
                    name: format!("{}/{}", route.namespace, route.name),
                    matcher: RouteMatch::default(),
                    action: RouteAction::Forward(Forward {
                        destinations: vec![WeightedUpstream {
                            upstream: route.upstream.clone(),
                            weight: 1,
                        }],
                        path_rewrite: None,
                        host_rewrite: None,
                    }),
                    policies: Default::default(),
                }],
                workspaces: None,
                clients: None,
            };
            let access = HostAccess {
                host: host.name.clone(),
                policies: route.policies.clone(),
            };
            (host, access)
        })
        .collect()
}
