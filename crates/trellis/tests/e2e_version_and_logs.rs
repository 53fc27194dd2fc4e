//! `trellis version` reports the client's and the server's versions (the server's only to an
//! authenticated caller), `--log-format json` makes every log line of a daemon one JSON object,
//! for log pipelines, `trellis dashboard` names the UI to a caller it can authenticate, and
//! `trellis completion` gives a shell what it needs to complete commands.

use trellis_testkit as common;

use common::*;

async fn trellis(args: &[&str], config: Option<&std::path::Path>) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(bin());
    command
        .args(args)
        .env_remove("TRELLIS_TOKEN")
        .env_remove("TRELLIS_SERVER");
    match config {
        Some(config) => command.env("TRELLIS_CONFIG", config),
        None => command.env("TRELLIS_CONFIG", "/nonexistent/trellis-config.yaml"),
    };
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_client_and_server_and_json_logs_are_json() {
    let dir = test_dir("version-logs");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &["--log-format", "json"]).await;
    let release = env!("CARGO_PKG_VERSION");

    // With the admin's client config: both versions.
    let (ok, out, err) = trellis(&["version"], Some(&mgmt.admin_config())).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("client: {release}")), "{out}");
    assert!(out.contains(&format!("server: {release}")), "{out}");

    // Without a credential the server's version is refused (401); the client's still prints.
    let api_ca = mgmt.data_dir.join("pki/api-ca.pem");
    let (ok, out, err) = trellis(
        &[
            "version",
            "--server",
            &mgmt.url,
            "--ca-file",
            &api_ca.display().to_string(),
        ],
        None,
    )
    .await;
    assert!(!ok, "the server answered an anonymous caller: {out}");
    assert!(out.contains(&format!("client: {release}")), "{out}");
    assert!(err.contains("401"), "{err}");
    // `trellis dashboard` checks the credential first: refused without one, the UI's address with it.
    let (ok, out, err) = trellis(
        &[
            "dashboard",
            "--no-browser",
            "--server",
            &mgmt.url,
            "--ca-file",
            &api_ca.display().to_string(),
        ],
        None,
    )
    .await;
    assert!(!ok && err.contains("401"), "{out}{err}");
    let (ok, out, err) = trellis(&["dashboard", "--no-browser"], Some(&mgmt.admin_config())).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("The UI is at {}/ui/", mgmt.url)), "{out}");
    let (ok, out, _) = trellis(&["version", "--client"], None).await;
    assert!(ok && out.trim() == format!("client: {release}"), "{out}");

    // Every line the server logged is a JSON object with a level and a message.
    let log = std::fs::read_to_string(&mgmt.log).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "the server logged almost nothing:\n{log}");
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["timestamp"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }

    // A format that does not exist is refused before anything starts.
    let (ok, _, err) = trellis(&["--log-format", "yaml", "version", "--client"], None).await;
    assert!(!ok);
    assert!(err.contains("expected text or json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trellis completion bash`, sourced by a real bash, completes the subcommands and refuses a
/// shell it does not know.
#[tokio::test]
async fn bash_completion_completes_subcommands() {
    let script = format!(
        "source <('{}' completion bash) && COMP_WORDS=(trellis ver) && COMP_CWORD=1 && _trellis trellis ver trellis && echo \"${{COMPREPLY[@]}}\"",
        bin().display()
    );
    let output = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let offered = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(offered.split_whitespace().collect::<Vec<_>>(), ["version"], "{offered}");
    let (ok, _, err) = trellis(&["completion", "nosuch"], None).await;
    assert!(!ok && err.contains("possible values"), "{err}");
}
