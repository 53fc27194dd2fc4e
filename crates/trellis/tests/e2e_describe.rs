//! `trellis describe` reports real delivery: how many proxies run the current config (from
//! Envoy's ACKs), and which proxy rejected a change and why (from its NACK).

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

async fn describe(mesh: &trellis_cli::up::LocalMesh, kind: &str, name: &str) -> String {
    let output = tokio::process::Command::new(bin())
        .args(["describe", kind, name, "-n", "demo"])
        .env("TRELLIS_CONFIG", &mesh.api_config)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn wait_describe(mesh: &trellis_cli::up::LocalMesh, kind: &str, name: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = describe(mesh, kind, name).await;
        if out.contains(wanted) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "describe never said {wanted:?}; last:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_reports_acks_and_the_proxy_that_rejected_a_change() {
    // The API refuses what Envoy refuses, so a NACK needs Envoys stricter than the API: these
    // allow regexes of at most 20 RE2 instructions (Envoy's default, and the API's limit, is
    // 100), through a runtime layer merged into every bootstrap by a wrapper around Envoy.
    let dir = test_dir("describe-envoy");
    std::fs::create_dir_all(&dir).unwrap();
    let envoy = trellis_support::envoy_bin::find().unwrap();
    let wrapper = dir.join("strict-envoy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\" --config-yaml 'layered_runtime: {{layers: [{{name: strict, static_layer: {{re2.max_program_size.error_level: 20}}}}]}}'\n",
            envoy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // SAFETY: this is the only test in this binary, and nothing reads the environment yet.
    unsafe { std::env::set_var("ENVOY_BIN", &wrapper) };
    let mesh = demo_mesh("describe").await;
    // 3 proxies in cluster-1 (frontend, backend-v1, gateway), 2 in cluster-2.
    let out = wait_describe(&mesh, "rt", "backend", "applied to 5/5 proxies in 2 cluster(s)").await;
    assert!(out.contains("Status:      ACCEPTED (observed generation 1)"), "{out}");

    let rejected = trellis_cli::up::DEMO_ROUTE_TABLE.replace(
        "  - name: split\n",
        "  - name: split\n    matchers:\n    - uri:\n        regex: \"/(abcdef|ghijkl){4}\"\n",
    );
    let response = mesh.apply("route-table.yaml", &rejected).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let out = wait_describe(&mesh, "rt", "backend", "REJECTED by sidecar~frontend.demo").await;
    assert!(out.contains("observed generation 2"), "{out}");
    assert!(!out.contains("applied to 5/5"), "{out}");
    // The rejected config never reached the data plane: traffic still flows on the last good one.
    let response = mesh.call_from_frontend("http://backend.mesh.internal/").await.unwrap();
    assert_eq!(response.status, 200);

    // Fixing it brings every proxy back in sync.
    mesh.apply("route-table.yaml", trellis_cli::up::DEMO_ROUTE_TABLE)
        .await
        .unwrap();
    wait_describe(&mesh, "rt", "backend", "applied to 5/5 proxies in 2 cluster(s)").await;
    finish(mesh).await;
}
