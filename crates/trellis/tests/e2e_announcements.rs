//! A cluster announces only the namespaces its KubernetesCluster allows: what its agent reports
//! beyond them is left out of the mesh and named in the cluster's status, with real agents.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_cluster_may_not_announce_is_refused_with_a_status() {
    let mesh = demo_mesh("announcements").await;
    let api = mesh.api().unwrap();
    let limit = "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata:\n  name: cluster-2\n  namespace: trellis\n  annotations: {trellis.io/announce-namespaces: 'gloo-mesh, team-*'}\nspec: {}\n";
    let response = mesh.apply("limit.yaml", limit).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    // cluster-2's backend (namespace demo) is refused, named in the status; cluster-1 is not.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cluster = api
            .get_json("/api/v1/resources/KubernetesCluster/trellis/cluster-2")
            .await
            .unwrap();
        let status = cluster["status"].to_string();
        if status.contains("WARNING") && status.contains("workload demo/backend-v2") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal in the status: {cluster:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let other = api
        .get_json("/api/v1/resources/KubernetesCluster/trellis/cluster-1")
        .await
        .unwrap();
    assert!(!other["status"].to_string().contains("refused"), "{other:#}");

    // The refused workload is out of the mesh: backend-v2.mesh.internal (cluster-2 only) has no
    // endpoint left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v2 = mesh
            .call_from_frontend("http://backend-v2.mesh.internal/")
            .await
            .unwrap();
        if v2.status != 200 {
            break;
        }
        assert!(Instant::now() < deadline, "cluster-2's refused backend still answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The demo's RouteTable sends 20% to the v2 subset, which now has no endpoint (503); the
    // rest is cluster-1's, and nothing reaches cluster-2.
    let mut served = 0;
    for _ in 0..20 {
        let response = mesh.call_from_frontend("http://backend.mesh.internal/").await.unwrap();
        assert!(!response.body.contains("cluster-2"), "{}", response.body);
        if response.status == 200 {
            assert!(response.body.contains("\"cluster\":\"cluster-1\""), "{}", response.body);
            served += 1;
        }
    }
    assert!(served >= 8, "only {served} of 20 served by cluster-1");
    finish(mesh).await;
}
