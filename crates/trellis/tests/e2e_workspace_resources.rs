//! WorkspaceSettings `resources` filters and federation `ports` through real Envoy. The shop
//! workspace exports to guest only the SERVICE `backend`: guest's sidecar reaches the backend,
//! but not the frontend next to it (no route: 404) nor the backend's VirtualDestination (not a
//! SERVICE), and service isolation lets guest's identity call the backend only (403 at the
//! frontend). Federation names the backend on the ports listed and on no other.
//! Gloo: https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/workspace_settings/

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
metadata: {name: guest, namespace: trellis, labels: {team: guest}}
spec:
  workloadClusters: [{name: \"*\", namespaces: [{name: guest}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: guest, namespace: guest}
spec:
  importFrom: [{workspaces: [{name: shop}]}]
";

/// The shop's settings, federating the given ports.
fn shop_settings(federated_ports: &str) -> String {
    format!(
        "apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {{name: shop, namespace: demo}}
spec:
  exportTo:
  - workspaces: [{{selector: {{team: guest}}}}]
    resources: [{{kind: SERVICE, name: backend, namespace: demo}}]
  options:
    serviceIsolation: {{enabled: true}}
    federation: {{enabled: true, ports: {federated_ports}}}
"
    )
}

async fn status_from(mesh: &LocalMesh, app: &str, url: &str) -> u16 {
    mesh.call_from(app, url).await.map(|r| r.status).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_exported_service_crosses_and_federation_names_only_the_listed_ports() {
    let mut mesh = demo_mesh_allowing("workspace-resources", &["guest"]).await;
    let spec = AppSpec::new("guest", "guest", "guest", "v1", "cluster-1");
    mesh.start_app(&bin(), spec).unwrap();
    mesh.wait_for_traffic(Duration::from_secs(30)).await.unwrap();
    let guest = mesh_workload_cert(&mesh, "spiffe://trellis.local/ns/guest/sa/guest");
    let backend_inbound = mesh.app("backend-v1").inbound_port;
    let frontend_inbound = mesh.app("frontend").inbound_port;
    let backend = "http://backend.demo.svc.cluster.local/";
    let frontend = "http://frontend.demo.svc.cluster.local/";
    // Without Workspaces the guest reaches both services.
    eventually("the guest reaching the frontend", || async {
        status_from(&mesh, "guest", frontend).await == 200
    })
    .await;

    // One apply, so that no state in between (Workspaces without the shop's export) is seen.
    // Port 9 is no port of the backend: no federated name on port 80 yet.
    let config = format!("{WORKSPACES}---\n{}", shop_settings("[{number: 9}]"));
    let response = mesh.apply("workspaces.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    eventually("the frontend, not exported, gone from the guest's config", || async {
        status_from(&mesh, "guest", frontend).await == 404
    })
    .await;
    assert_eq!(status_from(&mesh, "guest", backend).await, 200, "the exported backend");
    assert_eq!(
        status_from(&mesh, "guest", "http://backend.mesh.internal/").await,
        404,
        "the VirtualDestination is no SERVICE: not exported"
    );
    assert_eq!(
        status_from(&mesh, "frontend", frontend).await,
        200,
        "the shop still sees its own frontend"
    );
    // Isolation: the guest's identity may call the service shared with it, not the other.
    let direct = |port: u16, host: &'static str| {
        let guest = &guest;
        async move {
            mtls_request_with(port, Some(guest), "workload.mesh", "GET", "/", host, &[])
                .await
                .map(|r| r.status)
                .unwrap_or(0)
        }
    };
    eventually("isolation refusing the guest at the frontend", || async {
        direct(frontend_inbound, "frontend").await == 403
    })
    .await;
    assert_eq!(direct(backend_inbound, "backend").await, 200);

    // Federation on port 9 only: the backend's federated name on port 80 has no route.
    let federated = "http://backend.demo.cluster-2.global/";
    assert_eq!(status_from(&mesh, "guest", federated).await, 404);
    assert_eq!(status_from(&mesh, "frontend", federated).await, 404);

    // Federation on the port named http (80): the name answers, from cluster-2's backend.
    let response = mesh.apply("shop.yaml", &shop_settings("[{name: http}]")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the federated name on the listed port", || async {
        mesh.call_from("guest", federated)
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("\"cluster\":\"cluster-2\""))
    })
    .await;
    assert_eq!(
        status_from(&mesh, "guest", "http://frontend.demo.cluster-1.global/").await,
        404,
        "the frontend's federated name is not shared with the guest"
    );
    finish(mesh).await;
}
