//! The production options: operator-supplied relay CA files instead of generated ones
//! (`--disable-ca-cert-generation`), no built-in CA at all (`--disable-ca`, agents bring client
//! certificates from the operator's CA), and an operator-supplied mesh root.

use trellis_testkit as common;

use std::time::{Duration, SystemTime};

use common::*;
use trellis_pki::Authority;

const YEAR: Duration = Duration::from_secs(365 * 86400);

struct OperatorPki {
    root: Authority,
    signing: Authority,
    files: std::path::PathBuf,
}

impl OperatorPki {
    fn new(dir: &std::path::Path) -> OperatorPki {
        let now = SystemTime::now();
        let root = Authority::generate_root("Operator relay root", YEAR, now).unwrap();
        let signing = root
            .generate_intermediate("Operator relay signing CA", YEAR, now)
            .unwrap();
        let server = signing
            .issue_server_cert(&["trellis-mgmt.trellis".to_string()], YEAR, now)
            .unwrap();
        let mesh_root = Authority::generate_root("Operator mesh root", YEAR, now).unwrap();
        let files = dir.join("operator");
        std::fs::create_dir_all(&files).unwrap();
        for (name, contents) in [
            ("root.pem", &root.cert_pem),
            ("signing.pem", &signing.cert_pem),
            ("signing.key", &signing.key.0),
            ("server.pem", &server.cert_pem),
            ("server.key", &server.key.0),
            ("mesh-root.pem", &mesh_root.cert_pem),
            ("mesh-root.key", &mesh_root.key.0),
        ] {
            std::fs::write(files.join(name), contents).unwrap();
        }
        OperatorPki { root, signing, files }
    }

    fn path(&self, name: &str) -> String {
        self.files.join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_supplied_relay_and_mesh_cas_are_used_instead_of_generated_ones() {
    let dir = test_dir("operator-ca");
    let _ = std::fs::remove_dir_all(&dir);
    let pki = OperatorPki::new(&dir);
    // Config-file keys, as an operator would keep them.
    let config = dir.join("mgmt.yaml");
    std::fs::write(
        &config,
        format!(
            "disableCaCertGeneration: true\nrelayRootCa: {}\nrelaySigningCert: {}\nrelaySigningKey: {}\nrelayServerCert: {}\nrelayServerKey: {}\nmeshRootCert: {}\nmeshRootKey: {}\ntrustDomain: corp.example\n",
            pki.path("root.pem"),
            pki.path("signing.pem"),
            pki.path("signing.key"),
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("mesh-root.pem"),
            pki.path("mesh-root.key"),
        ),
    )
    .unwrap();
    let mgmt = MgmtProcess::start(&dir, &["--config", &config.display().to_string()]).await;
    // Nothing was generated: the operator's files are the CA.
    assert!(!mgmt.data_dir.join("pki/relay-root.pem").exists());
    assert!(!mgmt.data_dir.join("pki/mesh-root.pem").exists());

    // The agent trusts the operator's root and registers with a token as usual.
    let (token, root) = mgmt.register("c1", None).await;
    assert_eq!(root, pki.root.cert_pem, "register hands out the operator's root");
    let agent = AgentProcess::start(
        &dir,
        "c1",
        "c1",
        &mgmt,
        &["--root-ca", &pki.path("root.pem")],
        Some(&token),
    );
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    // Its client certificate was signed by the operator's signing CA...
    let client = std::fs::read_to_string(agent.data_dir.join("relay/client.pem")).unwrap();
    assert!(
        client.contains(pki.signing.cert_pem.trim()),
        "the chain does not carry the operator's signing CA"
    );
    // ...and its cluster CA chains to the operator's mesh root, in the operator's trust domain.
    let mesh_dir = agent.data_dir.join("mesh");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mesh_dir.join("root.pem").exists() {
        assert!(std::time::Instant::now() < deadline, "no cluster CA");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(mesh_dir.join("root.pem")).unwrap(),
        std::fs::read_to_string(pki.path("mesh-root.pem")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(mesh_dir.join("trust-domain")).unwrap(),
        "corp.example"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_disabled_agents_bring_operator_client_certificates() {
    let dir = test_dir("disable-ca");
    let _ = std::fs::remove_dir_all(&dir);
    let pki = OperatorPki::new(&dir);
    let mgmt = MgmtProcess::start(
        &dir,
        &[
            "--disable-ca",
            "--relay-root-ca",
            &pki.path("root.pem"),
            "--relay-server-cert",
            &pki.path("server.pem"),
            "--relay-server-key",
            &pki.path("server.key"),
        ],
    )
    .await;
    // Registering records the cluster but hands out no token: there is no CA to sign with.
    let (status, body) = mgmt.post_json("/api/v1/clusters/c1/register").await;
    assert_eq!(status, 200);
    assert_eq!(body["mode"], "client-certificate");
    assert!(body["token"].is_null());

    // A certificate from the operator's CA, made outside Trellis, is accepted.
    let (key, csr) = trellis_pki::new_key_and_csr("c1").unwrap();
    let chain = pki
        .signing
        .sign_client_csr(&csr, &trellis_pki::relay_identity("c1"), "c1", YEAR, SystemTime::now())
        .unwrap();
    std::fs::write(dir.join("c1.pem"), chain).unwrap();
    std::fs::write(dir.join("c1.key"), &key.0).unwrap();
    let (cert, key) = (
        dir.join("c1.pem").display().to_string(),
        dir.join("c1.key").display().to_string(),
    );
    let _agent = AgentProcess::start(
        &dir,
        "c1",
        "c1",
        &mgmt,
        &[
            "--root-ca",
            &pki.path("root.pem"),
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
        None,
    );
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;

    // A token-based agent gets a clear refusal.
    mgmt.post_json("/api/v1/clusters/c2/register").await;
    let before = mgmt
        .metric("trellis_mgmt_relay_refused_total{reason=\"ca_disabled\"}")
        .await;
    let token_agent = AgentProcess::start(
        &dir,
        "c2",
        "c2",
        &mgmt,
        &["--root-ca", &pki.path("root.pem")],
        Some("some-token"),
    );
    token_agent.wait_log("--disable-ca", Duration::from_secs(10)).await;
    assert!(
        mgmt.metric("trellis_mgmt_relay_refused_total{reason=\"ca_disabled\"}")
            .await
            > before
    );
    let _ = std::fs::remove_dir_all(&dir);
}
