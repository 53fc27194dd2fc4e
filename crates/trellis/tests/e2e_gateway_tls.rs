//! VirtualGateway listeners as Gloo Mesh 2.x documents them, through real Envoy: TLS and mutual
//! TLS from a Kubernetes TLS Secret (`secretName`), ISTIO_MUTUAL (mesh clients only), TLS
//! PASSTHROUGH by SNI to a backend that terminates TLS itself, plain TCP forwarding, and
//! `httpsRedirect`, with the RouteTable `http`, `tls` and `tcp` routes bound to the gateway.

use trellis_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_pki::{Authority, CertifiedKey};

/// A TLS server answering each connection's first line with `vault says hi to <line>`: a
/// backend that terminates TLS itself, with a certificate for `secure.example.com`.
async fn start_tls_backend(cert: &CertifiedKey) -> u16 {
    let config = trellis_pki::server_tls_config(cert, None, false).unwrap();
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
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let reply = format!("vault says hi to {}\n", String::from_utf8_lossy(&line));
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// Sends `ping` over TLS to `127.0.0.1:port` with SNI `server_name`, trusting only `roots_pem`,
/// and returns the reply line.
async fn tls_ping(port: u16, server_name: &str, roots_pem: &str) -> anyhow::Result<String> {
    let config = trellis_pki::client_tls_config(None, roots_pem, false)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await??;
    tls.write_all(b"ping\n").await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut reply)).await??;
    Ok(reply)
}

/// A plain HTTP/1.1 GET over a raw TCP connection (what crosses a TCP listener untouched),
/// returning the whole response as text.
async fn raw_http_get(port: u16, host: &str, path: &str) -> anyhow::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut response)).await??;
    Ok(response)
}

async fn until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_secret_tls_mesh_mutual_passthrough_and_tcp_listeners() {
    let mesh = demo_mesh("gateway-tls").await;
    let dir = mesh.dir.join("gateway-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let site_ca = Authority::generate_root("Shop CA", hour, now).unwrap();
    let site = site_ca
        .issue_server_cert(&["shop.example.com".to_string()], hour, now)
        .unwrap();
    let client_ca = Authority::generate_root("Shop clients CA", hour, now).unwrap();
    let partner = client_ca
        .issue_workload_cert("spiffe://clients.example/partner", hour, now)
        .unwrap();
    let vault_ca = Authority::generate_root("Vault CA", hour, now).unwrap();
    let vault_cert = vault_ca
        .issue_server_cert(&["secure.example.com".to_string()], hour, now)
        .unwrap();

    // The TLS backend behind its own sidecar, a TCP port of service demo/vault.
    let registry = mesh.cluster("cluster-1").registry_port;
    let agent = format!("127.0.0.1:{registry}");
    let vault_app = start_tls_backend(&vault_cert).await;
    let (vault_inbound, vault_outbound, vault_admin) = (
        trellis_support::process::free_port(),
        trellis_support::process::free_port(),
        trellis_support::process::free_port(),
    );
    let _vault_sidecar = spawn_logged(
        &[
            "proxy",
            "--agent",
            &agent,
            "--name",
            "vault",
            "--namespace",
            "demo",
            "--service",
            "vault",
            "--labels",
            "app=vault",
            "--service-account",
            "vault",
            "--port",
            &format!("tls:8443:{vault_app}:{vault_inbound}/tcp"),
            "--outbound-port",
            &vault_outbound.to_string(),
            "--admin-port",
            &vault_admin.to_string(),
            "--data-dir",
            &dir.join("vault-sidecar").display().to_string(),
        ]
        .map(String::from),
        &mesh.dir.join("logs").join("vault-sidecar.log"),
        &[],
    );

    let ports: Vec<u16> = (0..6).map(|_| trellis_support::process::free_port()).collect();
    let (simple, mutual, mesh_mutual, passthrough, tcp, redirect) =
        (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    let admin = trellis_support::process::free_port();
    let _gateway = spawn_ingress_gateway(&mesh, "cluster-1", admin, &[]);
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let config = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: shop-tls, namespace: demo}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    {cert}
  tls.key: |
    {key}
---
apiVersion: v1
kind: Secret
metadata: {{name: shop-mtls, namespace: demo}}
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
kind: VirtualGateway
metadata: {{name: edge, namespace: demo}}
spec:
  workloads: [{{selector: {{labels: {{app: ingress-gateway}}}}}}]
  listeners:
  - {{port: {{number: {simple}}}, http: {{}}, tls: {{mode: SIMPLE, secretName: shop-tls}}}}
  - {{port: {{number: {mutual}}}, http: {{}}, tls: {{mode: MUTUAL, secretName: shop-mtls, verifySubjectAltName: ['spiffe://clients.example/partner']}}}}
  - {{port: {{number: {mesh_mutual}}}, http: {{}}, tls: {{mode: ISTIO_MUTUAL}}}}
  - {{port: {{number: {passthrough}}}, tls: {{mode: PASSTHROUGH}}}}
  - {{port: {{number: {tcp}}}, tcp: {{}}}}
  - {{port: {{number: {redirect}}}, http: {{}}, httpsRedirect: true}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: shop, namespace: demo}}
spec:
  hosts: [shop.example.com]
  virtualGateways: [{{name: edge}}]
  http:
  - name: to-backend
    forwardTo:
      destinations: [{{ref: {{name: backend, namespace: demo, cluster: cluster-2}}, port: {{number: 80}}}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: streams, namespace: demo}}
spec:
  hosts: [secure.example.com]
  virtualGateways: [{{name: edge}}]
  tls:
  - name: vault
    matchers: [{{sniHosts: [secure.example.com]}}]
    forwardTo: {{destinations: [{{ref: {{name: vault}}, port: {{number: 8443}}}}]}}
  tcp:
  - name: raw-backend
    forwardTo: {{destinations: [{{ref: {{name: backend, cluster: cluster-2}}, port: {{number: 80}}}}]}}
",
        cert = indent(&site.cert_pem),
        key = indent(&site.key.0),
        ca = indent(&client_ca.cert_pem),
    );
    let response = mesh.apply("gateway-tls.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // SIMPLE from the Secret: the site's certificate is served, the route reaches cluster-2.
    let served = until("the Secret's TLS listener serving", || async {
        match https_get(simple, "shop.example.com", &site_ca.cert_pem, None, "/").await {
            Ok(response) if response.status == 200 => Some(response),
            _ => None,
        }
    })
    .await;
    assert!(served.body.contains("\"version\":\"v2\""), "{}", served.body);

    // MUTUAL from the Secret: the partner gets in; no certificate, or another CA's, does not.
    until("the Secret's mutual-TLS listener serving the partner", || async {
        match https_get(mutual, "shop.example.com", &site_ca.cert_pem, Some(&partner), "/").await {
            Ok(response) if response.status == 200 => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        https_get(mutual, "shop.example.com", &site_ca.cert_pem, None, "/")
            .await
            .is_err(),
        "MUTUAL served a client without a certificate"
    );
    let stranger = Authority::generate_root("Stranger CA", hour, now)
        .unwrap()
        .issue_workload_cert("spiffe://stranger/x", hour, now)
        .unwrap();
    assert!(
        https_get(mutual, "shop.example.com", &site_ca.cert_pem, Some(&stranger), "/")
            .await
            .is_err(),
        "MUTUAL served a client of another CA"
    );
    // verifySubjectAltName: the right CA is not enough, the certificate must name the partner.
    let intruder = client_ca
        .issue_workload_cert("spiffe://clients.example/intruder", hour, now)
        .unwrap();
    assert!(
        https_get(mutual, "shop.example.com", &site_ca.cert_pem, Some(&intruder), "/")
            .await
            .is_err(),
        "MUTUAL served a certificate without the required SAN"
    );

    // ISTIO_MUTUAL: a mesh client gets in; the partner (not of the mesh) does not.
    let mesh_client = mesh_workload_cert(&mesh, "spiffe://trellis.local/ns/demo/sa/frontend");
    let via_mesh = until("the ISTIO_MUTUAL listener serving a mesh client", || async {
        let answer = mtls_request_with(
            mesh_mutual,
            Some(&mesh_client),
            "shop.example.com",
            "GET",
            "/",
            "shop.example.com",
            &[],
        )
        .await;
        match answer {
            Ok(response) if response.status == 200 => Some(response),
            _ => None,
        }
    })
    .await;
    assert!(via_mesh.body.contains("\"version\":\"v2\""), "{}", via_mesh.body);
    for (who, client) in [("no certificate", None), ("the partner", Some(&partner))] {
        let answer = mtls_request_with(
            mesh_mutual,
            client,
            "shop.example.com",
            "GET",
            "/",
            "shop.example.com",
            &[],
        )
        .await;
        assert!(answer.is_err(), "ISTIO_MUTUAL served {who}: {answer:?}");
    }

    // PASSTHROUGH: the vault's own certificate (the gateway holds no key for it) and its answer.
    let reply = until("TLS passthrough to the vault", || async {
        tls_ping(passthrough, "secure.example.com", &vault_ca.cert_pem)
            .await
            .ok()
    })
    .await;
    assert_eq!(reply, "vault says hi to ping\n");
    // Another SNI matches no route: the gateway closes the connection.
    let other = tls_ping(passthrough, "other.example.com", &vault_ca.cert_pem).await;
    assert!(other.is_err(), "an unrouted SNI was passed through: {other:?}");

    // TCP: the bytes of an HTTP request reach the backend in cluster-2 untouched.
    let raw = until("TCP forwarding to the backend", || async {
        raw_http_get(tcp, "raw.example.com", "/")
            .await
            .ok()
            .filter(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    assert!(raw.contains("\"version\":\"v2\""), "{raw}");

    // httpsRedirect: plaintext is answered with a 301 to the same URL over https.
    let redirected = until("the https redirect", || async {
        raw_http_get(redirect, "shop.example.com", "/cart?id=7")
            .await
            .ok()
            .filter(|r| r.starts_with("HTTP/1.1 301"))
    })
    .await;
    assert!(
        redirected
            .to_ascii_lowercase()
            .contains("location: https://shop.example.com/cart?id=7"),
        "{redirected}"
    );
    finish(mesh).await;
}
