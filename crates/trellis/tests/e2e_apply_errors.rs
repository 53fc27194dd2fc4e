//! Bad input through the real CLI and the real API: each gets an error naming the file, the
//! document, the resource and the field; the stored config is unchanged afterwards, and
//! accepted config survives a management server restart.

use trellis_testkit as common;

use common::*;

/// Runs `trellis apply -f FILE` and returns (success, stderr).
async fn cli_apply(server: &MgmtProcess, file: &std::path::Path) -> (bool, String) {
    let output = tokio::process::Command::new(bin())
        .args(["apply", "-f", &file.display().to_string()])
        .env("TRELLIS_CONFIG", server.admin_config())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  services: [{labels: {app: backend}}]
  ports: [{number: 80}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_its_location_and_changes_nothing() {
    let dir = test_dir("apply-errors");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = MgmtProcess::start(&dir, &[]).await;

    let good = dir.join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let (ok, stderr) = cli_apply(&server, &good).await;
    assert!(ok, "{stderr}");
    let stored = stored_resources(&server.api()).await;
    assert!(stored.contains("backend.mesh.internal"));

    // (file name, content, fragments the error must contain)
    let cases: &[(&str, String, &[&str])] = &[
        ("malformed.yaml", format!("{GOOD}  http: [\n  - {{"), &["malformed.yaml: document 1", "malformed YAML"]),
        (
            "unknown-kind.yaml",
            format!("{}---\napiVersion: networking.gloo.solo.io/v2\nkind: VirtualService\nmetadata: {{name: x}}\n", GOOD.replace("backend.mesh", "changed.mesh")),
            &["unknown-kind.yaml: document 2", "field kind", "unknown kind \"VirtualService\""],
        ),
        (
            "field-error.yaml",
            "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: backend, namespace: demo}\nspec:\n  hosts: [backend.mesh.internal]\n  http:\n  - forwardTo:\n      destinations:\n      - ref: {name: backend}\n        weigth: 10\n".to_string(),
            &["field-error.yaml: document 1 (RouteTable/demo/backend)", "field spec.http[0].forwardTo.destinations[0].weigth", "unknown field `weigth`"],
        ),
    ];
    for (name, content, fragments) in cases {
        let file = dir.join(name);
        std::fs::write(&file, content).unwrap();
        // Through the CLI.
        let (ok, stderr) = cli_apply(&server, &file).await;
        assert!(!ok, "{name} was accepted");
        for fragment in *fragments {
            assert!(stderr.contains(fragment), "{name}: wanted {fragment:?} in:\n{stderr}");
        }
        // Straight to the API (the server validates on its own, not only the CLI).
        let response = server
            .api()
            .request(
                "POST",
                &format!("/api/v1/apply?source={name}"),
                Some(("application/yaml", content.clone().into_bytes())),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 422, "{name}: {}", response.body);
        for fragment in fragments.iter().filter(|f| !f.starts_with(name)) {
            let fragment = fragment.trim_start_matches("field ");
            assert!(
                response.body.contains(&fragment.replace('"', "\\\"")),
                "{name}: wanted {fragment:?} in {}",
                response.body
            );
        }
        assert_eq!(
            stored_resources(&server.api()).await,
            stored,
            "{name} changed the stored config"
        );
    }

    // Accepted config survives a crash of the management server.
    server.restart().await;
    assert_eq!(stored_resources(&server.api()).await, stored);
    let _ = std::fs::remove_dir_all(&dir);
}
