//! Kubernetes-style service names and RouteTables with `workloadSelectors`.

use std::collections::BTreeMap;

use trellis_model::ClusterConfig;
use trellis_model::ir::{ClientSelector, RouteAction, VirtualHost};

use crate::{Translation, translate};

/// The golden cases' discovery (backend v1 and a frontend in cluster-1, backend v2 in
/// cluster-2) with `config`.
fn mk_translation(config: &str) -> Translation {
    translate(&crate::demo_fixture::demo_snapshot("config.yaml", config))
}

fn host<'c>(config: &'c ClusterConfig, name: &str) -> Option<&'c VirtualHost> {
    config.virtual_hosts.iter().map(|h| &**h).find(|h| h.name == name)
}

/// Upstreams the first route of a host forwards to.
fn upstreams(host: &VirtualHost) -> Vec<&str> {
    match &host.routes[0].action {
        RouteAction::Forward(forward) => forward.destinations.iter().map(|d| d.upstream.as_str()).collect(),
        other => panic!("not a forward: {other:?}"),
    }
}

const SELECTED_TABLE: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend-v2-for-frontend, namespace: demo}
spec:
  hosts: [backend.demo.svc.cluster.local]
  workloadSelectors:
  - selector:
      labels: {app: frontend}
  http:
  - name: v2
    forwardTo:
      destinations:
      - ref: {name: backend, namespace: demo, cluster: cluster-2}
        kind: SERVICE
        port: {number: 80}
        subset: {version: v2}
";

#[test]
fn each_cluster_answers_its_own_services_kubernetes_names() {
    let t = mk_translation("");
    let c1 = &t.clusters["cluster-1"];
    let backend = host(c1, "backend.demo.svc.cluster.local:80").expect("cluster-1 serves backend's name");
    assert_eq!(
        backend.domains,
        [
            "backend.demo.svc.cluster.local",
            "backend.demo.svc.cluster.local:80",
            "backend.demo",
            "backend.demo:80"
        ]
    );
    assert_eq!(upstreams(backend), ["outbound|80||backend.demo.svc.cluster-1"]);
    assert!(backend.clients.is_none(), "a default host");
    let c2 = &t.clusters["cluster-2"];
    let backend = host(c2, "backend.demo.svc.cluster.local:80").expect("cluster-2 serves backend's name");
    assert_eq!(upstreams(backend), ["outbound|80||backend.demo.svc.cluster-2"]);
    assert!(
        host(c2, "frontend.demo.svc.cluster.local:80").is_none(),
        "the frontend runs in cluster-1 only: cluster-2 has no such name"
    );
}

#[test]
fn selector_route_table_overrides_a_service_name_for_the_selected_clients() {
    let t = mk_translation(SELECTED_TABLE);
    assert_eq!(t.warnings.get("RouteTable/demo/backend-v2-for-frontend"), None);
    for config in t.clusters.values() {
        let name = "backend.demo.svc.cluster.local:80@00000000000000000000/demo/backend-v2-for-frontend";
        let selected = host(config, name).expect("the table's host in every cluster");
        assert_eq!(
            selected.clients,
            Some(vec![ClientSelector {
                labels: BTreeMap::from([("app".to_string(), "frontend".to_string())]),
                ..Default::default()
            }])
        );
        assert_eq!(
            selected.domains,
            host(config, "backend.demo.svc.cluster.local:80").unwrap().domains
        );
        assert_eq!(
            upstreams(selected),
            ["outbound|80|version-v2|backend.demo.svc.cluster-2"]
        );
    }
    // The default stays for everyone else.
    let default = host(&t.clusters["cluster-1"], "backend.demo.svc.cluster.local:80").unwrap();
    assert_eq!(upstreams(default), ["outbound|80||backend.demo.svc.cluster-1"]);
}

#[test]
fn route_table_without_selectors_on_a_service_name_overrides_it_for_all_clients() {
    let table = SELECTED_TABLE.replace(
        "  workloadSelectors:\n  - selector:\n      labels: {app: frontend}\n",
        "",
    );
    let t = mk_translation(&table);
    let name = "backend.demo.svc.cluster.local:80@00000000000000000000/demo/backend-v2-for-frontend";
    let overriding = host(&t.clusters["cluster-1"], name).expect("an overriding host");
    assert_eq!(overriding.clients, Some(Vec::new()), "for every client that may see it");
}

#[test]
fn short_service_name_resolves_to_the_same_service() {
    let table = SELECTED_TABLE.replace("hosts: [backend.demo.svc.cluster.local]", "hosts: [backend.demo]");
    let t = mk_translation(&table);
    let name = "backend.demo.svc.cluster.local:80@00000000000000000000/demo/backend-v2-for-frontend";
    assert!(host(&t.clusters["cluster-1"], name).is_some());
}

#[test]
fn selector_route_table_on_another_host_gets_its_own_overriding_host() {
    let table = SELECTED_TABLE.replace("hosts: [backend.demo.svc.cluster.local]", "hosts: [api.example.com]");
    let t = mk_translation(&table);
    let selected = host(
        &t.clusters["cluster-1"],
        "api.example.com@00000000000000000000/demo/backend-v2-for-frontend",
    )
    .expect("an overriding host");
    assert_eq!(selected.domains, ["api.example.com", "api.example.com:*"]);
    assert!(selected.clients.as_ref().is_some_and(|c| c.len() == 1));
    assert!(
        host(&t.clusters["cluster-1"], "api.example.com").is_none(),
        "no default for it"
    );
}

#[test]
fn unreadable_selector_warns_with_its_field_and_selects_nobody() {
    let table = SELECTED_TABLE.replace("labels: {app: frontend}", "labels: [app]");
    let t = mk_translation(&table);
    let warnings = &t.warnings["RouteTable/demo/backend-v2-for-frontend"];
    assert!(
        warnings[0].contains("spec.workloadSelectors[0].selector.labels"),
        "{warnings:?}"
    );
    let name = "backend.demo.svc.cluster.local:80@00000000000000000000/demo/backend-v2-for-frontend";
    let clients = host(&t.clusters["cluster-1"], name).unwrap().clients.clone().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].namespace.as_deref(), Some(""), "a namespace no workload has");
}

#[test]
fn route_table_on_a_gateway_and_workload_selectors_serves_both() {
    let table = SELECTED_TABLE.replace(
        "  workloadSelectors:",
        "  virtualGateways: [{name: north, namespace: demo}]\n  workloadSelectors:",
    );
    let t = mk_translation(&table);
    let name = "backend.demo.svc.cluster.local:80@00000000000000000000/demo/backend-v2-for-frontend";
    assert!(
        host(&t.clusters["cluster-1"], name).is_some(),
        "the selected sidecars get it"
    );
    assert!(
        t.warnings["RouteTable/demo/backend-v2-for-frontend"][0].contains("spec.virtualGateways[0]"),
        "the gateway part is still read: {:?}",
        t.warnings
    );
    let without = mk_translation(&table.replace(
        "  workloadSelectors:\n  - selector:\n      labels: {app: frontend}\n",
        "",
    ));
    assert!(
        host(&without.clusters["cluster-1"], name).is_none(),
        "a gateway-only table stays off sidecars"
    );
}

#[test]
fn virtual_destination_on_a_service_name_takes_it_over() {
    for name in ["backend.demo.svc.cluster.local", "backend.demo"] {
        let vd = format!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: backend, namespace: demo}}\nspec:\n  hosts: [{name}]\n  services: [{{labels: {{app: backend}}}}]\n  ports: [{{number: 80, protocol: HTTP}}]\n"
        );
        let t = mk_translation(&vd);
        let c1 = &t.clusters["cluster-1"];
        assert!(
            host(c1, "backend.demo.svc.cluster.local:80").is_none_or(|h| h.routes[0].name == "default"),
            "{name}: the VirtualDestination's host, not the service default"
        );
        let domains: Vec<&String> = c1.virtual_hosts.iter().flat_map(|h| &h.domains).collect();
        let unique: std::collections::BTreeSet<&&String> = domains.iter().collect();
        assert_eq!(
            unique.len(),
            domains.len(),
            "{name}: a domain in two hosts: {domains:?}"
        );
    }
}

#[test]
fn selector_that_selects_no_workload_warns() {
    let table = SELECTED_TABLE.replace("labels: {app: frontend}", "labels: {app: nobody}");
    let t = mk_translation(&table);
    let warnings = &t.warnings["RouteTable/demo/backend-v2-for-frontend"];
    assert!(
        warnings[0].contains("spec.workloadSelectors selects no workload yet"),
        "{warnings:?}"
    );
    assert_eq!(
        t.warnings.get("RouteTable/demo/backend-v2-for-frontend").map(Vec::len),
        Some(1)
    );
    let in_other_cluster = SELECTED_TABLE.replace(
        "labels: {app: frontend}",
        "labels: {app: frontend}\n      cluster: cluster-2",
    );
    assert!(
        mk_translation(&in_other_cluster)
            .warnings
            .contains_key("RouteTable/demo/backend-v2-for-frontend")
    );
}

#[test]
fn service_names_carry_the_port_unless_it_is_80() {
    assert_eq!(
        super::service_domains("reviews", "bookinfo", 9080),
        ["reviews.bookinfo.svc.cluster.local:9080", "reviews.bookinfo:9080"]
    );
    assert!(
        super::may_name_service("reviews.bookinfo") && super::may_name_service("reviews.bookinfo.svc.cluster.local")
    );
    assert!(!super::may_name_service("api.example.com"));
}
