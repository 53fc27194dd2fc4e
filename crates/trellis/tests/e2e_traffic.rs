//! Traffic across clusters through real Envoys: a VirtualDestination whose only backend is
//! remote, an 80/20 RouteTable split, and a weight change applied live.

use trellis_testkit as common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_only_backend_is_reached_through_its_clusters_east_west_gateway() {
    let mesh = demo_mesh("remote").await;
    let gateway_admin = mesh.cluster("cluster-2").gateway_admin_port;
    // The gateway passes TLS through by SNI: it sees connections and bytes, not requests. The
    // client sidecar keeps its connection open, so count the bytes it carried.
    let stat = "cluster.gateway|80||backend-v2.mesh.internal.upstream_cx_tx_bytes_total";
    let before = envoy_stat(gateway_admin, stat).await;
    for _ in 0..20 {
        let response = mesh
            .call_from_frontend("http://backend-v2.mesh.internal/")
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        // The backend in cluster-2 answered, and its sidecar verified the *frontend's* identity:
        // TLS ran end to end; the gateway in between never terminated it.
        assert_eq!(body["cluster"], "cluster-2");
        assert_eq!(body["clientIdentity"], "spiffe://trellis.local/ns/demo/sa/frontend");
    }
    assert!(
        envoy_stat(gateway_admin, stat).await > before,
        "cluster-2's gateway carried no bytes to backend-v2"
    );
    // cluster-1's gateway carried none of it.
    assert_eq!(envoy_stat(mesh.cluster("cluster-1").gateway_admin_port, stat).await, 0);
    finish(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_table_splits_80_20_and_new_weights_apply_without_restarts() {
    let mesh = demo_mesh("split").await;
    let (v1, v2) = versions(&mesh, 500).await;
    let share = v2 as f64 / 500.0 * 100.0;
    assert!(
        (15.0..=25.0).contains(&share),
        "v2 got {share:.1}% of 500 requests ({v1} v1 / {v2} v2), expected 20% ± 5"
    );
    println!("80/20 split over 500 requests: {v1} v1 / {v2} v2 ({share:.1}% v2)");

    let frontend_admin = mesh.app("frontend").admin_port;
    let uptime_before = envoy_stat(frontend_admin, "server.uptime").await;
    let response = mesh.apply("route-table.yaml", &route_table(0, 100)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.contains("\"configured\""), "{}", response.body);
    until_all(&mesh, "v2", 20, Duration::from_secs(20)).await;
    let (v1, v2) = versions(&mesh, 100).await;
    assert_eq!((v1, v2), (0, 100));

    // Same Envoy process: its uptime kept growing, and it took the change as an RDS update.
    assert!(envoy_stat(frontend_admin, "server.uptime").await >= uptime_before);
    assert!(envoy_stat(frontend_admin, "http.outbound.rds.outbound.update_success").await >= 2);
    finish(mesh).await;
}
