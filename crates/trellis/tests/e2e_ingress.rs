//! The ingress gateway through real Envoy: a VirtualGateway with a TLS listener and a mutual-TLS
//! listener, and a RouteTable bound to it that sends shop.example.com to the mesh's backend.

use trellis_testkit as common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use trellis_pki::Authority;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_gateway_serves_tls_and_mutual_tls() {
    let mesh = demo_mesh("ingress").await;
    let dir = mesh.dir.join("ingress-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    // The site's certificate, and a separate CA for the clients of the mutual-TLS listener.
    let site = site_tls(&dir, "Shop CA", "shop.example.com");
    let site_ca = &site.ca;
    let client_ca = Authority::generate_root("Shop clients CA", hour, now).unwrap();
    let client = client_ca
        .issue_workload_cert("spiffe://clients.example/partner", hour, now)
        .unwrap();
    let write = |name: &str, contents: &str| {
        std::fs::write(dir.join(name), contents).unwrap();
        dir.join(name).display().to_string()
    };
    let (cert, key, client_root) = (
        &site.cert_file,
        &site.key_file,
        write("clients-ca.pem", &client_ca.cert_pem),
    );

    let (tls_port, mtls_port, admin) = (
        trellis_support::process::free_port(),
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
  listeners:
  - port: {{number: {tls_port}}}
    tls: {{mode: SIMPLE, files: {{certChain: {cert}, privateKey: {key}}}}}
    http: {{}}
  - port: {{number: {mtls_port}}}
    tls: {{mode: MUTUAL, files: {{certChain: {cert}, privateKey: {key}, rootCa: {client_root}}}}}
    http: {{}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: shop, namespace: demo}}
spec:
  hosts: [shop.example.com]
  virtualGateways: [{{name: ingress, namespace: demo}}]
  http:
  - name: to-backend
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-2}}, port: {{number: 80}}}}]
"
    );
    let response = mesh.apply("ingress.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // TLS: a client that trusts the site's CA is served, through the gateway, by backend v2 in
    // cluster-2 (the gateway's mesh mTLS crosses clusters like any sidecar's).
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        match https_get(tls_port, "shop.example.com", &site_ca.cert_pem, None, "/").await {
            Ok(response) if response.status == 200 => break response,
            other => assert!(Instant::now() < deadline, "the TLS listener never served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(served.body.contains("\"version\":\"v2\""), "{}", served.body);
    assert!(
        served
            .body
            .contains("spiffe://trellis.local/ns/trellis/sa/ingress-gateway"),
        "the backend saw the gateway's identity: {}",
        served.body
    );

    // Mutual TLS: no client certificate, no service; the partner's certificate gets in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match https_get(mtls_port, "shop.example.com", &site_ca.cert_pem, Some(&client), "/").await {
            Ok(response) if response.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "the mutual-TLS listener never served: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        https_get(mtls_port, "shop.example.com", &site_ca.cert_pem, None, "/")
            .await
            .is_err(),
        "served a client without a certificate"
    );
    let stranger_ca = Authority::generate_root("Stranger CA", hour, now).unwrap();
    let stranger = stranger_ca
        .issue_workload_cert("spiffe://stranger/x", hour, now)
        .unwrap();
    assert!(
        https_get(mtls_port, "shop.example.com", &site_ca.cert_pem, Some(&stranger), "/")
            .await
            .is_err(),
        "served a client of another CA"
    );
    finish(mesh).await;
}
