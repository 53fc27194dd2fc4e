//! ExternalService + ExternalEndpoint ─▶ outbound virtual hosts and upstreams for destinations
//! outside the mesh. Every cluster's sidecars may reach them; an ExternalService whose
//! `selector` matches no ExternalEndpoint is reached by resolving its host name.
//!
//! Egress stays closed for everything else: a sidecar routes only the hosts the mesh knows.

use trellis_api::{ExternalEndpointSpec, Spec};
use trellis_model::Snapshot;
use trellis_model::ir::{Endpoint, ExternalUpstream, Forward, RouteAction, RouteMatch, Upstream, WeightedUpstream};

use crate::Warnings;
use crate::outbound::{Outbound, OutboundHost, PendingAction, PendingRoute};
use crate::report::Report;

pub(crate) fn build(
    snapshot: &Snapshot,
    outbound: &mut Outbound,
    workspaces: &crate::workspaces::Workspaces,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<Upstream> {
    let endpoints: Vec<(&std::collections::BTreeMap<String, String>, &str, &ExternalEndpointSpec)> = snapshot
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ExternalEndpoint(spec) => Some((&r.metadata.labels, r.metadata.namespace.as_str(), spec)),
            _ => None,
        })
        .collect();
    let mut upstreams = Vec::new();
    for resource in &snapshot.resources {
        let Spec::ExternalService(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        if !spec.addresses.is_empty() {
            warnings.add(&key, "addresses (CIDR) are not supported yet; only hosts are served");
        }
        // Gloo sends such traffic through the egress gateway's VirtualGateway listener that
        // exposes this service; Trellis does not know where gateway proxies run, so it leaves
        // from the client's sidecar as without the field. Said, not silently ignored.
        for (p, port) in spec.ports.iter().enumerate() {
            if port.egress_gateway_routes.is_some() {
                warnings.add(
                    &key,
                    format!(
                        "spec.ports[{p}].egressGatewayRoutes: egress gateways are not supported yet; traffic to this \
                         port leaves from the client's sidecar directly"
                    ),
                );
            }
        }
        for host in &spec.hosts {
            if host.starts_with("*.") {
                warnings.add(&key, format!("{host}: wildcard hosts are not served yet"));
                continue;
            }
            for port in &spec.ports {
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let vhost = format!("{host}:{number}");
                if outbound.virtual_hosts.iter().any(|h| h.name == vhost) {
                    warnings.add(&key, format!("{vhost} is already a mesh host; ignored here"));
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
                let name = format!("outbound|{number}||{host}");
                upstreams.push(Upstream {
                    name: name.clone(),
                    key: format!("outbound_.{number}_._.{host}"),
                    endpoints,
                    identities: Vec::new(),
                    outlier_detection: None,
                    traffic: None,
                    workspaces: workspaces.visibility_of_resource(snapshot, resource),
                    external: Some(match tls {
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
                    }),
                    locality_weights: Default::default(),
                });
                let domains = if number == 80 {
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
                    routes: vec![PendingRoute {
                        name: "default".to_string(),
                        matcher: RouteMatch::default(),
                        action: PendingAction::Fixed(RouteAction::Forward(Forward {
                            destinations: vec![WeightedUpstream {
                                upstream: name,
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
    outbound.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    upstreams
}
