//! Shared set-up for the end-to-end tests: real processes (the `trellis` binary in every role and
//! real Envoy), on loopback ephemeral ports, in a temp directory removed on success.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis::up::{LocalMesh, MeshPorts};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trellis"))
}

pub fn test_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("trellis-e2e-{name}-{}", std::process::id()))
}

/// The demo mesh with its config applied and cross-cluster traffic flowing.
pub async fn demo_mesh(name: &str) -> LocalMesh {
    let mesh = LocalMesh::start(&bin(), &test_dir(name), MeshPorts::free())
        .await
        .expect("mesh starts");
    mesh.apply_demo_config().await.expect("demo config applies");
    mesh.wait_for_traffic(Duration::from_secs(60))
        .await
        .expect("traffic flows");
    mesh
}

/// The route table of the demo with other weights for v1 (cluster-1) and v2 (cluster-2).
pub fn route_table(v1: u32, v2: u32) -> String {
    trellis::up::DEMO_ROUTE_TABLE
        .replace("weight: 80", &format!("weight: {v1}"))
        .replace("weight: 20", &format!("weight: {v2}"))
}

/// Sends `n` requests to backend.mesh.internal from the frontend's sidecar; counts answers by
/// version. Any non-200 answer fails the test.
pub async fn versions(mesh: &LocalMesh, n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for i in 0..n {
        let response = mesh
            .call_from_frontend("http://backend.mesh.internal/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 200, "request {i}: {}", response.body);
        if response.body.contains("\"version\":\"v1\"") {
            v1 += 1;
        } else if response.body.contains("\"version\":\"v2\"") {
            v2 += 1;
        } else {
            panic!("request {i}: unexpected answer {}", response.body);
        }
    }
    (v1, v2)
}

/// Polls until `n` consecutive requests all reach `version`; returns when that run started.
pub async fn until_all(mesh: &LocalMesh, version: &str, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    let needle = format!("\"version\":\"{version}\"");
    let mut run = 0;
    let mut run_started = Instant::now();
    loop {
        let started = Instant::now();
        let ok = matches!(mesh.call_from_frontend("http://backend.mesh.internal/").await, Ok(r) if r.status == 200 && r.body.contains(&needle));
        if ok {
            if run == 0 {
                run_started = started;
            }
            run += 1;
            if run == n {
                return run_started;
            }
        } else {
            run = 0;
        }
        assert!(
            Instant::now() < deadline,
            "traffic did not all go to {version} within {limit:?}"
        );
    }
}

/// A counter from an Envoy admin /stats page.
pub async fn envoy_stat(admin_port: u16, name: &str) -> u64 {
    let url = format!(
        "http://127.0.0.1:{admin_port}/stats?filter={}",
        name.replace('|', "%7C")
    );
    let response = trellis::httpc::get(&url, Duration::from_secs(2))
        .await
        .expect("envoy admin answers");
    response
        .body
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

pub async fn finish(mut mesh: LocalMesh) {
    mesh.shutdown().await;
    let _ = std::fs::remove_dir_all(&mesh.dir);
}
