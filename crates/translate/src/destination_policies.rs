//! Destination-level policies: OutlierDetectionPolicy (passive health checks) and FailoverPolicy
//! (endpoint priorities by cluster), on the destinations `applyToDestinations` selects: Kubernetes
//! services by default (kind SERVICE), VirtualDestinations with kind VIRTUAL_DESTINATION, each
//! only in the policy's own workspace. The oldest policy of each kind on a destination wins;
//! later ones lose there.
//!
//! Localities are where clusters run, as their agents report them (`--region`, `--zone`,
//! `--sub-zone`, Kubernetes' node topology labels in Gloo); a cluster that reports none is a
//! region of its own name. `localityMappings: [{from: {region: us-east}, to: [{region:
//! us-west}]}]` means clients in us-east use us-west when their own endpoints fail. Without
//! mappings, clients prefer their own cluster, then every other.

use std::collections::BTreeMap;

use trellis_api::{DestinationSelector, FailoverConfig, Spec};
use trellis_base::duration_ms;
use trellis_model::policy::OutlierDetection;
use trellis_model::{Locality, Snapshot};

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
    /// The mapping for clients at `client` (the first whose `from` holds it), if the failover
    /// policy has one.
    fn mapping(&self, client: &Locality) -> Option<&trellis_api::LocalityMapping> {
        self.failover
            .as_ref()?
            .locality_mappings
            .iter()
            .find(|m| holds(&m.from, client))
    }

    /// Traffic shares by endpoint cluster for clients in `client_cluster`, when their mapping
    /// gives weights (Gloo: they add up to 100; `to` entries without one share what is left).
    /// A locality's share is split evenly among the clusters in it (rounded down, at least 1).
    /// Empty otherwise.
    pub(crate) fn locality_weights(&self, snapshot: &Snapshot, client_cluster: &str) -> BTreeMap<String, u32> {
        let Some(mapping) = self.mapping(&snapshot.locality(client_cluster)) else {
            return BTreeMap::new();
        };
        if mapping.to.iter().all(|to| to.weight.is_none()) {
            return BTreeMap::new();
        }
        let given: u32 = mapping.to.iter().filter_map(|to| to.weight).sum();
        let unweighted = mapping.to.iter().filter(|to| to.weight.is_none()).count() as u32;
        let rest = 100u32.saturating_sub(given).checked_div(unweighted).unwrap_or(0);
        let localities: Vec<(&String, Locality)> = snapshot
            .discovery
            .keys()
            .map(|cluster| (cluster, snapshot.locality(cluster)))
            .collect();
        let mut weights = BTreeMap::new();
        for to in &mapping.to {
            let inside: Vec<&String> = localities
                .iter()
                .filter(|(_, at)| holds(to, at))
                .map(|(cluster, _)| *cluster)
                .collect();
            let each = (to.weight.unwrap_or(rest) / (inside.len().max(1) as u32)).max(1);
            for cluster in inside {
                *weights.entry(cluster.clone()).or_insert(0) += each;
            }
        }
        weights
    }

    /// The priority of endpoints in `endpoint_cluster` for a client in `client_cluster`: 0 in
    /// the client's own cluster or locality, then the mapping's `to` localities in order, then
    /// the rest. (Istio also ranks the client's region before other regions; the mappings here
    /// say where to go once the client's own locality fails.)
    pub(crate) fn priority(&self, snapshot: &Snapshot, client_cluster: &str, endpoint_cluster: &str) -> u32 {
        let Some(_) = &self.failover else { return 0 };
        if client_cluster == endpoint_cluster {
            return 0;
        }
        // Weights distribute traffic among the listed localities at once: no failover order.
        if !self.locality_weights(snapshot, client_cluster).is_empty() {
            return 0;
        }
        let (client, endpoint) = (snapshot.locality(client_cluster), snapshot.locality(endpoint_cluster));
        if client == endpoint {
            return 0;
        }
        match self.mapping(&client) {
            Some(mapping) => match mapping.to.iter().position(|to| holds(to, &endpoint)) {
                Some(index) => index as u32 + 1,
                None => mapping.to.len() as u32 + 1,
            },
            None => 1,
        }
    }
}

/// True when a mapping's locality (a region, narrowed by a zone and sub-zone when given) holds
/// a cluster at `at`.
fn holds(place: &trellis_api::Locality, at: &Locality) -> bool {
    place.region == at.region
        && (place.zone.is_empty() || place.zone == at.zone)
        && (place.sub_zone.is_empty() || place.sub_zone == at.sub_zone)
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

/// Names what a mapping says that selects nothing here: a locality no cluster is in, weights
/// that do not add up to 100.
fn warn_about_localities(config: &FailoverConfig, snapshot: &Snapshot, key: &str, warnings: &mut Warnings) {
    let localities: Vec<Locality> = snapshot.clusters().iter().map(|c| snapshot.locality(c)).collect();
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
            if !localities.iter().any(|at| at.region == place.region) {
                warnings.add(
                    key,
                    format!(
                        "{field}.region: no cluster is in region {:?} (a cluster's region is its agent's --region, its name by default), so this matches nothing",
                        place.region
                    ),
                );
            } else if !localities.iter().any(|at| holds(place, at)) {
                warnings.add(
                    key,
                    format!(
                        "{field}: no cluster of region {:?} is in zone {:?}, sub-zone {:?} (its agent's --zone and --sub-zone), so this matches nothing",
                        place.region, place.zone, place.sub_zone
                    ),
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
                warn_about_localities(&spec.config, snapshot, &resource.key().to_string(), warnings);
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

    fn policy(mappings: &str) -> UpstreamPolicy {
        let config: FailoverConfig = yaml_serde::from_str(&format!("localityMappings: {mappings}")).unwrap();
        UpstreamPolicy {
            failover: Some(config),
            ..Default::default()
        }
    }

    /// Clients in c1 mapped to `to`.
    fn from_c1(to: &str) -> UpstreamPolicy {
        policy(&format!("[{{from: {{region: c1}}, to: {to}}}]"))
    }

    /// A mesh of clusters that report (cluster, region, zone); an empty region: none reported.
    fn mesh(clusters: &[(&str, &str, &str)]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (cluster, region, zone) in clusters {
            let locality = (!region.is_empty()).then(|| Locality {
                region: region.to_string(),
                zone: zone.to_string(),
                ..Default::default()
            });
            snapshot.discovery.insert(
                cluster.to_string(),
                trellis_model::ClusterDiscovery {
                    cluster: cluster.to_string(),
                    locality,
                    ..Default::default()
                },
            );
        }
        snapshot
    }

    /// c1, c2, c3 reporting no locality: each is a region of its own name.
    fn named_regions() -> Snapshot {
        mesh(&[("c1", "", ""), ("c2", "", ""), ("c3", "", "")])
    }

    #[test]
    fn weights_split_what_is_left_among_localities_without_one() {
        let p = from_c1("[{region: c1, weight: 50}, {region: c2}, {region: c3}]");
        let snapshot = named_regions();
        assert_eq!(
            p.locality_weights(&snapshot, "c1"),
            BTreeMap::from([("c1".into(), 50), ("c2".into(), 25), ("c3".into(), 25)])
        );
        // Weights distribute: no failover order among the listed clusters.
        assert_eq!(p.priority(&snapshot, "c1", "c3"), 0);
        // Other clients are not mapped.
        assert!(p.locality_weights(&snapshot, "c2").is_empty());
    }

    #[test]
    fn without_weights_the_mapping_is_a_failover_order() {
        let p = from_c1("[{region: c2}, {region: c3}]");
        let snapshot = mesh(&[("c1", "", ""), ("c2", "", ""), ("c3", "", ""), ("c4", "", "")]);
        assert!(p.locality_weights(&snapshot, "c1").is_empty());
        assert_eq!(
            (
                p.priority(&snapshot, "c1", "c1"),
                p.priority(&snapshot, "c1", "c2"),
                p.priority(&snapshot, "c1", "c3")
            ),
            (0, 1, 2)
        );
        assert_eq!(p.priority(&snapshot, "c1", "c4"), 3);
    }

    #[test]
    fn regions_are_the_localities_clusters_report_not_their_names() {
        let p = policy("[{from: {region: us-east}, to: [{region: us-west}]}]");
        let snapshot = mesh(&[
            ("cluster-1", "us-east", ""),
            ("cluster-2", "us-west", ""),
            ("cluster-3", "eu", ""),
        ]);
        assert_eq!(p.priority(&snapshot, "cluster-1", "cluster-2"), 1);
        assert_eq!(p.priority(&snapshot, "cluster-1", "cluster-3"), 2);
        // cluster-2's clients are in us-west, which no mapping names.
        assert_eq!(p.priority(&snapshot, "cluster-2", "cluster-3"), 1);
        // A mapping written with a cluster's name matches nothing once it reports a region.
        let by_name = from_c1("[{region: cluster-2}]");
        assert_eq!(by_name.priority(&snapshot, "cluster-1", "cluster-2"), 1);
        assert!(by_name.mapping(&snapshot.locality("cluster-1")).is_none());
    }

    #[test]
    fn weights_go_to_the_clusters_of_each_region_split_evenly() {
        let p =
            policy("[{from: {region: us-east}, to: [{region: us-west, weight: 50}, {region: us-east, weight: 50}]}]");
        let snapshot = mesh(&[
            ("east-1", "us-east", ""),
            ("west-1", "us-west", ""),
            ("west-2", "us-west", ""),
            ("eu-1", "eu", ""),
        ]);
        assert_eq!(
            p.locality_weights(&snapshot, "east-1"),
            BTreeMap::from([("east-1".into(), 50), ("west-1".into(), 25), ("west-2".into(), 25)])
        );
        assert!(p.locality_weights(&snapshot, "west-1").is_empty());
    }

    #[test]
    fn a_zone_narrows_a_region() {
        let p = policy("[{from: {region: us-east, zone: a}, to: [{region: us-east, zone: b}, {region: us-west}]}]");
        let snapshot = mesh(&[
            ("east-a", "us-east", "a"),
            ("east-b", "us-east", "b"),
            ("east-c", "us-east", "c"),
            ("west", "us-west", ""),
        ]);
        assert_eq!(p.priority(&snapshot, "east-a", "east-b"), 1);
        assert_eq!(p.priority(&snapshot, "east-a", "west"), 2);
        assert_eq!(p.priority(&snapshot, "east-a", "east-c"), 3);
        // Zone c's clients have no mapping.
        assert_eq!(p.priority(&snapshot, "east-c", "west"), 1);
    }

    #[test]
    fn clusters_in_one_locality_share_the_first_priority() {
        let p = policy("[{from: {region: us-east}, to: [{region: us-west}]}]");
        let snapshot = mesh(&[
            ("east-1", "us-east", ""),
            ("east-2", "us-east", ""),
            ("west", "us-west", ""),
        ]);
        assert_eq!(p.priority(&snapshot, "east-1", "east-2"), 0);
        assert_eq!(p.priority(&snapshot, "east-1", "west"), 1);
    }

    #[test]
    fn warnings_name_localities_no_cluster_is_in() {
        let p = policy("[{from: {region: us-east, zone: z}, to: [{region: mars}]}]");
        let snapshot = mesh(&[("cluster-1", "us-east", "a")]);
        let mut warnings = Warnings::default();
        warn_about_localities(p.failover.as_ref().unwrap(), &snapshot, "k", &mut warnings);
        let text = warnings.0["k"].join("\n");
        assert!(
            text.contains(r#"localityMappings[0].from: no cluster of region "us-east" is in zone "z""#),
            "{text}"
        );
        assert!(
            text.contains(r#"localityMappings[0].to[0].region: no cluster is in region "mars""#),
            "{text}"
        );
    }
}
