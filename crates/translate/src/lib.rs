//! Translation: a pure, deterministic function from one [`Snapshot`] to each cluster's mesh IR.
//!
//! ```text
//!  Snapshot ──▶ workspaces               who owns which namespace, who sees what
//!           ──▶ outbound::build           VirtualDestinations + RouteTables (+ federated names,
//!                                         each cluster's services' Kubernetes-style names) ─▶
//!                                         virtual hosts, routes, and the Targets they send to
//!           ──▶ external::build           ExternalServices ─▶ virtual hosts and upstreams; ports
//!                                         with egressGatewayRoutes go through egress gateways
//!                                         (egress: per cluster, the gateway proxies' upstreams)
//!           ──▶ route_policies            retries, timeouts, faults, headers on selected routes
//!           ──▶ traffic_policies          CORS, CSRF, buffers, mirrors, JWT on selected routes; kinds
//!                                         not applied yet get a WARNING
//!           ──▶ addons                    ext-auth and rate-limit policies on routes; add-on configs
//!           ──▶ inbound_routes            per cluster: routes to protected local services, mirrored
//!                                         for the destination sidecars' inbound listeners
//!           ──▶ destination_policies      outlier detection and failover per Target
//!           ──▶ traffic_destinations      load balancing, connection limits, health checks per Target
//!           ──▶ endpoints::materialize    per cluster: each Target ─▶ Upstream with local endpoints
//!                                         directly and remote ones through that cluster's east-west
//!                                         gateway; plus what this cluster's gateway must serve
//!           ──▶ access_policies, workspaces::isolation_policies, ingress, access_logs   per cluster
//!           ──▶ status                    one status per resource
//! ```
//!
//! No I/O, no clock: equal snapshots give byte-identical output, which is what the golden tests
//! and the relay's content versions rely on.

mod access_logs;
mod access_policies;
mod addons;
mod announcements;
mod delegation;
mod destination_policies;
mod egress;
mod endpoints;
mod external;
mod external_tls;
mod inbound_routes;
mod incremental;
mod ingress;
mod ingress_streams;
mod outbound;
mod report;
mod route_policies;
mod service_index;
mod status;
mod target;
mod traffic_destinations;
mod traffic_policies;
mod transformation;
mod unapplied;
mod workspaces;

use std::collections::BTreeMap;

use serde::Serialize;
use trellis_model::{ClusterConfig, Snapshot};

pub use addons::auth_configs;
pub use announcements::ANNOUNCE_ANNOTATION;
pub use incremental::{EndpointChanges, Incremental, RouteChanges};
pub use status::ResourceStatus;
pub use target::Target;

/// The result of translating one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// One config per known cluster.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Problems found, by `Kind/namespace/name` of the resource they concern.
    pub warnings: BTreeMap<String, Vec<String>>,
    /// Every resource's status, by `Kind/namespace/name`.
    pub statuses: BTreeMap<String, ResourceStatus>,
}

/// Collects warnings by resource while translating, each once, in the order first found.
#[derive(Debug, Default)]
pub(crate) struct Warnings(
    BTreeMap<String, Vec<String>>,
    std::collections::HashSet<(String, String)>,
);

impl Warnings {
    pub(crate) fn add(&mut self, resource: impl Into<String>, message: impl Into<String>) {
        let (resource, message) = (resource.into(), message.into());
        // Every cluster repeats the same findings: a set keeps this O(1) rather than a scan.
        if self.1.insert((resource.clone(), message.clone())) {
            self.0.entry(resource).or_default().push(message);
        }
    }
}

/// The workspace that owns config kept in `namespace` (the management API scopes
/// workspace-bound RBAC with it).
pub fn workspace_of_config_namespace(snapshot: &Snapshot, namespace: &str) -> Option<String> {
    workspaces::Workspaces::from(snapshot)
        .of_config_namespace(snapshot, namespace)
        .map(str::to_string)
}

pub fn translate(snapshot: &Snapshot) -> Translation {
    translate_with_plan(snapshot).0
}

/// A full translation, and what `Incremental` needs to apply endpoint changes to it.
fn translate_with_plan(snapshot: &Snapshot) -> (Translation, incremental::EndpointPlan) {
    let mut warnings = Warnings::default();
    let restricted = announcements::restrict(snapshot, &mut warnings);
    let snapshot = restricted.as_ref().unwrap_or(snapshot);
    unapplied::warn(&snapshot.resources, &mut warnings);
    let mut report = report::Report::default();
    let services = snapshot.services();
    let index = service_index::ServiceIndex::new(&services);
    let workspaces = workspaces::Workspaces::from(snapshot);
    let mut outbound = outbound::build(snapshot, &index, &workspaces, &mut warnings);
    let (external_upstreams, mut egress_routes) =
        external::build(snapshot, &mut outbound, &workspaces, &mut report, &mut warnings);
    egress::check(snapshot, &egress_routes, &mut warnings);
    let mut enforced_external = std::collections::BTreeSet::new();
    for route in &mut egress_routes {
        route.policies = access_policies::for_external_service(
            snapshot,
            &workspaces,
            &services,
            route,
            &mut enforced_external,
            &mut report,
            &mut warnings,
        );
    }
    access_policies::warn_unenforced_external(snapshot, &enforced_external, &mut warnings);
    let gateway_streams = ingress_streams::resolve(snapshot, &index, &mut outbound, &mut warnings);
    route_policies::apply(snapshot, &workspaces, &mut outbound, &mut report);
    let lookup = destination_policies::DestinationLookup {
        snapshot,
        workspaces: &workspaces,
        services: Some(&index),
    };
    traffic_policies::apply(&lookup, &index, &mut outbound, &mut report, &mut warnings);
    let addons = addons::apply(&lookup, &mut outbound, &mut report, &mut warnings);
    let mut upstream_policies = destination_policies::resolve(&lookup, &outbound.targets, &mut report, &mut warnings);
    traffic_destinations::apply(
        &lookup,
        &mut outbound,
        &mut upstream_policies,
        &mut report,
        &mut warnings,
    );
    let cluster_names: Vec<String> = snapshot.clusters().into_iter().collect();
    let resolved = endpoints::resolve(snapshot, &index, &outbound.targets);
    let virtual_hosts: Vec<_> = outbound
        .virtual_hosts
        .iter()
        .map(|h| std::sync::Arc::new(h.to_ir(&outbound.targets)))
        .collect();
    let scopes = workspaces::upstream_scopes(&virtual_hosts);
    let external_upstreams: Vec<_> = external_upstreams.into_iter().map(std::sync::Arc::new).collect();
    let mut local_to = outbound.cluster_local_targets();
    // A gateway's TCP and TLS routes reach their targets from wherever the gateway runs.
    for stream in &gateway_streams {
        for (target, _) in &stream.destinations {
            local_to[*target] = None;
        }
    }
    let mut shared = endpoints::SharedUpstreams::new();
    let clusters = cluster_names
        .iter()
        .map(|cluster| {
            // Hosts for one cluster only (Kubernetes-style service names) go to that one.
            let hosts_here: Vec<_> = virtual_hosts
                .iter()
                .zip(&outbound.virtual_hosts)
                .filter(|(_, host)| host.cluster.as_ref().is_none_or(|c| c == cluster))
                .map(|(ir, _)| ir.clone())
                .collect();
            let mut config = endpoints::materialize(
                cluster,
                snapshot,
                &resolved,
                &outbound,
                &hosts_here,
                &scopes,
                &upstream_policies,
                &local_to,
                &mut shared,
                &mut warnings,
            );
            config.inbound_policies =
                access_policies::for_cluster(snapshot, &workspaces, &services, cluster, &mut report, &mut warnings);
            config.upstreams.extend(external_upstreams.iter().cloned());
            config.upstreams.extend(
                egress::sidecar_upstreams(snapshot, &egress_routes, cluster)
                    .into_iter()
                    .map(std::sync::Arc::new),
            );
            config.upstreams.sort_by(|a, b| a.name.cmp(&b.name));
            config.namespace_workspaces = workspaces.namespaces_of_cluster(snapshot, cluster);
            let gateway_routes = ingress::GatewayRoutes {
                outbound: &outbound,
                streams: &gateway_streams,
                egress_routes: &egress_routes,
                workspaces: &workspaces,
            };
            config.ingress_gateways =
                ingress::for_cluster(snapshot, &gateway_routes, cluster, &mut report, &mut warnings);
            (config.addon_servers, config.addons) = addons.for_cluster(snapshot, cluster, &mut warnings);
            config.inbound_routes = inbound_routes::for_cluster(&outbound, cluster);
            config.access_logs = access_logs::for_cluster(snapshot, &workspaces, cluster, &mut report, &mut warnings);
            let isolation = workspaces::isolation_policies(&workspaces, snapshot, cluster, &config.inbound_policies);
            config.inbound_policies.extend(isolation);
            (cluster.clone(), config)
        })
        .collect();
    let statuses = status::compute(
        &snapshot.resources,
        &warnings.0,
        &report,
        &cluster_names,
        status_visibility(&workspaces, snapshot),
    );
    let plan = incremental::EndpointPlan::new(outbound.targets);
    let translation = Translation {
        clusters,
        warnings: warnings.0,
        statuses,
    };
    (translation, plan)
}

/// Which workspaces see a resource, for its status.
fn status_visibility<'a>(
    workspaces: &'a workspaces::Workspaces,
    snapshot: &'a Snapshot,
) -> impl Fn(&trellis_api::Resource) -> Option<Vec<String>> + 'a {
    |resource| {
        // Workspaces and clusters are the frame, not things a workspace sees.
        let framing = matches!(
            resource.kind(),
            trellis_api::Kind::Workspace | trellis_api::Kind::KubernetesCluster
        );
        if framing {
            None
        } else {
            workspaces.visibility_of_resource(snapshot, resource)
        }
    }
}

#[cfg(test)]
mod demo_fixture;
#[cfg(test)]
mod tests;
