//! ExternalService + ExternalEndpoint ─▶ outbound virtual hosts and upstreams for destinations
//! outside the mesh. Every cluster's sidecars may reach them; an ExternalService whose
//! `selector` matches no ExternalEndpoint is reached by resolving its host name.
//!
//! Egress stays closed for everything else: a sidecar routes only the hosts the mesh knows.
//!
//! A port with `egressGatewayRoutes` is not reached from the sidecar: clients address its
//! `portMatch`, their sidecars send that to the egress gateway over mesh mTLS (see `egress`),
//! and only the gateway holds the route to the destination.

use trellis_api::{ExternalEndpointSpec, Spec};
use trellis_model::Snapshot;
use trellis_model::ir::{Endpoint, ExternalUpstream, Forward, RouteAction, RouteMatch, Upstream, WeightedUpstream};

use crate::Warnings;
use crate::egress::EgressRoute;
use crate::outbound::{Outbound, OutboundHost, PendingAction, PendingRoute};
use crate::report::Report;

/// The external upstreams, and the ports routed through egress gateways.
pub(crate) fn build(
    snapshot: &Snapshot,
    outbound: &mut Outbound,
    workspaces: &crate::workspaces::Workspaces,
    report: &mut Report,
    warnings: &mut Warnings,
) -> (Vec<Upstream>, Vec<EgressRoute>) {
    let endpoints: Vec<(&std::collections::BTreeMap<String, String>, &str, &ExternalEndpointSpec)> = snapshot
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ExternalEndpoint(spec) => Some((&r.metadata.labels, r.metadata.namespace.as_str(), spec)),
            _ => None,
        })
        .collect();
    let mut upstreams = Vec::new();
    let mut egress_routes = Vec::new();
    // Client-side hosts that go through an egress gateway.
    let mut egress_hosts: std::collections::BTreeSet<String> = Default::default();
    // Egress ports of every ExternalService first: a `portMatch` host wins over a direct port of
    // the same host and number (in this service or another), so no request meant for the gateway
    // leaves from the sidecar.
    for egress_pass in [true, false] {
        for resource in &snapshot.resources {
            let Spec::ExternalService(spec) = &resource.spec else {
                continue;
            };
            let key = resource.key().to_string();
            if !spec.addresses.is_empty() {
                warnings.add(&key, "addresses (CIDR) are not supported yet; only hosts are served");
            }
            for host in &spec.hosts {
                if host.starts_with("*.") {
                    warnings.add(&key, format!("{host}: wildcard hosts are not served yet"));
                    continue;
                }
                for (p, port) in spec.ports.iter().enumerate() {
                    if port.egress_gateway_routes.is_some() != egress_pass {
                        continue;
                    }
                    let Ok(number) = u16::try_from(port.number) else {
                        continue;
                    };
                    let egress = port
                        .egress_gateway_routes
                        .as_ref()
                        .and_then(|r| Some((r, u16::try_from(r.effective_port_match()).ok()?)));
                    // What clients address: the port itself, or its egress `portMatch`.
                    let client_port = egress.map_or(number, |(_, port_match)| port_match);
                    let vhost = format!("{host}:{client_port}");
                    if egress_hosts.contains(&vhost) {
                        warnings.add(
                            &key,
                            format!(
                                "spec.ports[{p}]: {vhost} is an egressGatewayRoutes.portMatch; requests to it go \
                             through the egress gateway, not directly"
                            ),
                        );
                        continue;
                    }
                    if outbound.virtual_hosts.iter().any(|h| h.name == vhost) {
                        warnings.add(&key, format!("{vhost} is already a mesh host; ignored here"));
                        continue;
                    }
                    // One gateway upstream per destination host and port: Envoy refuses a
                    // config that names a cluster twice.
                    if egress.is_some()
                        && egress_routes
                            .iter()
                            .any(|r: &EgressRoute| r.upstream == format!("external|{number}||{host}"))
                    {
                        warnings.add(
                            &key,
                            format!(
                                "spec.ports[{p}].egressGatewayRoutes: {host}:{number} is already routed through an \
                                 egress gateway by another port; ignored here"
                            ),
                        );
                        continue;
                    }
                    let selected: Vec<Endpoint> = if spec.selector.is_empty() {
                        Vec::new()
                    } else {
                        endpoints
                            .iter()
                            .filter(|(labels, namespace, _)| {
                                *namespace == resource.metadata.namespace
                                    && spec.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                            })
                            .filter_map(|(_, _, endpoint)| {
                                let endpoint_port = endpoint
                                    .ports
                                    .iter()
                                    .find(|p| !port.name.is_empty() && p.name == port.name)
                                    .map(|p| p.number)
                                    .unwrap_or(port.number);
                                Some(Endpoint {
                                    address: endpoint.address.clone(),
                                    port: u16::try_from(endpoint_port).ok()?,
                                    weight: 1,
                                    cluster: String::new(),
                                    via_gateway: false,
                                    priority: 0,
                                })
                            })
                            .collect()
                    };
                    let dns =
                        selected.is_empty() || selected.iter().any(|e| e.address.parse::<std::net::IpAddr>().is_err());
                    let endpoints = if selected.is_empty() {
                        vec![Endpoint {
                            address: host.clone(),
                            port: number,
                            weight: 1,
                            cluster: String::new(),
                            via_gateway: false,
                            priority: 0,
                        }]
                    } else {
                        selected
                    };
                    let tls = match crate::external_tls::originated(
                        snapshot,
                        &resource.metadata.namespace,
                        host,
                        &spec.subject_alt_names,
                        port.clientside_tls.as_ref(),
                    ) {
                        Ok(tls) => tls,
                        Err(problem) => {
                            warnings.add(
                                &key,
                                format!("port {number}: clientsideTls.{problem}; {host}:{number} is not reachable"),
                            );
                            continue;
                        }
                    };
                    // The gateway's upstream has a name of its own: a direct port of another service
                    // on the same host and number must not collide with it.
                    let name = if egress.is_some() {
                        format!("external|{number}||{host}")
                    } else {
                        format!("outbound|{number}||{host}")
                    };
                    let visibility = workspaces.visibility_of_resource(snapshot, resource);
                    upstreams.push(Upstream {
                        name: name.clone(),
                        key: format!("outbound_.{number}_._.{host}"),
                        endpoints,
                        identities: Vec::new(),
                        outlier_detection: None,
                        traffic: None,
                        // Behind an egress gateway no sidecar may see it (no workspace does): only
                        // the gateway, which takes the upstreams its routes name, reaches it.
                        workspaces: if egress.is_some() {
                            Some(Vec::new())
                        } else {
                            visibility.clone()
                        },
                        external: Some(Box::new(match tls {
                            Some(tls) => ExternalUpstream {
                                dns,
                                tls_sni: Some(tls.sni),
                                tls_verify: tls.verify,
                                tls_client: tls.client,
                            },
                            None => ExternalUpstream {
                                dns,
                                ..Default::default()
                            },
                        })),
                        locality_weights: Default::default(),
                        terminate_tls: false,
                    });
                    let mut target = name;
                    if let Some((routes, port_match)) = egress {
                        let route = EgressRoute {
                            key: key.clone(),
                            field: format!("spec.ports[{p}].egressGatewayRoutes"),
                            namespace: resource.metadata.namespace.clone(),
                            name: resource.metadata.name.clone(),
                            labels: resource.metadata.labels.clone(),
                            host: host.clone(),
                            port_match,
                            upstream: target,
                            refs: routes.virtual_gateway_refs.clone(),
                            workspaces: visibility,
                            policies: Vec::new(),
                        };
                        target = route.sidecar_upstream();
                        egress_routes.push(route);
                        egress_hosts.insert(vhost.clone());
                    }
                    let domains = if client_port == 80 {
                        vec![host.clone(), format!("{host}:80")]
                    } else {
                        vec![vhost.clone()]
                    };
                    outbound.virtual_hosts.push(OutboundHost {
                        name: vhost,
                        domains,
                        workspaces: workspaces.visibility_of_resource(snapshot, resource),
                        cluster: None,
                        clients: None,
                        route_table: None,
                        routes: vec![PendingRoute {
                            name: "default".to_string(),
                            matcher: RouteMatch::default(),
                            action: PendingAction::Fixed(RouteAction::Forward(Forward {
                                destinations: vec![WeightedUpstream {
                                    upstream: target,
                                    weight: 1,
                                }],
                                path_rewrite: None,
                                host_rewrite: None,
                            })),
                            table: None,
                            policies: Default::default(),
                            destination_rate_limit: None,
                        }],
                    });
                    report.entry(&key).applied += 1;
                }
            }
        }
    }
    outbound.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    (upstreams, egress_routes)
}
