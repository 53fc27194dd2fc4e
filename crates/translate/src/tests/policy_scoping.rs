//! Which workloads, routes, destinations and clients a policy reaches, as Gloo documents it:
//! scoped to the policy's workspace, SERVICE as the default destination kind, `authz: {}` as
//! allow-nothing and `allowedClients: [{}]` as every client.

use std::collections::BTreeMap;

use trellis_model::policy::InboundPolicy;
use trellis_model::{ClusterDiscovery, Snapshot};

use crate::translate;

/// Two teams, each with a workspace owning one namespace of cluster-1: `a` (app `web`) and `b`
/// (app `api`), plus `config` as the documents.
fn two_teams(config: &str) -> Snapshot {
    let base = r#"
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: team-a, namespace: trellis}
spec:
  workloadClusters: [{name: "*", namespaces: [{name: a}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: team-b, namespace: trellis}
spec:
  workloadClusters: [{name: "*", namespaces: [{name: b}]}]
"#;
    let mut resources = trellis_api::parse_documents("teams.yaml", base).unwrap();
    resources.extend(trellis_api::parse_documents("policy.yaml", config).unwrap());
    let discovery: ClusterDiscovery = yaml_serde::from_str(
        r#"
cluster: cluster-1
workloads:
- {name: web-1, namespace: a, service: web, serviceAccount: web, labels: {app: web}, address: 127.0.0.1,
   ports: [{name: http, port: 80, inboundPort: 31001, appPort: 31101}]}
- {name: api-1, namespace: b, service: api, serviceAccount: api, labels: {app: api}, address: 127.0.0.1,
   ports: [{name: http, port: 80, inboundPort: 31002, appPort: 31102}]}
"#,
    )
    .unwrap();
    Snapshot::new(resources, BTreeMap::from([("cluster-1".to_string(), discovery)]))
}

fn inbound(snapshot: &Snapshot) -> Vec<InboundPolicy> {
    let translation = translate(snapshot);
    translation.clusters["cluster-1"]
        .inbound_policies
        .iter()
        .filter(|p| !p.name.starts_with("workspace/"))
        .cloned()
        .collect()
}

fn warnings_of(snapshot: &Snapshot, key: &str) -> Vec<String> {
    translate(snapshot).warnings.get(key).cloned().unwrap_or_default()
}

const ACCESS: &str = "apiVersion: security.policy.gloo.solo.io/v2\nkind: AccessPolicy\n";

#[test]
fn an_empty_workload_selector_means_the_policys_own_workspace_not_the_mesh() {
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: lock, namespace: a}}\nspec:\n  applyToWorkloads: [{{}}]\n  config:\n    authzList: [{{allowedClients: [{{serviceAccountSelector: {{name: web, namespace: a}}}}]}}]\n"
    ));
    let namespaces: Vec<String> = inbound(&snapshot).iter().map(|p| p.namespace.clone()).collect();
    assert_eq!(namespaces, ["a"], "team-a's policy must not reach team-b's workloads");
}

#[test]
fn a_policy_cannot_select_another_workspaces_workloads() {
    for selector in ["{selector: {namespace: b}}", "{selector: {workspace: team-b}}"] {
        let snapshot = two_teams(&format!(
            "{ACCESS}metadata: {{name: grab, namespace: a}}\nspec:\n  applyToWorkloads: [{selector}]\n  config:\n    authz: {{allowedPaths: [/nothing]}}\n"
        ));
        assert!(inbound(&snapshot).is_empty(), "{selector} reached across workspaces");
    }
}

#[test]
fn a_policy_in_no_workspace_selects_nothing_and_says_so() {
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: stray, namespace: elsewhere}}\nspec:\n  config:\n    authz: {{allowedPaths: [/x]}}\n"
    ));
    assert!(inbound(&snapshot).is_empty());
    let warnings = warnings_of(&snapshot, "AccessPolicy/elsewhere/stray");
    assert!(warnings.iter().any(|w| w.contains("in no workspace")), "{warnings:?}");
}

#[test]
fn authz_with_no_condition_allows_nothing() {
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: deny-all, namespace: b}}\nspec:\n  applyToWorkloads: [{{selector: {{labels: {{app: api}}}}}}]\n  config:\n    authz: {{}}\n"
    ));
    let policies = inbound(&snapshot);
    assert_eq!(policies.len(), 1);
    let rules = policies[0].rules.as_ref().expect("an enforced rule set");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].principals, ["spiffe://trellis.invalid/nobody"]);
}

#[test]
fn an_empty_client_allows_every_mesh_identity() {
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: open, namespace: b}}\nspec:\n  config:\n    authzList: [{{allowedClients: [{{}}], allowedPaths: [/public*]}}]\n"
    ));
    let policies = inbound(&snapshot);
    let rules = policies[0].rules.as_ref().unwrap();
    assert_eq!(rules[0].principals, [format!("spiffe://{}/", snapshot.trust_domain)]);
    assert!(warnings_of(&snapshot, "AccessPolicy/b/open").is_empty());
}

#[test]
fn a_workspace_client_selector_names_only_that_workspaces_identities() {
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: from-a, namespace: b}}\nspec:\n  config:\n    authzList: [{{allowedClients: [{{serviceAccountSelector: {{workspace: team-a}}}}]}}]\n"
    ));
    let policies = inbound(&snapshot);
    let rules = policies[0].rules.as_ref().unwrap();
    assert_eq!(
        rules[0].principals,
        [format!("spiffe://{}/ns/a/sa/", snapshot.trust_domain)]
    );
    // With labels too, only workloads of that workspace count.
    let snapshot = two_teams(&format!(
        "{ACCESS}metadata: {{name: from-a, namespace: b}}\nspec:\n  config:\n    authzList: [{{allowedClients: [{{serviceAccountSelector: {{workspace: team-b, labels: {{app: web}}}}}}]}}]\n"
    ));
    let rules = inbound(&snapshot)[0].rules.clone().unwrap();
    // Nobody matches: the rule must not fall back to "anybody".
    assert_eq!(rules[0].principals, ["spiffe://trellis.invalid/nobody"]);
}

/// Both teams' RouteTables carry the same route label; each team has a VirtualDestination.
fn routes_of_both_teams(policy: &str) -> Snapshot {
    let mut config = String::new();
    for team in ["a", "b"] {
        config += &format!(
            r#"
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {{name: svc, namespace: {team}}}
spec:
  hosts: [svc.{team}.internal]
  services: [{{namespace: {team}}}]
  ports: [{{number: 80}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: routes, namespace: {team}}}
spec:
  hosts: [svc.{team}.internal]
  http:
  - name: main
    labels: {{route: main}}
    forwardTo: {{destinations: [{{ref: {{name: svc, namespace: {team}}}, kind: VIRTUAL_DESTINATION, port: {{number: 80}}}}]}}
---
"#
        );
    }
    two_teams(&(config + policy))
}

fn timeouts_by_host(snapshot: &Snapshot) -> BTreeMap<String, Option<u64>> {
    translate(snapshot).clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .map(|h| (h.name.clone(), h.routes[0].policies.timeout_ms))
        .collect()
}

#[test]
fn a_route_policy_reaches_only_routes_available_in_its_workspace() {
    let snapshot = routes_of_both_teams(
        r#"
apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: slow, namespace: a}
spec:
  applyToRoutes: [{route: {labels: {route: main}}}]
  config: {requestTimeout: 7s}
"#,
    );
    let timeouts = timeouts_by_host(&snapshot);
    assert_eq!(timeouts["svc.a.internal:80"], Some(7000), "{timeouts:?}");
    assert_eq!(
        timeouts["svc.b.internal:80"], None,
        "team-a's policy claimed team-b's route"
    );
}

#[test]
fn destinations_default_to_kubernetes_services_not_virtual_destinations() {
    let policy = |kind: &str| {
        format!(
            r#"
apiVersion: resilience.policy.gloo.solo.io/v2
kind: OutlierDetectionPolicy
metadata: {{name: eject, namespace: a}}
spec:
  applyToDestinations: [{{{kind}selector: {{name: svc, namespace: a}}}}]
  config: {{consecutiveErrors: 2}}
"#
        )
    };
    let detected = |snapshot: &Snapshot| -> Vec<String> {
        translate(snapshot).clusters["cluster-1"]
            .upstreams
            .iter()
            .filter(|u| u.outlier_detection.is_some())
            .map(|u| u.name.clone())
            .collect()
    };
    // The VirtualDestination named svc is selected only with kind VIRTUAL_DESTINATION.
    assert!(detected(&routes_of_both_teams(&policy(""))).is_empty());
    // Without a kind the selector picks the Kubernetes service a route forwards to directly.
    let direct = r#"
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: direct, namespace: a}
spec:
  hosts: [web.direct]
  http:
  - forwardTo: {destinations: [{ref: {name: web, namespace: a, cluster: cluster-1}, port: {number: 80}}]}
---
"#;
    let by_service = |selector: &str| {
        format!(
            "{direct}apiVersion: resilience.policy.gloo.solo.io/v2\nkind: OutlierDetectionPolicy\nmetadata: {{name: eject, namespace: a}}\nspec:\n  applyToDestinations: [{{selector: {selector}}}]\n  config: {{consecutiveErrors: 2}}\n"
        )
    };
    let web = detected(&routes_of_both_teams(&by_service("{labels: {app: web}}")));
    assert_eq!(web.len(), 1, "{web:?}");
    assert!(web[0].contains("web.a.svc"), "{web:?}");
    // Team-a's policy does not reach team-b's service even when it names it.
    let snapshot = routes_of_both_teams(&by_service("{labels: {app: web}}").replace(
        "namespace: a}\nspec:\n  applyToDestinations",
        "namespace: b}\nspec:\n  applyToDestinations",
    ));
    assert!(detected(&snapshot).is_empty());
    assert_eq!(
        detected(&routes_of_both_teams(&policy("kind: VIRTUAL_DESTINATION, "))),
        ["outbound|80||svc.a.internal"]
    );
}

#[test]
fn an_add_on_is_found_by_name_whatever_port_the_reference_gives() {
    // Gloo's guides name the add-on's Kubernetes service port (8083) or its name (grpc); the
    // process registered here listens on its own port.
    for port in ["{number: 8083}", "{name: grpc}", "{number: 18082}"] {
        let config = format!(
            r#"
apiVersion: admin.gloo.solo.io/v2
kind: ExtAuthServer
metadata: {{name: ext-auth, namespace: a}}
spec:
  destinationServer: {{ref: {{name: ext-auth-service, namespace: gloo-mesh}}, port: {port}}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {{name: keys, namespace: a}}
spec:
  config:
    server: {{name: ext-auth}}
    glooAuth: {{configs: [{{apiKeyAuth: {{headerName: x-api-key, k8sSecretApikeyStorage: {{labelSelector: {{team: a}}}}}}}}]}}
"#
        );
        let mut snapshot = routes_of_both_teams(&config);
        let discovery = snapshot.discovery.get_mut("cluster-1").unwrap();
        discovery.addons =
            yaml_serde::from_str("[{namespace: gloo-mesh, name: ext-auth-service, address: 127.0.0.1, port: 18082}]")
                .unwrap();
        let translation = translate(&snapshot);
        let servers = &translation.clusters["cluster-1"].addon_servers;
        assert_eq!(servers.len(), 1, "{port}");
        let endpoint = servers[0]
            .endpoint
            .as_ref()
            .unwrap_or_else(|| panic!("{port}: not found; warnings {:?}", translation.warnings));
        assert_eq!(endpoint.port, 18082);
        assert_eq!(servers[0].request_body, None);
    }
}

#[test]
fn an_ext_auth_servers_request_body_setting_reaches_the_proxies() {
    let config = r#"
apiVersion: admin.gloo.solo.io/v2
kind: ExtAuthServer
metadata: {name: ext-auth, namespace: a}
spec:
  destinationServer: {ref: {name: ext-auth-service, namespace: gloo-mesh}, port: {name: grpc}}
  requestBody: {maxRequestBytes: 1024, allowPartialMessage: true}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: keys, namespace: a}
spec:
  config:
    server: {name: ext-auth}
    glooAuth: {configs: [{apiKeyAuth: {headerName: x-api-key, k8sSecretApikeyStorage: {labelSelector: {team: a}}}}]}
"#;
    let translation = translate(&routes_of_both_teams(config));
    let servers = &translation.clusters["cluster-1"].addon_servers;
    assert_eq!(
        servers[0].request_body,
        Some(trellis_model::addons::RequestBody {
            max_bytes: 1024,
            allow_partial: true,
            as_bytes: false
        })
    );
}

#[test]
fn a_dynamic_rate_limit_is_accepted_with_a_warning_naming_it() {
    let config = r#"
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerConfig
metadata: {name: limits, namespace: a}
spec:
  destinationServers: [{ref: {name: rate-limiter, namespace: gloo-mesh}, port: {name: grpc}}]
  raw:
    descriptors: [{key: generic_key, value: counter, rateLimit: {requestsPerUnit: 20, unit: MINUTE}}]
---
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerSettings
metadata: {name: settings, namespace: a}
spec: {destinationServer: {ref: {name: rate-limiter, namespace: gloo-mesh}}}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: RateLimitPolicy
metadata: {name: limit, namespace: a}
spec:
  config:
    serverSettings: {name: settings, namespace: a}
    ratelimitServerConfig: {name: limits, namespace: a}
    raw:
      rateLimits:
      - actions: [{genericKey: {descriptorValue: counter}}]
        limit: {dynamicMetadata: {metadataKey: {key: envoy.filters.http.ext_authz, path: [{key: limit}]}}}
"#;
    let warnings = warnings_of(&routes_of_both_teams(config), "RateLimitPolicy/a/limit");
    assert!(
        warnings.iter().any(|w| w.starts_with("rateLimits[0].limit")),
        "{warnings:?}"
    );
}

#[test]
fn isolation_admits_namespaces_a_sharing_workspace_names_and_owns_but_not_its_globs() {
    let config = r#"
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: aaa-owner, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: team-x}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: ops, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: gw}, {name: 'team-*'}, {name: team-x}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: a, namespace: a}
spec:
  exportTo: [{workspaces: [{name: ops}]}]
  options: {serviceIsolation: {enabled: true}}
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: ops, namespace: gw}
spec:
  importFrom: [{workspaces: [{name: team-a}]}]
"#;
    let snapshot = two_teams(config);
    let translation = translate(&snapshot);
    let isolation: Vec<&InboundPolicy> = translation.clusters["cluster-1"]
        .inbound_policies
        .iter()
        .filter(|p| p.name == "workspace/team-a/service-isolation")
        .collect();
    assert!(!isolation.is_empty(), "team-a is isolated");
    let principals = &isolation[0].rules.as_ref().unwrap()[0].principals;
    let td = &snapshot.trust_domain;
    // ops names gw and owns it: its gateways get in.
    assert!(
        principals.contains(&format!("spiffe://{td}/ns/gw/sa/")),
        "{principals:?}"
    );
    // Neither ops's glob nor team-x, which the older workspace owns, is admitted.
    assert!(principals.iter().all(|p| !p.contains("team-")), "{principals:?}");
}
