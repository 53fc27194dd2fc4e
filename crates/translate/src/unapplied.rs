//! Fields Gloo accepts that Trellis reads but does not apply: each one set gets a WARNING in its
//! resource's status naming the field and what happens instead, so nothing a user wrote is
//! dropped silently. Fields other parts of translation apply, or warn about, are not listed.
//!
//! The checks look at typed fields only (no serialization): they run on every full translation,
//! over every resource.

use serde_json::Value;
use trellis_api::{Resource, RouteTableSpec, Spec, WorkspaceSettingsSpec};

use crate::Warnings;

mod root_trust;

pub(crate) fn warn(resources: &[Resource], warnings: &mut Warnings) {
    // The management server applies the first RootTrustPolicy by Kind/namespace/name.
    let first_root_trust = resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::RootTrustPolicy(_)))
        .map(|r| r.key().to_string())
        .min();
    for resource in resources {
        let mut found: Vec<String> = Vec::new();
        match &resource.spec {
            Spec::RootTrustPolicy(spec) => {
                let key = resource.key().to_string();
                if first_root_trust.as_ref().is_some_and(|first| *first != key) {
                    found.push(format!(
                        "not applied: the mesh has one root, and {} applies (the first by namespace and name)",
                        first_root_trust.as_deref().unwrap_or_default()
                    ));
                }
                root_trust::warn(resources, &resource.metadata.namespace, spec, &mut found);
            }
            Spec::KubernetesCluster(spec) if spec.skip_warming => {
                found.push(not_applied(
                    "spec.skipWarming",
                    "translation never waits for every cluster",
                ));
            }
            Spec::Workspace(spec) => {
                for (i, cluster) in spec.workload_clusters.iter().enumerate() {
                    if cluster.config_enabled.is_some() {
                        found.push(not_applied(
                            &format!("spec.workloadClusters[{i}].configEnabled"),
                            "every selected namespace may hold config",
                        ));
                    }
                    for (j, namespace) in cluster.namespaces.iter().enumerate() {
                        let field = format!("spec.workloadClusters[{i}].namespaces[{j}]");
                        if namespace.labels.is_some() {
                            found.push(not_applied(
                                &format!("{field}.labels"),
                                "namespaces are selected by name only",
                            ));
                        }
                        if namespace.config_enabled.is_some() {
                            found.push(not_applied(
                                &format!("{field}.configEnabled"),
                                "every selected namespace may hold config",
                            ));
                        }
                    }
                }
            }
            Spec::WorkspaceSettings(spec) => workspace_settings(spec, &mut found),
            Spec::VirtualDestination(spec) => {
                if !spec.external_services.is_empty() {
                    found.push(not_applied(
                        "spec.externalServices",
                        "select ExternalServices from RouteTables instead",
                    ));
                }
                if !spec.external_workloads.is_empty() {
                    found.push(not_applied(
                        "spec.externalWorkloads",
                        "Trellis has no external workloads",
                    ));
                }
                if let Some(mode) = &spec.client_mode {
                    found.extend(client_mode(mode));
                }
            }
            Spec::RouteTable(spec) => found.extend(route_table(spec)),
            Spec::AccessPolicy(spec) => {
                if let Some(layers) = &spec.config.enforcement_layers {
                    if layers["cni"].as_bool() == Some(true) {
                        found.push(not_applied(
                            "spec.config.enforcementLayers.cni",
                            "access policies are enforced in the sidecars (the mesh layer) only",
                        ));
                    }
                    if layers["mesh"].as_bool() == Some(false) {
                        found.push(not_applied(
                            "spec.config.enforcementLayers.mesh",
                            "the sidecars enforce the policy all the same",
                        ));
                    }
                }
            }
            Spec::RetryTimeoutPolicy(spec)
                if spec
                    .config
                    .retries
                    .as_ref()
                    .is_some_and(|r| r.retry_remote_localities.is_some()) =>
            {
                found.push(not_applied(
                    "spec.config.retries.retryRemoteLocalities",
                    "retries go wherever load balancing sends them",
                ));
            }
            Spec::OutlierDetectionPolicy(spec) if spec.config.consecutive_gateway_errors.is_some() => {
                found.push(not_applied(
                    "spec.config.consecutiveGatewayErrors",
                    "gateway errors count towards consecutiveErrors",
                ));
            }
            _ => {}
        }
        if !found.is_empty() {
            let key = resource.key().to_string();
            for message in found {
                warnings.add(&key, message);
            }
        }
    }
}

/// True when a RouteTable sets a field listed here: its warnings then come only from a full
/// translation, which the incremental path must leave it to.
pub(crate) fn route_table_has_any(spec: &RouteTableSpec) -> bool {
    !route_table(spec).is_empty()
}

pub(crate) fn not_applied(field: &str, instead: &str) -> String {
    format!("{field} is accepted but not applied: {instead}")
}

fn route_table(spec: &RouteTableSpec) -> Vec<String> {
    let mut found = Vec::new();
    if !spec.apply_to_destinations.is_empty() {
        found.push(not_applied(
            "spec.applyToDestinations",
            "the table applies to the hosts it names",
        ));
    }
    if spec.portal_metadata.is_some() {
        found.push(not_applied(
            "spec.portalMetadata",
            "Trellis has no developer portal to publish it in",
        ));
    }
    if spec.virtual_service_annotations.is_some() {
        found.push(not_applied(
            "spec.virtualServiceAnnotations",
            "no Istio VirtualService exists",
        ));
    }
    for (i, route) in spec.http.iter().enumerate() {
        let Some(forward) = &route.forward_to else { continue };
        if forward.regex_rewrite.is_some() {
            found.push(not_applied(
                &format!("spec.http[{i}].forwardTo.regexRewrite"),
                "the path is sent as matched (use pathRewrite for a prefix)",
            ));
        }
        if forward.auto_host_rewrite.is_some() {
            found.push(not_applied(
                &format!("spec.http[{i}].forwardTo.autoHostRewrite"),
                "the Host header is kept (use hostRewrite)",
            ));
        }
    }
    found
}

/// `tlsTermination` is applied and `sniRouting` is what `auto` does; anything else is unknown here.
fn client_mode(mode: &Value) -> Vec<String> {
    mode.as_object()
        .into_iter()
        .flat_map(|modes| modes.keys())
        .filter(|m| !["auto", "sniRouting", "tlsTermination"].contains(&m.as_str()))
        .map(|m| not_applied(&format!("spec.clientMode.{m}"), "not a client mode Trellis knows"))
        .collect()
}

fn workspace_settings(spec: &WorkspaceSettingsSpec, found: &mut Vec<String>) {
    for (field, entries) in [("importFrom", &spec.import_from), ("exportTo", &spec.export_to)] {
        for (i, entry) in entries.iter().enumerate() {
            for (j, resource) in entry.resources.iter().enumerate() {
                if !resource.kind.exists_in_trellis() {
                    found.push(not_applied(
                        &format!("spec.{field}[{i}].resources[{j}].kind"),
                        "Trellis has no resources of this kind, so the entry selects nothing",
                    ));
                }
            }
        }
    }
    let Some(options) = &spec.options else {
        return;
    };
    if let Some(isolation) = &options.service_isolation {
        if isolation.trim_proxy_config.is_some() {
            found.push(not_applied(
                "spec.options.serviceIsolation.trimProxyConfig",
                "a sidecar always gets only what its workspace sees",
            ));
        }
        if isolation.enforcement_layers.is_some() {
            found.push(not_applied(
                "spec.options.serviceIsolation.enforcementLayers",
                "isolation is enforced in the sidecars (the mesh layer) only",
            ));
        }
    }
    if options.east_west_gateways.is_some() {
        found.push(not_applied(
            "spec.options.eastWestGateways",
            "each cluster's registered east-west gateway is used",
        ));
    }
    if let Some(mode) = &options.virtual_dest_client_mode {
        for unknown in client_mode(mode) {
            found.push(unknown.replacen("spec.clientMode", "spec.options.virtualDestClientMode", 1));
        }
    }
    if options.trim_all_proxy_config.is_some() {
        found.push(not_applied(
            "spec.options.trimAllProxyConfig",
            "a sidecar always gets only what its workspace sees",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings_for(yaml: &str) -> Vec<String> {
        let resources = trellis_api::parse_documents("t.yaml", yaml).unwrap();
        let mut warnings = Warnings::default();
        warn(&resources, &mut warnings);
        warnings.0.into_values().flatten().collect()
    }

    #[test]
    fn each_unapplied_field_is_named() {
        let found = warnings_for(
            r#"
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: s, namespace: a}
spec:
  importFrom: [{workspaces: [{selector: {team: x}}], resources: [{kind: SERVICE}, {kind: API_DOC}]}]
  options: {federation: {enabled: true, ports: [{number: 80}]}, trimAllProxyConfig: true}
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: v, namespace: a}
spec:
  hosts: [v.internal]
  services: [{labels: {app: v}}]
  ports: [{number: 80}]
  clientMode: {passthrough: {}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: r, namespace: a}
spec:
  hosts: [r.internal]
  portalMetadata: {title: Pets, description: The pet store API, apiProductId: pets}
  http: [{forwardTo: {destinations: [{ref: {name: r, namespace: a}, port: {number: 80}}]}}]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {name: p, namespace: a}
spec:
  config:
    enforcementLayers: {mesh: true, cni: true}
"#,
        );
        for field in [
            "spec.importFrom[0].resources[1].kind",
            "spec.options.trimAllProxyConfig",
            "spec.clientMode.passthrough",
            "spec.config.enforcementLayers.cni",
            "spec.portalMetadata",
        ] {
            assert!(
                found.iter().any(|w| w.starts_with(field)),
                "{field} not named in {found:?}"
            );
        }
        assert!(!found.iter().any(|w| w.contains("enforcementLayers.mesh")), "{found:?}");
        // Applied now: workspace labels, resource filters of kinds Trellis has, federation ports.
        for applied in [
            "spec.importFrom[0].resources[0]",
            "spec.importFrom[0].workspaces",
            "spec.options.federation",
        ] {
            assert!(!found.iter().any(|w| w.starts_with(applied)), "{applied} in {found:?}");
        }
    }

    #[test]
    fn nothing_is_said_about_a_plain_config() {
        let found = warnings_for(
            r#"
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: r, namespace: a}
spec:
  hosts: [r.internal]
  http: [{forwardTo: {destinations: [{ref: {name: r, namespace: a}, port: {number: 80}}]}}]
"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
