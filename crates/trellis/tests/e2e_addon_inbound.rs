//! Add-on policies hold at the destination, not only where the request leaves: with the README's
//! add-on example applied (API key and a per-user rate limit on api.mesh.internal), a caller
//! that skips its own sidecar and calls backend-v1's sidecar directly, as a mesh peer over mTLS
//! or in plaintext under PERMISSIVE, still needs the API key; hosts no mesh route sends there
//! are refused, the unprotected demo host still works, and the rate limit counts each request
//! once (through the caller's sidecar) and counts direct plaintext calls too.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use trellis_cli::up::LocalMesh;
use trellis_pki::CertifiedKey;

const KEY: &str = "frontend-demo-key";

/// Through the frontend's sidecar, as the app would call.
async fn via_frontend(mesh: &LocalMesh, key: Option<&str>) -> trellis_support::httpc::Response {
    api_via_frontend(mesh, &api_key_header(key)).await
}

/// Straight to backend-v1's sidecar inbound port in plaintext (absolute-form request, so the
/// host is `host`), skipping the frontend's sidecar.
async fn direct_plaintext(mesh: &LocalMesh, host: &str, key: Option<&str>) -> trellis_support::httpc::Response {
    try_direct_plaintext(mesh, host, key).await.unwrap()
}

async fn try_direct_plaintext(
    mesh: &LocalMesh,
    host: &str,
    key: Option<&str>,
) -> anyhow::Result<trellis_support::httpc::Response> {
    let inbound = format!("127.0.0.1:{}", mesh.app("backend-v1").inbound_port);
    trellis_support::httpc::request(
        "GET",
        &format!("http://{host}/"),
        Some(&inbound),
        &api_key_header(key),
        None,
        Duration::from_secs(5),
    )
    .await
}

/// Straight to backend-v1's sidecar inbound port over mTLS with a mesh workload certificate.
async fn direct_mtls(mesh: &LocalMesh, cert: &CertifiedKey, host: &str, key: Option<&str>) -> u16 {
    let port = mesh.app("backend-v1").inbound_port;
    mtls_request_with(port, Some(cert), "backend", "GET", "/", host, &api_key_header(key))
        .await
        .unwrap_or_else(|e| panic!("a mesh certificate is let in and {host} answers: {e:#}"))
        .status
}

/// The rate limiter's `x-ratelimit-remaining` on a response (the smallest, if several).
fn remaining(response: &trellis_support::httpc::Response) -> u64 {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-ratelimit-remaining"))
        .filter_map(|(_, value)| value.trim().parse().ok())
        .min()
        .unwrap_or_else(|| panic!("no x-ratelimit-remaining: {:?}", response.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_the_destination_sidecar_directly_does_not_skip_ext_auth_or_rate_limits() {
    let mesh = demo_mesh_with_addons("addon-inbound").await;
    apply_addons_example(&mesh).await;
    let peer = mesh_workload_cert(&mesh, "spiffe://trellis.local/ns/demo/sa/frontend");

    // Over mTLS, as a mesh peer: the destination checks the key itself.
    eventually("the destination's sidecar asking for the API key", || async {
        direct_mtls(&mesh, &peer, "api.mesh.internal", None).await == 401
    })
    .await;
    assert_eq!(
        via_frontend(&mesh, None).await.status,
        401,
        "the caller's side checks too"
    );
    assert_eq!(
        direct_mtls(&mesh, &peer, "api.mesh.internal", Some("wrong-key")).await,
        401
    );
    assert_eq!(direct_mtls(&mesh, &peer, "api.mesh.internal", Some(KEY)).await, 200);
    assert_eq!(
        direct_mtls(&mesh, &peer, "backend.mesh.internal", None).await,
        200,
        "a host without policies keeps working"
    );
    assert_eq!(
        direct_mtls(&mesh, &peer, "no-such-route.example", None).await,
        404,
        "a host no mesh route sends here does not reach the app unchecked"
    );

    // In plaintext under PERMISSIVE: the same.
    let permissive = "apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {name: tls-mode, namespace: demo}
spec:
  applyToWorkloads: [{selector: {labels: {app: backend}}}]
  config: {authn: {tlsMode: PERMISSIVE}}
";
    let response = mesh.apply("permissive.yaml", permissive).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("plaintext accepted in PERMISSIVE", || async {
        try_direct_plaintext(&mesh, "backend.mesh.internal", None)
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert_eq!(direct_plaintext(&mesh, "api.mesh.internal", None).await.status, 401);
    assert_eq!(
        direct_plaintext(&mesh, "api.mesh.internal", Some("wrong-key"))
            .await
            .status,
        401
    );
    assert_eq!(
        direct_plaintext(&mesh, "127.0.0.1", None).await.status,
        404,
        "no mesh route for this host"
    );

    // The rate limit (10 a minute per user): each request through the frontend's sidecar
    // counts once, although the destination's sidecar sees it too; a direct plaintext call
    // counts against the same budget; when it is spent, direct calls get 429 as well.
    with_minute_left(20).await;
    let first = via_frontend(&mesh, Some(KEY)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = via_frontend(&mesh, Some(KEY)).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        remaining(&second),
        remaining(&first) - 1,
        "one request through the mesh, one count"
    );
    let direct = direct_plaintext(&mesh, "api.mesh.internal", Some(KEY)).await;
    assert_eq!(direct.status, 200, "{}", direct.body);
    assert_eq!(remaining(&direct), remaining(&second) - 1, "the direct call counted");
    let third = via_frontend(&mesh, Some(KEY)).await;
    assert_eq!(remaining(&third), remaining(&direct) - 1);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let status = direct_plaintext(&mesh, "api.mesh.internal", Some(KEY)).await.status;
        statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "direct calls are limited: {statuses:?}");
    assert!(
        statuses.len() <= remaining(&third) as usize + 1,
        "{statuses:?} after {} left",
        remaining(&third)
    );
    assert_eq!(via_frontend(&mesh, Some(KEY)).await.status, 429, "one budget for both");
    println!(
        "direct to the destination: 401 without/with a wrong key over mTLS and in plaintext, 200 with it, 404 for an unrouted host; rate limit counted once through the mesh and for direct plaintext calls, then 429 ({statuses:?})"
    );
    finish(mesh).await;
}
