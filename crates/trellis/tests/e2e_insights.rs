//! `trellis insights` on the real demo mesh: an insight provoked through the API shows in the
//! CLI and on /metrics and goes when the cause is fixed; an error-severity insight makes the
//! CLI exit non-zero; a silence hides an insight until lifted; the endpoints refuse callers
//! without credentials (401) and silences by a non-admin (403). Flags the server cannot check
//! for itself (--require-fips, --profile production) become insights too, and so does a
//! workspace export that the other workspace does not import, until it does.

use trellis_testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use trellis_cli::api_client::ApiClient;

const NOBODY_POLICY: &str = "apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {name: nobody, namespace: demo}
spec:
  applyToWorkloads: [{selector: {labels: {app: no-such-app}}}]
  config:
    authn: {tlsMode: STRICT}
";

const WORKSPACES: &str = "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: shop, namespace: trellis}
spec:
  workloadClusters: [{name: \"*\", namespaces: [{name: demo}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: guest, namespace: trellis}
spec:
  workloadClusters: [{name: \"*\", namespaces: [{name: guest}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: shop, namespace: demo}
spec:
  exportTo: [{workspaces: [{name: guest}]}]
";

const GUEST_IMPORTS: &str = "apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: guest, namespace: guest}
spec:
  importFrom: [{workspaces: [{name: shop}]}]
";

const DISABLE_TRL0003: &str = "apiVersion: admin.gloo.solo.io/v2alpha1
kind: InsightsConfig
metadata: {name: insights-config, namespace: gloo-mesh}
spec:
  disabledInsights: [TRL0003, CFG0002]
";

const VIEWERS: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: insight-viewers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-viewer}
subjects: [{kind: Group, name: auditors}]
";

/// `trellis insights ARGS` as the admin, or with `token`: (exit success, stdout + stderr).
async fn insights(config: &Path, token: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(bin());
    command.arg("insights").args(args).env("TRELLIS_CONFIG", config);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let output = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The insights the CLI prints as JSON (`--all` included when asked).
async fn listed(config: &Path, all: bool) -> Value {
    let args: &[&str] = if all { &["--all", "-o", "json"] } else { &["-o", "json"] };
    let (_, out) = insights(config, None, args).await;
    let json = &out[..out.rfind('}').map_or(out.len(), |i| i + 1)];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn find<'a>(listed: &'a Value, code: &str, target: &str) -> Option<&'a Value> {
    listed["insights"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["code"] == code && i["target"] == target)
}

/// Waits until `check` holds for the admin's `trellis insights --all -o json`.
async fn until(config: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = listed(config, true).await;
        if check(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; last:\n{now:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn with_token(admin: &ApiClient, ca: &Path, token: Option<&str>) -> ApiClient {
    ApiClient::new(&admin.server, Some(ca), token.map(str::to_string)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_follow_the_mesh_and_silences_hide_them() {
    let mesh = demo_mesh("insights").await;
    let config = mesh.api_config.clone();
    let admin = mesh.api().unwrap();
    let metric = "trellis_mgmt_insights{code=\"TRL0018\",severity=\"warning\"}";
    let target = "AccessPolicy/demo/nobody";

    // The demo mesh as started: no error, so the CLI passes; its proxies said which Envoy they run.
    let (ok, out) = insights(&config, None, &[]).await;
    assert!(ok, "the demo mesh has an error insight:\n{out}");
    assert!(out.contains("0 error(s)"), "{out}");
    // Agents report their proxies' delivery state a moment after they connect.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = admin.get_json("/api/v1/clusters").await.unwrap();
        let proxies: Vec<&Value> = clusters["clusters"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|c| c["proxies"].as_array().unwrap())
            .collect();
        let versions: Vec<&str> = proxies.iter().filter_map(|p| p["envoyVersion"].as_str()).collect();
        if !proxies.is_empty() && versions.len() == proxies.len() {
            assert!(
                versions
                    .iter()
                    .all(|v| trellis_insights::parse_envoy_version(v).is_some()),
                "{versions:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "proxies report no Envoy release: {clusters}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(scrape(mesh.admin_port, metric).await, 0);

    // A policy that selects nothing: an insight in the CLI and on /metrics.
    let response = mesh.apply("nobody.yaml", NOBODY_POLICY).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let now = until(&config, "TRL0018 for the policy", |l| {
        find(l, "TRL0018", target).is_some()
    })
    .await;
    let insight = find(&now, "TRL0018", target).unwrap();
    assert_eq!(insight["severity"], "warning", "{insight}");
    assert!(insight["fix"].as_str().unwrap().contains("selectors"), "{insight}");
    let (ok, table) = insights(&config, None, &[]).await;
    assert!(ok, "a warning alone does not fail the CLI:\n{table}");
    assert!(table.contains("TRL0018") && table.contains(target), "{table}");
    assert_eq!(scrape(mesh.admin_port, metric).await, 1);

    // Silenced on its target: hidden by default, listed with --all, off the gauge.
    let (ok, out) = insights(&config, None, &["silence", "TRL0018", "--target", target]).await;
    assert!(ok, "{out}");
    assert!(find(&listed(&config, false).await, "TRL0018", target).is_none());
    let all = listed(&config, true).await;
    assert_eq!(find(&all, "TRL0018", target).unwrap()["silenced"], true, "{all:#}");
    assert!(all["silenced"].as_u64().unwrap() >= 1);
    assert_eq!(scrape(mesh.admin_port, metric).await, 0);
    let (ok, out) = insights(&config, None, &["silences"]).await;
    assert!(ok && out.contains(target), "{out}");
    // Lifted: back again.
    let (ok, out) = insights(&config, None, &["unsilence", "TRL0018", "--target", target]).await;
    assert!(ok, "{out}");
    assert!(find(&listed(&config, false).await, "TRL0018", target).is_some());
    assert_eq!(scrape(mesh.admin_port, metric).await, 1);
    let (ok, out) = insights(&config, None, &["unsilence", "TRL0018", "--target", target]).await;
    assert!(!ok && out.contains("404"), "a silence lifted twice: {out}");

    // Fixed (deleted): gone from the CLI and the gauge.
    let deleted = admin
        .request("DELETE", "/api/v1/resources/AccessPolicy/demo/nobody", None)
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    until(&config, "TRL0018 gone", |l| find(l, "TRL0018", target).is_none()).await;
    assert_eq!(scrape(mesh.admin_port, metric).await, 0);

    // A second table claiming the demo's host and route: an error, and the CLI fails.
    let copy =
        trellis_cli::up::DEMO_ROUTE_TABLE.replace("name: backend\n  namespace", "name: backend-copy\n  namespace");
    assert_ne!(copy, trellis_cli::up::DEMO_ROUTE_TABLE);
    let response = mesh.apply("copy.yaml", &copy).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until(&config, "TRL0017", |l| {
        find(l, "TRL0017", "RouteTable/demo/backend-copy").is_some()
    })
    .await;
    let (ok, out) = insights(&config, None, &[]).await;
    assert!(!ok, "an error insight passed the CLI:\n{out}");
    assert!(out.contains("ERROR") && out.contains("TRL0017"), "{out}");
    assert!(
        scrape(
            mesh.admin_port,
            "trellis_mgmt_insights{code=\"TRL0017\",severity=\"error\"}"
        )
        .await
            >= 1
    );
    let deleted = admin
        .request("DELETE", "/api/v1/resources/RouteTable/demo/backend-copy", None)
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    until(&config, "TRL0017 gone", |l| {
        find(l, "TRL0017", "RouteTable/demo/backend-copy").is_none()
    })
    .await;
    let (ok, out) = insights(&config, None, &[]).await;
    assert!(ok, "{out}");

    // Without credentials: 401 on every insights route.
    let ca = admin_ca(&config);
    let anonymous = with_token(&admin, &ca, None);
    for (method, path, body) in [
        ("GET", "/api/v1/insights", None),
        ("GET", "/api/v1/insights/silences", None),
        ("POST", "/api/v1/insights/silences", Some(r#"{"code":"TRL0018"}"#)),
        ("DELETE", "/api/v1/insights/silences?code=TRL0018", None),
    ] {
        let body = body.map(|b| ("application/json", b.as_bytes().to_vec()));
        let response = anonymous.request(method, path, body).await.unwrap();
        assert_eq!(response.status, 401, "{method} {path}: {}", response.body);
    }

    // A viewer reads insights but may not silence them: 403, through the API and the CLI.
    let response = mesh.apply("viewers.yaml", VIEWERS).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let token = issue_token(&admin, "vera", "vera", &["auditors"]).await;
    let viewer = with_token(&admin, &ca, Some(&token));
    assert_eq!(viewer.get("/api/v1/insights").await.unwrap().status, 200);
    let refused = viewer
        .post_json("/api/v1/insights/silences", &json!({"code": "TRL0013"}))
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let (ok, out) = insights(&config, Some(&token), &["silence", "TRL0013"]).await;
    assert!(!ok && out.contains("403"), "{out}");
    let refused = viewer
        .request("DELETE", "/api/v1/insights/silences?code=TRL0013", None)
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        admin.get_json("/api/v1/insights/silences").await.unwrap()["silences"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a refused silence was stored"
    );

    // Bad silences are refused with the reason, and bodies are bounded.
    let unknown = admin
        .post_json("/api/v1/insights/silences", &json!({"code": "TRL9999"}))
        .await
        .unwrap();
    assert!(
        unknown.status == 400 && unknown.body.contains("unknown insight code"),
        "{}",
        unknown.body
    );
    let huge = admin
        .post_json(
            "/api/v1/insights/silences",
            &json!({"code": "TRL0018", "target": "x".repeat(8000)}),
        )
        .await
        .unwrap();
    assert_eq!(huge.status, 413, "{}", huge.body);
    finish(mesh).await;
}

/// The API CA of the admin client config (its `certificateAuthority`).
fn admin_ca(config: &Path) -> std::path::PathBuf {
    let config = trellis_cli::cli_config::CliConfig::load(config).unwrap();
    config.contexts[0]
        .certificate_authority
        .clone()
        .expect("the admin config names the API CA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_requirements_and_unimported_exports_become_insights() {
    let dir = test_dir("insights-declared");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &["--require-fips", "--profile", "production"]).await;
    let (ok, out) = insights(&mgmt.admin_config(), None, &[]).await;
    assert!(!ok, "{out}");
    for expected in ["TRL0008", "--require-fips", "TRL0003", "relay root CA"] {
        assert!(out.contains(expected), "wanted {expected:?} in:\n{out}");
    }
    assert_eq!(
        mgmt.metric("trellis_mgmt_insights{code=\"TRL0008\",severity=\"error\"}")
            .await,
        1
    );
    // Silencing a code everywhere clears the failure it caused; so does Gloo's InsightsConfig.
    let (ok, out) = insights(&mgmt.admin_config(), None, &["silence", "TRL0008"]).await;
    assert!(ok, "{out}");
    let response = mgmt
        .api()
        .request(
            "POST",
            "/api/v1/apply?source=test",
            Some(("application/yaml", DISABLE_TRL0003.as_bytes().to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let (ok, out) = insights(&mgmt.admin_config(), None, &[]).await;
    assert!(ok, "silenced errors still fail the CLI:\n{out}");
    assert_eq!(
        mgmt.metric("trellis_mgmt_insights{code=\"TRL0008\",severity=\"error\"}")
            .await,
        0
    );
    let all = listed(&mgmt.admin_config(), true).await;
    let disabled = all["insights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["code"] == "TRL0003");
    assert_eq!(disabled.unwrap()["silenced"], true, "{all:#}");
    // Translation names the entry that is not a Trellis code, a moment after the apply.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = mgmt
            .get_json("/api/v1/describe/InsightsConfig/gloo-mesh/insights-config")
            .await;
        if status.to_string().contains("CFG0002 is not a Trellis insight code") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Silences are stored: they survive a restart.
    let mut mgmt = mgmt;
    mgmt.restart().await;
    let (ok, out) = insights(&mgmt.admin_config(), None, &[]).await;
    assert!(ok, "silences lost in a restart:\n{out}");

    // An export nobody imports is an insight until the other workspace imports it.
    let config = mgmt.admin_config();
    let apply = |yaml: &'static str| {
        let api = mgmt.api();
        async move {
            let response = api
                .request(
                    "POST",
                    "/api/v1/apply?source=test",
                    Some(("application/yaml", yaml.as_bytes().to_vec())),
                )
                .await
                .unwrap();
            assert_eq!(response.status, 200, "{}", response.body);
        }
    };
    let target = "WorkspaceSettings/demo/shop";
    apply(WORKSPACES).await;
    let now = until(&config, "TRL0019", |l| find(l, "TRL0019", target).is_some()).await;
    let insight = find(&now, "TRL0019", target).unwrap();
    assert!(
        insight["summary"]
            .as_str()
            .unwrap()
            .contains("guest does not import from shop"),
        "{insight}"
    );
    apply(GUEST_IMPORTS).await;
    until(&config, "TRL0019 gone", |l| find(l, "TRL0019", target).is_none()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
