//! `trellis check` tells the truth: insecure mode is a finding, certificate expiry is reported,
//! and a registered cluster whose agent is gone is an error with a non-zero exit.

use trellis_testkit as common;

use std::time::Duration;

use common::*;

async fn check(mgmt: &MgmtProcess) -> (bool, String) {
    let output = tokio::process::Command::new(bin())
        .args(["check"])
        .env("TRELLIS_CONFIG", mgmt.admin_config())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_security_mode_certificate_expiry_and_agents() {
    let dir = test_dir("check");
    let _ = std::fs::remove_dir_all(&dir);

    // Secure (the default): mTLS reported, every certificate's expiry listed, agent connected.
    let mgmt = MgmtProcess::start(&dir.join("secure"), &[]).await;
    let (token, root) = mgmt.register("c1", None).await;
    std::fs::write(dir.join("root.pem"), root).unwrap();
    let root_file = dir.join("root.pem").display().to_string();
    let mut agent = AgentProcess::start(&dir, "c1", "c1", &mgmt, &["--root-ca", &root_file], Some(&token));
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    // The agent has its cluster CA signed right after connecting.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mgmt.cluster_status("c1").await["intermediateValidity"].is_null() {
        assert!(std::time::Instant::now() < deadline, "no intermediate CA signed for c1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = check(&mgmt).await;
    assert!(ok, "{out}");
    for expected in [
        "relay uses mutual TLS",
        "relay server certificate valid for 36", // 364 or 365 days, by the second it runs
        "relay signing CA valid for",
        "mesh root CA valid for",
        "the agent of c1 is connected",
        "the relay client certificate of c1 valid for 2", // 23h 59m or 24h 0m
        "the mesh intermediate CA of c1 valid for ",
        "0 error(s)",
    ] {
        assert!(out.contains(expected), "wanted {expected:?} in:\n{out}");
    }
    assert!(!out.contains("registration API"), "{out}");

    // An agent whose registration API listens on every address is a warning.
    let (token, _) = mgmt.register("c2", None).await;
    let everywhere = format!("0.0.0.0:{}", trellis_support::process::free_port());
    let mut open = AgentProcess::start(
        &dir,
        "c2",
        "c2",
        &mgmt,
        &["--root-ca", &root_file, "--registry-addr", &everywhere],
        Some(&token),
    );
    mgmt.wait_connected("c2", true, Duration::from_secs(20)).await;
    let (_, out) = check(&mgmt).await;
    assert!(
        out.contains("WARNING")
            && out.contains(&format!("the agent of c2 serves its registration API on {everywhere}")),
        "{out}"
    );
    open.child.kill().await.unwrap();

    // The agent goes away: an error, and a failing exit code.
    agent.child.kill().await.unwrap();
    mgmt.wait_connected("c1", false, Duration::from_secs(10)).await;
    let (ok, out) = check(&mgmt).await;
    assert!(!ok, "check passed with a disconnected agent:\n{out}");
    assert!(
        out.contains("ERROR") && out.contains("the agent of c1 is not connected"),
        "{out}"
    );

    // Insecure mode is a finding at every check.
    let insecure = MgmtProcess::start(&dir.join("insecure"), &["--insecure"]).await;
    let (_, out) = check(&insecure).await;
    assert!(out.contains("WARNING") && out.contains("--insecure"), "{out}");
    assert!(std::fs::read_to_string(&insecure.log).unwrap().contains("INSECURE"));
    let _ = std::fs::remove_dir_all(&dir);
}
