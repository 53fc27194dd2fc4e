//! What each cluster may announce. An agent reports the workloads, gateways and add-ons of its
//! cluster; a KubernetesCluster annotated `trellis.io/announce-namespaces: "demo, team-*"` limits
//! its agent to those namespaces (globs as in Workspaces). Everything else the agent announces is
//! left out of translation and named in the cluster's status, so a compromised or misconfigured
//! agent cannot put a service into a namespace that is not its cluster's to serve.
//!
//! Without the annotation a cluster announces any namespace (its agent's own allow-list still
//! decides which identities it issues).

use std::collections::BTreeMap;

use trellis_api::Spec;
use trellis_model::{ClusterDiscovery, Snapshot};

use crate::Warnings;

pub const ANNOUNCE_ANNOTATION: &str = "trellis.io/announce-namespaces";

/// Refusals named in one status message; the rest are counted.
const NAMED: usize = 10;

/// The snapshot with every cluster's discovery cut to what its KubernetesCluster allows, or
/// `None` when no cluster limits its announcements (nothing to copy).
pub(crate) fn restrict(snapshot: &Snapshot, warnings: &mut Warnings) -> Option<Snapshot> {
    let limits: BTreeMap<&str, (String, Vec<&str>)> = snapshot
        .resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::KubernetesCluster(_)))
        .filter_map(|r| {
            let patterns = r.metadata.annotations.get(ANNOUNCE_ANNOTATION)?;
            let patterns = patterns.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            Some((r.metadata.name.as_str(), (r.key().to_string(), patterns)))
        })
        .collect();
    if limits.is_empty() {
        return None;
    }
    let mut restricted = snapshot.clone();
    for (cluster, discovery) in restricted.discovery.iter_mut() {
        let Some((key, patterns)) = limits.get(cluster.as_str()) else {
            continue;
        };
        let refused = cut(discovery, patterns);
        if !refused.is_empty() {
            let more = refused.len().saturating_sub(NAMED);
            let mut named = refused.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", ");
            if more > 0 {
                named.push_str(&format!(" and {more} more"));
            }
            warnings.add(
                key.clone(),
                format!(
                    "refused what its agent announced outside metadata.annotations[{ANNOUNCE_ANNOTATION}] ({}): {named}",
                    patterns.join(", ")
                ),
            );
        }
    }
    Some(restricted)
}

/// Drops the workloads and add-ons outside `patterns`; returns what it dropped.
fn cut(discovery: &mut ClusterDiscovery, patterns: &[&str]) -> Vec<String> {
    let allowed = |namespace: &str| patterns.iter().any(|p| crate::workspaces::glob(p, namespace));
    let mut refused = Vec::new();
    discovery.workloads.retain(|w| {
        let keep = allowed(&w.namespace);
        if !keep {
            refused.push(format!("workload {}/{} (service {})", w.namespace, w.name, w.service));
        }
        keep
    });
    discovery.addons.retain(|a| {
        let keep = allowed(&a.namespace);
        if !keep {
            refused.push(format!("add-on {}/{}", a.namespace, a.name));
        }
        keep
    });
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(annotation: Option<&str>) -> Snapshot {
        let annotations = annotation
            .map(|a| format!("annotations: {{{ANNOUNCE_ANNOTATION}: '{a}'}}, "))
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata: {{{annotations}name: c1, namespace: trellis}}\nspec: {{}}\n"
        );
        let resources = trellis_api::parse_documents("test.yaml", &yaml).unwrap();
        let discovery: ClusterDiscovery = serde_json::from_value(serde_json::json!({
            "cluster": "c1",
            "workloads": [
                {"name": "web-1", "namespace": "team-a", "service": "web", "address": "10.0.0.1", "ports": []},
                {"name": "pay-1", "namespace": "payments", "service": "pay", "address": "10.0.0.2", "ports": []}
            ],
            "addons": [{"namespace": "gloo-mesh", "name": "ext-auth-service", "address": "10.0.0.3", "port": 8083}]
        }))
        .unwrap();
        Snapshot::new(resources, BTreeMap::from([("c1".to_string(), discovery)]))
    }

    #[test]
    fn a_cluster_announces_only_its_namespaces_and_says_what_it_refused() {
        let mut warnings = Warnings::default();
        let restricted = restrict(&snapshot(Some("team-*, gloo-mesh")), &mut warnings).unwrap();
        let workloads: Vec<_> = restricted.discovery["c1"]
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(workloads, ["web-1"]);
        assert_eq!(restricted.discovery["c1"].addons.len(), 1);
        let messages = &warnings.0["KubernetesCluster/trellis/c1"];
        assert!(
            messages[0].contains("workload payments/pay-1 (service pay)"),
            "{messages:?}"
        );

        let mut warnings = Warnings::default();
        assert!(
            restrict(&snapshot(None), &mut warnings).is_none(),
            "no annotation, nothing cut"
        );
        assert!(warnings.0.is_empty());
    }
}
