//! `trellis proxy-config` reads a proxy's live Envoy config through the management server and
//! the proxy's agent: what the CLI prints is what that Envoy runs (its listeners, the mesh
//! hosts it routes), without its private keys. Anonymous callers get 401, viewers 403, and an
//! unknown proxy a clear error.

use trellis_testkit as common;

use common::*;
use serde_json::Value;

async fn trellis(mesh: &trellis_cli::up::LocalMesh, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(bin())
        .args(args)
        .env("TRELLIS_CONFIG", &mesh.api_config)
        .env_remove("TRELLIS_TOKEN")
        .env_remove("TRELLIS_SERVER")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reads_a_proxys_live_config_through_its_agent() {
    let mesh = demo_mesh("proxy-config").await;

    let (ok, out, err) = trellis(&mesh, &["proxy-config", "cluster-1", "sidecar~frontend.demo"]).await;
    assert!(ok, "{out}{err}");
    let dump: Value = serde_json::from_str(&out).expect("the dump is JSON");
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["@type"].as_str())
        .collect();
    assert!(types.iter().any(|t| t.ends_with("ListenersConfigDump")), "{types:?}");
    // The routes of the demo's mesh hosts, as this Envoy has them from its agent.
    assert!(out.contains("backend.mesh.internal") && out.contains("backend-v2.mesh.internal"));
    assert!(!out.contains("PRIVATE KEY"), "a private key left the proxy");

    let (ok, listeners, err) = trellis(
        &mesh,
        &[
            "proxy-config",
            "cluster-2",
            "sidecar~backend-v2.demo",
            "--section",
            "listeners",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let listeners: Value = serde_json::from_str(&listeners).unwrap();
    assert!(
        listeners["@type"].as_str().unwrap().ends_with("ListenersConfigDump"),
        "{listeners}"
    );

    // Another cluster's agent does not know the proxy: a clear refusal, not a hang.
    let (ok, _, err) = trellis(&mesh, &["proxy-config", "cluster-2", "sidecar~frontend.demo"]).await;
    assert!(
        !ok && err.contains("no proxy \"sidecar~frontend.demo\" is registered"),
        "{err}"
    );
    let (ok, _, err) = trellis(&mesh, &["proxy-config", "cluster-9", "sidecar~frontend.demo"]).await;
    assert!(!ok && err.contains("cluster-9's agent is not connected"), "{err}");

    // Without credentials: 401; a viewer: 403.
    let api = mesh.api().unwrap();
    let path = "/api/v1/clusters/cluster-1/proxies/sidecar~frontend.demo/config";
    let anonymous =
        trellis_cli::api_client::ApiClient::new(&mesh.api_url, Some(&mesh.dir.join("mgmt/pki/api-ca.pem")), None)
            .unwrap();
    assert_eq!(anonymous.get(path).await.unwrap().status, 401);
    let binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: vic-views}\nroleRef: {kind: ClusterRole, name: trellis-viewer}\nsubjects: [{kind: User, name: vic}]\n";
    assert_eq!(mesh.apply("test", binding).await.unwrap().status, 200);
    let token = issue_token(&api, "vic", "vic", &[]).await;
    let viewer = trellis_cli::api_client::ApiClient::new(
        &mesh.api_url,
        Some(&mesh.dir.join("mgmt/pki/api-ca.pem")),
        Some(token),
    )
    .unwrap();
    assert_eq!(viewer.get("/api/v1/resources").await.unwrap().status, 200);
    assert_eq!(viewer.get(path).await.unwrap().status, 403);
    finish(mesh).await;
}
