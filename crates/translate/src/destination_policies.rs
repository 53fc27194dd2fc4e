//! Destination-level policies on VirtualDestinations: OutlierDetectionPolicy (passive health
//! checks) and FailoverPolicy (endpoint priorities by cluster). The oldest policy of each kind
//! on a destination wins; later ones lose there.
//!
//! In universal mode a cluster is a locality region: `localityMappings: [{from: {region:
//! cluster-1}, to: [{region: cluster-2}]}]` means clients in cluster-1 use cluster-2 when their
//! own endpoints fail. Without mappings, clients prefer their own cluster, then every other.

use trellis_api::{DestinationSelector, FailoverConfig, Spec};
use trellis_base::duration_ms;
use trellis_model::Snapshot;
use trellis_model::policy::OutlierDetection;

use crate::report::Report;
use crate::target::Target;

/// What destination policies ask of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpstreamPolicy {
    pub outlier_detection: Option<OutlierDetection>,
    pub failover: Option<FailoverConfig>,
    /// LoadBalancerPolicy and ConnectionPolicy (see `traffic_policies`).
    pub traffic: Option<trellis_model::policy::UpstreamTraffic>,
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

pub(crate) fn selects(selectors: &[DestinationSelector], target: &Target) -> bool {
    let Some(vd) = &target.virtual_destination else {
        return false;
    };
    selectors.iter().any(|selector| {
        let kind_ok = selector.kind.as_deref().is_none_or(|k| k == "VIRTUAL_DESTINATION");
        let port_ok = selector
            .port
            .as_ref()
            .and_then(|p| p.number)
            .is_none_or(|n| n == u32::from(target.port));
        let object_ok = selector.selector.as_ref().is_none_or(|s| {
            s.labels.iter().all(|(k, v)| vd.labels.get(k) == Some(v))
                && (s.name.is_empty() || s.name == vd.name)
                && (s.namespace.is_empty() || s.namespace == vd.namespace)
        });
        kind_ok && port_ok && object_ok
    })
}

pub(crate) fn resolve(snapshot: &Snapshot, targets: &[Target], report: &mut Report) -> Vec<UpstreamPolicy> {
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
                    if !selects(&spec.apply_to_destinations, target) {
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
                    if !selects(&spec.apply_to_destinations, target) {
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
