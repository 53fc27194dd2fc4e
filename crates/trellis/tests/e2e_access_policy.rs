//! AccessPolicy through real Envoy: the backend's sidecar lets in only the allowed service
//! account, paths and methods; in dry run it denies nothing and counts what it would deny.

use trellis_testkit as common;

use common::*;
use trellis_cli::up::LocalMesh;
use trellis_pki::CertifiedKey;

/// A workload certificate for `sa` in namespace demo, from the mesh's own root.
fn mesh_cert(mesh: &LocalMesh, sa: &str) -> CertifiedKey {
    mesh_workload_cert(mesh, &format!("spiffe://trellis.local/ns/demo/sa/{sa}"))
}

/// Status of one request straight to backend-v1's sidecar with `cert`, `method` and `path`.
async fn status(mesh: &LocalMesh, cert: &CertifiedKey, method: &str, path: &str) -> u16 {
    mtls_request(mesh.app("backend-v1").inbound_port, Some(cert), method, path)
        .await
        .expect("request")
        .status
}

const POLICY: &str = "apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {name: backend-access, namespace: demo}
spec:
  applyToWorkloads: [{selector: {labels: {app: backend}}}]
  config:
    authn: {tlsMode: STRICT}
    authzList:
    - allowedClients: [{serviceAccountSelector: {name: frontend, namespace: demo}}]
      allowedPaths: [/api*]
      allowedMethods: [GET]
      dryRun: DRY
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policy_denies_what_it_does_not_allow() {
    let mesh = demo_mesh("access-policy").await;
    let (frontend, intruder) = (mesh_cert(&mesh, "frontend"), mesh_cert(&mesh, "intruder"));
    assert_eq!(
        status(&mesh, &intruder, "GET", "/api/x").await,
        200,
        "no policy yet: any mesh identity"
    );

    let response = mesh
        .apply("access.yaml", &POLICY.replace("DRY", "false"))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the policy denying the intruder", || async {
        status(&mesh, &intruder, "GET", "/api/x").await == 403
    })
    .await;
    // The allowed service account, path and method get through; any other combination is denied.
    assert_eq!(status(&mesh, &frontend, "GET", "/api/x").await, 200);
    assert_eq!(status(&mesh, &frontend, "GET", "/admin").await, 403, "disallowed path");
    assert_eq!(
        status(&mesh, &frontend, "POST", "/api/x").await,
        403,
        "disallowed method"
    );
    assert_eq!(
        status(&mesh, &intruder, "GET", "/api/x").await,
        403,
        "disallowed service account"
    );
    // Through the mesh, the real frontend sidecar's identity is the allowed one.
    let through_mesh = mesh
        .call_from_frontend("http://backend.mesh.internal/api/orders")
        .await
        .unwrap();
    assert_eq!(through_mesh.status, 200, "{}", through_mesh.body);
    finish(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_denies_nothing_and_counts_what_it_would_deny() {
    let mesh = demo_mesh("access-dry-run").await;
    let intruder = mesh_cert(&mesh, "intruder");
    let admin = mesh.app("backend-v1").admin_port;
    let stat = "http.inbound|80.rbac.trellis_dry_run_.shadow_denied";
    let response = mesh.apply("access.yaml", &POLICY.replace("DRY", "true")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    // Once the sidecar has the policy, the intruder's requests are counted as would-be denials.
    let before = envoy_stat(admin, stat).await;
    eventually("a counted would-be denial", || async {
        assert_eq!(
            status(&mesh, &intruder, "POST", "/admin").await,
            200,
            "dry run denied a request"
        );
        envoy_stat(admin, stat).await > before
    })
    .await;
    let counted = envoy_stat(admin, stat).await;
    for _ in 0..5 {
        assert_eq!(status(&mesh, &intruder, "POST", "/admin").await, 200);
    }
    assert_eq!(envoy_stat(admin, stat).await, counted + 5);
    finish(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mode_permissive_also_accepts_plaintext_and_strict_does_not() {
    let mesh = demo_mesh("tls-mode").await;
    let port = mesh.app("backend-v1").inbound_port;
    let plaintext = || async move {
        trellis_support::httpc::get(&format!("http://127.0.0.1:{port}/"), std::time::Duration::from_secs(2))
            .await
            .map(|r| r.status)
            .unwrap_or(0)
    };
    let frontend = mesh_cert(&mesh, "frontend");
    assert_ne!(
        plaintext().await,
        200,
        "STRICT by default: plaintext must not be served"
    );

    let policy = |mode: &str| {
        format!(
            "apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {{name: tls-mode, namespace: demo}}
spec:
  applyToWorkloads: [{{selector: {{labels: {{app: backend}}}}}}]
  config: {{authn: {{tlsMode: {mode}}}}}
"
        )
    };
    let response = mesh.apply("tls.yaml", &policy("PERMISSIVE")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("plaintext accepted in PERMISSIVE", || async {
        plaintext().await == 200
    })
    .await;
    assert_eq!(
        status(&mesh, &frontend, "GET", "/").await,
        200,
        "PERMISSIVE still serves mTLS"
    );

    mesh.apply("tls.yaml", &policy("STRICT")).await.unwrap();
    eventually("plaintext refused again in STRICT", || async {
        plaintext().await != 200
    })
    .await;
    assert_eq!(status(&mesh, &frontend, "GET", "/").await, 200);
    finish(mesh).await;
}

/// Gloo's AccessPolicy holds for the next request, not the next connection: a connection opened
/// before a policy change (as a client's pool keeps them) gets the new decision on its next
/// request, both ways. Were the rules part of the listener, Envoy would keep that connection on
/// the old rules while it drains them (600 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_reaches_connections_opened_before_it() {
    let mesh = demo_mesh("access-open-connections").await;
    let intruder = mesh_cert(&mesh, "intruder");
    let port = mesh.app("backend-v1").inbound_port;
    let mut open = MtlsConnection::open(port, Some(&intruder)).await.unwrap();
    assert_eq!(open.get("/api/x").await.unwrap(), 200, "no policy yet");

    let response = mesh
        .apply("access.yaml", &POLICY.replace("DRY", "false"))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    // A fresh connection shows when the sidecar has the policy...
    eventually("the policy on a new connection", || async {
        status(&mesh, &intruder, "GET", "/api/x").await == 403
    })
    .await;
    // ...and the connection opened before it is held to it on its very next request.
    assert_eq!(
        open.get("/api/x").await.expect("the open connection stays usable"),
        403,
        "the connection opened before the policy still passes the old rules"
    );

    // Lifting the policy lets the same connection through again.
    let allow_all = POLICY
        .replace("DRY", "false")
        .replace(
            "serviceAccountSelector: {name: frontend, namespace: demo}",
            "serviceAccountSelector: {}",
        )
        .replace("allowedPaths: [/api*]", "allowedPaths: ['*']");
    let response = mesh.apply("access.yaml", &allow_all).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the lifted policy on a new connection", || async {
        status(&mesh, &intruder, "GET", "/api/x").await == 200
    })
    .await;
    assert_eq!(open.get("/api/x").await.expect("still open"), 200);
    finish(mesh).await;
}
