//! VirtualDestination `clientMode: tlsTermination` through real Envoy: the east-west gateway
//! ends the client sidecar's mTLS (requiring a mesh certificate) and opens its own to the
//! endpoints, so the destination sees the gateway's identity, as Gloo documents; the default
//! passes TLS through, and the destination sees the client.

use trellis_testkit as common;

use std::time::{Duration, Instant, SystemTime};

use common::*;

const GATEWAY: &str = "spiffe://trellis.local/ns/gloo-mesh-gateways/sa/istio-eastwestgateway";
const FRONTEND: &str = "spiffe://trellis.local/ns/demo/sa/frontend";

fn backend_v2(client_mode: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {{name: backend-v2, namespace: demo}}
spec:
  hosts: [backend-v2.mesh.internal]
  services: [{{labels: {{app: backend}}, cluster: cluster-2}}]
  ports: [{{number: 80, protocol: HTTP, targetPort: {{name: http}}}}]
{client_mode}"
    )
}

/// Waits until cluster-2's backend reports `identity` as its caller for 10 requests in a row.
async fn until_caller(mesh: &trellis_cli::up::LocalMesh, identity: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut run = 0;
    while run < 10 {
        let response = mesh
            .call_from_frontend("http://backend-v2.mesh.internal/")
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
        if response.status == 200 && body["clientIdentity"] == identity && body["cluster"] == "cluster-2" {
            run += 1;
        } else {
            run = 0;
            assert!(
                Instant::now() < deadline,
                "the backend never saw {identity}: {} {}",
                response.status,
                response.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_at_the_east_west_gateway_shows_the_gateway_to_the_destination() {
    let mesh = demo_mesh("client-mode").await;
    until_caller(&mesh, FRONTEND).await;

    let response = mesh
        .apply("vd.yaml", &backend_v2("  clientMode: {tlsTermination: {}}\n"))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        !response.body.contains("clientMode"),
        "no warning for an applied mode: {}",
        response.body
    );
    until_caller(&mesh, GATEWAY).await;

    // The gateway ends TLS only for a mesh client: no certificate, or one of another CA, is refused.
    let gateway = mesh.cluster("cluster-2").gateway_port;
    let sni = "terminate_.80_._.backend-v2.mesh.internal";
    let (now, hour) = (SystemTime::now(), Duration::from_secs(3600));
    let stranger = trellis_pki::Authority::generate_root("stranger", hour, now)
        .unwrap()
        .issue_workload_cert(FRONTEND, hour, now)
        .unwrap();
    for (what, client) in [("no certificate", None), ("another CA's certificate", Some(&stranger))] {
        let refused = match MtlsConnection::open_with_sni(gateway, sni, client).await {
            Err(_) => true,
            Ok(mut connection) => connection.get("/").await.is_err(),
        };
        assert!(refused, "{what}: the gateway let the connection through");
    }

    // Back to the default: TLS passes through, and the destination sees the client again.
    let response = mesh.apply("vd.yaml", &backend_v2("")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_caller(&mesh, FRONTEND).await;
    finish(mesh).await;
}
