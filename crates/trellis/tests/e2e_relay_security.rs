//! Tries to break into the relay: every attempt is refused with a log line naming the reason and
//! a metric, and the well-behaved agent next to it never notices.

use trellis_testkit as common;

use std::time::{Duration, SystemTime};

use common::*;
use trellis_pki::Authority;

const DAY: Duration = Duration::from_secs(86400);

fn write(dir: &std::path::Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

/// The management server's own relay signing CA, read from its data dir (what a thief of the
/// signing key could do is not the point; crafting an expired certificate is).
fn real_signing_ca(mgmt: &MgmtProcess) -> Authority {
    let pki = mgmt.data_dir.join("pki");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    Authority::from_pem(
        &read("relay-signing.pem"),
        &read("relay-signing.key"),
        &read("relay-root.pem"),
    )
    .unwrap()
}

/// A client certificate and key for `cluster`, signed by `ca`, valid from `now` for `ttl`.
fn client_cert(
    dir: &std::path::Path,
    name: &str,
    ca: &Authority,
    cluster: &str,
    now: SystemTime,
    ttl: Duration,
) -> (String, String) {
    let (key, csr) = trellis_pki::new_key_and_csr(cluster).unwrap();
    let chain = ca
        .sign_client_csr(&csr, &trellis_pki::relay_identity(cluster), cluster, ttl, now)
        .unwrap();
    (
        write(dir, &format!("{name}.pem"), &chain),
        write(dir, &format!("{name}.key"), &key.0),
    )
}

async fn refused(mgmt: &MgmtProcess, reason: &str) -> u64 {
    mgmt.metric(&format!("trellis_mgmt_relay_refused_total{{reason=\"{reason}\"}}"))
        .await
}

/// Waits until the refusal counter for `reason` goes above `before`.
async fn wait_refused(mgmt: &MgmtProcess, reason: &str, before: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while refused(mgmt, reason).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal with reason {reason} counted; see {}",
            mgmt.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mgmt_log_has(mgmt: &MgmtProcess, text: &str) -> bool {
    std::fs::read_to_string(&mgmt.log).unwrap_or_default().contains(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_break_in_attempt_is_refused_and_nothing_else_is_disturbed() {
    let dir = test_dir("relay-security");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &[]).await;

    // Keys are private to their owner.
    for key in [
        "relay-root.key",
        "relay-signing.key",
        "relay-server.key",
        "mesh-root.key",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(mgmt.data_dir.join("pki").join(key))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key} has mode {mode:o}");
    }

    // The well-behaved agent: registered with a token, then mTLS.
    let (token, root) = mgmt.register("good", None).await;
    let root_file = write(&dir, "root.pem", &root);
    let good = AgentProcess::start(&dir, "good", "good", &mgmt, &["--root-ca", &root_file], Some(&token));
    mgmt.wait_connected("good", true, Duration::from_secs(20)).await;
    let good_since = mgmt.cluster_status("good").await["since"].clone();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(good.data_dir.join("relay/client.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    // 1. The same token again, from another agent.
    let before = refused(&mgmt, "token_reused").await;
    let reuse = AgentProcess::start(&dir, "reuse", "good", &mgmt, &["--root-ca", &root_file], Some(&token));
    wait_refused(&mgmt, "token_reused", before).await;
    reuse.wait_log("was already used", Duration::from_secs(10)).await;

    // 2. An expired token.
    let (short_token, _) = mgmt.register("late", Some("1s")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = refused(&mgmt, "token_expired").await;
    let late = AgentProcess::start(
        &dir,
        "late",
        "late",
        &mgmt,
        &["--root-ca", &root_file],
        Some(&short_token),
    );
    wait_refused(&mgmt, "token_expired", before).await;
    late.wait_log("has expired", Duration::from_secs(10)).await;

    // 3. The agent trusts a wrong root CA: it refuses the server, which counts the failed handshake.
    let foreign_root = Authority::generate_root("Foreign root", DAY, SystemTime::now()).unwrap();
    let foreign_root_file = write(&dir, "foreign-root.pem", &foreign_root.cert_pem);
    let (wrong_root_token, _) = mgmt.register("wrong-root", None).await;
    let before = refused(&mgmt, "server_not_trusted").await;
    let wrong_root = AgentProcess::start(
        &dir,
        "wrong-root",
        "wrong-root",
        &mgmt,
        &["--root-ca", &foreign_root_file],
        Some(&wrong_root_token),
    );
    wait_refused(&mgmt, "server_not_trusted", before).await;
    wrong_root.wait_log("relay unavailable", Duration::from_secs(10)).await;

    // 4. A client certificate for a registered cluster, but from another CA.
    let foreign_ca = foreign_root
        .generate_intermediate("Foreign signing CA", DAY, SystemTime::now())
        .unwrap();
    let (cert, key) = client_cert(&dir, "foreign", &foreign_ca, "good", SystemTime::now(), DAY);
    let before = refused(&mgmt, "unknown_issuer").await;
    let _foreign = AgentProcess::start(
        &dir,
        "foreign",
        "good",
        &mgmt,
        &["--root-ca", &root_file, "--client-cert", &cert, "--client-key", &key],
        None,
    );
    wait_refused(&mgmt, "unknown_issuer", before).await;

    // 5. An expired certificate from the right CA.
    let signing = real_signing_ca(&mgmt);
    let (cert, key) = client_cert(&dir, "expired", &signing, "good", SystemTime::now() - 10 * DAY, DAY);
    let before = refused(&mgmt, "expired_certificate").await;
    let _expired = AgentProcess::start(
        &dir,
        "expired",
        "good",
        &mgmt,
        &["--root-ca", &root_file, "--client-cert", &cert, "--client-key", &key],
        None,
    );
    wait_refused(&mgmt, "expired_certificate", before).await;

    // 6. A valid certificate of one cluster, claiming another cluster's name: no config for it.
    mgmt.register("victim", None).await;
    let (cert, key) = client_cert(&dir, "impostor", &signing, "good", SystemTime::now(), DAY);
    let before = refused(&mgmt, "wrong_cluster").await;
    let impostor = AgentProcess::start(
        &dir,
        "impostor",
        "victim",
        &mgmt,
        &["--root-ca", &root_file, "--client-cert", &cert, "--client-key", &key],
        None,
    );
    wait_refused(&mgmt, "wrong_cluster", before).await;
    impostor
        .wait_log(
            "the client certificate is for cluster good, not victim",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        !impostor.data_dir.join("config.json").exists(),
        "the impostor received a config"
    );
    assert_ne!(mgmt.cluster_status("victim").await["connected"], true);

    // Through all of it the good agent stayed on its one stream.
    assert_eq!(mgmt.cluster_status("good").await["connected"], true);
    assert_eq!(
        mgmt.cluster_status("good").await["since"],
        good_since,
        "the good agent reconnected"
    );
    assert!(mgmt_log_has(&mgmt, "relay refused a TLS handshake"));
    assert!(mgmt_log_has(&mgmt, "relay refused a request"));

    // 7. Deregistration: the stream closes and the certificate is refused from then on.
    let before = refused(&mgmt, "revoked").await;
    let (status, body) = mgmt.post_json("/api/v1/clusters/good/deregister").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revokedCertificates"].as_u64().unwrap() >= 1, "{body}");
    wait_refused(&mgmt, "revoked", before).await;
    good.wait_log("was revoked", Duration::from_secs(20)).await;
    assert_ne!(mgmt.cluster_status("good").await["connected"], true);

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_client_certificates_renew_without_dropping_the_stream() {
    let dir = test_dir("relay-renewal");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &["--client-cert-ttl", "6s"]).await;
    let (token, root) = mgmt.register("c1", None).await;
    let root_file = write(&dir, "root.pem", &root);
    let agent = AgentProcess::start(&dir, "c1", "c1", &mgmt, &["--root-ca", &root_file], Some(&token));
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    let since = mgmt.cluster_status("c1").await["since"].clone();
    let serial = |agent: &AgentProcess| {
        let pem = std::fs::read_to_string(agent.data_dir.join("relay/client.pem")).unwrap();
        trellis_pki::inspect_pem(&pem).unwrap().serial_hex
    };
    let first = serial(&agent);

    // Two renewals at 2/3 of a 6 s life: within 10 s, on the one stream that never dropped.
    let renewals = "trellis_mgmt_certificates_issued_total{result=\"renewal\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while mgmt.metric(renewals).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 2 renewals in 15 s; see {}",
            agent.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(serial(&agent), first);
    let status = mgmt.cluster_status("c1").await;
    assert_eq!(status["connected"], true);
    assert_eq!(status["since"], since, "the relay stream was dropped during renewal");
    // The first certificate has expired by now; the agent still gets new config on the stream.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Registering an existing cluster again is refused (409: rotate instead) and changes nothing for it.
    assert_eq!(mgmt.post_json("/api/v1/clusters/c1/register").await.0, 409);
    assert_eq!(mgmt.cluster_status("c1").await["since"], since);
    let _ = std::fs::remove_dir_all(&dir);
}
