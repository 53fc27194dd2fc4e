//! A real Prometheus (Debian's `prometheus`) scrapes the demo mesh: the management server's admin
//! port, with Gloo's relay metric names beside Trellis's own, and each cluster's agent, which
//! serves its proxies' Envoy stats labelled with their app (one target per cluster). The golden
//! signals of the demo's backend (request rate, success ratio, p99 latency, as its sidecars
//! count them inbound) and of the frontend → backend edge (as the frontend's sidecar counts its
//! outbound clusters) are then queried through Prometheus's HTTP API, as a dashboard or an
//! alert would; injected failures show up in the success ratio.

use trellis_testkit as common;

use std::time::Duration;

use common::*;

/// The backend's requests as its sidecars count them on their inbound listeners (server side).
const BACKEND_INBOUND: &str = r#"app="backend",envoy_http_conn_manager_prefix=~"inbound.*""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh_and_answers_golden_signal_queries() {
    let mesh = demo_mesh("prometheus").await;
    let prometheus = trellis_testkit::prometheus::Prometheus::scrape(&mesh);

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
        for series in [
            "relay_push_clients_connected",
            "relay_pull_clients_connected",
            "relay_push_clients_warmed",
        ] {
            let promql = format!(r#"{series}{{cluster="{cluster}"}}"#);
            prometheus
                .until(&promql, "the agent's relay stream", |v| v == 1.0)
                .await;
        }
    }
    prometheus
        .until("trellis_mgmt_translations_total", "translations counted", |v| v >= 1.0)
        .await;
    prometheus
        .until(
            "gloo_mesh_translation_time_sec_count",
            "translations timed, Gloo's name",
            |v| v >= 1.0,
        )
        .await;
    // Gloo's translation_error counts resources left FAILED: a second RetryTimeoutPolicy on the
    // route another one holds is one (the route itself is the demo's, 80/20 as before).
    prometheus
        .until("translation_error", "no failed resource", |v| v == 0.0)
        .await;
    let applied = mesh.apply("conflict.yaml", CONFLICTING_RETRY_POLICIES).await.unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);
    prometheus
        .until("translation_error", "the FAILED policy counted", |v| v == 1.0)
        .await;

    // The backend's golden signals, from its sidecars' Envoy stats.
    let rate = format!("sum(rate(envoy_http_downstream_rq_total{{{BACKEND_INBOUND}}}[10s]))");
    let success = format!(
        r#"sum(rate(envoy_http_downstream_rq_xx{{{BACKEND_INBOUND},envoy_response_code_class="2"}}[10s])) / {rate}"#
    );
    let p99 = format!(
        "histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{BACKEND_INBOUND}}}[10s])))"
    );
    let requests_per_second = prometheus.until(&rate, "request rate", |v| v > 1.0).await;
    prometheus
        .until(&success, "success ratio while healthy", |v| v > 0.99)
        .await;
    let latency = prometheus.until(&p99, "p99 latency", |v| v > 0.0).await;
    // The edge, whole-named: the mesh cluster's dots come as `_`, so Envoy's tag extraction
    // keeps the destination in `envoy_cluster_name` instead of cutting it at the first dot.
    let edge = r#"sum(rate(envoy_cluster_upstream_rq_total{app="frontend",cluster="cluster-1",envoy_cluster_name="outbound|80||backend_demo_svc_cluster-2"}[10s]))"#;
    prometheus
        .until(edge, "the frontend → backend v2 edge", |v| v > 0.0)
        .await;
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
    let degraded = prometheus
        .until(&success, "success ratio with failures", |v| v < 0.9)
        .await;
    traffic.abort();
    eprintln!(
        "backend: {requests_per_second:.1} req/s, p99 {latency:.1} ms, success ratio with failures {degraded:.2}"
    );
    finish(mesh).await;
}
