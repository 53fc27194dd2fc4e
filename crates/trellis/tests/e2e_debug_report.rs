//! `trellis debug report` writes one tar archive of the mesh's state that `tar` reads, with the
//! caller's rights and every credential redacted; without a credential it writes nothing.

use trellis_testkit as common;

use common::*;

const SECRET_VALUE: &str = "c3VwZXItc2VjcmV0LXZhbHVl"; // base64 of "super-secret-value"

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_holds_the_state_and_no_secret() {
    let dir = test_dir("debug-report");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &[]).await;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: partner-key, namespace: demo}}\ntype: extauth.solo.io/apikey\ndata: {{api-key: {SECRET_VALUE}}}\n"
    );
    let applied = mgmt
        .api()
        .request(
            "POST",
            "/api/v1/apply?source=test",
            Some(("application/yaml", secret.into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);

    let archive = dir.join("report.tar");
    let output = tokio::process::Command::new(bin())
        .args(["debug", "report", "-o", &archive.display().to_string()])
        .env("TRELLIS_CONFIG", mgmt.admin_config())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777, 0o600);

    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "tar cannot read it: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let root = std::fs::read_dir(&unpacked).unwrap().next().unwrap().unwrap().path();
    let mut everything = String::new();
    for name in [
        "version.json",
        "clusters.json",
        "check.json",
        "resources.json",
        "translation.json",
        "audit.json",
        "client.txt",
    ] {
        let text = std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        everything.push_str(&text);
    }
    let resources: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("resources.json")).unwrap()).unwrap();
    let stored = resources["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metadata"]["name"] == "partner-key")
        .expect("the Secret is listed");
    assert_eq!(stored["data"], "[redacted]", "{stored}");
    assert!(!everything.contains(SECRET_VALUE), "a secret value reached the report");
    // The audit log records the apply with the Secret's content: redacted there too.
    assert!(everything.contains("partner-key"));

    // No credential: refused, nothing written.
    let refused = dir.join("refused.tar");
    let output = tokio::process::Command::new(bin())
        .args([
            "debug",
            "report",
            "-o",
            &refused.display().to_string(),
            "--server",
            &mgmt.url,
        ])
        .args(["--ca-file", &mgmt.data_dir.join("pki/api-ca.pem").display().to_string()])
        .env("TRELLIS_CONFIG", dir.join("none.yaml"))
        .env_remove("TRELLIS_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        !output.status.success() && !refused.exists(),
        "an anonymous caller got a report"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
