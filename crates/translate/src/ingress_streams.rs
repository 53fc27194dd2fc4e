//! RouteTable `tcp` and `tls` routes bound to VirtualGateways ─▶ byte-stream routes of the
//! gateways' TCP and TLS-passthrough listeners.
//!
//! Gloo's RouteTable keeps these next to `http` (`networking/v2/route_table.proto`: `TCPRoute`,
//! `TLSRoute`); see https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/route_table/
//! A route's destinations become targets here, before endpoints are resolved, so that the
//! gateways' clusters get upstreams like every other destination.
//!
//! ```text
//!  RouteTable{virtualGateways, tcp[], tls[]} ──resolve──▶ GatewayStreams ──ingress::for_cluster──▶ StreamRoute
//! ```

use serde::Deserialize;
use trellis_api::{DestinationKind, DestinationReference, Resource};
use trellis_model::Snapshot;
use trellis_model::ir::WeightedUpstream;

use crate::Warnings;
use crate::outbound::Outbound;
use crate::service_index::ServiceIndex;
use crate::target::Target;

/// Which RouteTable list a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Tcp,
    Tls,
}

/// One resolved `tcp` or `tls` route of a RouteTable bound to a gateway.
pub(crate) struct PendingStream {
    /// `namespace/name` of the VirtualGateway.
    pub gateway: String,
    pub kind: StreamKind,
    pub name: String,
    /// Listener ports the route's matchers name; empty: every listener of its kind.
    pub ports: Vec<u16>,
    /// SNI names (`tls` routes): the matchers' `sniHosts`, else the RouteTable's hosts.
    pub server_names: Vec<String>,
    /// (target index into `Outbound::targets`, weight), weights non-zero.
    pub destinations: Vec<(usize, u32)>,
}

/// Gloo's `TCPRoute` / `TLSRoute`, as far as Trellis reads them; other fields are kept by the
/// RouteTable as written.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StreamRouteSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    matchers: Vec<StreamMatcher>,
    #[serde(default)]
    forward_to: Option<StreamForward>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StreamMatcher {
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    sni_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StreamForward {
    #[serde(default)]
    destinations: Vec<DestinationReference>,
}

/// Every `tcp` and `tls` route of the route tables bound to existing gateways, oldest table
/// first. Destinations that cannot be resolved drop the route with a WARNING naming the field.
pub(crate) fn resolve(
    snapshot: &Snapshot,
    services: &ServiceIndex<'_, '_>,
    outbound: &mut Outbound,
    warnings: &mut Warnings,
) -> Vec<PendingStream> {
    let mut streams = Vec::new();
    for (resource, spec) in snapshot.route_tables() {
        if !spec.workload_selectors.is_empty() {
            continue;
        }
        if spec.virtual_gateways.is_empty() {
            // Sidecars route HTTP only: say so rather than drop the routes silently.
            for (list, routes) in [("tcp", &spec.tcp), ("tls", &spec.tls)] {
                if !routes.is_empty() {
                    warnings.add(
                        resource.key().to_string(),
                        format!("spec.{list}: served by gateways only (virtualGateways); sidecars ignore these routes"),
                    );
                }
            }
            continue;
        }
        let lists = [(StreamKind::Tcp, "tcp", &spec.tcp), (StreamKind::Tls, "tls", &spec.tls)];
        for (kind, list, routes) in lists {
            for (index, value) in routes.iter().enumerate() {
                let field = format!("spec.{list}[{index}]");
                let route: StreamRouteSpec = match serde_json::from_value(value.clone()) {
                    Ok(route) => route,
                    Err(error) => {
                        warnings.add(resource.key().to_string(), format!("{field}: {error}; not applied"));
                        continue;
                    }
                };
                let Some(destinations) = destinations(resource, &route, &field, services, outbound, warnings) else {
                    continue;
                };
                let mut server_names: Vec<String> = route
                    .matchers
                    .iter()
                    .flat_map(|m| m.sni_hosts.iter().cloned())
                    .collect();
                if server_names.is_empty() && kind == StreamKind::Tls {
                    server_names = spec.hosts.iter().filter(|h| *h != "*").cloned().collect();
                }
                // A matcher without a port matches every listener.
                let ports: Vec<u16> = if route.matchers.iter().any(|m| m.port.is_none()) {
                    Vec::new()
                } else {
                    route
                        .matchers
                        .iter()
                        .filter_map(|m| m.port.and_then(|p| u16::try_from(p).ok()))
                        .collect()
                };
                let name = if route.name.is_empty() {
                    format!(
                        "{}.{}.{list}-{index}",
                        resource.metadata.name, resource.metadata.namespace
                    )
                } else {
                    format!(
                        "{}.{}.{}",
                        resource.metadata.name, resource.metadata.namespace, route.name
                    )
                };
                for gateway in &spec.virtual_gateways {
                    let gateway_name = gateway["name"].as_str().unwrap_or_default();
                    let gateway_namespace = gateway["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(&resource.metadata.namespace);
                    streams.push(PendingStream {
                        gateway: format!("{gateway_namespace}/{gateway_name}"),
                        kind,
                        name: name.clone(),
                        ports: ports.clone(),
                        server_names: server_names.clone(),
                        destinations: destinations.clone(),
                    });
                }
            }
        }
    }
    streams
}

/// The route's weighted targets (unset weights count 0 unless all are unset), or `None` with a
/// WARNING when one cannot be resolved or none is left.
fn destinations(
    resource: &Resource,
    route: &StreamRouteSpec,
    field: &str,
    services: &ServiceIndex<'_, '_>,
    outbound: &mut Outbound,
    warnings: &mut Warnings,
) -> Option<Vec<(usize, u32)>> {
    let key = resource.key().to_string();
    let Some(forward) = route.forward_to.as_ref().filter(|f| !f.destinations.is_empty()) else {
        warnings.add(key, format!("{field}.forwardTo: no destinations; not applied"));
        return None;
    };
    let mut found = Vec::new();
    for (d, destination) in forward.destinations.iter().enumerate() {
        match target(&resource.metadata.namespace, destination, services, outbound) {
            Ok(index) => found.push((index, destination.weight)),
            Err(problem) => {
                warnings.add(
                    key,
                    format!("{field}.forwardTo.destinations[{d}]: {problem}; the route is not applied"),
                );
                return None;
            }
        }
    }
    let all_unset = found.iter().all(|(_, w)| w.is_none());
    let weighted: Vec<(usize, u32)> = found
        .into_iter()
        .map(|(t, w)| (t, if all_unset { 1 } else { w.unwrap_or(0) }))
        .filter(|(_, w)| *w > 0)
        .collect();
    if weighted.is_empty() {
        warnings.add(
            key,
            format!("{field}.forwardTo: every destination has weight 0; not applied"),
        );
        return None;
    }
    Some(weighted)
}

/// The index of the destination's target in `outbound.targets`, added there when new.
fn target(
    namespace: &str,
    destination: &DestinationReference,
    services: &ServiceIndex<'_, '_>,
    outbound: &mut Outbound,
) -> Result<usize, String> {
    let reference = &destination.reference;
    let ref_namespace = if reference.namespace.is_empty() {
        namespace
    } else {
        reference.namespace.as_str()
    };
    let number = destination.port.as_ref().and_then(|p| p.number);
    let port_name = destination.port.as_ref().and_then(|p| p.name.clone());
    match destination.kind {
        DestinationKind::VirtualDestination => {
            // Every VirtualDestination port already has a target (its default route's).
            let candidates: Vec<usize> = (0..outbound.targets.len())
                .filter(|&i| {
                    let t = &outbound.targets[i];
                    t.subset == destination.subset
                        && t.virtual_destination
                            .as_ref()
                            .is_some_and(|vd| vd.namespace == ref_namespace && vd.name == reference.name)
                })
                .collect();
            let chosen = match number {
                Some(n) => candidates
                    .iter()
                    .copied()
                    .find(|&i| u32::from(outbound.targets[i].port) == n),
                None if candidates.len() == 1 => candidates.first().copied(),
                None => None,
            };
            chosen.ok_or_else(|| {
                format!(
                    "VirtualDestination {ref_namespace}/{} with this port{} not found (give port.number)",
                    reference.name,
                    if destination.subset.is_empty() {
                        ""
                    } else {
                        " and subset"
                    }
                )
            })
        }
        DestinationKind::Service => {
            let backends = services.backends(
                ref_namespace,
                &reference.name,
                &reference.cluster,
                number,
                port_name.as_deref(),
            );
            let port = backends
                .first()
                .map(|b| b.port)
                .or(number.and_then(|n| u16::try_from(n).ok()))
                .ok_or_else(|| {
                    format!(
                        "service {ref_namespace}/{}: give port.number, the service is not discovered yet",
                        reference.name
                    )
                })?;
            let scope = if reference.cluster.is_empty() {
                "mesh"
            } else {
                reference.cluster.as_str()
            };
            let target = Target {
                host: format!("{}.{}.svc.{}", reference.name, ref_namespace, scope),
                port,
                subset: destination.subset.clone(),
                backends,
                virtual_destination: None,
            };
            Ok(intern(outbound, target))
        }
        DestinationKind::ExternalService => {
            Err("EXTERNAL_SERVICE destinations are not supported on TCP and TLS routes yet".to_string())
        }
    }
}

/// Equal upstream names are one target (they would be one Envoy cluster).
fn intern(outbound: &mut Outbound, target: Target) -> usize {
    let name = target.upstream_name();
    if let Some(index) = outbound.targets.iter().position(|t| t.upstream_name() == name) {
        return index;
    }
    outbound.targets.push(target);
    outbound.targets.len() - 1
}

/// A stream's destinations as upstream names.
pub(crate) fn weighted_upstreams(outbound: &Outbound, destinations: &[(usize, u32)]) -> Vec<WeightedUpstream> {
    destinations
        .iter()
        .map(|(index, weight)| WeightedUpstream {
            upstream: outbound.targets[*index].upstream_name(),
            weight: *weight,
        })
        .collect()
}
