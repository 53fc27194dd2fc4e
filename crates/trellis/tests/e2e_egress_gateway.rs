//! Egress gateways, as Gloo Mesh 2.x documents them: an ExternalService port with
//! `egressGatewayRoutes` is reached only through the egress gateway proxy its VirtualGateway
//! selects. Client sidecars send to the gateway over mesh mTLS, the gateway forwards to the
//! external server and enforces the AccessPolicy on the EXTERNAL_SERVICE: the allowed client
//! gets through, another mesh client gets 403 and has no direct path, and a connection without
//! a mesh identity is refused at the gateway's listener. With `clientsideTls` the gateway
//! originates TLS: the client speaks plain HTTP, the destination only TLS.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

async fn until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 40 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_leaves_only_through_the_egress_gateway_for_allowed_clients() {
    let mesh = demo_mesh("egress-gateway").await;
    // The external server: no sidecar, registered nowhere.
    let outside = trellis_support::process::free_port();
    let _weather = spawn_logged(
        &[
            "demo-app",
            "--name",
            "weather",
            "--version",
            "external",
            "--listen",
            &format!("127.0.0.1:{outside}"),
        ]
        .map(String::from),
        &mesh.dir.join("logs").join("weather.log"),
        &[],
    );
    // The same server behind a TLS-only front (an Envoy with the site's certificate).
    let tls_front = trellis_support::process::free_port();
    let _front = spawn_tls_front(&mesh.dir.join("tls-front"), tls_front, outside);
    let listener = trellis_support::process::free_port();
    let admin = trellis_support::process::free_port();
    let _gateway = spawn_ingress_gateway(&mesh, "cluster-1", admin, &["--service-account", "egress-gateway"]);
    let config = format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {{name: egress-gw, namespace: demo}}
spec:
  workloads: [{{selector: {{labels: {{app: ingress-gateway}}}}}}]
  listeners:
  - port: {{number: {listener}}}
    http: {{}}
    tls: {{mode: ISTIO_MUTUAL}}
    exposedExternalServices: [{{host: api.weather.test}}, {{host: 'demo/*.secure-weather.test'}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {{name: weather, namespace: demo}}
spec:
  hosts: [api.weather.test]
  ports:
  - number: 80
    name: http
    protocol: HTTP
    egressGatewayRoutes:
      portMatch: 80
      virtualGatewayRefs: [{{name: egress-gw, namespace: demo}}]
  selector: {{app: weather}}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalEndpoint
metadata: {{name: weather-1, namespace: demo, labels: {{app: weather}}}}
spec:
  address: 127.0.0.1
  ports: [{{name: http, number: {outside}}}]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {{name: weather-egress, namespace: demo}}
spec:
  applyToDestinations: [{{kind: EXTERNAL_SERVICE, selector: {{name: weather, namespace: demo}}}}]
  config:
    authz:
      allowedClients: [{{serviceAccountSelector: {{name: frontend, namespace: demo}}}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {{name: secure-weather, namespace: demo}}
spec:
  hosts: [api.secure-weather.test]
  ports:
  - number: 443
    name: https
    protocol: HTTPS
    clientsideTls: {{sni: api.secure-weather.test, caCertificates: '{weather_ca}'}}
    egressGatewayRoutes:
      virtualGatewayRefs: [{{name: egress-gw, namespace: demo}}]
  selector: {{app: secure-weather}}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalEndpoint
metadata: {{name: secure-weather-1, namespace: demo, labels: {{app: secure-weather}}}}
spec:
  address: 127.0.0.1
  ports: [{{name: https, number: {tls_front}}}]
",
        weather_ca = mesh.dir.join("tls-front").join("weather-ca.pem").display(),
    );
    let response = mesh.apply("egress-gateway.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let url = "http://api.weather.test/forecast";

    // The allowed client gets through, and the gateway is what forwarded it.
    let answer = until("the frontend reaching the external server", || async {
        match mesh.call_from_frontend(url).await {
            Ok(response) if response.status == 200 => Some(response),
            _ => None,
        }
    })
    .await;
    assert!(answer.body.contains("\"service\":\"weather\""), "{}", answer.body);
    assert!(
        answer.body.contains("\"clientIdentity\":null"),
        "the external server sees no mesh identity: {}",
        answer.body
    );
    let frontend_admin = mesh.app("frontend").admin_port;
    assert!(
        envoy_stat(frontend_admin, "cluster.egress|80||api_weather_test.upstream_rq_200").await >= 1,
        "the frontend's sidecar did not send it to the egress gateway"
    );
    assert!(
        envoy_stat(admin, "cluster.external|80||api.weather.test.upstream_rq_200").await >= 1,
        "the egress gateway did not forward it to the external server"
    );

    // Another mesh client: refused by the gateway (its RBAC), with no route of its own.
    // (Its sidecar may get the config a moment after the frontend's: 404 until then.)
    let denied = until("the backend's sidecar routing the host", || async {
        match mesh.call_from("backend-v1", url).await {
            Ok(response) if response.status != 404 => Some(response),
            _ => None,
        }
    })
    .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        envoy_stat(admin, &format!("http.ingress_{listener}.rbac.denied")).await >= 1,
        "the 403 did not come from the egress gateway"
    );
    let backend_admin = mesh.app("backend-v1").admin_port;
    let clusters = trellis_support::httpc::get(
        &format!("http://127.0.0.1:{backend_admin}/clusters"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(
        clusters.body.contains("egress|80||api.weather.test"),
        "{}",
        clusters.body
    );
    for direct in ["outbound|80||api.weather.test", "external|80||api.weather.test"] {
        assert!(
            !clusters.body.contains(direct),
            "a sidecar holds a direct path to the external server: {direct}"
        );
    }
    // Still allowed for the frontend: the policy picks clients, it does not close the door.
    assert_eq!(mesh.call_from_frontend(url).await.unwrap().status, 200);

    // TLS originated at the gateway: plain HTTP from the app (portMatch 80 by default), TLS to
    // a destination that speaks nothing else; no AccessPolicy selects it, so any mesh client.
    let secure = until("the frontend reaching the TLS-only destination", || async {
        match mesh
            .call_from("backend-v1", "http://api.secure-weather.test/forecast")
            .await
        {
            Ok(response) if response.status == 200 => Some(response),
            _ => None,
        }
    })
    .await;
    assert!(secure.body.contains("\"service\":\"weather\""), "{}", secure.body);
    assert!(
        envoy_stat(admin, "cluster.external|443||api.secure-weather.test.upstream_rq_200").await >= 1,
        "the egress gateway did not originate it"
    );

    // Straight to the gateway's listener without a mesh identity: refused in the handshake.
    let stranger =
        trellis_pki::Authority::generate_root("Stranger CA", Duration::from_secs(3600), std::time::SystemTime::now())
            .unwrap()
            .issue_workload_cert(
                "spiffe://trellis.local/ns/demo/sa/frontend",
                Duration::from_secs(3600),
                std::time::SystemTime::now(),
            )
            .unwrap();
    for (who, client) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(&stranger)),
    ] {
        let answer = mtls_request_with(
            listener,
            client,
            "api.weather.test",
            "GET",
            "/forecast",
            "api.weather.test",
            &[],
        )
        .await;
        assert!(answer.is_err(), "the egress gateway served {who}: {answer:?}");
    }
    finish(mesh).await;
}

/// An Envoy terminating TLS (a site certificate for `api.secure-weather.test`) in front of
/// `app_port`: a destination that speaks only TLS. It dies with the returned handle.
fn spawn_tls_front(dir: &std::path::Path, port: u16, app_port: u16) -> tokio::process::Child {
    let site = site_tls(dir, "Weather CA", "api.secure-weather.test");
    // What the egress gateway checks the destination against.
    std::fs::write(dir.join("weather-ca.pem"), site.ca.root_pem()).unwrap();
    let mut listener = envoy_static_listener("tls_front", port, None, serde_json::json!({}));
    listener["filter_chains"][0]["transport_socket"] = serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": site.cert_file},
                "private_key": {"filename": site.key_file}
            }]}
        }
    });
    let admin = trellis_support::process::free_port();
    let bootstrap = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [listener], "clusters": [envoy_static_cluster("app", app_port, false)]}
    });
    std::fs::write(dir.join("envoy.json"), bootstrap.to_string()).unwrap();
    let envoy = trellis_support::envoy_bin::find().unwrap();
    spawn_program(
        envoy.to_str().unwrap(),
        &[
            "-c",
            &dir.join("envoy.json").display().to_string(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
        ]
        .map(String::from),
        &dir.join("envoy.log"),
    )
}
