//! Workspaces through real Envoy: a workspace that does not import a service neither sees it
//! (its sidecar's config is trimmed) nor may call it (service isolation); once both sides share,
//! it does and may.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use trellis_cli::up::{AppSpec, LocalMesh};

const WORKSPACES: &str = "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: shop, namespace: trellis}
spec:
  workloadClusters: [{name: \"*\", namespaces: [{name: demo}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: guest, namespace: trellis}
spec:
  workloadClusters: [{name: \"*\", namespaces: [{name: guest}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: shop, namespace: demo}
spec:
  exportTo: [{workspaces: [{name: guest}]}]
  options: {serviceIsolation: {enabled: true}, federation: {enabled: true}}
";

const GUEST_IMPORTS: &str = "apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: guest, namespace: guest}
spec:
  importFrom: [{workspaces: [{name: shop}]}]
";

async fn status_from(mesh: &LocalMesh, app: &str) -> u16 {
    mesh.call_from(app, "http://backend.mesh.internal/")
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_blocks_a_non_importing_workspace_and_admits_an_importing_one() {
    let mut mesh = demo_mesh_allowing("workspaces", &["guest"]).await;
    let spec = AppSpec::new("guest", "guest", "guest", "v1", "cluster-1");
    mesh.start_app(&bin(), spec).unwrap();
    mesh.wait_for_traffic(Duration::from_secs(30)).await.unwrap();
    let backend_inbound = mesh.app("backend-v1").inbound_port;
    let guest = mesh_workload_cert(&mesh, "spiffe://trellis.local/ns/guest/sa/guest");
    // Before Workspaces exist, everybody sees and reaches everything.
    eventually("the guest reaching the backend", || async {
        status_from(&mesh, "guest").await == 200
    })
    .await;

    let response = mesh.apply("workspaces.yaml", WORKSPACES).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    // shop exports to guest, but guest does not import: trimmed away, and isolated.
    eventually("the guest's config trimmed", || async {
        status_from(&mesh, "guest").await == 404
    })
    .await;
    eventually("isolation refusing the guest", || async {
        mtls_request(backend_inbound, Some(&guest), "GET", "/")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
            == 403
    })
    .await;
    assert_eq!(
        status_from(&mesh, "frontend").await,
        200,
        "the shop's own frontend lost its backend"
    );
    // Federation: each shop service in each cluster has its own name, for the shop only.
    let federated = "http://backend.demo.cluster-2.global/";
    eventually("the federated name", || async {
        mesh.call_from("frontend", federated)
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("\"cluster\":\"cluster-2\""))
    })
    .await;
    assert_eq!(mesh.call_from("guest", federated).await.unwrap().status, 404);

    // guest imports shop: both sides share now.
    let response = mesh.apply("guest.yaml", GUEST_IMPORTS).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the guest seeing the backend", || async {
        status_from(&mesh, "guest").await == 200
    })
    .await;
    assert_eq!(
        mtls_request(backend_inbound, Some(&guest), "GET", "/")
            .await
            .unwrap()
            .status,
        200
    );
    finish(mesh).await;
}
