//! The issuance attack, replayed against real processes: an attacker on an agent's host asks the
//! API to register an existing cluster (refused), uses the agent's stolen relay credentials to get a
//! second mesh intermediate (refused), and signs a workload certificate outside the trust domain
//! with the real intermediate's key (fails verification: name constraints). The legitimate agent
//! keeps its stream, config and identity throughout. Then the operator rotates the cluster: the old
//! agent's certificates stop working and a new agent joins with a new intermediate.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use tonic::Code;

const CLUSTER: &str = "c1";

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits until the agent has its cluster intermediate (the mesh root signed it); returns its chain.
async fn wait_intermediate(agent: &AgentProcess) -> String {
    let chain = agent.data_dir.join("mesh/ca-chain.pem");
    agent
        .wait_log(
            "cluster intermediate CA signed by the mesh root",
            Duration::from_secs(30),
        )
        .await;
    read(&chain)
}

fn sign_intermediate_request() -> trellis_relay::SignIntermediateRequest {
    let (_, csr) = trellis_pki::new_key_and_csr("attacker").unwrap();
    trellis_relay::SignIntermediateRequest {
        csr_pem: csr,
        cluster: CLUSTER.into(),
    }
}

/// What an attacker holding the intermediate's key can sign: any SAN, bypassing Trellis' issuer
/// (made with the `openssl` command, as an attacker would). Returns the leaf and the intermediate.
fn forge_workload_cert(dir: &std::path::Path, ca_key_pem: &str, ca_chain_pem: &str, spiffe_id: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let intermediate = first_pem(ca_chain_pem);
    std::fs::write(dir.join("ca.pem"), &intermediate).unwrap();
    std::fs::write(dir.join("ca.key"), ca_key_pem).unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=critical,URI:{spiffe_id}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("this test needs the `openssl` command (Debian package openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "leaf.key",
    ]);
    openssl(&["req", "-new", "-key", "leaf.key", "-subj", "/", "-out", "leaf.csr"]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
    let mut chain = read(&dir.join("leaf.pem"));
    chain.push_str(&intermediate);
    chain
}

fn first_pem(bundle: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    let at = bundle.find(end).expect("a certificate") + end.len();
    format!("{}\n", bundle[..at].trim_start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_attack_is_refused_and_rotation_replaces_the_agent() {
    let dir = test_dir("issuance");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &[]).await;
    let (token, relay_root) = mgmt.register(CLUSTER, None).await;
    let root_file = dir.join("relay-root.pem");
    std::fs::write(&root_file, &relay_root).unwrap();
    let root_arg = root_file.display().to_string();
    let mut agent = AgentProcess::start(&dir, "agent", CLUSTER, &mgmt, &["--root-ca", &root_arg], Some(&token));
    mgmt.wait_connected(CLUSTER, true, Duration::from_secs(30)).await;
    let chain = wait_intermediate(&agent).await;
    let since = mgmt.cluster_status(CLUSTER).await["since"].clone();
    let mesh_root = read(&mgmt.data_dir.join("pki/mesh-root.pem"));

    // 1. Registering the existing cluster again: 409 and no token, through the API and the CLI.
    let (status, body) = mgmt.post_json(&format!("/api/v1/clusters/{CLUSTER}/register")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["token"].is_null(), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(&format!("trellis cluster rotate {CLUSTER}")), "{error}");
    let cli = std::process::Command::new(bin())
        .args(["cluster", "register", CLUSTER])
        .env("TRELLIS_CONFIG", mgmt.admin_config())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success());
    assert!(
        stderr.contains("trellis cluster rotate c1") && stderr.contains("409"),
        "{stderr}"
    );

    // Absurd token lifetimes are refused before anything is recorded.
    for ttl in ["30d", "169h", "0s"] {
        let (status, body) = mgmt.post_json(&format!("/api/v1/clusters/c2/register?ttl={ttl}")).await;
        assert_eq!(status, 400, "ttl {ttl}: {body}");
    }
    let (status, body) = mgmt.post_json("/api/v1/clusters/c2/register?ttl=30d").await;
    assert!(body["error"].as_str().unwrap().contains("7 days"), "{status} {body}");
    assert_eq!(mgmt.cluster_status("c2").await["registered"], serde_json::Value::Null);

    // 2. A second intermediate with the agent's own relay credentials (stolen from its data dir).
    let relay_cert = read(&agent.data_dir.join("relay/client.pem"));
    let relay_key = read(&agent.data_dir.join("relay/client.key"));
    let mut thief = relay_client(&mgmt, &relay_root, Some((&relay_cert, &relay_key))).await;
    let refused = thief
        .sign_intermediate(sign_intermediate_request())
        .await
        .expect_err("a second live intermediate must not be signed");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("trellis cluster rotate c1"),
        "{}",
        refused.message()
    );
    assert_eq!(
        mgmt.metric("trellis_mgmt_relay_refused_total{reason=\"intermediate_exists\"}")
            .await,
        1
    );

    // 3. The real intermediate is name-constrained: inside the trust domain verifies, outside does not.
    let info = trellis_pki::inspect_pem(&chain).unwrap();
    assert!(info.is_ca);
    let ca_key = read(&agent.data_dir.join("mesh/ca.key"));
    let verify_dir = dir.join("verify");
    let inside = forge_workload_cert(
        &verify_dir,
        &ca_key,
        &chain,
        "spiffe://trellis.local/ns/demo/sa/frontend",
    );
    openssl_verify(&verify_dir, &mesh_root, &inside).expect("a certificate inside the trust domain verifies");
    for outside in [
        "spiffe://other.example/ns/demo/sa/frontend",
        "spiffe://trellis.local.evil/ns/demo/sa/frontend",
    ] {
        let forged = forge_workload_cert(&verify_dir, &ca_key, &chain, outside);
        let error = openssl_verify(&verify_dir, &mesh_root, &forged).expect_err(outside);
        assert!(error.contains("permitted subtree violation"), "{outside}: {error}");
    }

    // The legitimate agent noticed nothing: same stream, same intermediate, same relay certificate.
    let status = mgmt.cluster_status(CLUSTER).await;
    assert_eq!(status["connected"], true);
    assert_eq!(
        status["agentVersion"],
        env!("CARGO_PKG_VERSION"),
        "the agent's release, from its hello"
    );
    assert_eq!(status["since"], since, "the agent's relay stream was dropped");
    eventually("the agent acknowledging the current config", || async {
        let status = mgmt.cluster_status(CLUSTER).await;
        status["currentVersion"].is_string() && status["ackedVersion"] == status["currentVersion"]
    })
    .await;
    assert_eq!(read(&agent.data_dir.join("mesh/ca-chain.pem")), chain);
    assert_eq!(read(&agent.data_dir.join("relay/client.pem")), relay_cert);
    assert!(!agent.log_text().contains("revoked"), "{}", agent.log_text());

    // 4. Rotation: a new token; the old relay certificate, intermediate and unused tokens are revoked.
    let (status, body) = mgmt.post_json(&format!("/api/v1/clusters/{CLUSTER}/rotate")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rotated"], true);
    assert!(body["revokedCertificates"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(body["revokedIntermediates"], 1, "{body}");
    let new_token = body["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    // The old agent's stream is closed and its certificate refused from now on.
    agent.wait_log("was revoked", Duration::from_secs(20)).await;
    mgmt.wait_connected(CLUSTER, false, Duration::from_secs(20)).await;
    let refused = thief
        .sign_intermediate(sign_intermediate_request())
        .await
        .expect_err("a revoked relay certificate must not get an intermediate");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let _ = agent.child.kill().await;

    // The replacement agent (fresh data dir) joins with the new token and gets a new intermediate.
    let replacement = AgentProcess::start(
        &dir,
        "agent-rotated",
        CLUSTER,
        &mgmt,
        &["--root-ca", &root_arg],
        Some(&new_token),
    );
    mgmt.wait_connected(CLUSTER, true, Duration::from_secs(30)).await;
    let new_chain = wait_intermediate(&replacement).await;
    assert_ne!(
        trellis_pki::inspect_pem(&new_chain).unwrap().serial_hex,
        info.serial_hex
    );
    // Now the replacement's intermediate is the live one: a third is refused again.
    let new_cert = read(&replacement.data_dir.join("relay/client.pem"));
    let new_key = read(&replacement.data_dir.join("relay/client.key"));
    let mut client = relay_client(&mgmt, &relay_root, Some((&new_cert, &new_key))).await;
    let refused = client
        .sign_intermediate(sign_intermediate_request())
        .await
        .expect_err("the rotated cluster has a live intermediate again");
    assert_eq!(refused.code(), Code::AlreadyExists);

    // Rotating a cluster that does not exist is a 404 that says how to register it.
    let (status, body) = mgmt.post_json("/api/v1/clusters/nowhere/rotate").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("trellis cluster register nowhere")
    );

    let _ = std::fs::remove_dir_all(&dir);
}
