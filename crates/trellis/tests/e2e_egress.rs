//! Egress: a host the mesh does not know is unreachable through the sidecar; an ExternalService
//! with an ExternalEndpoint admits exactly that destination.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_are_blocked_and_external_services_are_reachable() {
    let mesh = demo_mesh("egress").await;
    // A server outside the mesh: no sidecar, not registered anywhere.
    let port = trellis_support::process::free_port();
    let _outside = spawn_logged(
        &[
            "demo-app",
            "--name",
            "weather",
            "--version",
            "external",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]
        .map(String::from),
        &mesh.dir.join("logs").join("weather.log"),
        &[],
    );
    let url = "http://api.weather.test/forecast";
    let blocked = mesh.call_from_frontend(url).await.unwrap();
    assert_eq!(blocked.status, 404, "an unknown host was routed: {}", blocked.body);

    let config = format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {{name: weather, namespace: demo}}
spec:
  hosts: [api.weather.test]
  ports: [{{number: 80, name: http}}]
  selector: {{app: weather}}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalEndpoint
metadata: {{name: weather-1, namespace: demo, labels: {{app: weather}}}}
spec:
  address: 127.0.0.1
  ports: [{{name: http, number: {port}}}]
"
    );
    let response = mesh.apply("egress.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = mesh.call_from_frontend(url).await.unwrap();
        if response.status == 200 {
            assert!(response.body.contains("\"service\":\"weather\""), "{}", response.body);
            assert!(
                response.body.contains("\"clientIdentity\":null"),
                "an external server sees no mesh identity"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the external service never became reachable: {}",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Other unknown hosts stay blocked.
    assert_eq!(
        mesh.call_from_frontend("http://api.elsewhere.test/")
            .await
            .unwrap()
            .status,
        404
    );
    finish(mesh).await;
}
