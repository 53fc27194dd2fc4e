//! What crosses between workspaces, as Gloo's WorkspaceSettings document it
//! (https://github.com/solo-io/solo-apis/blob/main/api/gloo.solo.io/admin/v2/workspace_settings.proto):
//! `resources` filters on both sides, workspaces selected by label, the `global` settings,
//! federation `ports` and imported services, and service isolation per shared service.

use std::collections::BTreeMap;

use trellis_model::ir::Visibility;
use trellis_model::{ClusterDiscovery, Snapshot};

use crate::{Translation, translate};

/// Workspace `shop` owns namespace `shop` (services `a` and `b`, ports http 80 and admin
/// 9090) and `guest` owns `guest` (service `g`), in cluster-1; `config` is added.
fn shop_and_guest(config: &str) -> Snapshot {
    let base = r#"
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: shop, namespace: trellis, labels: {team: shop}}
spec:
  workloadClusters: [{name: "*", namespaces: [{name: shop}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: guest, namespace: trellis, labels: {team: web}}
spec:
  workloadClusters: [{name: "*", namespaces: [{name: guest}]}]
"#;
    let mut resources = trellis_api::parse_documents("workspaces.yaml", base).unwrap();
    resources.extend(trellis_api::parse_documents("config.yaml", config).unwrap());
    let discovery: ClusterDiscovery = yaml_serde::from_str(
        r#"
cluster: cluster-1
workloads:
- {name: a-1, namespace: shop, service: a, serviceAccount: a, labels: {app: a, expose: "true"}, address: 127.0.0.1,
   ports: [{name: http, port: 80, inboundPort: 31001, appPort: 31101}, {name: admin, port: 9090, inboundPort: 31011, appPort: 31111}]}
- {name: b-1, namespace: shop, service: b, serviceAccount: b, labels: {app: b}, address: 127.0.0.1,
   ports: [{name: http, port: 80, inboundPort: 31002, appPort: 31102}]}
- {name: g-1, namespace: guest, service: g, serviceAccount: g, labels: {app: g}, address: 127.0.0.1,
   ports: [{name: http, port: 80, inboundPort: 31003, appPort: 31103}]}
"#,
    )
    .unwrap();
    Snapshot::new(resources, BTreeMap::from([("cluster-1".to_string(), discovery)]))
}

fn settings(workspace: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: admin.gloo.solo.io/v2\nkind: WorkspaceSettings\nmetadata: {{name: {workspace}, namespace: {namespace}}}\nspec: {spec}\n---\n"
    )
}

/// Who sees the virtual host of that name in cluster-1 (`None` inside: everyone); `None`:
/// there is no such host.
fn seen_by(t: &Translation, host: &str) -> Option<Visibility> {
    t.clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .find(|h| h.name == host)
        .map(|h| h.workspaces.clone())
}

fn ws(names: &[&str]) -> Option<Visibility> {
    Some(Some(names.iter().map(|n| n.to_string()).collect()))
}

const A: &str = "a.shop.svc.cluster.local:80";
const B: &str = "b.shop.svc.cluster.local:80";

const VIRTUAL_DESTINATION: &str = "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: a-vd, namespace: shop, labels: {expose: \"true\"}}
spec:
  hosts: [a.mesh.internal]
  services: [{labels: {app: a}}]
  ports: [{number: 80}]
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: b-vd, namespace: shop}
spec:
  hosts: [b.mesh.internal]
  services: [{labels: {app: b}}]
  ports: [{number: 80}]
---
";

#[test]
fn an_export_naming_one_service_shares_that_service_only() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: SERVICE, name: a}]}]}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    assert_eq!(seen_by(&t, A), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, B), ws(&["shop"]), "b is not in the export's resources");
}

#[test]
fn an_import_filter_narrows_what_the_export_offers_and_both_must_agree() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: SERVICE, name: a}]}]}"
        ),
        settings(
            "guest",
            "guest",
            "{importFrom: [{workspaces: [{name: shop}], resources: [{kind: SERVICE, name: b}]}]}"
        ),
    )));
    assert_eq!(seen_by(&t, A), ws(&["shop"]), "guest does not import a");
    assert_eq!(seen_by(&t, B), ws(&["shop"]), "shop does not export b");
}

#[test]
fn a_kind_filter_shares_only_resources_of_that_kind() {
    let t = translate(&shop_and_guest(&format!(
        "{VIRTUAL_DESTINATION}{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: VIRTUAL_DESTINATION}]}]}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    assert_eq!(seen_by(&t, "a.mesh.internal:80"), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, "b.mesh.internal:80"), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, A), ws(&["shop"]), "services are not virtual destinations");
    assert_eq!(
        t.statuses["VirtualDestination/shop/a-vd"].workspaces,
        Some(vec!["guest".to_string(), "shop".to_string()])
    );
}

#[test]
fn a_label_filter_of_kind_all_shares_every_kind_carrying_the_label() {
    let t = translate(&shop_and_guest(&format!(
        "{VIRTUAL_DESTINATION}{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: ALL, labels: {expose: \"true\"}}]}]}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    assert_eq!(seen_by(&t, "a.mesh.internal:80"), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, "b.mesh.internal:80"), ws(&["shop"]));
    assert_eq!(
        seen_by(&t, A),
        ws(&["guest", "shop"]),
        "service a's workloads carry the label"
    );
    assert_eq!(seen_by(&t, B), ws(&["shop"]));
}

#[test]
fn a_namespace_or_cluster_filter_that_does_not_match_shares_nothing() {
    for resource in ["{namespace: elsewhere}", "{kind: SERVICE, cluster: cluster-2}"] {
        let t = translate(&shop_and_guest(&format!(
            "{}{}",
            settings(
                "shop",
                "shop",
                &format!("{{exportTo: [{{workspaces: [{{name: guest}}], resources: [{resource}]}}]}}")
            ),
            settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
        )));
        assert_eq!(seen_by(&t, A), ws(&["shop"]), "{resource}");
    }
}

#[test]
fn a_route_table_is_shared_by_its_own_name_and_labels() {
    let tables = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: open, namespace: shop}
spec:
  hosts: [open.internal]
  http: [{directResponse: {status: 200}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: closed, namespace: shop}
spec:
  hosts: [closed.internal]
  http: [{directResponse: {status: 200}}]
---
";
    let t = translate(&shop_and_guest(&format!(
        "{tables}{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: ROUTE_TABLE, name: open, namespace: shop}]}]}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    assert_eq!(seen_by(&t, "open.internal"), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, "closed.internal"), ws(&["shop"]));
}

#[test]
fn workspaces_are_selected_by_the_labels_of_their_workspace_resource() {
    let import = settings(
        "guest",
        "guest",
        "{importFrom: [{workspaces: [{selector: {team: shop}}]}]}",
    );
    for (export, shared) in [
        ("{exportTo: [{workspaces: [{selector: {team: web}}]}]}", true),
        ("{exportTo: [{workspaces: [{selector: {team: ops}}]}]}", false),
        // Name and labels together: both must match.
        (
            "{exportTo: [{workspaces: [{name: guest, selector: {team: ops}}]}]}",
            false,
        ),
        (
            "{exportTo: [{workspaces: [{name: \"gu*\", selector: {team: web}}]}]}",
            true,
        ),
    ] {
        let t = translate(&shop_and_guest(&format!(
            "{}{import}",
            settings("shop", "shop", export)
        )));
        let expected = if shared { ws(&["guest", "shop"]) } else { ws(&["shop"]) };
        assert_eq!(seen_by(&t, A), expected, "{export}");
    }
}

#[test]
fn the_global_settings_add_their_sharing_to_every_workspace() {
    // Both sides come from the global settings alone.
    let t = translate(&shop_and_guest(&settings(
        "global",
        "gloo-mesh",
        "{exportTo: [{workspaces: [{name: \"*\"}], resources: [{kind: SERVICE, name: a}]}], importFrom: [{workspaces: [{name: \"*\"}]}]}",
    )));
    assert_eq!(seen_by(&t, A), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, B), ws(&["shop"]));
    // A WorkspaceSettings named global elsewhere is an ordinary workspace's.
    let t = translate(&shop_and_guest(&settings(
        "global",
        "shop",
        "{exportTo: [{workspaces: [{name: \"*\"}]}], importFrom: [{workspaces: [{name: \"*\"}]}]}",
    )));
    assert_eq!(seen_by(&t, A), ws(&["shop"]), "guest imports nothing");
}

#[test]
fn the_global_settings_options_override_each_workspaces_own() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{options: {federation: {enabled: true, hostSuffix: shop.example}, serviceIsolation: {enabled: true}}}"
        ),
        settings(
            "global",
            "trellis",
            "{options: {federation: {enabled: true, hostSuffix: mesh.example}, serviceIsolation: {enabled: false}}}"
        ),
    )));
    assert!(seen_by(&t, "a.shop.cluster-1.mesh.example:80").is_some());
    assert!(
        seen_by(&t, "g.guest.cluster-1.mesh.example:80").is_some(),
        "guest is federated too"
    );
    assert!(seen_by(&t, "a.shop.cluster-1.shop.example:80").is_none());
    let isolation = t.clusters["cluster-1"]
        .inbound_policies
        .iter()
        .filter(|p| p.name.ends_with("/service-isolation"))
        .count();
    assert_eq!(isolation, 0, "the global settings turn isolation off");
}

#[test]
fn federation_names_only_the_listed_ports_by_number_or_name() {
    for (ports, with_http, with_admin) in [
        ("[{number: 9090}]", false, true),
        ("[{name: http}]", true, false),
        ("[]", true, true),
    ] {
        let t = translate(&shop_and_guest(&settings(
            "shop",
            "shop",
            &format!("{{options: {{federation: {{enabled: true, ports: {ports}}}}}}}"),
        )));
        assert_eq!(
            seen_by(&t, "a.shop.cluster-1.global:80").is_some(),
            with_http,
            "{ports}"
        );
        assert_eq!(
            seen_by(&t, "a.shop.cluster-1.global:9090").is_some(),
            with_admin,
            "{ports}"
        );
        // The Kubernetes-style names keep every port.
        assert!(seen_by(&t, "a.shop.svc.cluster.local:9090").is_some());
    }
}

#[test]
fn a_federated_name_is_seen_as_its_service_is() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: SERVICE, name: a}]}], options: {federation: {enabled: true}}}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    assert_eq!(seen_by(&t, "a.shop.cluster-1.global:80"), ws(&["guest", "shop"]));
    assert_eq!(seen_by(&t, "b.shop.cluster-1.global:80"), ws(&["shop"]));
}

#[test]
fn federation_names_selected_imported_services_for_the_importing_workspace() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: SERVICE, name: a}]}]}"
        ),
        settings(
            "guest",
            "guest",
            "{importFrom: [{workspaces: [{name: shop}]}], options: {federation: {enabled: true, serviceSelector: [{workspace: shop}]}}}"
        ),
    )));
    assert_eq!(seen_by(&t, "a.shop.cluster-1.global:80"), ws(&["guest"]));
    assert_eq!(seen_by(&t, "b.shop.cluster-1.global:80"), None, "b is not imported");
    assert_eq!(
        seen_by(&t, "g.guest.cluster-1.global:80"),
        None,
        "the selector names shop's services only"
    );
}

#[test]
fn isolation_admits_a_workspace_only_to_the_services_shared_with_it() {
    let t = translate(&shop_and_guest(&format!(
        "{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: SERVICE, name: a}]}], options: {serviceIsolation: {enabled: true}}}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    )));
    let principals = |service: &str| -> Vec<String> {
        t.clusters["cluster-1"]
            .inbound_policies
            .iter()
            .find(|p| p.name == "workspace/shop/service-isolation" && p.service == service)
            .unwrap_or_else(|| panic!("no isolation for {service}"))
            .rules
            .as_ref()
            .unwrap()[0]
            .principals
            .clone()
    };
    assert_eq!(
        principals("a"),
        [
            "spiffe://trellis.local/ns/guest/sa/",
            "spiffe://trellis.local/ns/shop/sa/"
        ]
    );
    assert_eq!(principals("b"), ["spiffe://trellis.local/ns/shop/sa/"]);
}

#[test]
fn a_route_policy_reaches_only_route_tables_shared_with_its_workspace() {
    let config = format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: open, namespace: shop}}
spec:
  hosts: [open.internal]
  http: [{{name: r, labels: {{route: x}}, directResponse: {{status: 200}}}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: closed, namespace: shop}}
spec:
  hosts: [closed.internal]
  http: [{{name: r, labels: {{route: x}}, directResponse: {{status: 200}}}}]
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {{name: guest-slow, namespace: guest}}
spec:
  applyToRoutes: [{{route: {{labels: {{route: x}}}}}}]
  config: {{requestTimeout: 7s}}
---
{}{}",
        settings(
            "shop",
            "shop",
            "{exportTo: [{workspaces: [{name: guest}], resources: [{kind: ROUTE_TABLE, name: open}]}]}"
        ),
        settings("guest", "guest", "{importFrom: [{workspaces: [{name: shop}]}]}"),
    );
    let t = translate(&shop_and_guest(&config));
    let timeout = |host: &str| {
        let host = t.clusters["cluster-1"]
            .virtual_hosts
            .iter()
            .find(|h| h.name == host)
            .unwrap();
        host.routes[0].policies.timeout_ms
    };
    assert_eq!(
        timeout("open.internal"),
        Some(7000),
        "the shared table's route gets guest's policy"
    );
    assert_eq!(
        timeout("closed.internal"),
        None,
        "guest's policy reached a table not shared with it"
    );
}

#[test]
fn unusable_workspace_selectors_and_federation_ports_are_refused_naming_the_field() {
    for (spec, field) in [
        ("{importFrom: [{workspaces: [{}]}]}", "spec.importFrom[0].workspaces[0]"),
        (
            "{exportTo: [{resources: [{kind: SERVICE}]}]}",
            "spec.exportTo[0].workspaces",
        ),
        (
            "{options: {federation: {enabled: true, ports: [{number: 70000}]}}}",
            "spec.options.federation.ports[0].number",
        ),
        (
            "{options: {federation: {enabled: true, hostSuffix: \"bad suffix\"}}}",
            "spec.options.federation.hostSuffix",
        ),
        (
            "{exportTo: [{workspaces: [{name: x}], resources: [{kind: POLICY}]}]}",
            "kind",
        ),
    ] {
        let error = trellis_api::parse_documents("settings.yaml", &settings("s", "shop", spec))
            .expect_err(spec)
            .to_string();
        assert!(
            error.contains(field) && error.contains("WorkspaceSettings/shop/s"),
            "{spec}: {error}"
        );
    }
}

/// `options.virtualDestClientMode` is the default of the workspace's VirtualDestinations; one
/// that sets its own `clientMode` keeps it (Gloo's clientmode.proto).
#[test]
fn a_workspace_client_mode_is_the_default_of_its_virtual_destinations() {
    let vd = |name: &str, client_mode: &str| {
        format!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  hosts: [{name}.mesh.internal]\n  services: [{{labels: {{app: a}}}}]\n  ports: [{{number: 80}}]\n{client_mode}---\n"
        )
    };
    let config = format!(
        "{}{}{}",
        settings(
            "shop",
            "shop",
            "{options: {virtualDestClientMode: {tlsTermination: {}}}}"
        ),
        vd("inherits", ""),
        vd("own", "  clientMode: {sniRouting: {}}\n"),
    );
    let t = translate(&shop_and_guest(&config));
    let key = |host: &str| {
        t.clusters["cluster-1"]
            .gateway_upstreams
            .iter()
            .find(|u| u.name == format!("gateway|80||{host}"))
            .map(|u| (u.key.clone(), u.terminate_tls))
            .unwrap_or_else(|| panic!("no gateway upstream for {host}"))
    };
    assert_eq!(
        key("inherits.mesh.internal"),
        ("terminate_.80_._.inherits.mesh.internal".to_string(), true)
    );
    assert_eq!(
        key("own.mesh.internal"),
        ("outbound_.80_._.own.mesh.internal".to_string(), false)
    );
    // Applied: no WARNING names it.
    let status = &t.statuses["WorkspaceSettings/shop/shop"];
    assert!(!status.message.contains("virtualDestClientMode"), "{status:?}");
}
