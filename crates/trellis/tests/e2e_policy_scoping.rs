//! Policies reach what Gloo says they reach, through real Envoy: a policy in one team's
//! workspace touches neither another team's workloads (even with `applyToWorkloads: [{}]`) nor
//! its routes; `authz: {}` is Gloo's allow-nothing pattern and denies every caller.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use trellis_cli::up::LocalMesh;

const WORKSPACES: &str = "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: shop, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: demo}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: guest, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: guest}]}]
";

fn deny_all(namespace: &str) -> String {
    format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {{name: deny-all, namespace: {namespace}}}
spec:
  applyToWorkloads: [{{}}]
  config:
    authz: {{}}
"
    )
}

fn abort_all(namespace: &str) -> String {
    format!(
        "apiVersion: resilience.policy.gloo.solo.io/v2
kind: FaultInjectionPolicy
metadata: {{name: abort-all, namespace: {namespace}}}
spec:
  config: {{abort: {{httpStatus: 503}}}}
"
    )
}

/// Statuses of `n` calls from the frontend's sidecar to backend.mesh.internal.
async fn statuses(mesh: &LocalMesh, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = mesh.call_from_frontend("http://backend.mesh.internal/").await.unwrap();
        out.push(response.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_stay_in_their_workspace_and_authz_nothing_denies() {
    let mesh = demo_mesh("policy-scoping").await;
    let response = mesh.apply("workspaces.yaml", WORKSPACES).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // The guest team's catch-all policies: in Gloo they reach only the guest workspace.
    let guest = format!("{}---\n{}", deny_all("guest"), abort_all("guest"));
    let response = mesh.apply("guest.yaml", &guest).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_delivered(&mesh, "AccessPolicy/guest/deny-all").await;
    until_delivered(&mesh, "FaultInjectionPolicy/guest/abort-all").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        statuses(&mesh, 20).await,
        vec![200; 20],
        "the guest workspace's policies reached the shop's workload or routes"
    );

    // The shop's own allow-nothing policy denies even its own frontend.
    let response = mesh.apply("shop-deny.yaml", &deny_all("demo")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("authz: {} denying the frontend", || async {
        statuses(&mesh, 1).await == [403]
    })
    .await;
    assert_eq!(statuses(&mesh, 10).await, vec![403; 10]);

    // The shop's own fault policy takes its routes (the caller's sidecar answers first).
    let response = mesh.apply("shop-abort.yaml", &abort_all("demo")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the shop's own fault policy on its route", || async {
        statuses(&mesh, 1).await == [503]
    })
    .await;
    finish(mesh).await;
}
