//! The management server's view of the mesh as `trellis-insights` takes it: stored config
//! with translation's statuses, discovery, agents, certificates and the server's settings.
//! Only what the server knows goes in; what it cannot know stays `None` (see the crate's docs).

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::{DestinationSelector, Kind, ObjectSelector, Resource, Spec};
use trellis_insights as insights;
use trellis_model::ClusterDiscovery;

use super::Mgmt;
use super::pki::RelaySecurity;

/// Everything `trellis_insights::evaluate` looks at, read now. Reads the store: call it off the
/// async runtime.
pub fn build(mgmt: &Mgmt, now: u64) -> anyhow::Result<insights::MeshSnapshot> {
    let stored = mgmt.stored()?;
    let discoveries = mgmt.store.discoveries()?;
    let published = mgmt.published();
    let doors = &mgmt.api.doors;
    let model = trellis_model::Snapshot::new(
        stored
            .iter()
            .filter(|r| {
                matches!(
                    r.kind(),
                    Kind::Workspace | Kind::WorkspaceSettings | Kind::KubernetesCluster
                )
            })
            .cloned()
            .collect(),
        Default::default(),
    );
    let workspace_of = |namespace: &str| trellis_translate::workspace_of_config_namespace(&model, namespace);
    let settings = insights::MgmtSettings {
        profile: if doors.production {
            insights::Profile::Production
        } else {
            insights::Profile::Dev
        },
        relay_insecure: matches!(mgmt.relay, RelaySecurity::Insecure),
        generated_cas: doors.generated_cas.iter().map(|c| c.to_string()).collect(),
        api_tls: doors.api_tls,
        // Every route but /healthz goes through `api_auth::require_identity`.
        api_authenticated: true,
        api_exposed: !doors.api_addr.ip().is_loopback(),
        // The UI's pages hold no data; everything they show comes from authenticated API calls.
        ui_authenticated: Some(true),
        builtin_redis: doors.declared.builtin_redis,
        builtin_prometheus: doors.declared.builtin_prometheus,
        fips_required: doors.declared.require_fips,
        // ring, the only cryptographic provider in this build, is not a FIPS-validated module.
        fips_in_use: false,
        colocated_cluster: doors.declared.colocated_cluster.clone(),
    };
    let isolated_workspaces: BTreeSet<String> = stored
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::WorkspaceSettings(spec) => spec
                .options
                .as_ref()
                .and_then(|o| o.service_isolation.as_ref())
                .filter(|i| i.enabled)
                .and_then(|_| workspace_of(&r.metadata.namespace)),
            _ => None,
        })
        .collect();
    let workloads: Vec<insights::WorkloadInfo> = discoveries
        .iter()
        .flat_map(|d| {
            d.workloads.iter().map(|w| insights::WorkloadInfo {
                cluster: d.cluster.clone(),
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                service: w.service.clone(),
                labels: w.labels.clone(),
                isolated: workspace_of(&w.namespace).is_some_and(|ws| isolated_workspaces.contains(&ws)),
            })
        })
        .collect();
    let failed = |r: &Resource| {
        published
            .statuses
            .get(&r.key().to_string())
            .is_some_and(|s| s.state == "FAILED")
    };
    let covered = |kinds: &[Kind]| -> Vec<String> {
        let selectors: Vec<Vec<ObjectSelector>> = stored
            .iter()
            .filter(|r| kinds.contains(&r.kind()) && !failed(r))
            .filter_map(policy_selectors)
            .collect();
        services_covered(&discoveries, &selectors)
    };
    Ok(insights::MeshSnapshot {
        now,
        settings,
        clusters: clusters(mgmt),
        certificates: certificates(mgmt),
        resources: stored
            .iter()
            .map(|r| {
                let status = published.statuses.get(&r.key().to_string());
                insights::ResourceInfo {
                    kind: r.kind().to_string(),
                    namespace: r.metadata.namespace.clone(),
                    name: r.metadata.name.clone(),
                    labels: r.metadata.labels.clone(),
                    state: status.map(|s| s.state.clone()).unwrap_or_default(),
                    message: status.map(|s| s.message.clone()).unwrap_or_default(),
                }
            })
            .collect(),
        workloads,
        addons: discoveries
            .iter()
            .flat_map(|d| {
                d.addons.iter().map(|a| insights::AddonInfo {
                    cluster: d.cluster.clone(),
                    namespace: a.namespace.clone(),
                    name: a.name.clone(),
                    // An add-on is discovered only by registering with its agent, which gives
                    // it the mesh certificate proxies reach it with.
                    mtls: true,
                })
            })
            .collect(),
        proxies: mgmt
            .agents()
            .into_iter()
            .flat_map(|(cluster, agent)| {
                agent.proxies.into_iter().map(move |p| insights::ProxyInfo {
                    cluster: cluster.clone(),
                    id: p.id,
                    envoy_version: p.envoy_version,
                })
            })
            .collect(),
        route_tables: stored.iter().filter_map(route_table).collect(),
        workspaces: workspaces(&stored, &workspace_of),
        external_services: stored
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::ExternalService(spec) => Some(insights::ExternalServiceInfo {
                    namespace: r.metadata.namespace.clone(),
                    name: r.metadata.name.clone(),
                    hosts: spec.hosts.clone(),
                    through_egress_gateway: spec.ports.iter().any(|p| p.egress_gateway_routes.is_some()),
                }),
                _ => None,
            })
            .collect(),
        services_with_access_policy: covered(&[Kind::AccessPolicy]),
        services_with_health_checks: covered(&[Kind::ActiveHealthCheckPolicy, Kind::OutlierDetectionPolicy]),
    })
}

fn clusters(mgmt: &Mgmt) -> Vec<insights::ClusterInfo> {
    super::api::cluster_statuses(mgmt)
        .into_iter()
        .map(|(name, status)| insights::ClusterInfo {
            name,
            registered: status["registered"] == true,
            connected: status["connected"] == true,
            agent_version: status["agentVersion"]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            last_error: status["lastError"].as_str().map(str::to_string),
        })
        .collect()
}

/// The certificates `trellis check` also judges, with their validity.
fn certificates(mgmt: &Mgmt) -> Vec<insights::CertificateInfo> {
    let mut certificates = Vec::new();
    let mut pem = |name: &str, target: &str, pem: &str| {
        // One that cannot be read is `trellis check`'s to report; insights judge expiry.
        if let Ok(info) = trellis_pki::inspect_pem(pem) {
            certificates.push(insights::CertificateInfo {
                name: name.into(),
                target: target.into(),
                not_before: super::check::unix(info.not_before),
                not_after: super::check::unix(info.not_after),
                renewed: false,
            });
        }
    };
    if let RelaySecurity::Tls(tls) = &mgmt.relay {
        pem("relay server certificate", "mgmt/relay", &tls.server.cert_pem);
        if let Some(signer) = &tls.signer {
            pem("relay signing CA", "mgmt/relay", &signer.cert_pem);
        }
        pem("relay root CA", "mgmt/relay", &tls.root_pem);
    }
    pem("mesh root CA", "mgmt/mesh-root", &mgmt.mesh.current().root_pem);
    for (cluster, agent) in mgmt.agents() {
        let mut renewed = |name: String, validity: Option<(u64, u64)>| {
            if let Some((not_before, not_after)) = validity {
                certificates.push(insights::CertificateInfo {
                    name,
                    target: format!("cluster/{cluster}"),
                    not_before,
                    not_after,
                    renewed: true,
                });
            }
        };
        renewed(
            format!("relay client certificate of {cluster}"),
            agent.client_cert_validity,
        );
        renewed(
            format!("mesh intermediate CA of {cluster}"),
            agent.intermediate_validity,
        );
    }
    certificates
}

/// The selectors of a policy that decides who may call a service or whether it is health
/// checked: `applyToDestinations` and (AccessPolicy) `applyToWorkloads`.
fn policy_selectors(resource: &Resource) -> Option<Vec<ObjectSelector>> {
    let of_destinations = |selectors: &[DestinationSelector]| -> Vec<ObjectSelector> {
        selectors
            .iter()
            .map(|s| s.selector.clone().unwrap_or_default())
            .collect()
    };
    match &resource.spec {
        Spec::AccessPolicy(spec) => {
            let mut selectors = of_destinations(&spec.apply_to_destinations);
            selectors.extend(
                spec.apply_to_workloads
                    .iter()
                    .map(|w| w.selector.clone().unwrap_or_default()),
            );
            Some(selectors)
        }
        Spec::ActiveHealthCheckPolicy(spec) => Some(of_destinations(&spec.apply_to_destinations)),
        Spec::OutlierDetectionPolicy(spec) => Some(of_destinations(&spec.apply_to_destinations)),
        _ => None,
    }
}

/// Services (`cluster/namespace/name`) one of the policies may apply to. Deliberately
/// generous: a policy without selectors, and a selector field left empty, match anything, and
/// a name may be the workload's or its service's; so an insight saying "no policy" is never
/// wrong about a policy that does apply. Translation decides exactly.
fn services_covered(discoveries: &[ClusterDiscovery], policies: &[Vec<ObjectSelector>]) -> Vec<String> {
    let mut covered = BTreeSet::new();
    for discovery in discoveries {
        for workload in &discovery.workloads {
            let selected = policies.iter().any(|selectors| {
                selectors.is_empty()
                    || selectors.iter().any(|o| {
                        (o.name.is_empty() || o.name == workload.service || o.name == workload.name)
                            && (o.namespace.is_empty() || o.namespace == workload.namespace)
                            && (o.cluster.is_empty() || o.cluster == discovery.cluster)
                            && o.labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
                    })
            });
            if selected {
                covered.insert(format!(
                    "{}/{}/{}",
                    discovery.cluster, workload.namespace, workload.service
                ));
            }
        }
    }
    covered.into_iter().collect()
}

fn route_table(resource: &Resource) -> Option<insights::RouteTableInfo> {
    let Spec::RouteTable(spec) = &resource.spec else {
        return None;
    };
    let canonical = |value: &serde_json::Value| value.to_string();
    let mut applies_to: Vec<String> = spec
        .workload_selectors
        .iter()
        .map(canonical)
        .chain(
            spec.virtual_gateways
                .iter()
                .map(|g| format!("gateway:{}", canonical(g))),
        )
        .collect();
    applies_to.sort();
    let matches = spec
        .http
        .iter()
        // Only routes that serve traffic: a delegating route hands its match to other tables.
        .filter(|route| route.delegate.is_none())
        .flat_map(|route| {
            if route.matchers.is_empty() {
                vec!["*".to_string()]
            } else {
                route
                    .matchers
                    .iter()
                    .map(|m| {
                        let mut value = serde_json::to_value(m).expect("matchers serialize");
                        // A matcher's name labels it; it does not change what it matches.
                        if let Some(object) = value.as_object_mut() {
                            object.remove("name");
                        }
                        value.to_string()
                    })
                    .collect()
            }
        })
        .collect();
    Some(insights::RouteTableInfo {
        namespace: resource.metadata.namespace.clone(),
        name: resource.metadata.name.clone(),
        hosts: spec.hosts.clone(),
        applies_to,
        matches,
    })
}

fn workspaces(stored: &[Resource], workspace_of: &dyn Fn(&str) -> Option<String>) -> Vec<insights::WorkspaceInfo> {
    let mut workspaces: BTreeMap<String, insights::WorkspaceInfo> = stored
        .iter()
        .filter(|r| r.kind() == Kind::Workspace)
        .map(|r| {
            let name = r.metadata.name.clone();
            (
                name.clone(),
                insights::WorkspaceInfo {
                    name,
                    ..Default::default()
                },
            )
        })
        .collect();
    let names = |entries: &[trellis_api::WorkspaceObjectSelector]| -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| &e.workspaces)
            .map(|w| {
                if w.name.is_empty() || !w.selector.is_empty() {
                    "*".to_string()
                } else {
                    w.name.clone()
                }
            })
            .collect()
    };
    for resource in stored {
        let Spec::WorkspaceSettings(spec) = &resource.spec else {
            continue;
        };
        let Some(owner) = workspace_of(&resource.metadata.namespace) else {
            continue;
        };
        let Some(workspace) = workspaces.get_mut(&owner) else {
            continue;
        };
        workspace.settings = resource.key().to_string();
        workspace.exports_to.extend(names(&spec.export_to));
        workspace.imports_from.extend(names(&spec.import_from));
    }
    workspaces.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Resource {
        trellis_api::parse_one("test.yaml", yaml).unwrap()
    }

    fn discovery() -> Vec<ClusterDiscovery> {
        let workload = |name: &str, service: &str, app: &str| trellis_model::Workload {
            name: name.into(),
            namespace: "demo".into(),
            service: service.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            address: "127.0.0.1".into(),
            ..Default::default()
        };
        vec![ClusterDiscovery {
            cluster: "c1".into(),
            workloads: vec![workload("web-1", "web", "web"), workload("db-1", "db", "db")],
            ..Default::default()
        }]
    }

    #[test]
    fn an_access_policy_covers_the_services_its_selectors_may_reach() {
        let policy = parse(
            "apiVersion: security.policy.gloo.solo.io/v2\nkind: AccessPolicy\nmetadata: {name: p, namespace: demo}\nspec:\n  applyToWorkloads: [{selector: {labels: {app: web}}}]\n  config: {authn: {tlsMode: STRICT}}\n",
        );
        let selectors = vec![policy_selectors(&policy).unwrap()];
        assert_eq!(services_covered(&discovery(), &selectors), ["c1/demo/web"]);
        // A policy without selectors may apply to everything: it covers every service.
        assert_eq!(
            services_covered(&discovery(), &[Vec::new()]),
            ["c1/demo/db", "c1/demo/web"]
        );
        assert!(services_covered(&discovery(), &[]).is_empty());
    }

    #[test]
    fn route_tables_are_described_by_host_match_and_where_they_apply() {
        let table = parse(concat!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: t, namespace: demo}\n",
            "spec:\n  hosts: [web.demo]\n  http:\n",
            "  - name: a\n    matchers: [{name: m, uri: {prefix: /api}}]\n    directResponse: {status: 200}\n",
            "  - name: all\n    directResponse: {status: 404}\n",
        ));
        let info = route_table(&table).unwrap();
        assert_eq!(info.hosts, ["web.demo"]);
        assert!(info.applies_to.is_empty());
        assert_eq!(
            info.matches,
            [r#"{"uri":{"prefix":"/api"}}"#, "*"],
            "a matcher's name does not change what it matches"
        );
    }
}
