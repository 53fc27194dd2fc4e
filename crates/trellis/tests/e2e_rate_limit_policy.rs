//! Rate limiting attached by policy, end to end: RateLimitServerConfig, RateLimitServerSettings,
//! RateLimitClientConfig and RateLimitPolicy applied to the management server; the rate limiter
//! registers with cluster-1's agent and loads the limits from it; the frontend's sidecar (real
//! Envoy) asks it on the selected route, with counters in a real Redis.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use trellis_cli::up::LocalMesh;
use trellis_support::process::free_port;

fn policies(limiter_port: u16, deny_on_fail: bool) -> String {
    policies_with(
        limiter_port,
        deny_on_fail,
        "    - key: user\n      rateLimit: {requestsPerUnit: 20, unit: MINUTE}",
        "[{requestHeaders: {headerName: x-user, descriptorKey: user}}]",
    )
}

/// The route, server settings and policy of these tests, with the server's `descriptors` and the
/// client's `actions`.
fn policies_with(limiter_port: u16, deny_on_fail: bool, descriptors: &str, actions: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: backend, namespace: demo}}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: limited
    labels: {{ratelimited: \"true\"}}
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
---
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerConfig
metadata: {{name: per-user, namespace: demo}}
spec:
  destinationServers: [{{ref: {{name: rate-limiter, namespace: gloo-mesh}}, port: {{number: {limiter_port}}}}}]
  raw:
    descriptors:
{descriptors}
---
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerSettings
metadata: {{name: limiter, namespace: demo}}
spec:
  destinationServer: {{ref: {{name: rate-limiter, namespace: gloo-mesh}}, port: {{number: {limiter_port}}}}}
  requestTimeout: 500ms
  denyOnFail: {deny_on_fail}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: RateLimitClientConfig
metadata: {{name: by-user, namespace: demo}}
spec:
  raw:
    rateLimits:
    - actions: {actions}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: RateLimitPolicy
metadata: {{name: per-user, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{ratelimited: \"true\"}}}}}}]
  config:
    serverSettings: {{name: limiter}}
    ratelimitServerConfig: {{name: per-user}}
    ratelimitClientConfig: {{name: by-user}}
"
    )
}

async fn call(mesh: &LocalMesh, user: &str) -> trellis_support::httpc::Response {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    trellis_support::httpc::request(
        "GET",
        "http://backend.mesh.internal/",
        Some(&proxy),
        &[("x-user", user)],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// The rate limiter add-on of cluster-1 on Redis at `redis_port`: (its port, its admin port, the process).
fn start_limiter(mesh: &LocalMesh, redis_port: u16) -> (u16, u16, tokio::process::Child) {
    let (limiter_port, limiter_admin) = (free_port(), free_port());
    let agent = format!("127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    let limiter = spawn_program(
        bin().to_str().unwrap(),
        &[
            "rate-limiter".into(),
            "--listen".into(),
            format!("127.0.0.1:{limiter_port}"),
            "--redis".into(),
            format!("redis://127.0.0.1:{redis_port}"),
            "--agent".into(),
            agent,
            "--admin-addr".into(),
            format!("127.0.0.1:{limiter_admin}"),
        ],
        &mesh.dir.join("rate-limiter.log"),
    );
    (limiter_port, limiter_admin, limiter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_policy_refuses_the_21st_request_per_user() {
    let mesh = demo_mesh("rate-limit-policy").await;
    let dir = mesh.dir.clone();
    let (mut redis, redis_port) = start_redis(&dir, &[], None).await;
    let (limiter_port, limiter_admin, _limiter) = start_limiter(&mesh, redis_port);
    let response = mesh.apply("limits.yaml", &policies(limiter_port, true)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // In effect once a probe user's answers carry the limiter's headers.
    eventually("rate limit in effect", || async {
        call(&mesh, "probe").await.header("x-ratelimit-limit").is_some()
    })
    .await;
    // A minute window must not roll over in the middle of the count.
    with_minute_left(10).await;
    for i in 1..=20 {
        let response = call(&mesh, "alice").await;
        assert_eq!(response.status, 200, "alice's request {i}: {}", response.body);
    }
    let refused = call(&mesh, "alice").await;
    assert_eq!(refused.status, 429, "the 21st request: {}", refused.body);
    assert!(
        refused.header("x-ratelimit-limit").unwrap().starts_with("20"),
        "{:?}",
        refused.headers
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert!(refused.header("x-ratelimit-reset").is_some());
    assert_eq!(call(&mesh, "bob").await.status, 200, "bob has his own budget");
    let over = "trellis_rate_limiter_descriptors_total{domain=\"demo.per-user\",code=\"over_limit\"}";
    assert_eq!(scrape(limiter_admin, over).await, 1, "one refusal counted");

    // The policy's describe status says where it applies.
    let status = mesh
        .api()
        .unwrap()
        .get("/api/v1/describe/RateLimitPolicy/demo/per-user")
        .await
        .unwrap();
    assert!(status.body.contains("ACCEPTED"), "{}", status.body);

    // Redis gone: denyOnFail refuses, then the same settings with denyOnFail false let through.
    redis.kill().await.unwrap();
    eventually("fail closed without Redis", || async {
        call(&mesh, "carol").await.status != 200
    })
    .await;
    let response = mesh.apply("limits.yaml", &policies(limiter_port, false)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("fail open without Redis", || async {
        call(&mesh, "carol").await.status == 200
    })
    .await;
    println!("rate limit policy: 20 allowed, 21st 429, other user 200, Redis down: closed then open");
    finish(mesh).await;
}

/// Gloo's `metadata` action: a descriptor from the request's dynamic metadata, its `defaultValue`
/// when there is none. Requests without it share the default's budget, whoever sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_action_counts_requests_without_the_metadata_under_its_default() {
    let mesh = demo_mesh("rate-limit-metadata").await;
    let (_redis, redis_port) = start_redis(&mesh.dir, &[], None).await;
    let (limiter_port, _admin, _limiter) = start_limiter(&mesh, redis_port);
    let config = policies_with(
        limiter_port,
        true,
        "    - key: tenant\n      value: anonymous\n      rateLimit: {requestsPerUnit: 5, unit: MINUTE}",
        "[{metadata: {descriptorKey: tenant, metadataKey: {key: envoy.filters.http.ext_authz, path: [{key: tenant}]}, \
         defaultValue: anonymous}}]",
    );
    let response = mesh.apply("limits.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("rate limit in effect", || async {
        call(&mesh, "probe").await.header("x-ratelimit-limit").is_some()
    })
    .await;
    with_minute_left(10).await;
    // The probe above took some of the shared budget: count what is left, then one more is refused.
    let remaining: u32 = call(&mesh, "alice")
        .await
        .header("x-ratelimit-remaining")
        .and_then(|v| v.parse().ok())
        .expect("remaining budget");
    for i in 0..remaining {
        let user = if i % 2 == 0 { "bob" } else { "carol" };
        assert_eq!(call(&mesh, user).await.status, 200, "request {i} of the shared budget");
    }
    let refused = call(&mesh, "dave").await;
    assert_eq!(
        refused.status, 429,
        "another user shares the default's budget: {}",
        refused.body
    );
    assert!(
        refused.header("x-ratelimit-limit").unwrap().starts_with('5'),
        "{:?}",
        refused.headers
    );
    finish(mesh).await;
}
