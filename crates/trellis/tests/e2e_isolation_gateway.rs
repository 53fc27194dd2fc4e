//! Service isolation admits the workspace's own gateway, as in Gloo: a workspace with isolation
//! on stays reachable from an ingress gateway running in a namespace of a workspace it shares
//! with, though discovery never reports that namespace, while identities of namespaces outside
//! those workspaces are still refused.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_workspace_is_reachable_from_the_gateway_of_a_workspace_it_shares_with() {
    // The agents hand gateway identities only in namespaces they are told to.
    let mut options = trellis_cli::up::MeshOptions::free();
    options
        .agent_flags
        .extend(["--allow-gateway-namespace".to_string(), "gateways".to_string()]);
    let mesh = demo_mesh_with("isolation-gateway", options).await;
    let (port, admin) = (
        trellis_support::process::free_port(),
        trellis_support::process::free_port(),
    );
    let _gateway = spawn_ingress_gateway(&mesh, "cluster-1", admin, &["--namespace", "gateways"]);
    // Gloo's usual split: the app team's workspace isolates its services and exports them to
    // the ops workspace, which owns the gateways' namespace and imports them.
    let config = format!(
        "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {{name: shop, namespace: trellis}}
spec:
  workloadClusters: [{{name: '*', namespaces: [{{name: demo}}]}}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {{name: ops, namespace: trellis}}
spec:
  workloadClusters: [{{name: '*', namespaces: [{{name: gateways}}]}}]
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {{name: shop, namespace: demo}}
spec:
  exportTo: [{{workspaces: [{{name: ops}}]}}]
  options: {{serviceIsolation: {{enabled: true}}}}
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {{name: ops, namespace: gateways}}
spec:
  importFrom: [{{workspaces: [{{name: shop}}]}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {{name: ingress, namespace: gateways}}
spec:
  workloads: [{{selector: {{labels: {{app: ingress-gateway}}}}}}]
  listeners:
  - port: {{number: {port}}}
    http: {{}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: shop, namespace: demo}}
spec:
  hosts: [shop.example.com]
  virtualGateways: [{{name: ingress, namespace: gateways}}]
  http:
  - forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-1}}, port: {{number: 80}}}}]
"
    );
    let response = mesh.apply("isolation.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // Isolation is on: an identity from a namespace of no sharing workspace is refused.
    let backend = mesh.app("backend-v1").inbound_port;
    let stranger = mesh_workload_cert(&mesh, "spiffe://trellis.local/ns/elsewhere/sa/stranger");
    eventually("isolation refusing a stranger", || async {
        mtls_get(backend, Some(&stranger)).await.is_ok_and(|r| r.status == 403)
    })
    .await;

    // The gateway, in the ops workspace's namespace, gets through to the isolated backend.
    // Sent to the gateway as to a proxy, so the request names the site's host.
    let (url, gateway) = (format!("http://shop.example.com:{port}/"), format!("127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        let response =
            trellis_support::httpc::request("GET", &url, Some(&gateway), &[], None, Duration::from_secs(5)).await;
        match response {
            Ok(response) if response.status == 200 => break response,
            other => {
                if Instant::now() >= deadline {
                    let api = mesh.api().unwrap();
                    let translation = api.get("/api/v1/translation").await.unwrap().body;
                    let rt = api.get("/api/v1/describe/RouteTable/demo/shop").await.unwrap().body;
                    panic!("the isolated backend never answered the gateway: {other:?}\n{rt}\n{translation}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        served
            .body
            .contains("spiffe://trellis.local/ns/gateways/sa/ingress-gateway"),
        "the backend saw the gateway's identity: {}",
        served.body
    );
    // Still isolated for everyone else.
    assert_eq!(mtls_get(backend, Some(&stranger)).await.unwrap().status, 403);
    finish(mesh).await;
}
