//! A cluster config far over one relay message (the old limit was 4 MiB in one message, which
//! stopped the relay at about 5,500 services) reaches every agent and every Envoy, and a change
//! to it afterwards moves only what changed.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;

/// Long host names make each VirtualDestination weigh about 1.5 KB in every cluster's config.
fn virtual_destinations(from: usize, to: usize) -> String {
    // Host names allow 63 bytes per label: three long labels.
    let padding = ["x".repeat(60), "y".repeat(60), "z".repeat(60)].join(".");
    (from..to)
        .map(|i| {
            format!(
                "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: bulk-{i}, namespace: demo}}\nspec:\n  hosts: [bulk-{i}.{padding}.mesh.internal]\n  services: [{{labels: {{app: bulk-{i}}}}}]\n  ports: [{{number: 80, protocol: HTTP}}]\n---\n"
            )
        })
        .collect()
}

async fn clusters(mesh: &trellis_cli::up::LocalMesh) -> serde_json::Value {
    let response = mesh.api().unwrap().get("/api/v1/clusters").await.unwrap();
    serde_json::from_str::<serde_json::Value>(&response.body).unwrap()["clusters"].clone()
}

/// Waits until both agents acknowledged the config the server wants now; returns that version.
async fn wait_acked(mesh: &trellis_cli::up::LocalMesh, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let clusters = clusters(mesh).await;
        let acked = ["cluster-1", "cluster-2"].iter().all(|c| {
            let status = &clusters[c];
            status["connected"] == true
                && status["currentVersion"].is_string()
                && status["ackedVersion"] == status["currentVersion"]
                && status["nack"].is_null()
        });
        if acked {
            return clusters;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not acknowledge the large config: {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_of_many_megabytes_reaches_every_agent_and_envoy() {
    let mesh = demo_mesh("large-config").await;
    const COUNT: usize = 4000;
    // The API takes at most 1000 resources per request.
    for start in (0..COUNT).step_by(1000) {
        let response = mesh
            .apply("bulk.yaml", &virtual_destinations(start, start + 1000))
            .await
            .expect("apply");
        let head: String = response.body.chars().take(2000).collect();
        assert_eq!(response.status, 200, "{head}");
    }
    let acked = wait_acked(&mesh, Duration::from_secs(120)).await;

    // It is indeed over the old single-message limit.
    let translation = mesh.api().unwrap().get("/api/v1/translation").await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&translation.body).unwrap();
    let size = serde_json::to_vec(&value["clusters"]["cluster-1"]).unwrap().len();
    assert!(size > 4 * 1024 * 1024, "cluster-1's config is only {size} bytes");
    let upstreams = value["clusters"]["cluster-1"]["upstreams"].as_array().unwrap().len();
    assert!(upstreams > COUNT, "{upstreams} upstreams");

    // The agent's own view: the version it serves is the one the server sent.
    let status = trellis_support::httpc::get(
        &format!(
            "http://{}/v1/status",
            acked["cluster-1"]["registryAddress"].as_str().unwrap()
        ),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(status["configVersion"], acked["cluster-1"]["currentVersion"]);

    // Envoy has the new clusters: the frontend's sidecar knows bulk upstreams.
    let frontend = mesh.app("frontend").admin_port;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let clusters = trellis_support::httpc::get(
            &format!("http://127.0.0.1:{frontend}/clusters"),
            Duration::from_secs(10),
        )
        .await
        .map(|r| r.body)
        .unwrap_or_default();
        if clusters.contains(&format!("bulk-{}.x", COUNT - 1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frontend's Envoy never got the bulk upstreams"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A change now travels as a delta, and traffic still follows the route table.
    mesh.apply("route-table.yaml", &route_table(0, 100)).await.unwrap();
    until_all(&mesh, "v2", 10, Duration::from_secs(60)).await;
    wait_acked(&mesh, Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(mesh.mgmt.log_path()).unwrap();
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        Some(line[start..].split(' ').next().unwrap_or_default().to_string())
    };
    let deltas: Vec<(String, usize)> = log
        .lines()
        .filter(|l| l.contains("config sent"))
        .filter_map(|l| Some((field(l, "base")?, field(l, "sections")?.parse().ok()?)))
        .collect();
    let (first_whole, _) = deltas
        .iter()
        .find(|(base, _)| base.is_empty())
        .expect("a whole config was sent first");
    assert!(first_whole.is_empty());
    // After the bulk (thousands of sections), the weight flip moved a handful.
    let last = deltas.last().unwrap();
    assert!(
        !last.0.is_empty() && last.1 < 10,
        "the last config sent was {last:?}, not a small delta"
    );
    finish(mesh).await;
}
