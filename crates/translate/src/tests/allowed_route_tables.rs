//! A VirtualGateway listener's `allowedRouteTables`: of the RouteTables bound to its gateway it
//! serves only those whose host its entries allow and whose table their selector picks (labels,
//! namespace, workspace); a table no listener admits gets a WARNING naming its host.

use super::*;

const CONFIG: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: foo-ws, namespace: gloo-mesh}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: foo}, {name: demo}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: bar-ws, namespace: gloo-mesh}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: bar}]}]
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {name: edge, namespace: demo}
spec:
  workloads: [{selector: {labels: {app: ingress-gateway}}}]
  listeners:
  - port: {number: 80}
    http: {}
    allowedRouteTables:
    - {host: '*.foo.com', selector: {workspace: foo-ws}}
    - {host: '*.bar.com', selector: {workspace: bar-ws}}
  - port: {number: 8080}
    http: {}
    allowedRouteTables: [{host: api.example.com}]
  - port: {number: 8081}
    http: {}
    allowedRouteTables: [{selector: {labels: {tier: public}}}]
  - port: {number: 8082}
    http: {}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: www-foo, namespace: foo, labels: {tier: public}}
spec:
  hosts: [www.foo.com]
  virtualGateways: [{name: edge, namespace: demo}]
  http: [{name: all, directResponse: {status: 200, body: foo}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: www-bar, namespace: bar}
spec:
  hosts: [www.bar.com]
  virtualGateways: [{name: edge, namespace: demo}]
  http: [{name: all, directResponse: {status: 200, body: bar}}]
---
# A foo-ws table claiming a bar.com host: *.bar.com is bar-ws's.
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: squatter, namespace: foo}
spec:
  hosts: [shop.bar.com]
  virtualGateways: [{name: edge, namespace: demo}]
  http: [{name: all, directResponse: {status: 200, body: squatter}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: api, namespace: demo}
spec:
  hosts: [api.example.com, foo.com]
  virtualGateways: [{name: edge, namespace: demo}]
  http: [{name: all, directResponse: {status: 200, body: api}}]
";

fn served_hosts(port: u16) -> Vec<String> {
    let mut snapshot = load("ingress");
    snapshot
        .resources
        .extend(trellis_api::parse_documents("edge.yaml", CONFIG).unwrap());
    let t = translate(&snapshot);
    let listener = t.clusters["cluster-1"]
        .ingress_gateways
        .iter()
        .find(|g| g.name == "demo/edge")
        .expect("the gateway")
        .listeners
        .iter()
        .find(|l| l.port == port)
        .cloned()
        .expect("the listener");
    let mut hosts: Vec<String> = listener.virtual_hosts.iter().map(|h| h.name.clone()).collect();
    hosts.sort();
    hosts
}

#[test]
fn each_host_pattern_admits_the_tables_of_its_workspace_only() {
    assert_eq!(served_hosts(80), ["www.bar.com", "www.foo.com"]);
}

#[test]
fn an_exact_host_admits_that_host_of_a_table_and_not_its_others() {
    assert_eq!(served_hosts(8080), ["api.example.com"]);
}

#[test]
fn a_selector_alone_admits_every_host_of_the_tables_it_picks() {
    assert_eq!(served_hosts(8081), ["www.foo.com"]);
}

#[test]
fn a_listener_without_the_list_serves_every_bound_table() {
    assert_eq!(
        served_hosts(8082),
        [
            "api.example.com",
            "foo.com",
            "shop.bar.com",
            "www.bar.com",
            "www.foo.com"
        ]
    );
}

#[test]
fn wildcards_need_a_name_under_the_domain() {
    use crate::ingress::host_allowed;
    assert!(host_allowed("*.foo.com", "www.foo.com"));
    assert!(host_allowed("*.foo.com", "a.b.foo.com"));
    assert!(host_allowed("*.foo.com", "*.foo.com"));
    assert!(!host_allowed("*.foo.com", "foo.com"));
    assert!(!host_allowed("*.foo.com", "www.notfoo.com"));
    assert!(host_allowed("", "anything.org") && host_allowed("*", "anything.org"));
    assert!(!host_allowed("api.example.com", "www.example.com"));
}

#[test]
fn a_table_no_listener_admits_is_named_in_its_status() {
    let mut snapshot = load("ingress");
    let only_foo = CONFIG.replace("  - port: {number: 8082}\n    http: {}\n", "");
    snapshot
        .resources
        .extend(trellis_api::parse_documents("edge.yaml", &only_foo).unwrap());
    let t = translate(&snapshot);
    let status = &t.statuses["RouteTable/foo/squatter"];
    assert_eq!(status.state, "WARNING");
    assert!(
        status
            .message
            .contains("spec.hosts: shop.bar.com is allowed on no listener of VirtualGateway demo/edge"),
        "{}",
        status.message
    );
    assert_eq!(t.statuses["RouteTable/foo/www-foo"].state, "ACCEPTED");
}
