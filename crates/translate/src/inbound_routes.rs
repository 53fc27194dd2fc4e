//! Add-on policies at the destination: the routes that reach a local service port, mirrored for
//! its workloads' sidecars when any of them carries an ExtAuthPolicy or a rate limit counted
//! there (see `addons` for which). A caller that skips its own sidecar or the ingress gateway
//! and connects to the destination's sidecar meets the policy of the route its request matches.
//!
//! The mirror matches what the destination receives: the hosts the route serves (its host
//! rewrite when it has one) and the route's matcher. A route that rewrites the path cannot be
//! recognised by its matcher any more, so it becomes a catch-all of its host placed after every
//! exact mirror: stricter for unknown paths, never looser. Every service port with no protected
//! route keeps its plain inbound listener; on a protected one a request whose host matches no
//! route is refused (see `trellis-envoy`), since no mesh route would have sent it there.

use std::collections::{BTreeMap, BTreeSet};

use trellis_model::addons::{InboundRoute, InboundRoutes, InboundVirtualHost};
use trellis_model::ir::RouteMatch;

use crate::outbound::{Outbound, OutboundHost, PendingAction, PendingRoute};

/// (namespace, service, service port) of a local backend.
type BackendKey = (String, String, u16);

fn protected(route: &PendingRoute) -> bool {
    route.policies.ext_auth.is_some() || route.destination_rate_limit.is_some()
}

fn hosts(outbound: &Outbound) -> impl Iterator<Item = &OutboundHost> {
    outbound
        .virtual_hosts
        .iter()
        .chain(outbound.ingress.iter().map(|(_, host)| host))
}

/// The local backends a route forwards to, with the subset of each.
fn local_backends<'o>(
    route: &PendingRoute,
    outbound: &'o Outbound,
    cluster: &'o str,
) -> impl Iterator<Item = (BackendKey, &'o BTreeMap<String, String>)> + 'o {
    let targets: Vec<usize> = match &route.action {
        PendingAction::Forward { destinations, .. } => destinations.iter().map(|(t, _)| *t).collect(),
        PendingAction::Fixed(_) => Vec::new(),
    };
    targets.into_iter().flat_map(move |t| {
        let target = &outbound.targets[t];
        target
            .backends
            .iter()
            .filter(move |b| b.cluster == cluster)
            .map(move |b| ((b.namespace.clone(), b.service.clone(), b.port), &target.subset))
    })
}

pub(crate) fn for_cluster(outbound: &Outbound, cluster: &str) -> Vec<InboundRoutes> {
    let keys: BTreeSet<BackendKey> = hosts(outbound)
        .flat_map(|h| &h.routes)
        .filter(|r| protected(r))
        .flat_map(|r| local_backends(r, outbound, cluster).map(|(key, _)| key))
        .collect();
    keys.into_iter()
        .map(|key| {
            // Per domain, the mirrored routes in order: exact mirrors first, then the catch-alls
            // of routes that rewrite the path.
            let mut exact: BTreeMap<String, Vec<InboundRoute>> = BTreeMap::new();
            let mut rewritten: BTreeMap<String, Vec<InboundRoute>> = BTreeMap::new();
            for host in hosts(outbound) {
                for route in &host.routes {
                    let PendingAction::Forward {
                        path_rewrite,
                        host_rewrite,
                        ..
                    } = &route.action
                    else {
                        continue;
                    };
                    let domains = match host_rewrite {
                        Some(rewrite) => vec![rewrite.clone(), format!("{rewrite}:*")],
                        None => host.domains.clone(),
                    };
                    for (backend, subset) in local_backends(route, outbound, cluster) {
                        if backend != key {
                            continue;
                        }
                        let mirror = InboundRoute {
                            name: format!("{}/{}", host.name, route.name),
                            matcher: if path_rewrite.is_some() {
                                RouteMatch::default()
                            } else {
                                route.matcher.clone()
                            },
                            subset: subset.clone(),
                            ext_auth: route.policies.ext_auth.clone(),
                            rate_limit: route.destination_rate_limit.clone(),
                        };
                        let lists = if path_rewrite.is_some() {
                            &mut rewritten
                        } else {
                            &mut exact
                        };
                        for domain in &domains {
                            let list = lists.entry(domain.clone()).or_default();
                            if !list.contains(&mirror) {
                                list.push(mirror.clone());
                            }
                        }
                    }
                }
            }
            for (domain, routes) in rewritten {
                exact.entry(domain).or_default().extend(routes);
            }
            // Envoy wants each domain in one virtual host: domains with the same routes share one.
            let mut grouped: Vec<(Vec<InboundRoute>, Vec<String>)> = Vec::new();
            for (domain, routes) in exact {
                match grouped.iter_mut().find(|(r, _)| *r == routes) {
                    Some((_, domains)) => domains.push(domain),
                    None => grouped.push((routes, vec![domain])),
                }
            }
            let mut virtual_hosts: Vec<InboundVirtualHost> = grouped
                .into_iter()
                .map(|(routes, domains)| InboundVirtualHost {
                    name: domains[0].clone(),
                    domains,
                    routes,
                })
                .collect();
            virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
            let (namespace, service, port) = key;
            InboundRoutes {
                namespace,
                service,
                port,
                virtual_hosts,
            }
        })
        .collect()
}
