//! Add-on servers (ext-auth, rate limiter): where they run and how proxies reach them.

use std::collections::BTreeSet;

use crate::codes::{ADDON_NAMESPACE, ADDON_PLAINTEXT};
use crate::{Insight, MeshSnapshot, Severity};

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    // An add-on sharing a namespace with applications shares their RBAC, quotas and blast radius.
    let application_namespaces: BTreeSet<(&str, &str)> = snapshot
        .workloads
        .iter()
        .map(|w| (w.cluster.as_str(), w.namespace.as_str()))
        .collect();
    for addon in &snapshot.addons {
        let target = format!("addon/{}/{}/{}", addon.cluster, addon.namespace, addon.name);
        if application_namespaces.contains(&(addon.cluster.as_str(), addon.namespace.as_str())) {
            out.push(Insight::new(
                ADDON_NAMESPACE,
                Severity::Warning,
                target.clone(),
                format!(
                    "add-on {} runs in namespace {} of cluster {}, beside application workloads",
                    addon.name, addon.namespace, addon.cluster
                ),
                "run add-ons in a namespace of their own (e.g. gloo-mesh-addons, with the add-on's --namespace)",
            ));
        }
        if !addon.mtls {
            out.push(Insight::new(
                ADDON_PLAINTEXT,
                Severity::Error,
                target,
                format!(
                    "proxies reach add-on {} without mesh mTLS: auth decisions and rate limits can be forged or read",
                    addon.name
                ),
                "start the add-on with --agent so it registers, gets a mesh certificate and serves mTLS",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::checks::testing::of;
    use crate::*;

    fn mesh() -> MeshSnapshot {
        MeshSnapshot {
            workloads: vec![WorkloadInfo {
                cluster: "c1".into(),
                namespace: "demo".into(),
                name: "web-1".into(),
                service: "web".into(),
                ..Default::default()
            }],
            addons: vec![AddonInfo {
                cluster: "c1".into(),
                namespace: "demo".into(),
                name: "ext-auth".into(),
                mtls: true,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_add_on_beside_applications_is_reported_until_moved() {
        let mut mesh = mesh();
        let found = of(&mesh, "TRL0009");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target, "addon/c1/demo/ext-auth");
        mesh.addons[0].namespace = "trellis-addons".into();
        assert!(of(&mesh, "TRL0009").is_empty());
    }

    #[test]
    fn an_add_on_without_mtls_is_an_error() {
        let mut mesh = mesh();
        assert!(of(&mesh, "TRL0010").is_empty());
        mesh.addons[0].mtls = false;
        assert_eq!(of(&mesh, "TRL0010")[0].severity, Severity::Error);
    }
}
