//! Gloo's route policies CORSPolicy, MirrorPolicy and JWTPolicy through real Envoy, on the
//! frontend's sidecar, as Gloo's guides describe them:
//! <https://docs.solo.io/gloo-mesh-enterprise/latest/security/cors/>,
//! <https://docs.solo.io/gloo-mesh-enterprise/latest/traffic/mirror/>,
//! <https://docs.solo.io/gloo-mesh-enterprise/latest/security/jwt/>.

use trellis_testkit as common;

use std::time::Duration;

use common::echo::EchoWorkload;
use common::jwt_issuer::{Issuer, unix_now};
use common::*;
use trellis_cli::up::LocalMesh;
use trellis_support::httpc::{self, Response};

/// All of backend.mesh.internal to v1 (cluster-1), on a route the policies select by label.
const V1_ROUTE: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: v1-only
    labels: {gloo: policies}
    forwardTo:
      destinations: [{ref: {name: backend, namespace: demo, cluster: cluster-1}, port: {number: 80}}]
";

async fn apply(mesh: &LocalMesh, yaml: &str) {
    let response = mesh.apply("policy.yaml", yaml).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// One request to backend.mesh.internal through the frontend's sidecar.
async fn send(mesh: &LocalMesh, method: &str, headers: &[(&str, &str)]) -> Response {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    httpc::request(
        method,
        "http://backend.mesh.internal/",
        Some(&proxy),
        headers,
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("the frontend's sidecar answers")
}

const ALLOWED: &str = "https://shop.example.com";

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-custom"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_policy_answers_preflights_for_allowed_origins_only_and_csrf_refuses_other_sites() {
    let mesh = demo_mesh("gloo-cors").await;
    apply(&mesh, V1_ROUTE).await;
    until_all(&mesh, "v1", 10, Duration::from_secs(20)).await;
    // Without a policy, nobody's origin is allowed.
    let before = send(&mesh, "OPTIONS", &preflight(ALLOWED)).await;
    assert_eq!(before.header("access-control-allow-origin"), None, "{before:?}");

    apply(
        &mesh,
        "apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {name: shop-cors, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {gloo: policies}}}]
  config:
    allowOrigins: [{exact: 'https://shop.example.com'}, {regex: 'https://.*\\.partner\\.example'}]
    allowMethods: [GET, POST]
    allowHeaders: [x-custom]
    exposeHeaders: [x-served-by]
    maxAge: 1m
    allowCredentials: true
",
    )
    .await;
    eventually("the CORS policy", || async {
        send(&mesh, "OPTIONS", &preflight(ALLOWED))
            .await
            .header("access-control-allow-origin")
            == Some(ALLOWED)
    })
    .await;
    let allowed = send(&mesh, "OPTIONS", &preflight(ALLOWED)).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{allowed:?}"
    );
    assert_eq!(allowed.header("access-control-allow-headers"), Some("x-custom"));
    assert_eq!(allowed.header("access-control-max-age"), Some("60"));
    assert_eq!(allowed.header("access-control-allow-credentials"), Some("true"));
    assert!(!allowed.body.contains("\"version\""), "a preflight reached the backend");
    // A regex origin, and the actual request after the preflight.
    let partner = "https://eu.partner.example";
    assert_eq!(
        send(&mesh, "OPTIONS", &preflight(partner))
            .await
            .header("access-control-allow-origin"),
        Some(partner)
    );
    let get = send(&mesh, "GET", &[("origin", ALLOWED)]).await;
    assert_eq!(get.status, 200);
    assert!(get.body.contains("\"version\":\"v1\""), "{}", get.body);
    assert_eq!(get.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(get.header("access-control-expose-headers"), Some("x-served-by"));

    // CSRFPolicy: a POST from a page of another site is refused, one from an allowed origin is
    // not; without an Origin (or Referer) there is nothing to check and it is refused. As in Envoy (and Gloo,
    // which hands the matchers to Envoy), `additionalOrigins` match the origin's host[:port].
    apply(
        &mesh,
        "apiVersion: security.policy.gloo.solo.io/v2
kind: CSRFPolicy
metadata: {name: shop-csrf, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {gloo: policies}}}]
  config: {filterEnabled: true, additionalOrigins: [{exact: shop.example.com}]}
",
    )
    .await;
    eventually("the CSRF policy", || async {
        send(&mesh, "POST", &[("origin", "https://evil.example.com")])
            .await
            .status
            == 403
    })
    .await;
    assert_eq!(send(&mesh, "POST", &[("origin", ALLOWED)]).await.status, 200);
    assert_eq!(
        send(&mesh, "POST", &[]).await.status,
        403,
        "Envoy's CSRF filter refuses a mutating request without an origin"
    );
    assert_eq!(
        send(&mesh, "GET", &[("origin", "https://evil.example.com")])
            .await
            .status,
        200,
        "CSRF checks only mutating methods"
    );

    // Any other origin gets no CORS headers: the browser refuses the cross-origin call.
    for origin in ["https://evil.example.com", "https://shop.example.com.evil.example"] {
        let denied = send(&mesh, "OPTIONS", &preflight(origin)).await;
        assert_eq!(
            denied.header("access-control-allow-origin"),
            None,
            "{origin}: {denied:?}"
        );
        let get = send(&mesh, "GET", &[("origin", origin)]).await;
        assert_eq!(get.header("access-control-allow-origin"), None, "{origin}: {get:?}");
    }
    finish(mesh).await;
}

/// The status of a POST of `size` bytes to backend.mesh.internal through the frontend's sidecar.
async fn post(mesh: &LocalMesh, size: usize) -> u16 {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    let body = Some(("application/octet-stream", vec![b'x'; size]));
    httpc::request(
        "POST",
        "http://backend.mesh.internal/",
        Some(&proxy),
        &[],
        body,
        Duration::from_secs(5),
    )
    .await
    .expect("the frontend's sidecar answers")
    .status
}

/// Requests backend v2's sidecar has received (its inbound HTTP listener on port 80).
async fn v2_received(mesh: &LocalMesh) -> u64 {
    envoy_stat(mesh.app("backend-v2").admin_port, "http.inbound|80.downstream_rq_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_policy_copies_requests_to_its_destination_and_buffer_policy_limits_bodies() {
    let mesh = demo_mesh("gloo-mirror").await;
    apply(&mesh, V1_ROUTE).await;
    until_all(&mesh, "v1", 10, Duration::from_secs(20)).await;
    // Without a mirror, v2 (cluster-2) sees none of these.
    let before = v2_received(&mesh).await;
    for _ in 0..5 {
        assert!(send(&mesh, "GET", &[]).await.body.contains("\"version\":\"v1\""));
    }
    assert_eq!(v2_received(&mesh).await, before, "v2 got requests without a mirror");

    apply(
        &mesh,
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: MirrorPolicy
metadata: {name: shadow-v2, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {gloo: policies}}}]
  config:
    destination: {ref: {name: backend-v2, namespace: demo}, kind: VIRTUAL_DESTINATION, port: {number: 80}}
    percentage: 100
",
    )
    .await;
    eventually("the first mirrored request", || async {
        let before = v2_received(&mesh).await;
        send(&mesh, "GET", &[]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        v2_received(&mesh).await > before
    })
    .await;
    // Every request is answered by v1 and copied to v2 across clusters.
    let before = v2_received(&mesh).await;
    for _ in 0..10 {
        let response = send(&mesh, "GET", &[]).await;
        assert_eq!(response.status, 200);
        assert!(response.body.contains("\"version\":\"v1\""), "{}", response.body);
    }
    eventually("ten copies at v2", || async { v2_received(&mesh).await >= before + 10 }).await;

    // HTTPBufferPolicy on the same route: a body over its limit is refused before it is sent on.
    assert_eq!(post(&mesh, 4096).await, 200, "no limit before the policy");
    apply(
        &mesh,
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: HTTPBufferPolicy
metadata: {name: small-bodies, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {gloo: policies}}}]
  config: {maxRequestBytes: 1024}
",
    )
    .await;
    eventually("the buffer limit", || async { post(&mesh, 4096).await == 413 }).await;
    assert_eq!(post(&mesh, 512).await, 200);
    finish(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_policy_requires_a_valid_token_and_passes_its_claims_on() {
    let mesh = demo_mesh("gloo-jwt").await;
    let agent = format!("127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    let echo = EchoWorkload::start(&bin(), &agent, "demo", "echo", &mesh.dir.join("logs")).await;
    apply(
        &mesh,
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: to-echo
    labels: {gloo: policies}
    forwardTo:
      destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]
",
    )
    .await;
    eventually("the echo route", || async {
        send(&mesh, "GET", &[]).await.body.contains("\"echo\":true")
    })
    .await;

    let issuer = Issuer::new("e2e-jwt");
    // A second provider whose key set the sidecar fetches over HTTP.
    let remote_issuer = Issuer::new("e2e-remote");
    let jwks_url = remote_issuer.serve().await;
    let policy = format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {{name: require-token, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{gloo: policies}}}}}}]
  config:
    providers:
      e2e:
        issuer: https://issuer.e2e
        audiences: [api]
        local: {{inline: '{}'}}
        claimsToHeaders: [{{claim: sub, header: x-user}}]
      fetched:
        issuer: https://remote.e2e
        remote: {{url: '{jwks_url}', cacheDuration: 5m}}
",
        issuer.jwks()
    );
    apply(&mesh, &policy).await;
    eventually("the JWT policy", || async {
        let response = send(&mesh, "GET", &[]).await;
        println!("without a token: {} {}", response.status, response.body.trim());
        response.status == 401
    })
    .await;

    let bearer = |token: String| format!("Bearer {token}");
    let valid = bearer(issuer.token("https://issuer.e2e", 300));
    let response = send(&mesh, "GET", &[("authorization", &valid)]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["echo"], true, "{}", response.body);
    assert_eq!(body["headers"]["x-user"], "alice", "{}", response.body);

    // A token of the provider whose keys are fetched.
    let fetched = bearer(remote_issuer.token("https://remote.e2e", 300));
    let response = send(&mesh, "GET", &[("authorization", &fetched)]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.contains("\"echo\":true"), "{}", response.body);

    // Refused: no token, another key, another issuer, an expired token.
    let stranger = Issuer::new("e2e-jwt");
    for (what, headers) in [
        ("no token", vec![]),
        ("another key", vec![bearer(stranger.token("https://issuer.e2e", 300))]),
        (
            "another issuer",
            vec![bearer(issuer.token("https://elsewhere.e2e", 300))],
        ),
        (
            "an expired token",
            vec![bearer(issuer.token("https://issuer.e2e", -600))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|h| ("authorization", h.as_str())).collect();
        let response = send(&mesh, "GET", &headers).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        assert!(!response.body.contains("\"echo\""), "{what} reached the upstream");
    }

    // Claims and scopes (Gloo's `claims` and `requiredScopes`): a valid token must also carry them.
    let with_rules = policy.replace(
        "    providers:\n",
        "    claims:\n    - {key: email, values: ['*@solo.io'], notValues: [mallory@solo.io]}\n    \
         - {key: org, values: [solo-io]}\n    requiredScopes: [email, 'is:developer']\n    providers:\n",
    );
    apply(&mesh, &with_rules).await;
    eventually("the claim rules", || async {
        // The token above carries none of the claims.
        send(&mesh, "GET", &[("authorization", &valid)]).await.status == 403
    })
    .await;
    let token = |email: &str, org: serde_json::Value, scope: &str| {
        bearer(issuer.sign(&serde_json::json!({
            "iss": "https://issuer.e2e", "aud": "api", "sub": "alice", "exp": unix_now() + 300,
            "email": email, "org": org, "scope": scope,
        })))
    };
    for (what, token, status) in [
        (
            "every claim and scope",
            token("alice@solo.io", "solo-io".into(), "email is:developer phone"),
            200,
        ),
        (
            "the org in a list",
            token(
                "alice@solo.io",
                serde_json::json!(["x", "solo-io"]),
                "is:developer email",
            ),
            200,
        ),
        (
            "a scope missing",
            token("alice@solo.io", "solo-io".into(), "email phone"),
            403,
        ),
        (
            "a scope only as a prefix",
            token("alice@solo.io", "solo-io".into(), "email is:developers"),
            403,
        ),
        (
            "another email domain",
            token("alice@example.com", "solo-io".into(), "email is:developer"),
            403,
        ),
        (
            "an email in notValues",
            token("mallory@solo.io", "solo-io".into(), "email is:developer"),
            403,
        ),
        (
            "another org",
            token("alice@solo.io", "other".into(), "email is:developer"),
            403,
        ),
    ] {
        let response = send(&mesh, "GET", &[("authorization", &token)]).await;
        assert_eq!(response.status, status, "{what}: {}", response.body);
        assert_eq!(
            response.body.contains("\"echo\""),
            status == 200,
            "{what}: {}",
            response.body
        );
    }
    drop(echo);
    finish(mesh).await;
}

/// The same three policies on a route bound to an ingress gateway: the gateway answers CORS
/// preflights, checks the token and copies the request to v2, and v1 answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_jwt_and_mirror_policies_apply_on_the_ingress_gateway() {
    let mesh = demo_mesh("gloo-gateway-policies").await;
    let (port, admin) = (
        trellis_support::process::free_port(),
        trellis_support::process::free_port(),
    );
    let _gateway = spawn_ingress_gateway(&mesh, "cluster-1", admin, &[]);
    let issuer = Issuer::new("e2e-gateway");
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
  - name: to-v1
    labels: {{gloo: gateway}}
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {{name: shop-cors, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{gloo: gateway}}}}}}]
  config: {{allowOrigins: [{{exact: '{ALLOWED}'}}], allowMethods: [POST]}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {{name: shop-jwt, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{gloo: gateway}}}}}}]
  config:
    providers:
      e2e: {{issuer: https://issuer.e2e, local: {{inline: '{}'}}}}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: MirrorPolicy
metadata: {{name: shop-shadow, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{gloo: gateway}}}}}}]
  config:
    destination: {{ref: {{name: backend-v2, namespace: demo}}, kind: VIRTUAL_DESTINATION, port: {{number: 80}}}}
",
        issuer.jwks()
    );
    apply(&mesh, &config).await;

    let proxy = format!("127.0.0.1:{port}");
    let url = format!("http://shop.example.com:{port}/");
    let call = |method: &'static str, headers: Vec<(&'static str, String)>| {
        let (proxy, url) = (proxy.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            httpc::request(method, &url, Some(&proxy), &headers, None, Duration::from_secs(5)).await
        }
    };
    eventually("the gateway's JWT check", || async {
        matches!(call("GET", vec![]).await, Ok(r) if r.status == 401)
    })
    .await;
    let token = format!("Bearer {}", issuer.token("https://issuer.e2e", 300));
    let before = v2_received(&mesh).await;
    let served = call("GET", vec![("authorization", token.clone())]).await.unwrap();
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(served.body.contains("\"version\":\"v1\""), "{}", served.body);
    eventually("the gateway's copy at v2", || async {
        v2_received(&mesh).await > before
    })
    .await;

    // A preflight carries no token: CORS answers it before the token check.
    let owned = |origin| -> Vec<(&'static str, String)> {
        preflight(origin).iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    let answered = call("OPTIONS", owned(ALLOWED)).await.unwrap();
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.header("access-control-allow-origin"), Some(ALLOWED));
    let refused = call("OPTIONS", owned("https://evil.example.com")).await.unwrap();
    assert_eq!(refused.header("access-control-allow-origin"), None, "{refused:?}");
    assert_eq!(
        refused.status, 401,
        "a preflight of another origin is no exception to the token check"
    );
    finish(mesh).await;
}
