//! A RootTrustPolicy naming a root in a Secret becomes the mesh root: every cluster's
//! intermediate is re-issued under it and every sidecar presents a certificate chaining to it,
//! while traffic within and across clusters goes on without a failed request (the previous root
//! stays trusted meanwhile). A Secret that holds no usable CA is refused at apply, and the
//! running root stays.

use trellis_testkit as common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use trellis_cli::up::LocalMesh;
use trellis_pki::{Authority, CertifiedKey};

const DAY: Duration = Duration::from_secs(86400);

/// The certificate chain (leaf first, PEM) a sidecar's inbound listener presents.
async fn presented_chain(port: u16) -> anyhow::Result<String> {
    #[derive(Debug)]
    struct Capture(Arc<Mutex<String>>, ServerCheck);
    impl rustls::client::danger::ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &rustls::pki_types::CertificateDer<'_>,
            intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            let chain: String = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|der| trellis_pki::der_to_pem(der))
                .collect();
            *self.0.lock().unwrap() = chain;
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.1.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.1.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.1.supported_verify_schemes()
        }
    }
    let seen = Arc::new(Mutex::new(String::new()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture(seen.clone(), ServerCheck::any())))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    // The sidecar may refuse us (no client certificate) once it has shown its chain.
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("workload.mesh")?, tcp),
    )
    .await;
    let chain = seen.lock().unwrap().clone();
    anyhow::ensure!(!chain.is_empty(), "no certificate presented on port {port}");
    Ok(chain)
}

/// Whether the chain the sidecar on `port` presents verifies up to `root`.
async fn chains_to(mesh: &LocalMesh, port: u16, root: &Authority) -> bool {
    match presented_chain(port).await {
        Ok(chain) => openssl_verify(&mesh.dir.join(format!("verify-{port}")), &root.cert_pem, &chain).is_ok(),
        Err(_) => false,
    }
}

/// A Secret in Gloo's root layout (`ca-cert.pem`, `ca-key.pem`) and a RootTrustPolicy naming it.
fn policy_yaml(secret: &str, cert_pem: &str, key_pem: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {secret}, namespace: gloo-mesh}}
type: Opaque
stringData: {{\"ca-cert.pem\": {cert}, \"ca-key.pem\": {key}}}
---
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {{name: root-trust-policy, namespace: gloo-mesh}}
spec:
  config:
    mgmtServerCa:
      secretRef: {{name: {secret}, namespace: gloo-mesh}}
",
        cert = json(cert_pem),
        key = json(key_pem),
    )
}

/// A client certificate for the sidecars' inbound listeners, under `root` (via a test intermediate).
fn client_cert(root: &Authority) -> CertifiedKey {
    let now = SystemTime::now();
    root.generate_intermediate("test cluster CA", Duration::from_secs(3600), now)
        .unwrap()
        .issue_workload_cert(
            "spiffe://trellis.local/ns/demo/sa/tester",
            Duration::from_secs(3600),
            now,
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_root_becomes_the_mesh_root_without_a_failed_request_and_a_bad_one_is_refused() {
    let mut mesh = demo_mesh("root-trust").await;
    let now = SystemTime::now();
    let old_root = mesh_root(&mesh);
    let sidecars: Vec<(String, u16)> = ["frontend", "backend-v1", "backend-v2"]
        .iter()
        .map(|name| (name.to_string(), mesh.app(name).inbound_port))
        .collect();
    for (name, port) in &sidecars {
        assert!(
            chains_to(&mesh, *port, &old_root).await,
            "{name} starts under the generated root"
        );
    }

    // Hostile: a certificate with another CA's key, and a certificate that is no CA.
    let other = Authority::generate_root("Other root", 365 * DAY, now).unwrap();
    let mismatched = Authority::generate_root("Mismatched root", 365 * DAY, now).unwrap();
    let leaf = other
        .issue_server_cert(&["not-a-ca.example".to_string()], DAY, now)
        .unwrap();
    for (case, cert, key, expected) in [
        (
            "mismatched",
            &mismatched.cert_pem,
            &other.key.0,
            "private key does not match",
        ),
        ("not a CA", &leaf.cert_pem, &leaf.key.0, "is not a CA"),
    ] {
        let response = mesh
            .apply("root-trust.yaml", &policy_yaml("bad-root", cert, key))
            .await
            .unwrap();
        assert_ne!(response.status, 200, "{case}: applied: {}", response.body);
        for needle in [
            "RootTrustPolicy/gloo-mesh/root-trust-policy",
            "spec.config.mgmtServerCa.secretRef",
            "Secret gloo-mesh/bad-root",
            expected,
        ] {
            assert!(
                response.body.contains(needle),
                "{case}: {needle:?} missing from {}",
                response.body
            );
        }
        assert!(
            !response.body.contains("PRIVATE KEY"),
            "{case}: key material in {}",
            response.body
        );
    }
    // Nothing of it was stored, and the running root is untouched.
    let stored = stored_resources(&mesh.api().unwrap()).await;
    assert!(!stored.contains("root-trust-policy"), "{stored}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, port) in &sidecars {
        assert!(
            chains_to(&mesh, *port, &old_root).await,
            "{name} still under the generated root"
        );
    }

    // The operator's root, from a Secret.
    let intermediates = "trellis_mgmt_certificates_issued_total{result=\"intermediate\"}";
    let intermediates_before = scrape(mesh.admin_port, intermediates).await;
    let new_root = Authority::generate_root("Operator mesh root", 365 * DAY, now).unwrap();
    let response = mesh
        .apply(
            "root-trust.yaml",
            &policy_yaml("mesh-root", &new_root.cert_pem, &new_root.key.0),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // Back-to-back requests, within cluster-1 and across to cluster-2, while every sidecar moves
    // to the new root and for a few seconds after: not one may fail. The sidecars' pooled
    // connections outlive a certificate change, so a client that has not moved yet (a
    // certificate under the previous root) also opens a fresh mTLS connection to each backend
    // every round: it must be let in throughout.
    let not_moved = client_cert(&old_root);
    let backends = [mesh.app("backend-v1").inbound_port, mesh.app("backend-v2").inbound_port];
    let started = Instant::now();
    let mut moved: Option<Instant> = None;
    let (mut sent, mut failed) = (0, Vec::new());
    while moved.is_none_or(|at| at.elapsed() < Duration::from_secs(5)) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "sidecars did not all move to the new root in 90 s"
        );
        for url in ["http://backend-v2.mesh.internal/", "http://backend.mesh.internal/"] {
            sent += 1;
            match mesh.call_from_frontend(url).await {
                Ok(response) if response.status == 200 => {}
                Ok(response) => failed.push(format!("HTTP {}: {}", response.status, response.body)),
                Err(error) => failed.push(error.to_string()),
            }
        }
        for port in backends {
            sent += 1;
            match mtls_get(port, Some(&not_moved)).await {
                Ok(response) if response.status == 200 => {}
                Ok(response) => failed.push(format!("old-root client to {port}: HTTP {}", response.status)),
                Err(error) => failed.push(format!("old-root client to {port}: {error}")),
            }
        }
        if moved.is_none() {
            let mut all = true;
            for (_, port) in &sidecars {
                all &= chains_to(&mesh, *port, &new_root).await;
            }
            if all {
                println!("every sidecar under the new root after {:?}", started.elapsed());
                moved = Some(Instant::now());
            }
        }
    }
    println!("{sent} requests, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // One new intermediate per cluster, no more.
    assert_eq!(scrape(mesh.admin_port, intermediates).await, intermediates_before + 2);
    for (name, port) in &sidecars {
        assert!(
            !chains_to(&mesh, *port, &old_root).await,
            "{name} still presents a chain to the old root"
        );
    }

    // The sidecars trust the new root, and the previous one still (passive, for peers that have
    // not moved yet); a foreign root never.
    let backend = mesh.app("backend-v2").inbound_port;
    for (root, name) in [(&new_root, "new"), (&old_root, "previous")] {
        let response = mtls_get(backend, Some(&client_cert(root))).await;
        assert_eq!(
            response.as_ref().map(|r| r.status).ok(),
            Some(200),
            "a client under the {name} root: {response:?}"
        );
    }
    assert!(
        mtls_get(backend, Some(&client_cert(&other))).await.is_err(),
        "a client under a foreign root was let in"
    );

    // A restarted management server keeps the operator's root: the agents reconnect and keep
    // their intermediates (none is signed), and traffic flows under the new root.
    mesh.mgmt.stop().await;
    mesh.mgmt.start().unwrap();
    mesh.wait_for_api(Duration::from_secs(30)).await.unwrap();
    mesh.wait_for_traffic(Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        scrape(mesh.admin_port, intermediates).await,
        0,
        "intermediates re-signed after a restart"
    );
    for (name, port) in &sidecars {
        assert!(
            chains_to(&mesh, *port, &new_root).await,
            "{name} left the new root after a restart"
        );
    }

    // The Secret's key stayed in the management server's store: no log, no agent file, no other
    // file of the management server holds it.
    let key_line = new_root.key.0.lines().nth(1).unwrap().to_string();
    let store = mesh.dir.join("mgmt").join("store.redb");
    let mut files = vec![mesh.dir.clone()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else if path != store {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&key_line),
                "the root's key is in {}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} files checked");
    finish(mesh).await;
}
