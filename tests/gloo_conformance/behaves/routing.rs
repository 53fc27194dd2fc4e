//! Gloo's routing guide examples (RouteTables, VirtualDestinations, VirtualGateways, the egress
//! gateway), applied unchanged to the bookinfo mesh (real Envoy), each checked for what its guide
//! says it does: who answers, on which host, port and path, and what must not happen.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trellis_cli::up::AppSpec;
use trellis_gloo_conformance::bookinfo::{Answer, Bookinfo, Request, service_url};

/// How long config takes, at most, to reach every proxy in these checks.
const SETTLE: Duration = Duration::from_secs(30);

/// Starts one more demo app with a sidecar (a service the fixture lacks).
fn start_app(
    bookinfo: &mut Bookinfo,
    name: &str,
    namespace: &str,
    service: &str,
    version: &str,
    cluster: &str,
    port: u16,
) {
    let spec = AppSpec {
        name,
        namespace,
        service,
        version,
        cluster,
        calls: None,
        outbound_port: None,
        port,
    };
    bookinfo
        .mesh
        .start_app(&trellis_testkit::bin(), spec)
        .unwrap_or_else(|e| panic!("{name} starts: {e:#}"));
}

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

/// Polls `attempt` until it gives a value; fails after `limit`, naming `what` and the last miss.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: not within {limit:?}; last: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
/// 9080)." destination-app runs in both clusters; a client in each cluster reaches it on 8080;
/// when cluster-1's instance stops, cluster-1's client is served from cluster-2; the port the
/// VirtualDestination does not name (9080) is not served under that host.
#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_destination_serves_destination_app_from_any_cluster() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-vd-east-west", &["global"]).await;
    start_app(
        &mut bookinfo,
        "destination-app-1",
        "global",
        "destination-app",
        "v1",
        "cluster-1",
        9080,
    );
    start_app(
        &mut bookinfo,
        "destination-app-2",
        "global",
        "destination-app",
        "v2",
        "cluster-2",
        9080,
    );
    bookinfo.apply_example("virtual-destination-east-west.yaml").await;
    let url = "http://destination-app.mesh.internal.com:8080/hello";
    for client in ["productpage", "reviews-v3"] {
        bookinfo
            .until(
                &format!("{client} reaching destination-app"),
                Duration::from_secs(60),
                || async {
                    let answer = bookinfo.call(client, Request::get(url)).await;
                    answer.status == 200 && answer.field("service") == "destination-app"
                },
            )
            .await;
    }
    let from_cluster_1 = bookinfo.tally("productpage", url, 20, "cluster").await;
    let from_cluster_2 = bookinfo.tally("reviews-v3", url, 20, "cluster").await;
    eprintln!("destination-app answers: from cluster-1 {from_cluster_1:?}, from cluster-2 {from_cluster_2:?}");
    for counts in [&from_cluster_1, &from_cluster_2] {
        assert!(
            counts.keys().all(|k| k == "cluster-1" || k == "cluster-2"),
            "every request answered by destination-app: {counts:?}"
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

    // Cluster-1's instance gone: its client is served from the other cluster.
    bookinfo.mesh.app_mut("destination-app-1").app.stop().await;
    bookinfo
        .until("productpage served from cluster-2", Duration::from_secs(60), || async {
            let answer = bookinfo.call("productpage", Request::get(url)).await;
            answer.status == 200 && answer.field("cluster") == "cluster-2"
        })
        .await;
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
/// 80 of Gloo's ingress gateway; a route table for another host, bound to the same gateway, is not.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_serves_the_route_tables_of_its_hosts() {
    let mut bookinfo = Bookinfo::start("gloo-vg-http").await;
    let ports = bookinfo.start_ingress("cluster-1", &[80]);
    let port = ports[&80];
    bookinfo.apply_example("virtual-gateway-http.yaml").await;
    bookinfo.apply("www-bookinfo.yaml", WWW_BOOKINFO_ROUTES).await;
    until_ingress_serves(&bookinfo, port, "www.bookinfo.com", "/productpage", &[], "productpage").await;
    let unknown = bookinfo.ingress(port, "www.example.com", "/productpage", &[]).await;
    assert_eq!(unknown.status, 404, "no route table for that host: {}", unknown.body);
    bookinfo.finish().await;
}

/// The negative half of virtual-gateway-http.yaml: its `allowedRouteTables` (`host:
/// '*.bookinfo.com'`) keeps a route table for another host off the listener.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_refuses_route_tables_of_other_hosts() {
    let mut bookinfo = Bookinfo::start("gloo-vg-http-hosts").await;
    let ports = bookinfo.start_ingress("cluster-1", &[80]);
    let port = ports[&80];
    bookinfo.apply_example("virtual-gateway-http.yaml").await;
    bookinfo.apply("www-bookinfo.yaml", WWW_BOOKINFO_ROUTES).await;
    bookinfo.apply("not-bookinfo.yaml", OTHER_HOST_ROUTES).await;
    until_ingress_serves(&bookinfo, port, "www.bookinfo.com", "/productpage", &[], "productpage").await;
    let other = bookinfo.ingress(port, "shop.example.org", "/details/1", &[]).await;
    assert_eq!(
        other.status, 404,
        "shop.example.org is not a *.bookinfo.com host: {}",
        other.body
    );
    // Without the restriction (the same listener, no allowedRouteTables) the host is served:
    // what kept it off was the listener's list.
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
    assert_eq!(answer.field("cluster"), "cluster-1");
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
    start_app(
        &mut bookinfo,
        "global-app-v1",
        "global",
        "global-app",
        "v1",
        "cluster-1",
        9080,
    );
    start_app(
        &mut bookinfo,
        "global-app-v2",
        "global",
        "global-app",
        "v2",
        "cluster-1",
        9080,
    );
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
