//! A real Prometheus (Debian's `prometheus`) scrapes the demo mesh: the management server's admin
//! port, with Gloo's relay metric names beside Trellis's own, and the sidecars' Envoy stats. The
//! golden signals of the demo's backend (request rate, success ratio, p99 latency, as its
//! sidecars count them inbound) are then
//! queried through Prometheus's HTTP API, as a dashboard or an alert would; injected failures
//! show up in the success ratio.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use trellis_support::process::free_port;

/// The backend's requests as its sidecars count them on their inbound listeners (server side).
const BACKEND_INBOUND: &str = r#"app="backend",envoy_http_conn_manager_prefix=~"inbound.*""#;

/// Scrapes the management server's admin port, and each sidecar's Envoy stats with its app as a
/// label (what Kubernetes service discovery would attach from the pod's labels).
fn scrape_config(mgmt_admin: u16, sidecars: &[(&str, u16)]) -> String {
    let targets: Vec<String> = sidecars
        .iter()
        .map(|(app, port)| format!("\x20 - {{targets: ['127.0.0.1:{port}'], labels: {{app: {app}}}}}\n"))
        .collect();
    format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n\
         - job_name: trellis-mgmt\n\
         \x20 static_configs: [{{targets: ['127.0.0.1:{mgmt_admin}']}}]\n\
         - job_name: envoy-sidecars\n\
         \x20 metrics_path: /stats/prometheus\n\
         \x20 static_configs:\n{}",
        targets.concat()
    )
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query that yields one sample; `None` while it yields none (or NaN).
async fn query(prometheus: u16, promql: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{prometheus}/api/v1/query?query={}", encode(promql));
    let response = trellis_support::httpc::get(&url, Duration::from_secs(5)).await.ok()?;
    let body: Value = serde_json::from_str(&response.body).ok()?;
    assert_eq!(body["status"], "success", "{promql}: {}", response.body);
    let value = body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
    value.is_finite().then_some(value)
}

/// Polls `promql` until `holds` accepts its value; fails after 60 s with the last value.
async fn until_query(prometheus: u16, promql: &str, what: &str, holds: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        last = query(prometheus, promql).await.or(last);
        if let Some(value) = last.filter(|v| holds(*v)) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: `{promql}` was {last:?} after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh_and_answers_golden_signal_queries() {
    assert!(
        std::process::Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok(),
        "prometheus is not installed: scripts/setup installs Debian's package"
    );
    let mesh = demo_mesh("prometheus").await;
    let sidecars: Vec<(&str, u16)> = [
        ("frontend", "frontend"),
        ("backend", "backend-v1"),
        ("backend", "backend-v2"),
    ]
    .iter()
    .map(|(app, process)| (*app, mesh.app(process).admin_port))
    .collect();
    let dir = mesh.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), scrape_config(mesh.admin_port, &sidecars)).unwrap();
    let port = free_port();
    let _prometheus = spawn_program(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &mesh.dir.join("logs").join("prometheus.log"),
    );

    // Traffic from the frontend to the backend for as long as the test runs.
    let traffic = {
        let url = format!("http://127.0.0.1:{}/", mesh.app("frontend").app_port);
        tokio::spawn(async move {
            loop {
                let _ = trellis_support::httpc::get(&url, Duration::from_secs(5)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Gloo's names for the relay's connected agents, per cluster, beside Trellis's own.
    for cluster in ["cluster-1", "cluster-2"] {
        for series in ["relay_push_clients_connected", "relay_pull_clients_connected"] {
            let promql = format!(r#"{series}{{cluster="{cluster}"}}"#);
            until_query(port, &promql, "the agent's relay stream", |v| v == 1.0).await;
        }
    }
    until_query(port, "trellis_mgmt_translations_total", "translations counted", |v| {
        v >= 1.0
    })
    .await;

    // The backend's golden signals, from its sidecars' Envoy stats.
    let rate = format!("sum(rate(envoy_http_downstream_rq_total{{{BACKEND_INBOUND}}}[10s]))");
    let success = format!(
        r#"sum(rate(envoy_http_downstream_rq_xx{{{BACKEND_INBOUND},envoy_response_code_class="2"}}[10s])) / {rate}"#
    );
    let p99 = format!(
        "histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{BACKEND_INBOUND}}}[10s])))"
    );
    let requests_per_second = until_query(port, &rate, "request rate", |v| v > 1.0).await;
    until_query(port, &success, "success ratio while healthy", |v| v > 0.99).await;
    let latency = until_query(port, &p99, "p99 latency", |v| v > 0.0).await;
    assert!(latency < 1000.0, "p99 of {latency} ms on loopback");

    // Half of backend-v1's answers fail: the success ratio the dashboard shows drops.
    let chaos = format!(
        "http://127.0.0.1:{}/__demo/fail-every/2",
        mesh.app("backend-v1").app_port
    );
    let response = trellis_support::httpc::request("PUT", &chaos, None, &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let degraded = until_query(port, &success, "success ratio with failures", |v| v < 0.9).await;
    traffic.abort();
    eprintln!(
        "backend: {requests_per_second:.1} req/s, p99 {latency:.1} ms, success ratio with failures {degraded:.2}"
    );
    finish(mesh).await;
}
