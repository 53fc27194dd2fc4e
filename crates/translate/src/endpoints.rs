//! Per cluster: Targets ─▶ Upstreams with concrete endpoints, and the east-west gateway's view.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_model::ir::{Endpoint, Upstream, VirtualHost, Visibility};
use trellis_model::{ClusterConfig, Snapshot, Workload};

use crate::Warnings;
use crate::destination_policies::UpstreamPolicy;
use crate::outbound::Outbound;
use crate::service_index::ServiceIndex;
use crate::target::{Backend, Target};

/// The workloads behind one target, per cluster, resolved once and shared by every cluster's
/// config (each cluster used to rescan every service per target: clusters × targets × services).
pub(crate) struct TargetWorkloads<'a> {
    /// Cluster ─▶ matching workloads with the inbound port serving the backend's service port.
    by_cluster: BTreeMap<&'a str, Vec<(&'a Workload, u16)>>,
    /// SPIFFE identities of all of them, sorted.
    identities: Vec<String>,
}

pub(crate) fn resolve<'a>(
    snapshot: &Snapshot,
    services: &ServiceIndex<'a, '_>,
    targets: &'a [Target],
) -> Vec<TargetWorkloads<'a>> {
    targets
        .iter()
        .map(|target| {
            let mut by_cluster: BTreeMap<&str, Vec<(&Workload, u16)>> = BTreeMap::new();
            for backend in &target.backends {
                let found = matching_workloads(services, target, backend);
                by_cluster.entry(backend.cluster.as_str()).or_default().extend(found);
            }
            let mut identities: Vec<String> = by_cluster
                .values()
                .flatten()
                .map(|(workload, _)| {
                    trellis_model::spiffe_id(&snapshot.trust_domain, &workload.namespace, &workload.service_account)
                })
                .collect();
            identities.sort();
            identities.dedup();
            TargetWorkloads { by_cluster, identities }
        })
        .collect()
}

/// What every cluster's upstreams of one translation share.
#[derive(Default)]
pub(crate) struct SharedUpstreams {
    /// Upstreams that look the same from every cluster without backends of their target (remote
    /// endpoints only, no failover priorities): built for the first such cluster, shared by the
    /// rest.
    upstreams: Vec<Option<Arc<Upstream>>>,
    /// Target indices in the order of their upstreams' names: each cluster's upstreams come out
    /// sorted, instead of a thousand clusters each sorting ten thousand names.
    by_name: Option<Vec<usize>>,
    /// Cluster ─▶ indices of the targets with backends there: a cluster finds its own few
    /// targets at once, instead of looking itself up in every target's backends.
    with_backends: Option<BTreeMap<String, Vec<usize>>>,
}

impl SharedUpstreams {
    pub(crate) fn new() -> Self {
        SharedUpstreams::default()
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn materialize(
    cluster: &str,
    snapshot: &Snapshot,
    resolved: &[TargetWorkloads<'_>],
    outbound: &Outbound,
    // This cluster's virtual hosts, shared (`Arc`) with the other clusters': built by the caller.
    virtual_hosts: &[Arc<VirtualHost>],
    scopes: &BTreeMap<String, Visibility>,
    upstream_policies: &[UpstreamPolicy],
    // Targets only one cluster needs (see `Outbound::cluster_local_targets`).
    local_to: &[Option<&str>],
    shared: &mut SharedUpstreams,
    warnings: &mut Warnings,
) -> ClusterConfig {
    let SharedUpstreams {
        upstreams: shared,
        by_name,
        with_backends,
    } = shared;
    shared.resize(outbound.targets.len(), None);
    let by_name = by_name.get_or_insert_with(|| {
        let names: Vec<String> = outbound.targets.iter().map(Target::upstream_name).collect();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|a, b| names[*a].cmp(&names[*b]));
        order
    });
    let with_backends = with_backends.get_or_insert_with(|| {
        let mut index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, workloads) in resolved.iter().enumerate() {
            for cluster in workloads.by_cluster.keys() {
                index.entry(cluster.to_string()).or_default().push(i);
            }
        }
        index
    });
    let mut has_backends_here = vec![false; outbound.targets.len()];
    for &i in with_backends.get(cluster).into_iter().flatten() {
        has_backends_here[i] = true;
    }
    let mut upstreams = Vec::with_capacity(outbound.targets.len());
    let mut gateway_upstreams = Vec::new();
    for &index in by_name.iter() {
        let only_for = local_to.get(index).copied().flatten();
        if only_for.is_some_and(|owner| owner != cluster) {
            continue;
        }
        let (target, policy, workloads) = (&outbound.targets[index], &upstream_policies[index], &resolved[index]);
        let mut build = || {
            let name = target.upstream_name();
            Arc::new(Upstream {
                key: target.key(),
                endpoints: client_endpoints(cluster, snapshot, workloads, target, policy, warnings),
                identities: client_identities(snapshot, target, workloads),
                outlier_detection: policy.outlier_detection.clone().map(Box::new),
                traffic: policy.traffic.clone().map(Box::new),
                workspaces: scopes.get(&name).cloned().flatten(),
                external: None,
                locality_weights: policy.locality_weights(snapshot, cluster),
                terminate_tls: false,
                name,
            })
        };
        let remote_only = !has_backends_here[index] && policy.failover.is_none();
        let upstream = if remote_only {
            shared[index].get_or_insert_with(build).clone()
        } else {
            build()
        };
        upstreams.push(upstream);
        // The gateway serves every target with backends here, also one only this cluster's own
        // sidecars use today (a Kubernetes name): when a route elsewhere starts using it, that
        // cluster's sidecars may get the route before this gateway gets a new chain, and their
        // first connections would be closed. Gateways serve whatever is here, as Istio's
        // AUTO_PASSTHROUGH does; the destination sidecar still authorizes every caller.
        if !has_backends_here[index] {
            continue;
        }
        let local = local_endpoints(cluster, workloads);
        if !local.is_empty() {
            gateway_upstreams.push(Upstream {
                name: target.gateway_upstream_name(),
                key: target.key(),
                endpoints: local,
                identities: workloads.identities.clone(),
                outlier_detection: None,
                traffic: None,
                workspaces: None,
                external: None,
                locality_weights: Default::default(),
                terminate_tls: target.terminates_at_gateway(),
            });
        }
    }
    debug_assert!(upstreams.is_sorted_by(|a, b| a.name <= b.name));
    gateway_upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterConfig {
        cluster: cluster.to_string(),
        trust_domain: snapshot.trust_domain.clone(),
        upstreams,
        virtual_hosts: virtual_hosts.to_vec(),
        gateway_upstreams,
        inbound_policies: Vec::new(),
        namespace_workspaces: Default::default(),
        ingress_gateways: Vec::new(),
        addon_servers: Vec::new(),
        addons: Default::default(),
        inbound_routes: Vec::new(),
        access_logs: Vec::new(),
    }
}

/// Workloads of one backend that carry the target's subset labels, with the inbound port that
/// serves the backend's service port.
fn matching_workloads<'a>(
    services: &ServiceIndex<'a, '_>,
    target: &Target,
    backend: &Backend,
) -> Vec<(&'a Workload, u16)> {
    let Some(service) = services.get(&backend.cluster, &backend.namespace, &backend.service) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for workload in &service.workloads {
        let in_subset = target.subset.iter().all(|(k, v)| workload.labels.get(k) == Some(v));
        let port = workload.ports.iter().find(|p| p.port == backend.port);
        if let (true, Some(port)) = (in_subset, port) {
            found.push((*workload, port.inbound_port));
        }
    }
    found
}

/// A workload of the client's own cluster, reached directly at its sidecar's inbound port.
pub(crate) fn local_endpoint(cluster: &str, workload: &Workload, inbound_port: u16) -> Endpoint {
    Endpoint {
        address: workload.address.clone(),
        port: inbound_port,
        weight: 1,
        cluster: cluster.to_string(),
        via_gateway: false,
        priority: 0,
    }
}

fn local_endpoints(cluster: &str, workloads: &TargetWorkloads<'_>) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = workloads
        .by_cluster
        .get(cluster)
        .into_iter()
        .flatten()
        .map(|(workload, port)| local_endpoint(cluster, workload, *port))
        .collect();
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    endpoints.dedup();
    endpoints
}

/// Local endpoints directly; each remote cluster as one endpoint, its east-west gateway, weighted
/// by how many matching endpoints stand behind it so load spreads per workload, not per cluster.
fn client_endpoints(
    cluster: &str,
    snapshot: &Snapshot,
    workloads: &TargetWorkloads<'_>,
    target: &Target,
    policy: &UpstreamPolicy,
    warnings: &mut Warnings,
) -> Vec<Endpoint> {
    let mut endpoints = local_endpoints(cluster, workloads);
    let remote = workloads
        .by_cluster
        .iter()
        .filter(|(c, found)| **c != cluster && !found.is_empty())
        .map(|(c, found)| (*c, found.len() as u32));
    for (remote_cluster, count) in remote {
        match snapshot.east_west_gateway(remote_cluster) {
            Some(gateway) => endpoints.push(Endpoint {
                address: gateway.host.clone(),
                port: gateway.port,
                weight: count,
                cluster: remote_cluster.to_string(),
                via_gateway: true,
                priority: policy.priority(snapshot, cluster, remote_cluster),
            }),
            None => warnings.add(
                format!("Cluster/{remote_cluster}"),
                format!("cluster {remote_cluster} has backends for {} but no east-west gateway; other clusters cannot reach them", target.host),
            ),
        }
    }
    endpoints
}

/// Whom a client may find at the other end: the target's workloads, and for a VirtualDestination
/// whose east-west gateways end TLS (`clientMode: tlsTermination`) the gateway too.
fn client_identities(snapshot: &Snapshot, target: &Target, workloads: &TargetWorkloads) -> Vec<String> {
    let mut identities = workloads.identities.clone();
    if target.terminates_at_gateway() {
        identities.push(trellis_model::east_west_gateway_identity(&snapshot.trust_domain));
        identities.sort();
        identities.dedup();
    }
    identities
}
