//! Gloo's routing guide examples (RouteTables, VirtualDestinations, VirtualGateways, the egress
//! gateway), applied unchanged to the bookinfo mesh (real Envoy), each checked for what its guide
//! says it does: who answers, on which host, port and path, and what must not happen.

use std::collections::BTreeMap;
use std::time::Duration;

use trellis_gloo_conformance::bookinfo::{Answer, Bookinfo, Request, poll, service_url};

/// How long config takes, at most, to reach every proxy in these checks.
const SETTLE: Duration = Duration::from_secs(30);

/// Counts `n` answers of an ingress port for `host` and `path` by `field` (non-200 as `HTTP <status>`).
async fn tally_ingress(
    bookinfo: &Bookinfo,
    port: u16,
    host: &str,
    path: &str,
    n: usize,
    field: &str,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let answer = bookinfo.ingress(port, host, path, &[]).await;
        *counts.entry(label(&answer, field)).or_default() += 1;
    }
    counts
}

fn label(answer: &Answer, field: &str) -> String {
    if answer.status == 200 {
        answer.field(field).to_string()
    } else {
        format!("HTTP {}", answer.status)
    }
}

/// Waits until the ingress answers `host` + `path` with 200 from `service`; returns that answer.
async fn until_ingress_serves(
    bookinfo: &Bookinfo,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    service: &str,
) -> Answer {
    poll(
        &format!("the ingress serving {host}{path} from {service}"),
        SETTLE,
        || async {
            let answer = bookinfo.ingress(port, host, path, headers).await;
            if answer.status == 200 && answer.field("service") == service {
                Ok(answer)
            } else {
                Err(format!("HTTP {} {}", answer.status, answer.body))
            }
        },
    )
    .await
}

/// Waits until the ingress answers `host` + `path` with `status` (a route gone, a redirect).
async fn until_ingress_status(bookinfo: &Bookinfo, port: u16, host: &str, path: &str, status: u16) -> Answer {
    poll(
        &format!("the ingress answering {host}{path} with {status}"),
        SETTLE,
        || async {
            let answer = bookinfo.ingress(port, host, path, &[]).await;
            if answer.status == status {
                Ok(answer)
            } else {
                Err(format!("HTTP {} {}", answer.status, answer.body))
            }
        },
    )
    .await
}

/// A resource's status state (ACCEPTED, WARNING...) and message, once translated.
async fn settled_status(bookinfo: &Bookinfo, kind: &str, namespace: &str, name: &str) -> (String, String) {
    poll(&format!("{kind}/{namespace}/{name} translated"), SETTLE, || async {
        let status = bookinfo.status(kind, namespace, name).await;
        let state = status["resource"]["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let message = status["resource"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state.is_empty() || state == "PENDING" {
            Err(status.to_string())
        } else {
            Ok((state, message))
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Inside the mesh: RouteTable workload selectors, VirtualDestinations east-west.
// ---------------------------------------------------------------------------------------------

/// route-table-workload-selectors.yaml: "requests from the productpage workloads to
/// reviews.bookinfo.svc.cluster.local go to reviews version v2 only; other clients are
/// unaffected." Productpage gets v2 every time; ratings, another client, still gets v1 and v2
/// (cluster-1's reviews); with the table deleted productpage gets v1 again.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_selector_sends_only_productpage_to_reviews_v2() {
    let bookinfo = Bookinfo::start("gloo-route-selectors").await;
    let url = format!("{}/reviews/1", service_url("reviews"));
    bookinfo.apply_example("route-table-workload-selectors.yaml").await;
    bookinfo
        .until("productpage sent to reviews v2 only", SETTLE, || async {
            bookinfo.tally("productpage", &url, 20, "version").await == BTreeMap::from([("v2".to_string(), 20)])
        })
        .await;
    let others = bookinfo.tally("ratings", &url, 40, "version").await;
    assert!(
        others.get("v1").copied().unwrap_or(0) > 0 && others.get("v2").copied().unwrap_or(0) > 0 && others.len() == 2,
        "ratings, not selected, still reaches both of cluster-1's reviews versions: {others:?}"
    );

    bookinfo.delete_example("route-table-workload-selectors.yaml").await;
    bookinfo
        .until("productpage reaching reviews v1 again", SETTLE, || async {
            bookinfo
                .tally("productpage", &url, 20, "version")
                .await
                .contains_key("v1")
        })
        .await;
    bookinfo.finish().await;
}

/// virtual-destination-east-west.yaml: "Clients in the mesh reach every service labelled app:
/// destination-app, in any cluster, at destination-app.mesh.internal.com:8080 (target port
/// 9080)." destination-app runs in both clusters; a client in each cluster reaches both
/// instances on 8080 (the local one directly, the other through its cluster's east-west
/// gateway); the port the VirtualDestination does not name (9080) is not served under that host.
#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_destination_serves_destination_app_from_any_cluster() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-vd-east-west", &["global"]).await;
    bookinfo.start_workload(
        "destination-app-1",
        "global",
        "destination-app",
        "v1",
        "cluster-1",
        9080,
    );
    bookinfo.start_workload(
        "destination-app-2",
        "global",
        "destination-app",
        "v2",
        "cluster-2",
        9080,
    );
    bookinfo.apply_example("virtual-destination-east-west.yaml").await;
    let url = "http://destination-app.mesh.internal.com:8080/hello";
    // The remote instance is reachable only once the other cluster's east-west gateway has
    // its config too, which may land after the local sidecar's: wait until each client has
    // seen both clusters, then count.
    for client in ["productpage", "reviews-v3"] {
        bookinfo
            .until(
                &format!("{client} reaching destination-app in both clusters"),
                Duration::from_secs(60),
                || async {
                    let counts = bookinfo.tally(client, url, 6, "cluster").await;
                    counts.contains_key("cluster-1") && counts.contains_key("cluster-2")
                },
            )
            .await;
    }
    let from_cluster_1 = bookinfo.tally("productpage", url, 20, "cluster").await;
    let from_cluster_2 = bookinfo.tally("reviews-v3", url, 20, "cluster").await;
    for (client, counts) in [("productpage", &from_cluster_1), ("reviews-v3", &from_cluster_2)] {
        assert!(
            counts.len() == 2 && counts.get("cluster-1") > Some(&0) && counts.get("cluster-2") > Some(&0),
            "{client} reaches destination-app in both clusters, nothing else: {counts:?}"
        );
    }
    let wrong_port = bookinfo
        .call(
            "productpage",
            Request::get("http://destination-app.mesh.internal.com:9080/hello"),
        )
        .await;
    assert_ne!(
        (wrong_port.status, wrong_port.field("service")),
        (200, "destination-app"),
        "only port 8080 is the VirtualDestination's: {}",
        wrong_port.body
    );

    bookinfo.finish().await;
}

// ---------------------------------------------------------------------------------------------
// At the ingress gateway: VirtualGateway listeners, delegation, weighted subsets, north-south.
// ---------------------------------------------------------------------------------------------

/// The route table the VirtualGateway reference's listener serves in our checks: www.bookinfo.com
/// (one of the `*.bookinfo.com` hosts it allows) to productpage.
/// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/virtual_gateway/
const WWW_BOOKINFO_ROUTES: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: www-bookinfo
  namespace: bookinfo
spec:
  hosts:
  - www.bookinfo.com
  virtualGateways:
  - name: istio-ingressgateway
    namespace: bookinfo
  http:
  - name: productpage
    forwardTo:
      destinations:
      - ref:
          name: productpage
          namespace: bookinfo
        port:
          number: 9080
";

/// A host the `*.bookinfo.com` listener does not allow, bound to the same gateway.
const OTHER_HOST_ROUTES: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: not-bookinfo
  namespace: bookinfo
spec:
  hosts:
  - shop.example.org
  virtualGateways:
  - name: istio-ingressgateway
    namespace: bookinfo
  http:
  - name: details
    forwardTo:
      destinations:
      - ref:
          name: details
          namespace: bookinfo
        port:
          number: 9080
";

/// The route delegation guide's gateway ("before you begin": an HTTP listener on port 80 of the
/// ingress gateway, for every host).
/// https://docs.solo.io/gloo-mesh-enterprise/main/traffic_management/concepts/route-tables/route-delegation/
const DELEGATION_GATEWAY: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata:
  name: istio-ingressgateway
  namespace: bookinfo
spec:
  listeners:
  - http: {}
    port:
      number: 80
  workloads:
  - selector:
      labels:
        istio: ingressgateway
";

/// virtual-gateway-http.yaml: "The gateway pods labelled istio: ingressgateway listen for HTTP
/// on port 80 and serve the route tables for *.bookinfo.com." www.bookinfo.com is served on port
/// 80 of Gloo's ingress gateway; a host no route table names is not; a route table for another
/// host bound to the same gateway is kept off the listener by its `allowedRouteTables` (its
/// status says so), and served once the listener has no such list.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_serves_only_the_route_tables_of_its_hosts() {
    let mut bookinfo = Bookinfo::start("gloo-vg-http").await;
    let port = bookinfo.start_ingress("cluster-1", &[80])[&80];
    bookinfo.apply_example("virtual-gateway-http.yaml").await;
    bookinfo.apply("www-bookinfo.yaml", WWW_BOOKINFO_ROUTES).await;
    bookinfo.apply("not-bookinfo.yaml", OTHER_HOST_ROUTES).await;
    until_ingress_serves(&bookinfo, port, "www.bookinfo.com", "/productpage", &[], "productpage").await;
    let unknown = bookinfo.ingress(port, "www.example.com", "/productpage", &[]).await;
    assert_eq!(unknown.status, 404, "no route table for that host: {}", unknown.body);
    let other = bookinfo.ingress(port, "shop.example.org", "/details/1", &[]).await;
    assert_eq!(
        other.status, 404,
        "shop.example.org is not a *.bookinfo.com host: {}",
        other.body
    );
    let (state, message) = settled_status(&bookinfo, "RouteTable", "bookinfo", "not-bookinfo").await;
    assert_eq!(state, "WARNING");
    assert!(
        message.contains("shop.example.org is allowed on no listener"),
        "{message}"
    );

    // The same listener without the list: what kept the host off was the listener's list.
    bookinfo.apply("delegation-gateway.yaml", DELEGATION_GATEWAY).await;
    until_ingress_serves(&bookinfo, port, "shop.example.org", "/details/1", &[], "details").await;
    bookinfo.finish().await;
}

/// route-table-delegation-labels.yaml: "The parent table serves api.example.com at the ingress
/// gateway and delegates /ratings to the child tables labelled table: ratings, which forward to
/// the ratings service". Child matchers are relative to the parent's (Gloo's matcher
/// inheritance: parent /product-1 with child /foo serves /product-1/foo,
/// https://docs.solo.io/gloo-mesh-enterprise/main/traffic_management/concepts/route-tables/route-matchers/),
/// so the child's /ratings is served at /ratings/ratings; the parent's prefix alone, and the
/// child's path alone, are not routes. Without the child's label nothing is delegated.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_table_delegates_ratings_to_the_labelled_child() {
    let mut bookinfo = Bookinfo::start("gloo-delegation").await;
    let ports = bookinfo.start_ingress("cluster-1", &[80]);
    let port = ports[&80];
    bookinfo.apply("delegation-gateway.yaml", DELEGATION_GATEWAY).await;
    bookinfo.apply_example("route-table-delegation-labels.yaml").await;
    let answer = until_ingress_serves(&bookinfo, port, "api.example.com", "/ratings/ratings/1", &[], "ratings").await;
    assert_eq!(answer.field("path"), "/ratings/ratings/1", "the path arrives as sent");
    // The child's reference names no cluster: the ratings service of either cluster may answer.
    assert!(
        ["cluster-1", "cluster-2"].contains(&answer.field("cluster")),
        "{}",
        answer.body
    );
    for path in ["/ratings/1", "/reviews/1"] {
        let miss = bookinfo.ingress(port, "api.example.com", path, &[]).await;
        assert_eq!(miss.status, 404, "{path} is no delegated route: {}", miss.body);
    }
    let other_host = bookinfo
        .ingress(port, "www.example.com", "/ratings/ratings/1", &[])
        .await;
    assert_eq!(other_host.status, 404, "the parent serves api.example.com only");
    let (state, message) = settled_status(&bookinfo, "RouteTable", "bookinfo", "api-example-com").await;
    assert_eq!(state, "ACCEPTED", "{message}");

    // The child relabelled: the parent's selector no longer picks it.
    let unlabelled = trellis_gloo_conformance::example("route-table-delegation-labels.yaml")
        .replace("labels:\n    table: ratings\n", "labels:\n    table: retired\n");
    assert_ne!(
        unlabelled,
        trellis_gloo_conformance::example("route-table-delegation-labels.yaml")
    );
    bookinfo.apply("delegation-unlabelled.yaml", &unlabelled).await;
    until_ingress_status(&bookinfo, port, "api.example.com", "/ratings/ratings/1", 404).await;
    bookinfo.finish().await;
}

/// The weighted-subsets reference example's gateway ("the virtual gateway you previously
/// created": istio-ingressgateway in `global`), port 80 for its example.com routes and port 8080
/// for the north-south VirtualDestination's my.app.com.
/// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/route_table/
const GLOBAL_GATEWAY: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata:
  name: istio-ingressgateway
  namespace: global
spec:
  listeners:
  - http: {}
    port:
      number: 80
  - http: {}
    port:
      number: 8080
  workloads:
  - selector:
      labels:
        istio: ingressgateway
";

/// What exposes the north-south VirtualDestination on the gateway: a route table for its host
/// forwarding to it (Gloo: "a route table ... forwardTo a virtual destination" for ingress).
/// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/virtual_destination/
const MY_APP_ROUTES: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: my-app-routes
  namespace: global
spec:
  hosts:
  - my.app.com
  virtualGateways:
  - name: istio-ingressgateway
    namespace: global
  http:
  - name: global-app
    forwardTo:
      destinations:
      - ref:
          name: global-app-vd
          namespace: global
        kind: VIRTUAL_DESTINATION
        port:
          number: 8080
";

/// route-table-weighted-subsets.yaml: "Requests to example.com/global-app at the ingress gateway
/// go 75% to version v1 and 25% to version v2 of global-app." Over 200 requests v1 answers
/// between 60% and 88%, v2 the rest, nothing else; a path outside /global-app is not routed.
/// virtual-destination-north-south.yaml: "The ingress gateway serves my.app.com:8080 and load
/// balances it over the healthy app: global-app instances on port 9080": both instances answer
/// my.app.com on the gateway's port 8080.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_splits_global_app_by_weight_and_balances_its_virtual_destination() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-global-app", &["global"]).await;
    bookinfo.start_workload("global-app-v1", "global", "global-app", "v1", "cluster-1", 9080);
    bookinfo.start_workload("global-app-v2", "global", "global-app", "v2", "cluster-1", 9080);
    let ports = bookinfo.start_ingress("cluster-1", &[80, 8080]);
    bookinfo.apply("global-gateway.yaml", GLOBAL_GATEWAY).await;
    bookinfo.apply_example("route-table-weighted-subsets.yaml").await;
    until_ingress_serves(&bookinfo, ports[&80], "example.com", "/global-app", &[], "global-app").await;
    let split = tally_ingress(
        &bookinfo,
        ports[&80],
        "example.com",
        "/global-app/items",
        200,
        "version",
    )
    .await;
    let v1 = split.get("v1").copied().unwrap_or(0);
    let v2 = split.get("v2").copied().unwrap_or(0);
    assert!(
        v1 + v2 == 200 && (120..=176).contains(&v1),
        "75/25 over 200 requests: {split:?}"
    );
    let elsewhere = bookinfo.ingress(ports[&80], "example.com", "/other", &[]).await;
    assert_eq!(elsewhere.status, 404, "only /global-app is routed: {}", elsewhere.body);

    bookinfo.apply_example("virtual-destination-north-south.yaml").await;
    bookinfo.apply("my-app-routes.yaml", MY_APP_ROUTES).await;
    until_ingress_serves(&bookinfo, ports[&8080], "my.app.com:8080", "/", &[], "global-app").await;
    let balanced = tally_ingress(&bookinfo, ports[&8080], "my.app.com:8080", "/", 40, "version").await;
    assert!(
        balanced.get("v1").copied().unwrap_or(0) > 0 && balanced.get("v2").copied().unwrap_or(0) > 0,
        "both global-app instances serve my.app.com: {balanced:?}"
    );
    bookinfo.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The route table reference's gateway examples: matchers, default destination, delegation with
// cloud-provider filters.
// ---------------------------------------------------------------------------------------------

/// The reference examples' gateway ("my-gateway" in `my-gateway-ws`): port 80 of Gloo's ingress
/// gateway. https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/route_table/
const MY_GATEWAY: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata:
  name: my-gateway
  namespace: my-gateway-ws
spec:
  listeners:
  - http: {}
    port:
      number: 80
  workloads:
  - selector:
      labels:
        istio: ingressgateway
";

/// The child table the lambda example delegates to (`table: lambda`). Trellis has no
/// cloud-provider destinations (`awsLambda` is refused), so the child's route is an ordinary one,
/// to reviews in `qa` (port 9080, v2).
const LAMBDA_CHILD: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: lambda-functions
  namespace: bookinfo
  labels:
    table: lambda
spec:
  http:
  - name: backend-function
    matchers:
    - uri:
        prefix: /backend-function
    forwardTo:
      destinations:
      - ref:
          name: reviews
          namespace: qa
        port:
          number: 9080
";

/// route-table-gateway-matchers.yaml: "On uk.bookinfo.com and eu.bookinfo.com at my-gateway:
/// cookie user=dev-123 goes to reviews.qa v1 port 7777, exactly /reviews/ to reviews.qa 9080, all
/// else to the default destination reviews.prod 9080." reviews in `qa` runs v1 on port 7777 and
/// v2 on 9080, reviews in `prod` is v3. On either host the cookie reaches v1, exactly /reviews/
/// v2, and /reviews/1 or / without the cookie v3; another host is not served.
/// route-table-delegation-lambda-filter.yaml: "Requests to /lambda are delegated to the route
/// tables labelled table: lambda, allowing only routes to the listed AWS Lambda functions, IAM
/// roles and regions." Trellis's documented difference: it has no Lambda routes, so the filter
/// passes every route it serves; the table is ACCEPTED, /lambda/backend-function reaches the
/// child's route (qa's v2), and the child's path outside /lambda falls to the default (v3).
#[tokio::test(flavor = "multi_thread")]
async fn gateway_routes_match_cookies_exact_paths_and_delegate_lambda_paths() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-rt-matchers", &["qa", "prod"]).await;
    bookinfo.start_workload("reviews-qa-v1", "qa", "reviews", "v1", "cluster-1", 7777);
    bookinfo.start_workload("reviews-qa-v2", "qa", "reviews", "v2", "cluster-1", 9080);
    bookinfo.start_workload("reviews-prod", "prod", "reviews", "v3", "cluster-1", 9080);
    let port = bookinfo.start_ingress("cluster-1", &[80])[&80];
    bookinfo.apply("my-gateway.yaml", MY_GATEWAY).await;
    bookinfo.apply_example("route-table-gateway-matchers.yaml").await;
    let cookie = [("cookie", "user=dev-123")];
    for host in ["uk.bookinfo.com", "eu.bookinfo.com"] {
        let dev = until_ingress_serves(&bookinfo, port, host, "/reviews/1", &cookie, "reviews").await;
        assert_eq!(
            dev.field("version"),
            "v1",
            "the cookie goes to qa's v1 on 7777: {}",
            dev.body
        );
        let exact = until_ingress_serves(&bookinfo, port, host, "/reviews/", &[], "reviews").await;
        assert_eq!(
            exact.field("version"),
            "v2",
            "exactly /reviews/ goes to qa's 9080: {}",
            exact.body
        );
    }
    for path in ["/reviews/1", "/"] {
        let rest = until_ingress_serves(&bookinfo, port, "uk.bookinfo.com", path, &[], "reviews").await;
        assert_eq!(rest.field("version"), "v3", "{path}: all else to prod: {}", rest.body);
    }
    let other = bookinfo.ingress(port, "www.bookinfo.com", "/reviews/", &cookie).await;
    assert_eq!(other.status, 404, "only the table's hosts are served: {}", other.body);
    bookinfo.delete_example("route-table-gateway-matchers.yaml").await;

    bookinfo.apply("lambda-functions.yaml", LAMBDA_CHILD).await;
    bookinfo
        .apply_example("route-table-delegation-lambda-filter.yaml")
        .await;
    let host = "uk.bookinfo.com";
    let delegated = until_ingress_serves(&bookinfo, port, host, "/lambda/backend-function", &[], "reviews").await;
    assert_eq!(
        delegated.field("version"),
        "v2",
        "the child's route, to qa: {}",
        delegated.body
    );
    let (state, message) = settled_status(&bookinfo, "RouteTable", "bookinfo", "bookinfo-root-routes").await;
    assert_eq!(state, "ACCEPTED", "{message}");
    let outside = bookinfo.ingress(port, host, "/backend-function", &[]).await;
    assert_eq!(
        (outside.status, outside.field("version")),
        (200, "v3"),
        "the child's route lives under /lambda only; elsewhere the default: {}",
        outside.body
    );
    // The matchers example is gone with its routes: /reviews/ is the default's now.
    let replaced = until_ingress_serves(&bookinfo, port, host, "/reviews/", &[], "reviews").await;
    assert_eq!(replaced.field("version"), "v3", "{}", replaced.body);
    bookinfo.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The VirtualGateway reference's listeners: HTTPS redirect, TLS from a Secret, and hosts by
// workspace.
// ---------------------------------------------------------------------------------------------

/// The workspaces the VirtualGateway reference examples name: foo-ws holds bookinfo (and the
/// gateways' config namespace), bar-ws the `bar` namespace.
/// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/virtual_gateway/
const FOO_AND_BAR_WORKSPACES: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata:
  name: foo-ws
  namespace: gloo-mesh
spec:
  workloadClusters:
  - name: '*'
    namespaces:
    - name: bookinfo
    - name: some-config-namespace
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata:
  name: bar-ws
  namespace: gloo-mesh
spec:
  workloadClusters:
  - name: '*'
    namespaces:
    - name: bar
";

/// Route tables for the reference's hosts: foo-ws's www.foo.com (productpage) and www.bar.com
/// (details), bound to both of its example gateways; bar-ws's api.bar.com; and foo-ws's
/// shop.bar.com, a bar.com host in the wrong workspace.
const FOO_AND_BAR_ROUTES: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: www-foo
  namespace: bookinfo
spec:
  hosts: [www.foo.com]
  virtualGateways:
  - {name: istio-ingressgateway, namespace: some-config-namespace}
  - {name: my-gateway, namespace: some-config-namespace}
  http:
  - name: productpage
    forwardTo:
      destinations:
      - ref: {name: productpage, namespace: bookinfo}
        port: {number: 9080}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: www-bar
  namespace: bookinfo
spec:
  hosts: [www.bar.com]
  virtualGateways:
  - {name: istio-ingressgateway, namespace: some-config-namespace}
  http:
  - name: details
    forwardTo:
      destinations:
      - ref: {name: details, namespace: bookinfo}
        port: {number: 9080}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: api-bar
  namespace: bar
spec:
  hosts: [api.bar.com]
  virtualGateways:
  - {name: my-gateway, namespace: some-config-namespace}
  http:
  - name: bar
    directResponse: {status: 200, body: bar-ws}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: shop-bar
  namespace: bookinfo
spec:
  hosts: [shop.bar.com]
  virtualGateways:
  - {name: my-gateway, namespace: some-config-namespace}
  http:
  - name: squatter
    directResponse: {status: 200, body: foo-ws}
";

/// The TLS settings cluster-1's config gives a gateway's listener (`/api/v1/translation`).
async fn listener_tls(bookinfo: &Bookinfo, gateway: &str, port: u16) -> serde_json::Value {
    let response = bookinfo
        .mesh
        .api()
        .expect("admin client config")
        .request("GET", "/api/v1/translation", None)
        .await
        .expect("the API answers");
    let translation: serde_json::Value = serde_json::from_str(&response.body).expect("translation is JSON");
    let gateways = translation["clusters"]["cluster-1"]["ingressGateways"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let listeners = gateways
        .iter()
        .find(|g| g["name"] == gateway)
        .unwrap_or_else(|| panic!("cluster-1 serves {gateway}: {gateways:?}"))["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listeners
        .iter()
        .find(|l| l["port"] == port)
        .unwrap_or_else(|| panic!("{gateway} has a listener on {port}: {listeners:?}"))["tls"]
        .clone()
}

/// The Secret the HTTPS example's port 9443 names (`my-secret`): a certificate for www.foo.com.
fn my_secret(site: &trellis_testkit::SiteTls) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let cert = std::fs::read_to_string(&site.cert_file).expect("the site certificate");
    let key = std::fs::read_to_string(&site.key_file).expect("the site key");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: my-secret\n  namespace: some-config-namespace\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert),
        indent(&key)
    )
}

/// virtual-gateway-https.yaml: "Port 80 redirects to HTTPS; 443 terminates TLS with certificate
/// files, 9443 with the Secret my-secret; 9080 serves plain HTTP for *.bar.com." Port 80 answers
/// www.foo.com with 301 to https; 9443 serves www.foo.com over TLS with the Secret's certificate;
/// 9080 serves www.bar.com and not www.foo.com. 443's files are paths on the gateway's host that
/// this machine does not have: the check is that the gateway is given those files and that the
/// port does not answer plaintext.
/// virtual-gateway-multiple-hosts.yaml: "On port 80, *.foo.com is served by route tables of
/// workspace foo-ws and *.bar.com by those of workspace bar-ws." www.foo.com (foo-ws) and
/// api.bar.com (bar-ws) are served by the my-gateway-controller gateway; shop.bar.com, a foo-ws
/// table, is not, and its status says why.
#[tokio::test(flavor = "multi_thread")]
async fn listeners_redirect_terminate_tls_and_serve_only_the_hosts_they_allow() {
    let mut bookinfo = Bookinfo::start("gloo-vg-listeners").await;
    let ports = bookinfo.start_ingress("cluster-1", &[80, 443, 9443, 9080]);
    let controller_port = trellis_support::process::free_port();
    let controller_admin = trellis_support::process::free_port();
    let _controller = trellis_testkit::spawn_ingress_gateway(
        &bookinfo.mesh,
        "cluster-1",
        controller_admin,
        &[
            "--name",
            "my-gateway-controller",
            "--labels",
            "app=my-gateway-controller",
            "--namespace",
            "gloo-mesh-gateways",
            "--port-map",
            &format!("80={controller_port}"),
        ],
    );
    let site = trellis_testkit::site_tls(&bookinfo.mesh.dir.join("foo-tls"), "Foo CA", "www.foo.com");
    bookinfo.apply("workspaces.yaml", FOO_AND_BAR_WORKSPACES).await;
    bookinfo.apply("my-secret.yaml", &my_secret(&site)).await;
    bookinfo.apply("routes.yaml", FOO_AND_BAR_ROUTES).await;
    bookinfo.apply_example("virtual-gateway-https.yaml").await;
    bookinfo.apply_example("virtual-gateway-multiple-hosts.yaml").await;

    // 80: to HTTPS.
    let redirect = until_ingress_status(&bookinfo, ports[&80], "www.foo.com", "/productpage", 301).await;
    assert_eq!(
        redirect.header("location"),
        Some("https://www.foo.com/productpage"),
        "{:?}",
        redirect.headers
    );
    // 9443: TLS with the Secret's certificate.
    let roots = site.ca.root_pem();
    let tls = poll("www.foo.com served over TLS on 9443", SETTLE, || async {
        match trellis_testkit::https_get(ports[&9443], "www.foo.com", &roots, None, "/productpage").await {
            Ok(response) if response.status == 200 => Ok(response),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(tls.body.contains("\"service\":\"productpage\""), "{}", tls.body);
    // 9080: *.bar.com only.
    until_ingress_serves(&bookinfo, ports[&9080], "www.bar.com", "/details/1", &[], "details").await;
    let foo_on_bar = bookinfo.ingress(ports[&9080], "www.foo.com", "/productpage", &[]).await;
    assert_eq!(
        foo_on_bar.status, 404,
        "9080 allows *.bar.com only: {}",
        foo_on_bar.body
    );

    // 443: the certificate files are the gateway host's; what Trellis hands that gateway names
    // them, and the listener does not answer plaintext.
    let tls_443 = listener_tls(&bookinfo, "some-config-namespace/istio-ingressgateway", 443).await;
    assert_eq!(tls_443["certChainFile"], "/etc/certs/servercert.pem", "{tls_443}");
    assert_eq!(tls_443["privateKeyFile"], "/etc/certs/privatekey.pem", "{tls_443}");
    let plaintext = bookinfo.ingress(ports[&443], "www.foo.com", "/productpage", &[]).await;
    assert_ne!(plaintext.status, 200, "443 serves TLS only: {}", plaintext.body);

    // my-gateway: each domain from its own workspace.
    until_ingress_serves(
        &bookinfo,
        controller_port,
        "www.foo.com",
        "/productpage",
        &[],
        "productpage",
    )
    .await;
    let bar = until_ingress_status(&bookinfo, controller_port, "api.bar.com", "/", 200).await;
    assert_eq!(bar.body, "bar-ws");
    let squatter = bookinfo.ingress(controller_port, "shop.bar.com", "/", &[]).await;
    assert_eq!(squatter.status, 404, "*.bar.com is bar-ws's: {}", squatter.body);
    let (state, message) = settled_status(&bookinfo, "RouteTable", "bookinfo", "shop-bar").await;
    assert_eq!(state, "WARNING");
    assert!(message.contains("shop.bar.com is allowed on no listener"), "{message}");
    bookinfo.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The egress gateway.
// ---------------------------------------------------------------------------------------------

/// egress-gateway.yaml: "Traffic to httpbin.org leaves the mesh only through the egress gateway,
/// and only the reviews service account may send it; other workloads are denied." Gloo's egress
/// gateway (`istio-egressgateway` in gloo-mesh-gateways, cluster-1) is started; reviews' request
/// to http://httpbin.org goes to it over mesh mTLS and it lets it through to its upstream for
/// httpbin.org:443; productpage's is refused there with 403 (the gateway's RBAC); no sidecar
/// holds a path to httpbin.org of its own. The machine has no route to the internet, so the
/// upstream itself is not reached: the check ends at the gateway's upstream (an attempt counted,
/// not a 403).
#[tokio::test(flavor = "multi_thread")]
async fn only_reviews_leaves_through_the_egress_gateway() {
    let bookinfo = Bookinfo::start("gloo-egress").await;
    let egress_port = trellis_support::process::free_port();
    let egress_admin = trellis_support::process::free_port();
    let _egress = trellis_testkit::spawn_ingress_gateway(
        &bookinfo.mesh,
        "cluster-1",
        egress_admin,
        &[
            "--name",
            "istio-egressgateway",
            "--labels",
            "app=istio-egressgateway,istio=egressgateway",
            "--namespace",
            "gloo-mesh-gateways",
            "--service-account",
            "istio-egressgateway",
            "--port-map",
            &format!("443={egress_port}"),
        ],
    );
    bookinfo.apply_example("egress-gateway.yaml").await;
    let url = "http://httpbin.org/get";
    let denied = poll(
        "productpage's request refused at the egress gateway",
        SETTLE,
        || async {
            let answer = bookinfo.call("productpage", Request::get(url)).await;
            if answer.status == 403 {
                Ok(answer)
            } else {
                Err(format!("HTTP {} {}", answer.status, answer.body))
            }
        },
    )
    .await;
    assert_eq!(denied.status, 403);
    // Its sidecar may get the route a moment after productpage's: 404 until then.
    let reviews = poll("reviews' sidecar routing httpbin.org", SETTLE, || async {
        let answer = bookinfo.call("reviews-v1", Request::get(url)).await;
        if answer.status == 404 {
            Err(answer.body)
        } else {
            Ok(answer)
        }
    })
    .await;
    assert_ne!(reviews.status, 403, "reviews may send to httpbin.org: {}", reviews.body);

    let reviews_admin = bookinfo.mesh.app("reviews-v1").admin_port;
    let via_gateway =
        trellis_testkit::envoy_stat(reviews_admin, "cluster.egress|80||httpbin_org.upstream_rq_total").await;
    assert!(via_gateway >= 1, "reviews' sidecar sent it to the egress gateway");
    let forwarded = trellis_testkit::envoy_stat(egress_admin, "cluster.external|443||httpbin.org.upstream_rq_total")
        .await
        + trellis_testkit::envoy_stat(
            egress_admin,
            "cluster.external|443||httpbin.org.upstream_cx_none_healthy",
        )
        .await
        + trellis_testkit::envoy_stat(
            egress_admin,
            "cluster.external|443||httpbin.org.upstream_cx_connect_fail",
        )
        .await;
    assert!(
        forwarded >= 1,
        "the egress gateway let reviews' request through to httpbin.org's upstream"
    );
    let productpage_admin = bookinfo.mesh.app("productpage").admin_port;
    let clusters = trellis_support::httpc::get(
        &format!("http://127.0.0.1:{productpage_admin}/clusters"),
        Duration::from_secs(2),
    )
    .await
    .expect("the sidecar's admin answers");
    assert!(clusters.body.contains("egress|80||httpbin.org"), "{}", clusters.body);
    for direct in [
        "outbound|443||httpbin.org",
        "external|443||httpbin.org",
        "outbound|80||httpbin.org",
    ] {
        assert!(
            !clusters.body.contains(direct),
            "a sidecar holds a direct path to httpbin.org: {direct}"
        );
    }
    bookinfo.finish().await;
}
