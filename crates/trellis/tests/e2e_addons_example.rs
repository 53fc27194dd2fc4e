//! The add-on example of the README on the mesh `trellis up` runs (with its add-ons): applying
//! examples/addons/ puts API-key auth and a per-user rate limit on api.mesh.internal. Proves the
//! example works as documented, and that the rate limit keys on the header ext-auth added (the
//! filters run auth first).

use trellis_testkit as common;

use common::*;
use trellis_cli::up::LocalMesh;

async fn call(mesh: &LocalMesh, key: Option<&str>, spoofed_user: Option<&str>) -> trellis_support::httpc::Response {
    let mut headers = api_key_header(key);
    if let Some(user) = spoofed_user {
        headers.push(("x-user-id", user));
    }
    api_via_frontend(mesh, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addons_example_authenticates_then_limits_per_user() {
    let mesh = demo_mesh_with_addons("addons-example").await;
    assert_eq!(
        mesh.cluster("cluster-1").addons.len(),
        3,
        "ext-auth, redis, rate-limiter"
    );
    apply_addons_example(&mesh).await;

    eventually("API key required on api.mesh.internal", || async {
        call(&mesh, None, None).await.status == 401
    })
    .await;
    assert_eq!(call(&mesh, Some("wrong-key"), None).await.status, 401);
    // Avoid a minute rollover in the middle of the count.
    with_minute_left(10).await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        // A client-sent x-user-id must not pick the budget: ext-auth overwrites it.
        statuses.push(
            call(&mesh, Some("frontend-demo-key"), Some("someone-else"))
                .await
                .status,
        );
    }
    // The first may have counted before the limit was in effect; 10 of 11 must pass, then 429.
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    assert_eq!(
        call(&mesh, Some("frontend-demo-key"), Some("yet-another")).await.status,
        429,
        "the budget is the key's user, whatever x-user-id the client sends"
    );

    // Gloo's guides name the add-on's Kubernetes service port (8083) or its port name; the
    // registered add-on is the server all the same: a missing key is still refused by ext-auth
    // (401), not failed closed for want of a server (403).
    for port in ["{number: 8083}", "{name: grpc}"] {
        let server = format!(
            "apiVersion: admin.gloo.solo.io/v2\nkind: ExtAuthServer\nmetadata: {{name: ext-auth, namespace: demo}}\nspec:\n  destinationServer: {{ref: {{name: ext-auth-service, namespace: gloo-mesh}}, port: {port}}}\n  requestTimeout: 1s\n"
        );
        let response = mesh.apply("server.yaml", &server).await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        until_delivered(&mesh, "ExtAuthServer/demo/ext-auth").await;
        for _ in 0..3 {
            assert_eq!(call(&mesh, None, None).await.status, 401, "port {port}");
        }
    }

    // Ext-auth down: Envoy answers statusOnError (default 403), or lets requests through when
    // the ExtAuthServer says failureModeAllow.
    let mut mesh = mesh;
    mesh.cluster_mut("cluster-1").addons[0].0.kill().await;
    eventually("403 with ext-auth down", || async {
        call(&mesh, Some("frontend-demo-key"), None).await.status == 403
    })
    .await;
    let server = |extra: &str| {
        format!(
            "apiVersion: admin.gloo.solo.io/v2\nkind: ExtAuthServer\nmetadata: {{name: ext-auth, namespace: demo}}\nspec:\n  destinationServer: {{ref: {{name: ext-auth-service, namespace: gloo-mesh}}}}\n  requestTimeout: 1s\n{extra}"
        )
    };
    let response = mesh
        .apply("server.yaml", &server("  statusOnError: 503\n"))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("statusOnError 503", || async {
        call(&mesh, None, None).await.status == 503
    })
    .await;
    let response = mesh
        .apply("server.yaml", &server("  failureModeAllow: true\n"))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("failureModeAllow lets requests through", || async {
        call(&mesh, None, None).await.status == 200
    })
    .await;
    println!(
        "addons example: 401 without/with a wrong key, 10 x 200 then 429 for the key's user; ext-auth down: 403, statusOnError 503, failureModeAllow 200"
    );
    finish(mesh).await;
}
