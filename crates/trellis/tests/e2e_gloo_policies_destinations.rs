//! Gloo's destination policies LoadBalancerPolicy and ConnectionPolicy through real Envoy, on the
//! frontend's sidecar: a consistent hash keeps each user on one backend, and a connection
//! policy's circuit breaker is the cluster's limit.
//! <https://docs.solo.io/gloo-mesh-enterprise/latest/traffic/load-balancer/>

use trellis_testkit as common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use trellis_cli::up::LocalMesh;
use trellis_support::httpc;

/// backend.mesh.internal to the whole `backend` VirtualDestination (v1 in cluster-1, v2 in
/// cluster-2), so destination policies on it decide where each request goes.
const VD_ROUTE: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: to-vd
    forwardTo:
      destinations: [{ref: {name: backend, namespace: demo}, kind: VIRTUAL_DESTINATION, port: {number: 80}}]
";

async fn apply(mesh: &LocalMesh, yaml: &str) {
    let response = mesh.apply("policy.yaml", yaml).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The versions that answered `n` requests of `user` (a failure counts as its own answer).
async fn versions_of(mesh: &LocalMesh, user: &str, n: usize) -> BTreeSet<String> {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let response = httpc::request(
            "GET",
            "http://backend.mesh.internal/",
            Some(&proxy),
            &[("x-user", user)],
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("the frontend's sidecar answers");
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
        match body["version"].as_str() {
            Some(version) => seen.insert(version.to_string()),
            None => seen.insert(format!("HTTP {}: {}", response.status, response.body.trim())),
        };
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_user_on_one_backend() {
    let mesh = demo_mesh("gloo-lb").await;
    apply(&mesh, VD_ROUTE).await;
    // Round robin: one user meets both versions.
    eventually("both versions for one user", || async {
        versions_of(&mesh, "alice", 12).await.len() == 2
    })
    .await;

    apply(
        &mesh,
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: sticky-users, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config: {consistentHash: {httpHeaderName: x-user}}
",
    )
    .await;
    eventually("sticky users", || async {
        versions_of(&mesh, "alice", 12).await.len() == 1
    })
    .await;
    // Every user stays on one version, and the users are spread over both.
    let mut all = BTreeSet::new();
    for user in (0..16).map(|i| format!("user-{i}")) {
        let seen = versions_of(&mesh, &user, 8).await;
        assert_eq!(seen.len(), 1, "{user} met {seen:?}");
        all.extend(seen);
    }
    assert_eq!(all.len(), 2, "16 users all hashed to {all:?}");
    finish(mesh).await;
}

/// A frontend sidecar's counter for the backend VirtualDestination's upstream.
async fn backend_stat(mesh: &LocalMesh, stat: &str) -> u64 {
    let name = format!("cluster.outbound|80||backend_mesh_internal.{stat}");
    envoy_stat(mesh.app("frontend").admin_port, &name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_probe_the_backends_over_mesh_mtls_and_connection_limits_apply() {
    let mesh = demo_mesh("gloo-health").await;
    apply(&mesh, VD_ROUTE).await;
    assert_eq!(backend_stat(&mesh, "health_check.attempt").await, 0);
    apply(
        &mesh,
        "apiVersion: resilience.policy.gloo.solo.io/v2
kind: ActiveHealthCheckPolicy
metadata: {name: backend-health, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config:
    healthCheck:
      timeout: 1s
      interval: 200ms
      noTrafficInterval: 200ms
      unhealthyThreshold: 2
      healthyThreshold: 1
      httpHealthCheck: {path: /health}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ConnectionPolicy
metadata: {name: backend-limits, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config: {tcp: {maxConnections: 7}, http: {maxPendingRequests: 3}}
",
    )
    .await;
    // Both backends (v1 here, v2 behind cluster-2's gateway) answer the probes over mTLS, again
    // and again although no request is sent (noTrafficInterval).
    eventually("successful health checks", || async {
        backend_stat(&mesh, "health_check.success").await >= 4
    })
    .await;
    assert_eq!(backend_stat(&mesh, "health_check.failure").await, 0);
    // The circuit breaker carries the policy's limits (Envoy exports them as gauges).
    let admin = mesh.app("frontend").admin_port;
    eventually("the connection limits", || async {
        envoy_stat(
            admin,
            "cluster.outbound|80||backend_mesh_internal.circuit_breakers.default.remaining_cx",
        )
        .await
            == 7
    })
    .await;
    assert!(
        versions_of(&mesh, "anyone", 12).await.len() == 2,
        "healthy backends keep serving"
    );
    finish(mesh).await;
}
