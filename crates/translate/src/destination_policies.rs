//! Destination-level policies: OutlierDetectionPolicy (passive health checks) and FailoverPolicy
//! (endpoint priorities by cluster), on the destinations `applyToDestinations` selects: Kubernetes
//! services by default (kind SERVICE), VirtualDestinations with kind VIRTUAL_DESTINATION, each
//! only in the policy's own workspace. The oldest policy of each kind on a destination wins;
//! later ones lose there.
//!
//! In universal mode a cluster is a locality region: `localityMappings: [{from: {region:
//! cluster-1}, to: [{region: cluster-2}]}]` means clients in cluster-1 use cluster-2 when their
//! own endpoints fail. Without mappings, clients prefer their own cluster, then every other.

use std::collections::BTreeMap;

use trellis_api::{DestinationSelector, FailoverConfig, Spec};
use trellis_base::duration_ms;
use trellis_model::Snapshot;
use trellis_model::policy::OutlierDetection;

use crate::Warnings;
use crate::report::Report;
use crate::service_index::ServiceIndex;
use crate::target::Target;
use crate::workspaces::{PolicyScope, Workspaces};

/// What destination policies ask of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpstreamPolicy {
    pub outlier_detection: Option<OutlierDetection>,
    pub failover: Option<FailoverConfig>,
    /// LoadBalancerPolicy and ConnectionPolicy (see `traffic_policies`).
    pub traffic: Option<trellis_model::policy::UpstreamTraffic>,
}

impl UpstreamPolicy {
    /// The mapping for clients in `client_cluster`, if the failover policy has one.
    fn mapping(&self, client_cluster: &str) -> Option<&trellis_api::LocalityMapping> {
        self.failover
            .as_ref()?
            .locality_mappings
            .iter()
            .find(|m| m.from.region == client_cluster)
    }

    /// Traffic shares by endpoint cluster for clients in `client_cluster`, when their mapping
    /// gives weights (Gloo: they add up to 100; `to` entries without one share what is left).
    /// Empty otherwise.
    pub(crate) fn locality_weights(&self, client_cluster: &str) -> BTreeMap<String, u32> {
        let Some(mapping) = self.mapping(client_cluster) else {
            return BTreeMap::new();
        };
        if mapping.to.iter().all(|to| to.weight.is_none()) {
            return BTreeMap::new();
        }
        let given: u32 = mapping.to.iter().filter_map(|to| to.weight).sum();
        let unweighted = mapping.to.iter().filter(|to| to.weight.is_none()).count() as u32;
        let rest = 100u32.saturating_sub(given).checked_div(unweighted).unwrap_or(0);
        let mut weights = BTreeMap::new();
        for to in &mapping.to {
            *weights.entry(to.region.clone()).or_insert(0) += to.weight.unwrap_or(rest);
        }
        weights
    }

    /// The priority of endpoints in `endpoint_cluster` for a client in `client_cluster`.
    pub(crate) fn priority(&self, client_cluster: &str, endpoint_cluster: &str) -> u32 {
        let Some(_) = &self.failover else { return 0 };
        if client_cluster == endpoint_cluster {
            return 0;
        }
        // Weights distribute traffic among the listed clusters at once: no failover order.
        if !self.locality_weights(client_cluster).is_empty() {
            return 0;
        }
        let mapping = self.mapping(client_cluster);
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
    selects_kind(selectors, target, lookup, policy_namespace, "SERVICE")
}

/// As [`selects`], for a policy whose selectors mean `default_kind` when they name none
/// (FailoverPolicy selects only VirtualDestinations).
fn selects_kind(
    selectors: &[DestinationSelector],
    target: &Target,
    lookup: &DestinationLookup<'_>,
    policy_namespace: &str,
    default_kind: &str,
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
        match selector.kind.as_deref().unwrap_or(default_kind) {
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

/// The selectors, or one that selects everything when there are none: Gloo applies a policy
/// without `applyToDestinations` to every destination of its workspace.
pub(crate) fn or_everything(selectors: &[DestinationSelector]) -> Vec<DestinationSelector> {
    if selectors.is_empty() {
        vec![DestinationSelector::default()]
    } else {
        selectors.to_vec()
    }
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

/// Names what a mapping says that selects nothing here: a region that is no cluster (a cluster
/// is a region), zones and sub-zones (clusters have none), weights that do not add up to 100.
fn warn_about_localities(
    config: &FailoverConfig,
    clusters: &std::collections::BTreeSet<String>,
    key: &str,
    warnings: &mut Warnings,
) {
    for (i, mapping) in config.locality_mappings.iter().enumerate() {
        let mut places = vec![(format!("spec.config.localityMappings[{i}].from"), &mapping.from)];
        places.extend(
            mapping
                .to
                .iter()
                .enumerate()
                .map(|(j, to)| (format!("spec.config.localityMappings[{i}].to[{j}]"), to)),
        );
        for (field, place) in places {
            if !clusters.contains(&place.region) {
                warnings.add(
                    key,
                    format!(
                        "{field}.region: no cluster is named {:?}; a cluster is a region here, so this matches nothing",
                        place.region
                    ),
                );
            }
            if !place.zone.is_empty() || !place.sub_zone.is_empty() {
                warnings.add(
                    key,
                    format!("{field}: zone and subZone are ignored; only whole clusters (regions) are localities here"),
                );
            }
        }
        let weights: Vec<u32> = mapping.to.iter().filter_map(|to| to.weight).collect();
        let all_given = weights.len() == mapping.to.len();
        let sum: u32 = weights.iter().sum();
        if !weights.is_empty() && ((all_given && sum != 100) || sum > 100) {
            warnings.add(
                key,
                format!("spec.config.localityMappings[{i}].to: the weights add up to {sum}, not 100; they are used as relative shares"),
            );
        }
    }
    if config.priority_labels.is_some() {
        warnings.add(key, "spec.config.priorityLabels is not applied yet: without localityMappings, clients prefer their own cluster, then every other");
    }
}

pub(crate) fn resolve(
    lookup: &DestinationLookup<'_>,
    targets: &[Target],
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<UpstreamPolicy> {
    let snapshot = lookup.snapshot;
    let mut policies = vec![UpstreamPolicy::default(); targets.len()];
    for resource in &snapshot.resources {
        let entry = report.entry(&resource.key().to_string());
        match &resource.spec {
            Spec::OutlierDetectionPolicy(spec) => {
                let selectors = or_everything(&spec.apply_to_destinations);
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
                    if !selects(&selectors, target, lookup, &resource.metadata.namespace) {
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
                warn_about_localities(
                    &spec.config,
                    &snapshot.clusters(),
                    &resource.key().to_string(),
                    warnings,
                );
                let selectors = or_everything(&spec.apply_to_destinations);
                let namespace = &resource.metadata.namespace;
                for (target, policy) in targets.iter().zip(&mut policies) {
                    if !selects_kind(&selectors, target, lookup, namespace, "VIRTUAL_DESTINATION") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(to: &str) -> UpstreamPolicy {
        let config: FailoverConfig =
            yaml_serde::from_str(&format!("localityMappings: [{{from: {{region: c1}}, to: {to}}}]")).unwrap();
        UpstreamPolicy {
            failover: Some(config),
            ..Default::default()
        }
    }

    #[test]
    fn weights_split_what_is_left_among_localities_without_one() {
        let p = policy("[{region: c1, weight: 50}, {region: c2}, {region: c3}]");
        assert_eq!(
            p.locality_weights("c1"),
            BTreeMap::from([("c1".into(), 50), ("c2".into(), 25), ("c3".into(), 25)])
        );
        // Weights distribute: no failover order among the listed clusters.
        assert_eq!(p.priority("c1", "c3"), 0);
        // Other clients are not mapped.
        assert!(p.locality_weights("c2").is_empty());
    }

    #[test]
    fn without_weights_the_mapping_is_a_failover_order() {
        let p = policy("[{region: c2}, {region: c3}]");
        assert!(p.locality_weights("c1").is_empty());
        assert_eq!(
            (p.priority("c1", "c1"), p.priority("c1", "c2"), p.priority("c1", "c3")),
            (0, 1, 2)
        );
        assert_eq!(p.priority("c1", "c4"), 3);
    }
}
