//! RouteTable delegation through a real ingress gateway, in the shape of Gloo's route delegation
//! guide: a parent table on the VirtualGateway hands `/ratings` and `/reviews` to child tables
//! owned by two other namespaces. Child paths are appended to the parent's prefix; a table the
//! parent's selector does not pick (same label, another namespace) is not served; a policy
//! selects a delegated route by its labels; a table delegating to itself is refused in its status.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

const HOST: &str = "api.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_serves_child_tables_under_the_parent_prefixes() {
    let mesh = demo_mesh("delegation").await;
    let site = site_tls(&mesh.dir.join("delegation-tls"), "API CA", HOST);
    let (site_ca, cert, key) = (&site.ca, &site.cert_file, &site.key_file);

    let (port, admin) = (
        trellis_support::process::free_port(),
        trellis_support::process::free_port(),
    );
    let _gateway = spawn_ingress_gateway(&mesh, "cluster-1", admin, &[]);
    let config = format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {{name: ingress, namespace: demo}}
spec:
  workloads: [{{selector: {{labels: {{app: ingress-gateway}}}}}}]
  listeners:
  - port: {{number: {port}}}
    tls: {{mode: SIMPLE, files: {{certChain: {cert}, privateKey: {key}}}}}
    http: {{}}
---
# The parent: owned by the gateway team, it decides the host and the prefixes.
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: api, namespace: demo}}
spec:
  hosts: [{HOST}]
  virtualGateways: [{{name: ingress, namespace: demo}}]
  http:
  - name: ratings
    labels: {{area: ratings}}
    matchers: [{{uri: {{prefix: /ratings}}}}]
    delegate:
      routeTables: [{{labels: {{table: ratings}}, namespace: ratings-team}}]
  - name: reviews
    matchers: [{{uri: {{prefix: /reviews}}}}]
    delegate:
      routeTables: [{{name: reviews, namespace: reviews-team}}]
      sortMethod: ROUTE_SPECIFICITY
---
# The ratings team's table: no hosts, picked by label in its namespace.
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: ratings, namespace: ratings-team, labels: {{table: ratings}}}}
spec:
  http:
  - name: v1
    matchers: [{{uri: {{prefix: /v1}}}}]
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
  - name: v0
    labels: {{retired: 'yes'}}
    matchers: [{{uri: {{prefix: /v0}}}}]
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
---
# The reviews team's table: a catch-all listed before an exact path, and a default destination.
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: reviews, namespace: reviews-team}}
spec:
  defaultDestination: {{ref: {{name: backend, namespace: demo, cluster: cluster-2}}, port: {{number: 80}}}}
  http:
  - name: all
    forwardTo: {{}}
  - name: legacy
    matchers: [{{uri: {{exact: /legacy}}}}]
    directResponse: {{status: 410, body: gone}}
  - name: loop
    matchers: [{{uri: {{prefix: /loop}}}}]
    delegate: {{routeTables: [{{name: reviews, namespace: reviews-team}}]}}
---
# Same label, another namespace: the parent's selector does not pick it.
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: rogue, namespace: intruders, labels: {{table: ratings}}}}
spec:
  http:
  - name: admin
    matchers: [{{uri: {{prefix: /admin}}}}]
    directResponse: {{status: 200, body: intruder}}
---
# Policies select delegated routes by their labels: the child route's own and those inherited
# from the delegating route.
apiVersion: resilience.policy.gloo.solo.io/v2
kind: FaultInjectionPolicy
metadata: {{name: retire-v0, namespace: ratings-team}}
spec:
  applyToRoutes: [{{route: {{labels: {{retired: 'yes', area: ratings}}}}}}]
  config: {{abort: {{httpStatus: 418, percentage: 100}}}}
"
    );
    let response = mesh.apply("delegation.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    let get = |path: &'static str| {
        let roots = site_ca.cert_pem.clone();
        async move { https_get(port, HOST, &roots, None, path).await }
    };
    // /ratings + /v1 of the ratings table: backend v1 in cluster-1.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ratings = loop {
        match get("/ratings/v1").await {
            Ok(response) if response.status == 200 => break response,
            other => assert!(Instant::now() < deadline, "/ratings/v1 never served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ratings.body.contains("\"version\":\"v1\""), "{}", ratings.body);
    let retired = get("/ratings/v0").await.unwrap();
    assert_eq!(
        retired.status, 418,
        "the policy selects /ratings/v0 by its labels: {}",
        retired.body
    );

    // /reviews: the reviews table's default destination, backend v2 in cluster-2.
    let reviews = get("/reviews/anything").await.unwrap();
    assert_eq!(reviews.status, 200, "{}", reviews.body);
    assert!(reviews.body.contains("\"version\":\"v2\""), "{}", reviews.body);

    // By specificity the exact /reviews/legacy wins over the catch-all listed before it.
    let legacy = get("/reviews/legacy").await.unwrap();
    assert_eq!((legacy.status, legacy.body.as_str()), (410, "gone"));

    // A child path is relative to the parent prefix: /v1 alone matches no route.
    assert_eq!(get("/v1").await.unwrap().status, 404);
    // The rogue table's route is not served: /ratings/admin matches nothing.
    let rogue = get("/ratings/admin").await.unwrap();
    assert_eq!(rogue.status, 404, "{}", rogue.body);
    assert!(!rogue.body.contains("intruder"));

    // The reviews table delegating to itself is a cycle: refused, named in its status.
    let api = mesh.api().unwrap();
    let status = |key: &'static str| {
        let api = api.clone();
        async move {
            let resource = api.get_json(&format!("/api/v1/resources/{key}")).await.unwrap();
            resource["status"].to_string()
        }
    };
    let reviews_status = status("RouteTable/reviews-team/reviews").await;
    assert!(reviews_status.contains("WARNING"), "{reviews_status}");
    assert!(
        reviews_status.contains(
            "makes a cycle (RouteTable/demo/api -> RouteTable/reviews-team/reviews -> RouteTable/reviews-team/reviews)"
        ),
        "{reviews_status}"
    );
    for key in ["RouteTable/demo/api", "RouteTable/ratings-team/ratings"] {
        let accepted = status(key).await;
        assert!(accepted.contains("ACCEPTED"), "{key}: {accepted}");
    }
    finish(mesh).await;
}
