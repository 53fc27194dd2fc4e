//! Killing the management server or an agent leaves traffic flowing on the last config; after a
//! restart everything resyncs and no accepted config is lost.

use trellis_testkit as common;

use std::time::Duration;

use common::*;

async fn clusters(mesh: &trellis_cli::up::LocalMesh) -> serde_json::Value {
    let response = mesh.api().unwrap().get("/api/v1/clusters").await.unwrap();
    serde_json::from_str::<serde_json::Value>(&response.body).unwrap()["clusters"].clone()
}

/// Waits until both agents are connected and run the config the server currently wants.
async fn wait_in_sync(mesh: &trellis_cli::up::LocalMesh) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = clusters(mesh).await;
        let synced = ["cluster-1", "cluster-2"].iter().all(|c| {
            let status = &clusters[c];
            status["connected"] == true
                && status["ackedVersion"] == status["currentVersion"]
                && status["currentVersion"].is_string()
        });
        if synced {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "agents not in sync: {clusters}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_management_server_and_agent_crashes() {
    let mut mesh = demo_mesh("resilience").await;
    wait_in_sync(&mesh).await;
    let stored_before = stored_resources(&mesh.api().unwrap()).await;

    // Management server crash: both versions keep answering on the last config.
    mesh.mgmt.kill().await;
    let (v1, v2) = versions(&mesh, 100).await;
    assert!(
        v1 > 0 && v2 > 0,
        "{v1} v1 / {v2} v2 while the management server was down"
    );
    assert!(
        mesh.apply("x.yaml", &route_table(50, 50)).await.is_err(),
        "nothing should answer while mgmt is down"
    );

    // Restart: nothing accepted is lost, agents reconnect and resync, and new config flows.
    mesh.mgmt.start().unwrap();
    mesh.wait_for_api(Duration::from_secs(30)).await.unwrap();
    let stored_after = stored_resources(&mesh.api().unwrap()).await;
    assert_eq!(stored_before, stored_after, "the store changed across a crash");
    wait_in_sync(&mesh).await;
    mesh.apply("route-table.yaml", &route_table(100, 0)).await.unwrap();
    until_all(&mesh, "v1", 20, Duration::from_secs(20)).await;

    // Agent crash in cluster-1 (where the client is) and in cluster-2 (where v2 and its gateway
    // live): their Envoys keep serving; traffic keeps flowing, cross-cluster included.
    mesh.apply("route-table.yaml", &route_table(50, 50)).await.unwrap();
    wait_in_sync(&mesh).await;
    // The agents have it; wait until the frontend's Envoy does too before pulling the plug.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while versions(&mesh, 20).await.1 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the 50/50 split never reached the frontend's Envoy"
        );
    }
    for cluster in ["cluster-1", "cluster-2"] {
        mesh.cluster_mut(cluster).agent.kill().await;
        let (v1, v2) = versions(&mesh, 100).await;
        assert!(
            v1 > 20 && v2 > 20,
            "{v1} v1 / {v2} v2 while the {cluster} agent was down"
        );
        // Restarted, the agent serves its cached config, the proxies re-register, and it resyncs.
        mesh.cluster_mut(cluster).agent.start().unwrap();
        wait_in_sync(&mesh).await;
        let (v1, v2) = versions(&mesh, 100).await;
        assert!(
            v1 > 20 && v2 > 20,
            "{v1} v1 / {v2} v2 after the {cluster} agent restarted"
        );
    }
    // And config still flows to the restarted agents' proxies.
    mesh.apply("route-table.yaml", &route_table(0, 100)).await.unwrap();
    until_all(&mesh, "v2", 20, Duration::from_secs(20)).await;
    finish(mesh).await;
}
