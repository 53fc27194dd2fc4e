//! Gloo's TransformationPolicy through real Envoy, on the frontend's sidecar: Inja templates
//! on request and response headers and bodies, as Gloo's guides describe them
//! (<https://docs.solo.io/gloo-mesh-enterprise/main/policies/transformation/>,
//! <https://docs.solo.io/gloo-edge/latest/guides/traffic_management/request_processing/transformations/>).
//! The backend is an echo server, so each test shows what reached it.

use trellis_testkit as common;

use std::time::Duration;

use common::echo::EchoWorkload;
use common::*;
use serde_json::Value;
use trellis_cli::up::LocalMesh;
use trellis_support::httpc::{self, Response};

/// `/transform` (labelled, selected by the policy) and everything else (not selected), both to
/// the echo server.
const ROUTES: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: transformed
    labels: {gloo: transform}
    matchers: [{uri: {prefix: /transform}}]
    forwardTo:
      destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]
  - name: untouched
    forwardTo:
      destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]
";

/// Headers from a header, a JSON body field and a regex extraction of the path; a header
/// removed; on the response, a request header copied and the body wrapped.
const POLICY: &str = "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: TransformationPolicy
metadata: {name: transform, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {gloo: transform}}}]
  config:
    request:
      injaTemplate:
        headers:
          x-tenant: {text: 'tenant-{{ header(\"x-org\") }}'}
          x-color: {text: '{{ favorites.color }}'}
          x-foo: {text: '{{ foo }}'}
        headersToRemove: [x-secret]
        extractors:
          foo: {header: ':path', regex: '(.*foo=([^&]*).*)', subgroup: 2}
    response:
      injaTemplate:
        parseBodyBehavior: DontParse
        headers:
          x-org-seen: {text: '{{ request_header(\"x-org\") }}'}
        body: {text: 'transformed: {{ body() }}'}
";

const BODY: &str = r#"{"favorites": {"color": "blue"}, "name": "gloo"}"#;

async fn apply(mesh: &LocalMesh, yaml: &str) {
    let response = mesh.apply("policy.yaml", yaml).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// A POST of `body` to backend.mesh.internal through the frontend's sidecar.
async fn post(mesh: &LocalMesh, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    httpc::request(
        "POST",
        &format!("http://backend.mesh.internal{path}"),
        Some(&proxy),
        headers,
        Some(("application/json", body.as_bytes().to_vec())),
        Duration::from_secs(5),
    )
    .await
    .expect("the frontend's sidecar answers")
}

const HEADERS: [(&str, &str); 2] = [("x-org", "acme"), ("x-secret", "s3cret")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformation_policy_templates_request_and_response_on_the_selected_route_only() {
    let mesh = demo_mesh("gloo-transformation").await;
    let agent = format!("127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    let echo = EchoWorkload::start(&bin(), &agent, "demo", "echo", &mesh.dir.join("logs")).await;
    apply(&mesh, ROUTES).await;
    eventually("the echo routes", || async {
        post(&mesh, "/transform", &[], BODY)
            .await
            .body
            .contains("\"echo\":true")
    })
    .await;
    apply(&mesh, POLICY).await;
    eventually("the transformation", || async {
        post(&mesh, "/transform", &HEADERS, BODY)
            .await
            .body
            .starts_with("transformed: ")
    })
    .await;

    // The selected route: what the backend saw, inside the replaced response body.
    let response = post(&mesh, "/transform/items?foo=bar&x=1", &HEADERS, BODY).await;
    println!(
        "selected route: {} {:?} {}",
        response.status, response.headers, response.body
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.header("x-org-seen"),
        Some("acme"),
        "response header from a request header"
    );
    let seen = response
        .body
        .strip_prefix("transformed: ")
        .unwrap_or_else(|| panic!("the response body is not replaced: {}", response.body));
    let seen: Value = serde_json::from_str(seen).unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-tenant"], "tenant-acme", "from a header: {seen}");
    assert_eq!(headers["x-color"], "blue", "from a JSON body field: {seen}");
    assert_eq!(headers["x-foo"], "bar", "from a regex extraction of :path: {seen}");
    assert_eq!(headers.get("x-secret"), None, "headersToRemove: {seen}");
    assert_eq!(seen["body"], BODY, "the request body is forwarded as it came: {seen}");
    assert_eq!(
        response.header("content-length").map(|l| l.parse::<usize>().unwrap()),
        Some(response.body.len()),
        "the content length follows the new body"
    );

    // The route the policy does not select is untouched.
    let response = post(&mesh, "/other", &HEADERS, BODY).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("x-org-seen"), None);
    let seen: Value = serde_json::from_str(&response.body).expect("the unselected route's body is the echo's own");
    assert_eq!(seen["headers"].get("x-tenant"), None, "{seen}");
    assert_eq!(seen["headers"]["x-secret"], "s3cret", "{seen}");

    // Hostile bodies never reach the backend: not JSON (Gloo answers 400), a field the template
    // reads is missing (Inja's "variable not found" fails the transformation), a value that
    // would split a header, a body over the limit the filter buffers.
    let crlf = r#"{"favorites": {"color": "blue\r\nx-injected: yes"}}"#;
    let huge = format!(r#"{{"favorites": {{"color": "{}"}}}}"#, "b".repeat(1024 * 1024 + 1));
    for (what, body, status) in [
        ("a body that is not JSON", "color=blue", 400),
        ("a body without the field", r#"{"name": "gloo"}"#, 400),
        ("a line break in a header value", crlf, 400),
        ("a body over 1 MiB", huge.as_str(), 413),
    ] {
        let response = post(&mesh, "/transform", &HEADERS, body).await;
        assert_eq!(
            response.status,
            status,
            "{what}: {}",
            &response.body[..response.body.len().min(300)]
        );
        assert!(!response.body.contains("\"echo\""), "{what} reached the backend");
        assert!(!response.body.contains("x-injected"), "{what}: {}", response.body);
    }
    drop(echo);
    finish(mesh).await;
}

/// The same kind of policy on routes bound to an ingress gateway: the gateway transforms the
/// selected route's request and response; its other route is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformation_policy_applies_on_the_ingress_gateway() {
    let mesh = demo_mesh("gloo-transformation-gateway").await;
    let agent = format!("127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    let echo = EchoWorkload::start(&bin(), &agent, "demo", "echo", &mesh.dir.join("logs")).await;
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
  listeners: [{{port: {{number: {port}}}, http: {{}}}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: shop, namespace: demo}}
spec:
  hosts: [shop.example.com]
  virtualGateways: [{{name: ingress, namespace: demo}}]
  http:
  - name: orders
    labels: {{gloo: gateway-transform}}
    matchers: [{{uri: {{prefix: /orders}}}}]
    forwardTo:
      destinations: [{{ref: {{name: echo, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
  - name: rest
    forwardTo:
      destinations: [{{ref: {{name: echo, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: TransformationPolicy
metadata: {{name: orders, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{gloo: gateway-transform}}}}}}]
  config:
    request:
      injaTemplate:
        headers:
          x-customer: {{text: '{{{{ header(\"x-org\") }}}}/{{{{ order.customer }}}}'}}
    response:
      injaTemplate:
        passthrough: {{}}
        headers:
          x-served-by: {{text: trellis-gateway}}
"
    );
    apply(&mesh, &config).await;
    let proxy = format!("127.0.0.1:{port}");
    let call = |path: &'static str| {
        let proxy = proxy.clone();
        async move {
            httpc::request(
                "POST",
                &format!("http://shop.example.com:{port}{path}"),
                Some(&proxy),
                &[("x-org", "acme")],
                Some(("application/json", br#"{"order": {"customer": "ada"}}"#.to_vec())),
                Duration::from_secs(5),
            )
            .await
        }
    };
    eventually("the gateway's transformation", || async {
        matches!(call("/orders").await, Ok(r) if r.status == 200 && r.header("x-served-by").is_some())
    })
    .await;
    let response = call("/orders/1").await.unwrap();
    println!(
        "gateway, selected route: {} {:?} {}",
        response.status, response.headers, response.body
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("x-served-by"), Some("trellis-gateway"));
    let seen: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(seen["headers"]["x-customer"], "acme/ada", "{seen}");

    let response = call("/other").await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("x-served-by"), None);
    let seen: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(seen["headers"].get("x-customer"), None, "{seen}");
    drop(echo);
    finish(mesh).await;
}
