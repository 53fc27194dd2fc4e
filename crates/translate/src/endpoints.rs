//! Per cluster: Targets ─▶ Upstreams with concrete endpoints, and the east-west gateway's view.

use std::collections::BTreeMap;

use trellis_model::ir::{Endpoint, Upstream};
use trellis_model::snapshot::Service;
use trellis_model::{ClusterConfig, Snapshot, Workload};

use crate::Warnings;
use crate::destination_policies::UpstreamPolicy;
use crate::outbound::Outbound;
use crate::target::Target;

pub(crate) fn materialize(
    cluster: &str,
    snapshot: &Snapshot,
    services: &[Service<'_>],
    outbound: &Outbound,
    upstream_policies: &[UpstreamPolicy],
    warnings: &mut Warnings,
) -> ClusterConfig {
    let mut upstreams = Vec::new();
    let mut gateway_upstreams = Vec::new();
    for (target, policy) in outbound.targets.iter().zip(upstream_policies) {
        let identities = identities(snapshot, services, target);
        upstreams.push(Upstream {
            name: target.upstream_name(),
            key: target.key(),
            endpoints: client_endpoints(cluster, snapshot, services, target, policy, warnings),
            identities: identities.clone(),
            outlier_detection: policy.outlier_detection.clone(),
            workspaces: None,
            external: None,
        });
        let local = local_endpoints(cluster, services, target);
        if !local.is_empty() {
            gateway_upstreams.push(Upstream {
                name: target.gateway_upstream_name(),
                key: target.key(),
                endpoints: local,
                identities,
                outlier_detection: None,
                workspaces: None,
                external: None,
            });
        }
    }
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    gateway_upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterConfig {
        cluster: cluster.to_string(),
        trust_domain: snapshot.trust_domain.clone(),
        upstreams,
        virtual_hosts: outbound
            .virtual_hosts
            .iter()
            .map(|h| h.to_ir(&outbound.targets))
            .collect(),
        gateway_upstreams,
        inbound_policies: Vec::new(),
        namespace_workspaces: Default::default(),
        ingress_gateways: Vec::new(),
        addon_servers: Vec::new(),
        addons: Default::default(),
        inbound_routes: Vec::new(),
    }
}

/// The SPIFFE identities of every workload behind a target, in any cluster.
fn identities(snapshot: &Snapshot, services: &[Service<'_>], target: &Target) -> Vec<String> {
    let clusters: std::collections::BTreeSet<&str> = target.backends.iter().map(|b| b.cluster.as_str()).collect();
    let mut ids: Vec<String> = clusters
        .into_iter()
        .flat_map(|cluster| matching_workloads(services, target, cluster))
        .map(|(workload, _)| {
            trellis_model::spiffe_id(&snapshot.trust_domain, &workload.namespace, &workload.service_account)
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Workloads of one backend that carry the target's subset labels, with the inbound port that
/// serves the backend's service port.
fn matching_workloads<'a>(services: &'a [Service<'a>], target: &Target, cluster: &str) -> Vec<(&'a Workload, u16)> {
    let mut found = Vec::new();
    for backend in target.backends.iter().filter(|b| b.cluster == cluster) {
        let Some(service) = services
            .iter()
            .find(|s| s.cluster == backend.cluster && s.namespace == backend.namespace && s.name == backend.service)
        else {
            continue;
        };
        for workload in &service.workloads {
            let in_subset = target.subset.iter().all(|(k, v)| workload.labels.get(k) == Some(v));
            let port = workload.ports.iter().find(|p| p.port == backend.port);
            if let (true, Some(port)) = (in_subset, port) {
                found.push((*workload, port.inbound_port));
            }
        }
    }
    found
}

fn local_endpoints(cluster: &str, services: &[Service<'_>], target: &Target) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = matching_workloads(services, target, cluster)
        .into_iter()
        .map(|(workload, port)| Endpoint {
            address: workload.address.clone(),
            port,
            weight: 1,
            cluster: cluster.to_string(),
            via_gateway: false,
            priority: 0,
        })
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
    services: &[Service<'_>],
    target: &Target,
    policy: &UpstreamPolicy,
    warnings: &mut Warnings,
) -> Vec<Endpoint> {
    let mut endpoints = local_endpoints(cluster, services, target);
    let mut remote: BTreeMap<&str, u32> = BTreeMap::new();
    for backend in target.backends.iter().filter(|b| b.cluster != cluster) {
        let count = matching_workloads(services, target, &backend.cluster).len() as u32;
        if count > 0 {
            remote.insert(backend.cluster.as_str(), count);
        }
    }
    for (remote_cluster, count) in remote {
        match snapshot.east_west_gateway(remote_cluster) {
            Some(gateway) => endpoints.push(Endpoint {
                address: gateway.host.clone(),
                port: gateway.port,
                weight: count,
                cluster: remote_cluster.to_string(),
                via_gateway: true,
                priority: policy.priority(cluster, remote_cluster),
            }),
            None => warnings.add(
                format!("Cluster/{remote_cluster}"),
                format!("cluster {remote_cluster} has backends for {} but no east-west gateway; other clusters cannot reach them", target.host),
            ),
        }
    }
    endpoints
}
