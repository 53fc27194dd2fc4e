//! Workload traffic is mTLS with SPIFFE identities from the mesh PKI, end to end across clusters
//! (the east-west gateway passes TLS through by SNI); sidecars let in only mesh identities; and
//! workload and relay certificates rotate under continuous traffic without a failed request.

use trellis_testkit as common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use trellis_cli::up::{LocalMesh, MeshOptions};
use trellis_pki::Authority;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_inbound_admits_only_mesh_identities() {
    let mesh = demo_mesh("inbound-mtls").await;
    let port = mesh.app("backend-v1").inbound_port;
    let now = SystemTime::now();

    // Plaintext HTTP to the inbound port gets no answer from the app.
    let plain = trellis_support::httpc::get(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(3)).await;
    assert!(
        plain.is_err() || plain.as_ref().unwrap().status != 200,
        "plaintext was served: {plain:?}"
    );

    // TLS without a client certificate, and with one from a foreign CA: refused.
    assert!(
        mtls_get(port, None).await.is_err(),
        "a client without a certificate was let in"
    );
    let foreign = Authority::generate_root("Foreign root", Duration::from_secs(3600), now).unwrap();
    let foreign_cert = foreign
        .issue_workload_cert(
            "spiffe://trellis.local/ns/demo/sa/intruder",
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
    assert!(
        mtls_get(port, Some(&foreign_cert)).await.is_err(),
        "a foreign certificate was let in"
    );

    // A certificate from the mesh's own PKI: served, and the app sees the caller's identity.
    let cluster_ca = mesh_root(&mesh)
        .generate_intermediate("test cluster CA", Duration::from_secs(3600), now)
        .unwrap();
    let id = "spiffe://trellis.local/ns/demo/sa/tester";
    let valid = cluster_ca
        .issue_workload_cert(id, Duration::from_secs(3600), now)
        .unwrap();
    let response = mtls_get(port, Some(&valid)).await.expect("a mesh identity is let in");
    assert_eq!(response.status, 200, "{}", response.body);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["clientIdentity"], id);
    assert_eq!(body["version"], "v1");
    finish(mesh).await;
}

/// Serial of the workload certificate an Envoy holds, from its admin /certs page.
async fn envoy_cert_serial(admin_port: u16) -> String {
    let url = format!("http://127.0.0.1:{admin_port}/certs");
    let body = trellis_support::httpc::get(&url, Duration::from_secs(2))
        .await
        .unwrap()
        .body;
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
        .filter_map(|c| c["serial_number"].as_str())
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_continuous_traffic_without_a_failed_request() {
    let mut options = MeshOptions::free();
    options.mgmt_flags = vec!["--client-cert-ttl".into(), "6s".into()];
    options.agent_flags = vec!["--workload-cert-ttl".into(), "6s".into()];
    let mesh = LocalMesh::start(&bin(), &test_dir("rotation"), options).await.unwrap();
    mesh.apply_demo_config().await.unwrap();
    mesh.wait_for_traffic(Duration::from_secs(60)).await.unwrap();

    let frontend_admin = mesh.app("frontend").admin_port;
    let backend_admin = mesh.app("backend-v2").admin_port;
    let mut frontend_serials = vec![envoy_cert_serial(frontend_admin).await];
    let mut backend_serials = vec![envoy_cert_serial(backend_admin).await];
    let renewals = "trellis_mgmt_certificates_issued_total{result=\"renewal\"}";
    let relay_renewals_before = scrape(mesh.admin_port, renewals).await;

    // At least 15 s of back-to-back requests, half of them across clusters, and on until both
    // sides have renewed twice (a loaded machine renews late; 40 s at most): not one may fail.
    let started = Instant::now();
    let (mut sent, mut failed) = (0, Vec::new());
    let renewed = |serials: &Vec<String>| serials.len() >= 3;
    while started.elapsed() < Duration::from_secs(15)
        || (!(renewed(&frontend_serials) && renewed(&backend_serials)) && started.elapsed() < Duration::from_secs(40))
    {
        for url in ["http://backend-v2.mesh.internal/", "http://backend.mesh.internal/"] {
            sent += 1;
            match mesh.call_from_frontend(url).await {
                Ok(response) if response.status == 200 => {}
                Ok(response) => failed.push(format!("HTTP {}: {}", response.status, response.body)),
                Err(error) => failed.push(error.to_string()),
            }
        }
        for (admin, serials) in [
            (frontend_admin, &mut frontend_serials),
            (backend_admin, &mut backend_serials),
        ] {
            let serial = envoy_cert_serial(admin).await;
            if serials.last() != Some(&serial) {
                serials.push(serial);
            }
        }
    }
    println!(
        "{sent} requests, {} failed; frontend certs {frontend_serials:?}; backend-v2 certs {backend_serials:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // A 6 s certificate renewed at 2/3 of its life: at least 3 (4 in 15 s on an idle machine),
    // on both sides.
    assert!(
        frontend_serials.len() >= 3,
        "frontend certificates: {frontend_serials:?}"
    );
    assert!(
        backend_serials.len() >= 3,
        "backend-v2 certificates: {backend_serials:?}"
    );
    // The relay client certificates of both agents renewed meanwhile too (6 s lifetime).
    assert!(scrape(mesh.admin_port, renewals).await >= relay_renewals_before + 4);
    finish(mesh).await;
}
