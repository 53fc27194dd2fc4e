//! Apply-to-effective latency: how long from `POST /api/v1/apply` of new RouteTable weights until
//! the frontend's Envoy sends all traffic the new way, over 20 changes on the local demo mesh.
//!
//! "Effective" is the start of the first run of 5 consecutive requests that all reach the newly
//! weighted version (weights flip between 100/0 and 0/100, so one request tells). The time
//! includes the HTTP apply, the store commit, translation, the relay push, the agent's ADS push
//! and Envoy's RDS update.
//!
//! Run: `cargo bench -p trellis --bench apply_latency` (or `scripts/bench-apply-latency`).

use trellis_testkit as common;

use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches too; only `cargo bench` (which passes
        // `--bench`) should spend minutes on figures.
        println!("benchmark skipped: run it with `cargo bench`");
        return;
    }
    let mesh = common::demo_mesh("bench-apply").await;
    let mut samples = Vec::new();
    for change in 0..20 {
        let (weights, version) = if change % 2 == 0 {
            ((0, 100), "v2")
        } else {
            ((100, 0), "v1")
        };
        let started = Instant::now();
        let response = mesh
            .apply("route-table.yaml", &common::route_table(weights.0, weights.1))
            .await
            .expect("apply");
        assert_eq!(response.status, 200, "{}", response.body);
        let effective = common::until_all(&mesh, version, 5, Duration::from_secs(30)).await;
        let latency = effective.saturating_duration_since(started);
        println!(
            "change {:>2}: weights v1={:<3} v2={:<3} effective after {:>7.1} ms",
            change + 1,
            weights.0,
            weights.1,
            latency.as_secs_f64() * 1000.0
        );
        samples.push(latency);
    }
    samples.sort();
    let median = (samples[9] + samples[10]) / 2;
    let worst = samples[19];
    println!(
        "apply-to-effective latency over {} changes: median {:.1} ms, worst {:.1} ms",
        samples.len(),
        median.as_secs_f64() * 1000.0,
        worst.as_secs_f64() * 1000.0
    );
    common::finish(mesh).await;
}
