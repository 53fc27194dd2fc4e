//! A change of one cluster's discovery, workload by workload.
//!
//! An agent reports its whole discovery when its relay stream opens and, after that, only the
//! workloads that changed: a pod moving in a cluster of 10,000 costs one workload on the wire,
//! in the store and in translation instead of all of them.

use serde::{Deserialize, Serialize};

use crate::discovery::{ClusterDiscovery, Workload};

/// Workloads put in or taken out of one cluster's discovery; its gateway and add-ons stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryPatch {
    pub cluster: String,
    /// New or changed workloads, sorted by (namespace, name).
    #[serde(default)]
    pub upserts: Vec<Workload>,
    /// Workloads gone, sorted.
    #[serde(default)]
    pub removes: Vec<WorkloadKey>,
    /// How many workloads the cluster has with the patch applied.
    #[serde(default)]
    pub workloads: usize,
}

/// A workload's identity within its cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn of(workload: &Workload) -> Self {
        WorkloadKey {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        }
    }
}

/// One workload before and after a patch (`None`: absent).
pub type WorkloadChange = (Option<Workload>, Option<Workload>);

impl DiscoveryPatch {
    /// What turns `old` into `new` (both normalized), or `None` when more than workloads
    /// changed (the gateways, the add-ons, the cluster): that goes as a whole report.
    pub fn between(old: &ClusterDiscovery, new: &ClusterDiscovery) -> Option<DiscoveryPatch> {
        if old.cluster != new.cluster
            || old.east_west_gateway != new.east_west_gateway
            || old.addons != new.addons
            || old.gateways != new.gateways
            || old.locality != new.locality
        {
            return None;
        }
        let mut patch = DiscoveryPatch {
            cluster: new.cluster.clone(),
            workloads: new.workloads.len(),
            ..Default::default()
        };
        let (mut a, mut b) = (old.workloads.iter().peekable(), new.workloads.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), Some(y)) if order(x, y).is_eq() => {
                    if x != y {
                        patch.upserts.push((*y).clone());
                    }
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if order(x, y).is_lt() => {
                    patch.removes.push(WorkloadKey::of(x));
                    a.next();
                }
                (Some(x), None) => {
                    patch.removes.push(WorkloadKey::of(x));
                    a.next();
                }
                (_, Some(y)) => {
                    patch.upserts.push((*y).clone());
                    b.next();
                }
            }
        }
        Some(patch)
    }

    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }

    /// How many workloads it changes.
    pub fn len(&self) -> usize {
        self.upserts.len() + self.removes.len()
    }

    /// Applies the patch to `discovery` (normalized, of the same cluster) in place, keeping it
    /// normalized; returns each workload touched as it was before and after.
    pub fn apply_to(&self, discovery: &mut ClusterDiscovery) -> Vec<WorkloadChange> {
        let mut changes = Vec::with_capacity(self.len());
        let find = |workloads: &[Workload], namespace: &str, name: &str| {
            workloads.binary_search_by(|w| (w.namespace.as_str(), w.name.as_str()).cmp(&(namespace, name)))
        };
        for key in &self.removes {
            if let Ok(at) = find(&discovery.workloads, &key.namespace, &key.name) {
                changes.push((Some(discovery.workloads.remove(at)), None));
            }
        }
        for workload in &self.upserts {
            match find(&discovery.workloads, &workload.namespace, &workload.name) {
                Ok(at) => {
                    let old = std::mem::replace(&mut discovery.workloads[at], workload.clone());
                    changes.push((Some(old), Some(workload.clone())));
                }
                Err(at) => {
                    discovery.workloads.insert(at, workload.clone());
                    changes.push((None, Some(workload.clone())));
                }
            }
        }
        changes
    }
}

fn order(a: &Workload, b: &Workload) -> std::cmp::Ordering {
    (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, address: &str) -> Workload {
        Workload {
            name: name.to_string(),
            namespace: "demo".to_string(),
            service: "svc".to_string(),
            address: address.to_string(),
            ..Default::default()
        }
    }

    fn discovery(workloads: &[(&str, &str)]) -> ClusterDiscovery {
        let mut discovery = ClusterDiscovery {
            cluster: "c1".to_string(),
            workloads: workloads.iter().map(|(n, a)| workload(n, a)).collect(),
            ..Default::default()
        };
        discovery.normalize();
        discovery
    }

    #[test]
    fn a_patch_between_two_discoveries_turns_the_first_into_the_second() {
        let old = discovery(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("d", "10.0.0.4")]);
        let new = discovery(&[
            ("b", "10.0.0.9"),
            ("c", "10.0.0.3"),
            ("d", "10.0.0.4"),
            ("e", "10.0.0.5"),
        ]);
        let patch = DiscoveryPatch::between(&old, &new).unwrap();
        assert_eq!(patch.len(), 4, "a removed; b moved; c and e added; d unchanged");
        let mut patched = old.clone();
        let changes = patch.apply_to(&mut patched);
        assert_eq!(patched, new);
        assert_eq!(changes.len(), 4);
        assert!(changes.contains(&(Some(workload("b", "10.0.0.2")), Some(workload("b", "10.0.0.9")))));
        assert!(changes.contains(&(Some(workload("a", "10.0.0.1")), None)));
        assert!(DiscoveryPatch::between(&new, &new).unwrap().is_empty());
    }

    #[test]
    fn a_changed_gateway_is_no_patch() {
        let old = discovery(&[("a", "10.0.0.1")]);
        let mut new = old.clone();
        new.east_west_gateway = Some(crate::GatewayAddress {
            host: "127.0.0.1".to_string(),
            port: 15443,
        });
        assert_eq!(DiscoveryPatch::between(&old, &new), None);
    }
}
