//! FailoverPolicy with OutlierDetectionPolicy through real Envoy: when the frontend's local
//! backend fails, traffic moves to the other cluster within seconds, and comes back when it
//! recovers.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_traffic_across_clusters_and_back() {
    let mut mesh = demo_mesh("failover").await;
    // Without the route table, backend.mesh.internal goes to every backend; the failover policy
    // makes cluster-1's clients prefer cluster-1.
    let response = mesh
        .api()
        .unwrap()
        .request("DELETE", "/api/v1/resources/RouteTable/demo/backend", None)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let policies = "apiVersion: resilience.policy.gloo.solo.io/v2
kind: FailoverPolicy
metadata: {name: failover, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend, namespace: demo}}]
  config:
    localityMappings: [{from: {region: cluster-1}, to: [{region: cluster-2}]}]
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: OutlierDetectionPolicy
metadata: {name: eject, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend, namespace: demo}}]
  config: {consecutiveErrors: 2, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}
";
    let response = mesh.apply("failover.yaml", policies).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_all(&mesh, "v1", 30, Duration::from_secs(20)).await;

    // The local backend dies: within seconds every request is served by cluster-2.
    mesh.app_mut("backend-v1").app.stop().await;
    let died = Instant::now();
    until_all(&mesh, "v2", 20, Duration::from_secs(30)).await;
    let failover = died.elapsed();

    // It comes back: traffic returns home once its ejection ends.
    mesh.app_mut("backend-v1").app.start().unwrap();
    let back = Instant::now();
    until_all(&mesh, "v1", 20, Duration::from_secs(30)).await;
    println!("failed over in {failover:?}, back in {:?}", back.elapsed());
    assert!(failover < Duration::from_secs(15), "failover took {failover:?}");
    finish(mesh).await;
}

/// Gloo's `localityMappings` with weights distribute a locality's traffic by those weights
/// (Istio's `distribute`), whatever the health: all of cluster-1's traffic goes where the
/// weights say, and moves when they change. The policy names no kind and no destinations: it
/// applies to every VirtualDestination of its workspace (here, the mesh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_locality_mappings_distribute_traffic_by_their_weights() {
    let mesh = demo_mesh("failover-weights").await;
    let response = mesh
        .api()
        .unwrap()
        .request("DELETE", "/api/v1/resources/RouteTable/demo/backend", None)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let policy = |to_1: u32, to_2: u32| {
        format!(
            "apiVersion: resilience.policy.gloo.solo.io/v2
kind: FailoverPolicy
metadata: {{name: distribute, namespace: demo}}
spec:
  config:
    localityMappings:
    - from: {{region: cluster-1}}
      to: [{{region: cluster-1, weight: {to_1}}}, {{region: cluster-2, weight: {to_2}}}]
"
        )
    };
    let response = mesh.apply("failover.yaml", &policy(0, 100)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    // Every request from cluster-1 goes to cluster-2 though its own backend is healthy.
    until_all(&mesh, "v2", 30, Duration::from_secs(20)).await;
    let response = mesh.apply("failover.yaml", &policy(100, 0)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_all(&mesh, "v1", 30, Duration::from_secs(20)).await;

    // A region that is no cluster is named in the policy's status.
    let response = mesh
        .apply(
            "failover.yaml",
            &policy(100, 0).replace("region: cluster-2", "region: us-east"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let api = mesh.api().unwrap();
    eventually("a warning naming the unknown region", || async {
        let described = api
            .get_json("/api/v1/describe/FailoverPolicy/demo/distribute")
            .await
            .unwrap();
        let status = described["resource"]["status"].to_string();
        status.contains("localityMappings[0].to[1].region") && status.contains("us-east")
    })
    .await;
    finish(mesh).await;
}
