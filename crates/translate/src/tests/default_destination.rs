//! A RouteTable's `defaultDestination`: requests that match none of its routes go there (Gloo's
//! route table reference: "All other HTTP traffic is sent to the default destination"); routes
//! that name no destination use it too; a delegated child's default does not catch the parent's
//! other requests.

use super::*;

const CONFIG: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {name: edge, namespace: demo}
spec:
  workloads: [{selector: {labels: {app: ingress-gateway}}}]
  listeners: [{port: {number: 80}, http: {}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: root, namespace: demo}
spec:
  hosts: [shop.example.com]
  virtualGateways: [{name: edge}]
  defaultDestination: {ref: {name: backend, cluster: cluster-2}, port: {number: 80}}
  http:
  - name: exact
    matchers: [{uri: {exact: /v1}}]
    forwardTo: {destinations: [{ref: {name: backend, cluster: cluster-1}, port: {number: 80}}]}
  - name: api
    matchers: [{uri: {prefix: /api}}]
    delegate: {routeTables: [{name: child}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: demo}
spec:
  defaultDestination: {ref: {name: frontend}, port: {number: 80}}
  http:
  - name: orders
    matchers: [{uri: {prefix: /orders}}]
    forwardTo: {}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: lost, namespace: demo}
spec:
  hosts: [lost.example.com]
  virtualGateways: [{name: edge}]
  defaultDestination: {ref: {name: nowhere}, kind: VIRTUAL_DESTINATION, port: {number: 80}}
  http:
  - name: exact
    matchers: [{uri: {exact: /v1}}]
    forwardTo: {destinations: [{ref: {name: backend, cluster: cluster-1}, port: {number: 80}}]}
";

fn translated() -> Translation {
    let mut snapshot = load("ingress");
    snapshot
        .resources
        .extend(trellis_api::parse_documents("default.yaml", CONFIG).unwrap());
    translate(&snapshot)
}

/// (route name, path match, upstream or direct status) of a gateway host, in order.
fn routes(t: &Translation, host: &str) -> Vec<(String, String, String)> {
    let gateway = t.clusters["cluster-1"]
        .ingress_gateways
        .iter()
        .find(|g| g.name == "demo/edge")
        .expect("the gateway");
    let vhost = gateway.listeners[0]
        .virtual_hosts
        .iter()
        .find(|h| h.name == host)
        .expect("the host");
    vhost
        .routes
        .iter()
        .map(|r| {
            let action = match &r.action {
                trellis_model::ir::RouteAction::Forward(f) => f.destinations[0].upstream.clone(),
                trellis_model::ir::RouteAction::DirectResponse { status, .. } => status.to_string(),
                other => format!("{other:?}"),
            };
            (r.name.clone(), format!("{:?}", r.matcher.path), action)
        })
        .collect()
}

#[test]
fn requests_no_route_matches_go_to_the_default_destination_last() {
    let t = translated();
    let routes = routes(&t, "shop.example.com");
    let last = routes.last().expect("routes");
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2.as_str()),
        (
            "demo/root/defaultDestination",
            "Prefix(\"/\")",
            "outbound|80||backend.demo.svc.cluster-2"
        ),
        "{routes:?}"
    );
    // The child's own default serves its route without destinations, not the parent's others.
    let orders = routes
        .iter()
        .find(|r| r.1.contains("/api/orders"))
        .expect("the child's route");
    assert_eq!(orders.2, "outbound|80||frontend.demo.svc.mesh", "{routes:?}");
    assert_eq!(
        routes.iter().filter(|r| r.0.ends_with("defaultDestination")).count(),
        1,
        "{routes:?}"
    );
}

#[test]
fn an_unresolvable_default_destination_answers_500_with_a_warning() {
    let t = translated();
    let routes = routes(&t, "lost.example.com");
    assert_eq!(routes.last().map(|r| r.2.as_str()), Some("500"), "{routes:?}");
    let status = &t.statuses["RouteTable/demo/lost"];
    assert_eq!(status.state, "WARNING");
    assert!(
        status.message.contains("spec.defaultDestination:"),
        "{}",
        status.message
    );
}
