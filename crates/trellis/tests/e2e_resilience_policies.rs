//! RetryTimeoutPolicy and FaultInjectionPolicy through real Envoy.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use trellis_cli::up::LocalMesh;

/// All of backend.mesh.internal to v1 (cluster-1), on a route policies select by label.
const V1_ROUTE: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: v1-only
    labels: {resilient: \"true\"}
    forwardTo:
      destinations: [{ref: {name: backend, namespace: demo, cluster: cluster-1}, port: {number: 80}}]
";

async fn apply(mesh: &LocalMesh, yaml: &str) {
    let response = mesh.apply("policy.yaml", yaml).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Statuses of `n` requests from the frontend's sidecar.
async fn statuses(mesh: &LocalMesh, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            mesh.call_from_frontend("http://backend.mesh.internal/")
                .await
                .map(|r| r.status)
                .unwrap_or(0),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_backend() {
    let mesh = demo_mesh("retries").await;
    apply(&mesh, V1_ROUTE).await;
    until_all(&mesh, "v1", 10, Duration::from_secs(20)).await;
    // backend-v1 now fails every second request.
    let app = mesh.app("backend-v1").app_port;
    let url = format!("http://127.0.0.1:{app}/__demo/fail-every/2");
    trellis_support::httpc::request("PUT", &url, None, &[], None, Duration::from_secs(2))
        .await
        .unwrap();
    let without = statuses(&mesh, 40).await;
    let failed = without.iter().filter(|s| **s != 200).count();
    assert!(failed >= 15, "a flaky backend without retries failed only {failed}/40");

    apply(
        &mesh,
        "apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: retry-backend, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {resilient: \"true\"}}}]
  config: {retries: {attempts: 3, perTryTimeout: 2s, retryOn: [5xx]}, requestTimeout: 10s}
",
    )
    .await;
    eventually("retries in effect", || async {
        statuses(&mesh, 10).await.iter().all(|s| *s == 200)
    })
    .await;
    let with = statuses(&mesh, 100).await;
    assert!(
        with.iter().all(|s| *s == 200),
        "with retries: {:?}",
        with.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    println!("flaky backend: {failed}/40 failed without retries, 0/100 with");
    finish(mesh).await;
}

/// A 400 ms injected delay, measured by a client whose clock may tick a little differently from
/// Envoy's timers (399.8 ms was seen); an undelayed request takes a few milliseconds.
const DELAYED: Duration = Duration::from_millis(350);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_policy_injects_its_abort_and_its_delay() {
    let mesh = demo_mesh("faults").await;
    apply(&mesh, V1_ROUTE).await;
    let fault = |config: &str| {
        format!(
            "apiVersion: resilience.policy.gloo.solo.io/v2
kind: FaultInjectionPolicy
metadata: {{name: chaos, namespace: demo}}
spec:
  applyToRoutes: [{{route: {{labels: {{resilient: \"true\"}}}}}}]
  config: {config}
"
        )
    };
    apply(&mesh, &fault("{abort: {httpStatus: 418, percentage: 100}}")).await;
    eventually("the abort", || async { statuses(&mesh, 1).await == [418] }).await;
    assert!(statuses(&mesh, 20).await.iter().all(|s| *s == 418));

    apply(&mesh, &fault("{delay: {fixedDelay: 400ms, percentage: 100}}")).await;
    eventually("the delay", || async {
        let started = Instant::now();
        statuses(&mesh, 1).await == [200] && started.elapsed() >= DELAYED
    })
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(statuses(&mesh, 1).await, [200]);
        assert!(started.elapsed() >= DELAYED, "request took {:?}", started.elapsed());
    }
    finish(mesh).await;
}
