//! ExternalService `clientsideTls` through real Envoy: the sidecar originates TLS to a server
//! outside the mesh and checks it as Istio's client TLS settings (Gloo's field) do, secure by
//! default. A server whose certificate does not chain to the CAs given (or to the system store
//! when none are), or does not carry the expected name, gets no request; `insecureSkipVerify`
//! turns the check off; MUTUAL presents a client certificate from a Secret (`credentialName`).

use trellis_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_pki::{Authority, CertifiedKey};

/// An HTTPS server outside the mesh answering every request with `partner says hi` and whether
/// the client presented a certificate that chains to `client_ca` (when given).
async fn start_partner(cert: &CertifiedKey, client_ca: Option<&str>) -> u16 {
    let config = trellis_pki::server_tls_config(cert, client_ca, false).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = format!("partner says hi; client certificate: {client_cert}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// The Envoy admin stats of `app`'s sidecar.
async fn envoy_stats(mesh: &trellis_cli::up::LocalMesh, app: &str) -> String {
    let admin = mesh.app(app).admin_port;
    trellis_support::httpc::get(&format!("http://127.0.0.1:{admin}/stats"), Duration::from_secs(2))
        .await
        .unwrap()
        .body
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_mesh_is_verified_unless_told_otherwise_and_mutual_presents_a_secret() {
    let mesh = demo_mesh("external-tls").await;
    let (now, hour) = (SystemTime::now(), Duration::from_secs(3600));
    let partner_ca = Authority::generate_root("partner CA", hour, now).unwrap();
    let site = partner_ca
        .issue_server_cert(&["api.partner.test".to_string()], hour, now)
        .unwrap();
    let ca_file = mesh.dir.join("partner-ca.pem");
    std::fs::write(&ca_file, partner_ca.root_pem()).unwrap();
    let plain = start_partner(&site, None).await;
    // A second server that asks for client certificates of the mesh's partner.
    let client_ca = Authority::generate_root("partner client CA", hour, now).unwrap();
    let client = client_ca
        .issue_workload_cert("spiffe://partner/frontend", hour, now)
        .unwrap();
    let asks = start_partner(&site, Some(&client_ca.root_pem())).await;

    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    let config = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: partner-client, namespace: demo}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}
  tls.key: |
{key}
  ca.crt: |
{ca}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {{name: partner, namespace: demo}}
spec:
  hosts: [api.partner.test]
  selector: {{app: partner}}
  ports:
  - {{number: 8443, name: pinned, clientsideTls: {{caCertificates: '{ca_file}'}}}}
  - {{number: 9443, name: system, clientsideTls: {{}}}}
  - {{number: 10443, name: wrong-name, clientsideTls: {{caCertificates: '{ca_file}', subjectAltNames: [other.partner.test]}}}}
  - {{number: 11443, name: skip, clientsideTls: {{insecureSkipVerify: true}}}}
  - {{number: 12443, name: mutual, clientsideTls: {{mode: MUTUAL, credentialName: partner-client}}}}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalEndpoint
metadata: {{name: partner-1, namespace: demo, labels: {{app: partner}}}}
spec:
  address: 127.0.0.1
  ports:
  - {{name: pinned, number: {plain}}}
  - {{name: system, number: {plain}}}
  - {{name: wrong-name, number: {plain}}}
  - {{name: skip, number: {plain}}}
  - {{name: mutual, number: {asks}}}
",
        cert = indent(&client.cert_pem),
        key = indent(&client.key.0),
        ca = indent(&partner_ca.root_pem()),
        ca_file = ca_file.display(),
    );
    let response = mesh.apply("partner.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    let call = |port: u16| {
        let mesh = &mesh;
        async move {
            mesh.call_from_frontend(&format!("http://api.partner.test:{port}/"))
                .await
                .unwrap()
        }
    };
    // The CA given: the server is trusted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = call(8443).await;
        if response.status == 200 {
            assert!(
                response.body.contains("partner says hi; client certificate: false"),
                "{}",
                response.body
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pinned port never answered: {} {}",
            response.status,
            response.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No CA given: the system store, which does not know the partner's CA. A certificate
    // without the name asked for. Neither server gets the request.
    for (port, what) in [(9443, "a CA the system store does not hold"), (10443, "another name")] {
        let response = call(port).await;
        assert_eq!(response.status, 503, "{what}: {}", response.body);
        assert!(!response.body.contains("partner says hi"), "{what}: {}", response.body);
    }
    // Refused by the TLS checks, not by a config Envoy rejected.
    let stats = envoy_stats(&mesh, "frontend").await;
    assert!(
        stat(&stats, "cluster_manager.cds.update_rejected") == 0,
        "the sidecar rejected its clusters"
    );
    assert!(
        stat(&stats, "cluster.outbound|10443||api.partner.test.ssl.fail_verify_san") >= 1,
        "the wrong name was not what failed"
    );
    // Told not to check: it goes through.
    let response = call(11443).await;
    assert_eq!(response.status, 200, "insecureSkipVerify: {}", response.body);
    // MUTUAL: the Secret's certificate reaches the server that asks for one; its ca.crt checks the server.
    let response = call(12443).await;
    assert_eq!(response.status, 200, "MUTUAL: {}", response.body);
    assert!(response.body.contains("client certificate: true"), "{}", response.body);
    finish(mesh).await;
}
