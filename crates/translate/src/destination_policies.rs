//! Destination-level policies: OutlierDetectionPolicy (passive health checks) and FailoverPolicy
//! (endpoint priorities by cluster), on the destinations `applyToDestinations` selects: Kubernetes
//! services by default (kind SERVICE), VirtualDestinations with kind VIRTUAL_DESTINATION, each
//! only in the policy's own workspace. The oldest policy of each kind on a destination wins;
//! later ones lose there.
//!
//! In universal mode a cluster is a locality region: `localityMappings: [{from: {region:
//! cluster-1}, to: [{region: cluster-2}]}]` means clients in cluster-1 use cluster-2 when their
//! own endpoints fail. Without mappings, clients prefer their own cluster, then every other.

use trellis_api::{DestinationSelector, FailoverConfig, Spec};
use trellis_base::duration_ms;
use trellis_model::Snapshot;
use trellis_model::policy::OutlierDetection;

use crate::report::Report;
use crate::service_index::ServiceIndex;
use crate::target::Target;
use crate::workspaces::{PolicyScope, Workspaces};

/// What destination policies ask of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpstreamPolicy {
    pub outlier_detection: Option<OutlierDetection>,
    pub failover: Option<FailoverConfig>,
}

impl UpstreamPolicy {
    /// The priority of endpoints in `endpoint_cluster` for a client in `client_cluster`.
    pub(crate) fn priority(&self, client_cluster: &str, endpoint_cluster: &str) -> u32 {
        let Some(failover) = &self.failover else { return 0 };
        if client_cluster == endpoint_cluster {
            return 0;
        }
        let mapping = failover
            .locality_mappings
            .iter()
            .find(|m| m.from.region == client_cluster);
        match mapping {
            Some(mapping) => match mapping.to.iter().position(|to| to.region == endpoint_cluster) {
                Some(index) => index as u32 + 1,
                None => mapping.to.len() as u32 + 1,
            },
            None => 1,
        }
    }
}

/// What destination selectors are checked against: the services (for kind SERVICE, Gloo's
/// default) and the workspaces (a policy selects only destinations of its own workspace).
pub(crate) struct DestinationLookup<'l> {
    pub snapshot: &'l Snapshot,
    pub workspaces: &'l Workspaces,
    /// `None` where no index is at hand: every service target then counts as selected, which
    /// only makes a caller that asks "might a policy apply here?" more careful.
    pub services: Option<&'l ServiceIndex<'l, 'l>>,
}

/// True when one of `selectors`, written in a policy kept in `policy_namespace`, selects
/// `target`: a VirtualDestination by its labels, name and namespace (kind VIRTUAL_DESTINATION),
/// or a service target by its services' labels, name, namespace and cluster (kind SERVICE or
/// none). An empty list selects nothing here; callers decide what "no selector" means.
pub(crate) fn selects(
    selectors: &[DestinationSelector],
    target: &Target,
    lookup: &DestinationLookup<'_>,
    policy_namespace: &str,
) -> bool {
    let scope = lookup.workspaces.scope_of_policy(lookup.snapshot, policy_namespace);
    selectors.iter().any(|selector| {
        let object = selector.selector.clone().unwrap_or_default();
        let port_ok = match selector.port.as_ref() {
            Some(p) => match (p.number, p.name.as_deref()) {
                (Some(n), _) => n == u32::from(target.port),
                (None, Some(name)) => port_named(lookup, target, name),
                (None, None) => true,
            },
            None => true,
        };
        if !port_ok {
            return false;
        }
        let workspace_ok = |owner: Option<&str>| match scope {
            PolicyScope::Mesh => object.workspace.is_empty() || owner == Some(object.workspace.as_str()),
            PolicyScope::Nothing => false,
            PolicyScope::Workspace(own) => {
                owner == Some(own) && (object.workspace.is_empty() || object.workspace == own)
            }
        };
        match selector.kind.as_deref().unwrap_or("SERVICE") {
            "VIRTUAL_DESTINATION" => target.virtual_destination.as_ref().is_some_and(|vd| {
                object.labels.iter().all(|(k, v)| vd.labels.get(k) == Some(v))
                    && (object.name.is_empty() || object.name == vd.name)
                    && (object.namespace.is_empty() || object.namespace == vd.namespace)
                    && workspace_ok(lookup.workspaces.of_config_namespace(lookup.snapshot, &vd.namespace))
            }),
            "SERVICE" => {
                target.virtual_destination.is_none()
                    && target.backends.iter().any(|b| {
                        let labels_ok = match lookup.services {
                            Some(index) => index
                                .get(&b.cluster, &b.namespace, &b.service)
                                .is_some_and(|s| object.matches(&s.labels, s.name, s.namespace, s.cluster)),
                            None => true,
                        };
                        labels_ok && workspace_ok(lookup.workspaces.of(lookup.snapshot, &b.cluster, &b.namespace))
                    })
            }
            _ => false,
        }
    })
}

/// True when a backend of `target` names the port it serves on `name`.
fn port_named(lookup: &DestinationLookup<'_>, target: &Target, name: &str) -> bool {
    let Some(index) = lookup.services else { return true };
    target.backends.iter().any(|b| {
        index
            .get(&b.cluster, &b.namespace, &b.service)
            .and_then(|s| s.ports.get(&b.port))
            .is_some_and(|p| p.name == name)
    })
}

pub(crate) fn resolve(lookup: &DestinationLookup<'_>, targets: &[Target], report: &mut Report) -> Vec<UpstreamPolicy> {
    let snapshot = lookup.snapshot;
    let mut policies = vec![UpstreamPolicy::default(); targets.len()];
    for resource in &snapshot.resources {
        let entry = report.entry(&resource.key().to_string());
        match &resource.spec {
            Spec::OutlierDetectionPolicy(spec) => {
                let config = &spec.config;
                let detection = OutlierDetection {
                    consecutive_errors: config.consecutive_errors.unwrap_or(5),
                    interval_ms: config.interval.as_deref().and_then(duration_ms).unwrap_or(10_000),
                    base_ejection_time_ms: config
                        .base_ejection_time
                        .as_deref()
                        .and_then(duration_ms)
                        .unwrap_or(30_000),
                    max_ejection_percent: config.max_ejection_percent.unwrap_or(100),
                };
                for (target, policy) in targets.iter().zip(&mut policies) {
                    if !selects(
                        &spec.apply_to_destinations,
                        target,
                        lookup,
                        &resource.metadata.namespace,
                    ) {
                        continue;
                    }
                    if policy.outlier_detection.is_some() {
                        entry.lost.push(format!("destination {}:{}", target.host, target.port));
                    } else {
                        policy.outlier_detection = Some(detection.clone());
                        entry.applied += 1;
                    }
                }
            }
            Spec::FailoverPolicy(spec) => {
                for (target, policy) in targets.iter().zip(&mut policies) {
                    if !selects(
                        &spec.apply_to_destinations,
                        target,
                        lookup,
                        &resource.metadata.namespace,
                    ) {
                        continue;
                    }
                    if policy.failover.is_some() {
                        entry.lost.push(format!("destination {}:{}", target.host, target.port));
                    } else {
                        policy.failover = Some(spec.config.clone());
                        entry.applied += 1;
                    }
                }
            }
            _ => {}
        }
    }
    policies
}
